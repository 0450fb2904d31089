"""Meta-world v3 tasks as TorchRL environments with upright pixel observations.

The environment follows the PreLAR / APV fine-tuning setting: 64x64 RGB frames from the
``corner`` camera, 500-step episodes that do not end on success, a boolean ``success`` flag read
from Meta-world's info dict, and optional action repeat.

Meta-world v3 renders through gymnasium's ``MujocoRenderer``, which already flips the OpenGL
buffer; the ``corner`` camera is mounted upside down in Meta-world's scene, so its frames come
out upside down. :class:`MetaWorldRenderAdapter` flips them back vertically once, which gives
exactly the frames of the reference (mujoco-py) pipeline.

Examples:
    >>> from torchrl_prelar.envs.metaworld import make_metaworld_env
    >>> env = make_metaworld_env("reach-v3", max_episode_steps=10)
    >>> td = env.rollout(3)
    >>> td["pixels"].shape, td["pixels"].dtype
    (torch.Size([3, 3, 64, 64]), torch.uint8)
    >>> env.close()
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import math
import os
import weakref
from collections.abc import Iterator
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import metaworld  # noqa: E402  (registers the "Meta-World/*" gymnasium ids)
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tensordict import TensorDictBase  # noqa: E402
from torchrl.data import Composite, Unbounded  # noqa: E402
from torchrl.envs import (  # noqa: E402
    Compose,
    FrameSkipTransform,
    GymWrapper,
    PermuteTransform,
    StepCounter,
    TransformedEnv,
)
from torchrl.envs.gym_like import BaseInfoDictReader  # noqa: E402

__all__ = [
    "GOAL_DISTRIBUTIONS",
    "METAWORLD_EVAL_TASKS",
    "RENDER_QUALITIES",
    "MetaWorldRenderAdapter",
    "SuccessInfoReader",
    "apply_render_quality",
    "check_goal_distribution",
    "check_metaworld_task",
    "check_render_quality",
    "goal_site",
    "make_metaworld_env",
    "make_metaworld_gym_env",
    "metaworld_task_names",
    "render_settings",
]

#: Evaluation tasks of the PreLAR paper (Meta-world v3 names).
METAWORLD_EVAL_TASKS: tuple[str, ...] = (
    "lever-pull-v3",
    "drawer-open-v3",
    "door-lock-v3",
    "button-press-topdown-wall-v3",
    "reach-v3",
    "dial-turn-v3",
)

#: Render qualities (``model.vis.quality`` values): ``"fast"`` has no shadow map and no
#: multi-sample anti-aliasing (MSAA); ``"antialiased"`` adds 4x MSAA, so that a sub-pixel move
#: of an edge changes the frame; ``"metaworld"`` is Meta-world's own scene setting, 4x MSAA and
#: a 4096 shadow map.
RENDER_QUALITIES: dict[str, dict[str, int]] = {
    "fast": {"shadowsize": 0, "offsamples": 0},
    "antialiased": {"shadowsize": 0, "offsamples": 4},
    "metaworld": {"shadowsize": 4096, "offsamples": 4},
}


def metaworld_task_names() -> list[str]:
    """Return the sorted names of all Meta-world v3 tasks.

    Examples:
        >>> "reach-v3" in metaworld_task_names()
        True
    """
    return sorted(metaworld.ALL_V3_ENVIRONMENTS)


def check_metaworld_task(task: str) -> None:
    """Raise a ``ValueError`` listing the valid names if ``task`` is not a Meta-world v3 task.

    Args:
        task (str): the task name.

    Examples:
        >>> check_metaworld_task("reach-v3")
    """
    if task not in metaworld.ALL_V3_ENVIRONMENTS:
        raise ValueError(
            f"Unknown Meta-world task {task!r}: expected one of the v3 task names "
            f"{', '.join(metaworld_task_names())}."
        )


def render_settings(model: mujoco.MjModel) -> dict[str, int]:
    """Return the render-quality settings of a MuJoCo model (shadow map size, MSAA samples).

    Args:
        model (mujoco.MjModel): the model.

    Examples:
        >>> render_settings(env.unwrapped.model)  # doctest: +SKIP
        {'shadowsize': 0, 'offsamples': 0}
    """
    return {
        "shadowsize": int(model.vis.quality.shadowsize),
        "offsamples": int(model.vis.quality.offsamples),
    }


def check_render_quality(quality: str) -> None:
    """Raise a ``ValueError`` naming the choices if ``quality`` is not in :data:`RENDER_QUALITIES`.

    Args:
        quality (str): the render quality.

    Examples:
        >>> check_render_quality("antialiased")
    """
    if quality not in RENDER_QUALITIES:
        raise ValueError(
            f"render_quality must be one of {sorted(RENDER_QUALITIES)}, got {quality!r}."
        )


def apply_render_quality(model: mujoco.MjModel, quality: str) -> None:
    """Set a MuJoCo model's shadow map and MSAA to one of :data:`RENDER_QUALITIES`.

    ``"fast"`` renders a 64x64 frame several times faster than Meta-world's setting. The
    settings are read when the rendering context is created, so call this before the first
    render (as :class:`MetaWorldRenderAdapter` does).

    Args:
        model (mujoco.MjModel): the model, modified in place.
        quality (str): one of :data:`RENDER_QUALITIES`.


    Examples:
        >>> apply_render_quality(env.unwrapped.model, "fast")  # doctest: +SKIP
    """
    check_render_quality(quality)
    for name, value in RENDER_QUALITIES[quality].items():
        setattr(model.vis.quality, name, value)


_OPEN_ADAPTERS: weakref.WeakSet[MetaWorldRenderAdapter] = weakref.WeakSet()
_CLOSE_AT_EXIT_REGISTERED = False


def _close_open_adapters() -> None:
    """Close every live renderer before the interpreter tears down EGL."""
    for adapter in list(_OPEN_ADAPTERS):
        adapter.close()


def _register_close_at_exit() -> None:
    """Register :func:`_close_open_adapters` once, after the first rendering context exists.

    MuJoCo's EGL backend registers ``eglTerminate`` at exit when it creates its first context;
    exit hooks run last-in first-out, so ours must be registered after that one to run before it.
    """
    global _CLOSE_AT_EXIT_REGISTERED
    if not _CLOSE_AT_EXIT_REGISTERED:
        atexit.register(_close_open_adapters)
        _CLOSE_AT_EXIT_REGISTERED = True


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the garbage collector, so no finaliser frees an OpenGL context meanwhile."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class MetaWorldRenderAdapter(gym.Wrapper):
    """Gymnasium wrapper fixing what Meta-world v3 needs for pixel-based TorchRL use.

    - ``render()`` flips gymnasium's frame vertically, which gives the frames of the reference
      mujoco-py pipeline that Meta-world's cameras were set up for (``corner`` comes out
      upright instead of upside down);
    - ``reset(seed=s)`` seeds Meta-world itself (its ``reset`` ignores ``seed``), so that
      ``env.set_seed`` in TorchRL controls which goal / object variation is drawn;
    - ``render()`` makes this env's OpenGL context current first, so that several envs can
      render in one process;
    - ``render_quality`` is applied (:func:`apply_render_quality`) before the renderer exists;
    - ``observation_space`` is the one Meta-world really uses: its gymnasium space is built
      before the MT1 task makes the goal observable, and declares the 3 goal entries as zeros;
    - ``close()`` closes the OpenGL renderer (idempotent) and is called at interpreter exit
      for adapters still open, which avoids EGL errors at shutdown.

    Args:
        env (gym.Env): a Meta-world v3 gymnasium env created with
            ``render_mode="rgb_array"``.
        render_quality (str, optional): one of :data:`RENDER_QUALITIES`. Defaults to
            ``"fast"``.

    Raises:
        ValueError: if ``env`` does not render ``"rgb_array"`` frames.

    Examples:
        >>> import gymnasium as gym
        >>> env = MetaWorldRenderAdapter(gym.make("Meta-World/MT1", env_name="reach-v3",
        ...     render_mode="rgb_array", camera_name="corner", width=64, height=64))
        >>> obs, info = env.reset(seed=0)
        >>> env.render().shape
        (64, 64, 3)
        >>> env.close()
    """

    def __init__(self, env: gym.Env, render_quality: str = "fast") -> None:
        super().__init__(env)
        if env.render_mode != "rgb_array":
            raise ValueError(
                f"MetaWorldRenderAdapter expects render_mode='rgb_array', got {env.render_mode!r}."
            )
        apply_render_quality(self.unwrapped.model, render_quality)
        # The first reset sets an MT1 task, which makes the goal part of the observation.
        self.env.reset()
        self.observation_space = self.unwrapped.sawyer_observation_space
        self._closed = False
        _OPEN_ADAPTERS.add(self)

    def render(self) -> np.ndarray:
        # Each env has its own OpenGL context and gymnasium does not make it current, so with
        # several envs in one process the draw calls could go to another env's context, or to
        # none: freeing any context (close, or garbage collection of an unclosed env) releases
        # the thread's current one. Hence: make ours current, with collection paused.
        with _gc_paused():
            viewer = self.unwrapped.mujoco_renderer.viewer
            if viewer is not None:
                viewer.make_context_current()
            frame = self.env.render()
        _register_close_at_exit()
        return np.ascontiguousarray(frame[::-1])

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        if seed is not None:
            self.unwrapped.seed(int(seed))
        return self.env.reset(options=options)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has released the renderer."""
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        _OPEN_ADAPTERS.discard(self)
        self._free_mujoco_context()
        super().close()

    def _free_mujoco_context(self) -> None:
        """Free MuJoCo's GL objects in their own context, before that context is destroyed.

        gymnasium destroys the OpenGL context but leaves the ``MjrContext`` to the garbage
        collector, which then deletes textures and framebuffers by id in whatever context is
        current, i.e. those of another live env, whose frames turn black.
        """
        viewer = self.unwrapped.mujoco_renderer.viewer
        if viewer is not None:
            viewer.make_context_current()
            viewer.con.free()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()


class SuccessInfoReader(BaseInfoDictReader):
    """Read Meta-world's ``info["success"]`` (a float) as a boolean ``"success"`` of shape [1].

    Missing entries (e.g. at reset) read as ``False``.

    Args:
        key (str, optional): the info entry, also the output key. Defaults to
            ``"success"``.

    Examples:
        >>> env = GymWrapper(gym_env)  # doctest: +SKIP
        >>> env.set_info_dict_reader(SuccessInfoReader())  # doctest: +SKIP
    """

    def __init__(self, key: str = "success") -> None:
        self.key = key
        self._info_spec = Composite({key: Unbounded(shape=(1,), dtype=torch.bool)}, shape=())

    def __call__(self, info_dict: dict[str, Any], tensordict: TensorDictBase) -> TensorDictBase:
        value = bool(info_dict.get(self.key, False))
        return tensordict.set(self.key, torch.tensor([value], device=tensordict.device))

    @property
    def info_spec(self) -> Composite:
        return self._info_spec


#: How a reset places the goal (and objects): ``"mt1"``, one of the 50 fixed variations of
#: Meta-world v3's MT1 benchmark, drawn at each reset; ``"uniform"``, a new variation drawn
#: uniformly from the task's range at each reset, as the Meta-world v2 env of APV's and
#: PreLAR's fine-tuning code does (``_freeze_rand_vec = False``); ``"fixed"``, one variation
#: at every reset of every env whatever its seed (the first of MT1's set for seed 0): a
#: diagnostic in which the goal need not be seen.
GOAL_DISTRIBUTIONS = ("mt1", "uniform", "fixed")


def check_goal_distribution(goals: str) -> None:
    """Raise a ``ValueError`` naming the choices if ``goals`` is not in
    :data:`GOAL_DISTRIBUTIONS`.

    Args:
        goals (str): the goal distribution.

    Examples:
        >>> check_goal_distribution("uniform")
    """
    if goals not in GOAL_DISTRIBUTIONS:
        raise ValueError(f"goals must be one of {list(GOAL_DISTRIBUTIONS)}, got {goals!r}.")


def _task_wrapper(env: gym.Env) -> metaworld.wrappers.RandomTaskSelectWrapper:
    wrapper = env
    while not isinstance(wrapper, metaworld.wrappers.RandomTaskSelectWrapper):
        wrapper = wrapper.env
    return wrapper


def _draw_goals_uniformly(env: gym.Env, seed: int | None) -> None:
    """Make each reset of an MT1 env draw a new variation uniformly from the task's range.

    MT1's task wrapper sets one of its 50 variations at each reset, and a set variation is
    frozen. One reset sets the first; then task sampling is switched off and the variation
    unfrozen, so that every reset draws from the env's own seeded generator.
    """
    wrapper = _task_wrapper(env)
    env.reset(seed=seed)
    wrapper.toggle_sample_tasks_on_reset(False)
    env.unwrapped._freeze_rand_vec = False
    env.unwrapped.seeded_rand_vec = True


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}.")


def make_metaworld_gym_env(
    task: str,
    *,
    image_size: int = 64,
    camera: str = "corner",
    max_episode_steps: int = 500,
    render_quality: str = "fast",
    goals: str = "mt1",
    goal_marker_scale: float = 1.0,
    seed: int | None = 0,
) -> MetaWorldRenderAdapter:
    """Create a Meta-world v3 gymnasium env (MT1 benchmark) with upright ``rgb_array`` renders.

    Args:
        task (str): Meta-world v3 task name, e.g. ``"reach-v3"``.

    Keyword Args:
        image_size (int, optional): height and width of rendered frames. Defaults to ``64``.
        camera (str, optional): MuJoCo camera name (``"corner"``, ``"corner2"``, ...).
            Defaults to ``"corner"``.
        max_episode_steps (int, optional): truncation limit in simulator steps, at most
            Meta-world's 500. Episodes never end on success. Defaults to ``500``.
        render_quality (str, optional): one of :data:`RENDER_QUALITIES` (see
            :func:`apply_render_quality`). Defaults to ``"fast"``.
        goals (str, optional): one of :data:`GOAL_DISTRIBUTIONS`: ``"mt1"`` (one of MT1's
            50 fixed goal / object variations per reset), ``"uniform"`` (a new one drawn
            from the task's range at each reset, as the anchors' Meta-world v2 env) or
            ``"fixed"`` (the same one at every reset, whatever the env's seed). Defaults to
            ``"mt1"``.
        goal_marker_scale (float, optional): the radius of the goal's sphere as rendered,
            times the task's (a diagnostic of how well the goal is seen; the physics and the
            reward do not change). Defaults to ``1.0``.
        seed (int, optional): fixes Meta-world's MT1 set of 50 goal / object variations and
            the initial RNG. Defaults to ``0``.

    Raises:
        ValueError: if the task, render quality, a size or ``goal_marker_scale`` is invalid,
            or the task has no ``"goal"`` site to scale.

    Examples:
        >>> env = make_metaworld_gym_env("reach-v3")
        >>> obs, info = env.reset(seed=1)
        >>> env.close()
    """
    check_metaworld_task(task)
    check_render_quality(render_quality)
    check_goal_distribution(goals)
    _check_positive("image_size", image_size)
    _check_positive("max_episode_steps", max_episode_steps)
    if not (math.isfinite(goal_marker_scale) and goal_marker_scale > 0):
        raise ValueError(f"goal_marker_scale must be a finite number > 0, got {goal_marker_scale}.")
    path_length = metaworld.ALL_V3_ENVIRONMENTS[task].max_path_length
    if max_episode_steps > path_length:
        raise ValueError(
            f"max_episode_steps must be at most Meta-world's episode length {path_length}, "
            f"got {max_episode_steps}."
        )
    env = gym.make(
        "Meta-World/MT1",
        env_name=task,
        seed=seed,
        render_mode="rgb_array",
        camera_name=camera,
        width=image_size,
        height=image_size,
        max_episode_steps=max_episode_steps,
        disable_env_checker=True,
    )
    if goals == "uniform":
        _draw_goals_uniformly(env, seed)
    elif goals == "fixed":  # MT1's task wrapper draws from a list of one: a frozen variation
        _task_wrapper(env).tasks = metaworld.MT1(task, seed=0).train_tasks[:1]
    if goal_marker_scale != 1.0:
        env.unwrapped.model.site_size[goal_site(env.unwrapped.model)] *= goal_marker_scale
    return MetaWorldRenderAdapter(env, render_quality=render_quality)


def goal_site(model: mujoco.MjModel) -> int:
    """The index of the ``"goal"`` site of a Meta-world model.

    Raises:
        ValueError: if the model has no ``"goal"`` site.

    Examples:
        >>> env = make_metaworld_gym_env("reach-v3")
        >>> goal_site(env.unwrapped.model) >= 0
        True
        >>> env.close()
    """
    site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "goal")
    if site < 0:
        raise ValueError("The env's model has no 'goal' site.")
    return site


def make_metaworld_env(
    task: str,
    *,
    image_size: int = 64,
    camera: str = "corner",
    max_episode_steps: int = 500,
    action_repeat: int = 1,
    render_quality: str = "fast",
    goals: str = "mt1",
    goal_marker_scale: float = 1.0,
    seed: int | None = 0,
    pixels_only: bool = False,
    device: torch.device | str | None = None,
    render_threads: int | None = None,
) -> TransformedEnv:
    """Create a pixel-based Meta-world v3 TorchRL environment.

    Output keys: ``"pixels"`` (uint8, ``[3, image_size, image_size]``, upright),
    ``"observation"`` (the 39-d state, unless ``pixels_only``), ``"step_count"`` and, under
    ``"next"``, ``"success"`` (bool, ``[1]``), ``"reward"``, ``"done"``, ``"terminated"``
    (never set by success) and ``"truncated"`` (set after ``max_episode_steps`` simulator steps).

    Args:
        task (str): Meta-world v3 task name, e.g. ``"reach-v3"``.

    Keyword Args:
        image_size (int, optional): height and width of the frames. Defaults to ``64``.
        camera (str, optional): MuJoCo camera name. Defaults to ``"corner"``.
        max_episode_steps (int, optional): episode length in simulator steps (at most 500);
            must be a multiple of ``action_repeat``. Defaults to ``500``.
        action_repeat (int, optional): number of simulator steps per agent step (TorchRL
            :class:`~torchrl.envs.FrameSkipTransform`, rewards summed; ``success`` is the one
            of the last repeated step). Defaults to ``1``.
        render_quality (str, optional): ``"fast"`` (no shadows, no MSAA: about 3-7x faster
            renders than ``"metaworld"``), ``"antialiased"`` (4x MSAA) or ``"metaworld"``
            (MSAA and shadows), see :data:`RENDER_QUALITIES`. Defaults to ``"fast"``.
        goals (str, optional): ``"mt1"`` (one of MT1's 50 fixed goal variations per reset),
            ``"uniform"`` (a new goal from the task's range at each reset, as the anchors'
            Meta-world v2 env) or ``"fixed"`` (one goal for every reset and seed), see
            :data:`GOAL_DISTRIBUTIONS`. Defaults to ``"mt1"``.
        goal_marker_scale (float, optional): the goal's sphere drawn this many times as
            wide (a diagnostic, see :func:`make_metaworld_gym_env`). Defaults to ``1.0``.
        seed (int, optional): fixes Meta-world's set of 50 goal variations and the initial
            RNG; re-seed the variation drawn at each reset with ``env.set_seed``. Defaults to
            ``0``.
        pixels_only (bool, optional): drop the low-dimensional ``"observation"``. Defaults
            to ``False``.
        device (torch.device or str, optional): device of the output tensordicts. Defaults
            to ``None``.
        render_threads (int, optional): rasteriser threads of Mesa's software renderer
            (llvmpipe) in this process. llvmpipe starts one per core, so a single env already
            keeps every core busy while it renders; with one env per core (``ParallelEnv``
            workers) set 1. Sets ``LP_NUM_THREADS``, read when the process creates its first
            GL context, so it must be given to the first env a process makes. Defaults to
            ``None`` (Mesa's default).

    Raises:
        ValueError: if ``max_episode_steps`` is not a multiple of ``action_repeat``, or a
            setting is invalid.


    Examples:
        >>> env = make_metaworld_env("reach-v3", max_episode_steps=20, action_repeat=2)
        >>> _ = env.set_seed(0)
        >>> td = env.rollout(100)
        >>> td.shape, bool(td[-1]["next", "truncated"])
        (torch.Size([10]), True)
        >>> env.close()
    """
    _check_positive("action_repeat", action_repeat)
    if render_threads is not None:
        _check_positive("render_threads", render_threads)
        os.environ["LP_NUM_THREADS"] = str(render_threads)
    if max_episode_steps % action_repeat:
        raise ValueError(
            f"max_episode_steps ({max_episode_steps}) must be a multiple of action_repeat "
            f"({action_repeat}) so that truncation falls on an agent step."
        )
    gym_env = make_metaworld_gym_env(
        task,
        image_size=image_size,
        camera=camera,
        max_episode_steps=max_episode_steps,
        render_quality=render_quality,
        goals=goals,
        goal_marker_scale=goal_marker_scale,
        seed=seed,
    )
    base = GymWrapper(gym_env, from_pixels=True, pixels_only=pixels_only, device=device)
    base.set_info_dict_reader(SuccessInfoReader())
    transforms = Compose(
        FrameSkipTransform(action_repeat),
        PermuteTransform((-1, -3, -2), in_keys=["pixels"]),
        StepCounter(),
    )
    return TransformedEnv(base, transforms)
