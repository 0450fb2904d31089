"""Action-free robot videos rendered from Meta-world's scripted expert policies.

Each episode is written as one compressed ``.npz`` file in the APV / DreamerV2 episode format
used for the RLBench pre-training videos:

- ``image``: ``(L + 1, H, W, 3)`` uint8, frame 0 is the reset frame;
- ``action``: ``(L + 1, A)`` float32, ``action[0] = 0`` and ``action[t]`` is the action taken
  just before frame ``t`` (kept for evaluation only, pre-training never reads it);
- ``reward``: ``(L + 1,)`` float32 and ``success``: ``(L + 1,)`` bool, both 0 at frame 0;
- ``state``: ``(L + 1, 4)`` float32, the hand position and gripper opening at every frame
  (kept for evaluation only).

Files are named ``<time>-<id>-<L>.npz`` with ``<id> = <task with "_" for "-">_<index>``
(e.g. ``20250101T120000-pick_place_v3_00003-500.npz``). Each (task, index) episode has its own
seed derived from the base seed, so an interrupted run resumes to exactly the same episodes.

Examples:
    >>> from torchrl_prelar.data.sources.metaworld_scripted import (
    ...     ScriptedVideoConfig, generate_scripted_videos)
    >>> config = ScriptedVideoConfig(tasks=("pick-place-v3",), episode_length=20)
    >>> summary = generate_scripted_videos("/tmp/videos", config, episodes_per_task=2)
    >>> summary.written + summary.skipped
    2
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from metaworld.policies import ENV_POLICY_MAP
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.envs import EnvBase

from torchrl_prelar.envs.metaworld import (
    METAWORLD_EVAL_TASKS,
    RENDER_QUALITIES,
    check_metaworld_task,
    check_render_quality,
    make_metaworld_env,
    metaworld_task_names,
)
from torchrl_prelar.io import atomic_write, atomic_write_text

__all__ = [
    "GenerationSummary",
    "IncompatibleOutputError",
    "MetaWorldExpertPolicy",
    "ScriptedVideoConfig",
    "default_pretrain_tasks",
    "episode_id",
    "episode_seed",
    "generate_scripted_videos",
    "parse_episode_filename",
    "rollout_expert_episode",
    "save_episode",
]

METADATA_FILE = "metadata.json"
#: Meta-world's observation starts with the hand position (3) and the gripper opening (1).
HAND_AND_GRIPPER = 4
_TMP_SUFFIX = ".tmp"


def default_pretrain_tasks() -> tuple[str, ...]:
    """All Meta-world v3 tasks except the six PreLAR evaluation tasks.

    Examples:
        >>> "reach-v3" in default_pretrain_tasks()
        False
    """
    return tuple(t for t in metaworld_task_names() if t not in METAWORLD_EVAL_TASKS)


@dataclass(frozen=True)
class ScriptedVideoConfig:
    """Settings that define the generated episodes (recorded in ``metadata.json``).

    Args:
        tasks (tuple of str, optional): Meta-world v3 task names. Defaults to
            :func:`default_pretrain_tasks`.
        noise_std (float, optional): standard deviation of the Gaussian noise added to expert
            actions, which are then clipped to the action space. Defaults to ``0.1``.
        episode_length (int, optional): number of actions ``L`` per episode (``L + 1``
            frames), at most 500. Defaults to ``500``.
        image_size (int, optional): frame height and width. Defaults to ``64``.
        camera (str, optional): MuJoCo camera name. Defaults to ``"corner"``.
        render_quality (str, optional): ``"fast"``, ``"antialiased"`` or ``"metaworld"`` (see
            :data:`~torchrl_prelar.envs.metaworld.RENDER_QUALITIES`). Defaults to ``"fast"``.
        seed (int, optional): base seed; episode seeds derive from it, the task and the
            episode index. Defaults to ``0``.

    Raises:
        ValueError: if ``tasks`` is empty, repeats a task or names an unknown one, or if
            ``noise_std``, ``episode_length``, ``image_size`` or ``render_quality`` is out of
            range.

    Examples:
        >>> ScriptedVideoConfig(tasks=("pick-place-v3",), noise_std=0.0).episode_length
        500
    """

    tasks: tuple[str, ...] = field(default_factory=default_pretrain_tasks)
    noise_std: float = 0.1
    episode_length: int = 500
    image_size: int = 64
    camera: str = "corner"
    render_quality: str = "fast"
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if not self.tasks:
            raise ValueError("tasks must name at least one Meta-world v3 task, got none.")
        for task in self.tasks:
            check_metaworld_task(task)
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must not repeat a task, got {list(self.tasks)}.")
        if not 0 <= self.noise_std < math.inf:  # NaN too
            raise ValueError(f"noise_std must be a finite number >= 0, got {self.noise_std}.")
        if self.episode_length < 1:
            raise ValueError(f"episode_length must be positive, got {self.episode_length}.")
        if self.image_size < 1:
            raise ValueError(f"image_size must be positive, got {self.image_size}.")
        check_render_quality(self.render_quality)

    def metadata(self) -> dict[str, Any]:
        """Returns the settings as a JSON-serialisable dict, render quality included."""
        data = asdict(self)
        data["tasks"] = list(self.tasks)
        data["render_settings"] = dict(RENDER_QUALITIES[self.render_quality])
        data["episode_id"] = "<task with '_' for '-'>_<index:05d>"
        data["episode_seed"] = "SeedSequence([seed, crc32(task), index]) -> uint32"
        return data


class IncompatibleOutputError(ValueError):
    """The output folder holds episodes generated with other settings."""


@dataclass
class GenerationSummary:
    """What a call to :func:`generate_scripted_videos` did.

    Args:
        written (int, optional): episodes written. Defaults to ``0``.
        skipped (int, optional): episodes already present, left as they are. Defaults to
            ``0``.
        frames (int, optional): frames written. Defaults to ``0``.
        seconds (float, optional): wall-clock time of the call. Defaults to ``0.0``.
    """

    written: int = 0
    skipped: int = 0
    frames: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        return (
            f"{self.written} episodes written ({self.frames} frames), "
            f"{self.skipped} already present, {self.seconds:.1f} s"
        )


def episode_id(task: str, index: int) -> str:
    """Returns the stable, hyphen-free id of episode ``index`` of ``task``.

    Args:
        task (str): Meta-world v3 task name.
        index (int): episode index within the task.

    Examples:
        >>> episode_id("pick-place-v3", 3)
        'pick_place_v3_00003'
    """
    return f"{task.replace('-', '_')}_{index:05d}"


def episode_seed(base_seed: int, task: str, index: int) -> int:
    """Returns the random seed of episode ``index`` of ``task``; independent of the task list.

    Args:
        base_seed (int): the generation's base seed (:attr:`ScriptedVideoConfig.seed`).
        task (str): Meta-world v3 task name.
        index (int): episode index within the task.

    Examples:
        >>> episode_seed(0, "pick-place-v3", 0) == episode_seed(0, "pick-place-v3", 0)
        True
    """
    entropy = [base_seed, zlib.crc32(task.encode()), index]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def parse_episode_filename(name: str) -> tuple[str, str, int] | None:
    """Splits ``<time>-<id>-<length>.npz`` into its parts, or returns ``None`` if it does not fit.

    Args:
        name (str): a file name.

    Examples:
        >>> parse_episode_filename("20250101T120000-reach_v3_00000-500.npz")
        ('20250101T120000', 'reach_v3_00000', 500)
    """
    if not name.endswith(".npz"):
        return None
    parts = name[: -len(".npz")].split("-")
    if len(parts) != 3 or not parts[2].isdigit():
        return None
    return parts[0], parts[1], int(parts[2])


class MetaWorldExpertPolicy(TensorDictModuleBase):
    """Meta-world's scripted expert for one task, with optional Gaussian action noise.

    Reads the 39-d state ``"observation"`` and writes a float32 ``"action"`` clipped to
    ``[-1, 1]``.

    Args:
        task (str): Meta-world v3 task name.
        noise_std (float, optional): standard deviation of the Gaussian action noise.
            Defaults to ``0.0``.
        seed (int, optional): seed of the noise generator. Defaults to ``None``.

    Examples:
        >>> env = make_metaworld_env("reach-v3", max_episode_steps=10)
        >>> td = env.rollout(10, policy=MetaWorldExpertPolicy("reach-v3", noise_std=0.1))
    """

    in_keys = ["observation"]
    out_keys = ["action"]

    def __init__(self, task: str, noise_std: float = 0.0, seed: int | None = None) -> None:
        super().__init__()
        check_metaworld_task(task)
        self.expert = ENV_POLICY_MAP[task]()
        self.noise_std = noise_std
        self.rng = np.random.default_rng(seed)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        observation = tensordict.get("observation").cpu().numpy()
        with warnings.catch_warnings():
            # Meta-world's experts use large gains on purpose; the clip below is the intended
            # behaviour, not a problem worth a warning.
            warnings.filterwarnings("ignore", message="Constant.*may be too high")
            action = self.expert.get_action(observation)
        if self.noise_std > 0:
            action = action + self.rng.normal(0.0, self.noise_std, size=action.shape)
        action = np.clip(action, -1.0, 1.0).astype(np.float32)
        return tensordict.set("action", torch.from_numpy(action).to(tensordict.device))


def rollout_expert_episode(
    env: EnvBase, task: str, *, noise_std: float, seed: int, length: int
) -> dict[str, np.ndarray]:
    """Runs one noisy expert episode of ``length`` actions and returns it in the APV layout.

    Beside ``"image"``, ``"action"``, ``"reward"`` and ``"success"`` it keeps ``"state"``
    (``[length + 1, 4]``): the hand position and the gripper opening at every frame, the first
    four entries of Meta-world's observation, which the latent-action evaluation uses as the
    state baseline of its probe.

    Args:
        env (EnvBase): an env from :func:`~torchrl_prelar.envs.metaworld.make_metaworld_env`
            for ``task`` with the low-dimensional observation kept.
        task (str): the task of ``env``; selects the expert.

    Keyword Args:
        noise_std (float): Gaussian action-noise standard deviation.
        seed (int): seeds both the env (goal / object variation) and the noise.
        length (int): number of actions; the env must not truncate before.

    Returns:
        a dict of numpy arrays, ``"image"`` uint8 ``[length + 1, H, W, 3]`` and
        ``"action"``, ``"reward"``, ``"success"``, ``"state"`` with one row per frame (row 0
        is the reset padding, except for ``"state"``).

    Raises:
        RuntimeError: if the env ends the episode before ``length`` steps.

    Examples:
        >>> env = make_metaworld_env("reach-v3", max_episode_steps=10)
        >>> episode = rollout_expert_episode(env, "reach-v3", noise_std=0.1, seed=0, length=10)
        >>> episode["image"].shape, episode["action"].shape, episode["state"].shape
        ((11, 64, 64, 3), (11, 4), (11, 4))
    """
    env.set_seed(seed)
    policy = MetaWorldExpertPolicy(task, noise_std=noise_std, seed=seed)
    td = env.rollout(length, policy=policy, break_when_any_done=False).cpu()
    if td.shape[0] != length:
        raise RuntimeError(f"expected an episode of {length} steps, got {td.shape[0]}.")
    frames = torch.cat([td["pixels"][:1], td["next", "pixels"]]).permute(0, 2, 3, 1)
    observation = torch.cat([td["observation"][:1], td["next", "observation"]])
    action = td["action"].to(torch.float32)
    reward = td["next", "reward"].reshape(-1).to(torch.float32)
    success = td["next", "success"].reshape(-1)
    return {
        "image": frames.contiguous().numpy(),
        "action": torch.cat([torch.zeros_like(action[:1]), action]).numpy(),
        "reward": torch.cat([reward.new_zeros(1), reward]).numpy(),
        "success": torch.cat([success.new_zeros(1), success]).numpy(),
        "state": observation[:, :HAND_AND_GRIPPER].to(torch.float32).numpy(),
    }


def save_episode(path: str | os.PathLike, episode: dict[str, np.ndarray]) -> None:
    """Atomically writes an episode as a compressed ``.npz``.

    Args:
        path (str or os.PathLike): the file to write.
        episode (dict): numpy arrays by name, as :func:`rollout_expert_episode` returns them.

    Examples:
        >>> path = "/tmp/videos/20250101T000000-reach_v3_00000-10.npz"
        >>> save_episode(path, episode)  # doctest: +SKIP
    """
    atomic_write(path, lambda handle: np.savez_compressed(handle, **episode))


def _write_metadata(out_dir: Path, config: ScriptedVideoConfig, episodes_per_task: int) -> None:
    """Write ``metadata.json``; raise :class:`IncompatibleOutputError` if settings differ."""
    path = out_dir / METADATA_FILE
    metadata = config.metadata()
    if path.exists():
        previous = _with_render_quality_named(json.loads(path.read_text()))
        differing = sorted(
            key
            for key in set(previous) | set(metadata)
            if key != "episodes_per_task" and previous.get(key) != metadata.get(key)
        )
        if differing:
            raise IncompatibleOutputError(
                f"{out_dir} holds episodes generated with other settings ({', '.join(differing)} "
                f"differ from {path}); use another output folder."
            )
        episodes_per_task = max(episodes_per_task, previous.get("episodes_per_task", 0))
    metadata["episodes_per_task"] = episodes_per_task
    text = json.dumps(metadata, indent=2, sort_keys=True) + "\n"
    if not path.exists() or path.read_text() != text:  # a complete folder is only read
        atomic_write_text(path, text)


def _with_render_quality_named(metadata: dict[str, Any]) -> dict[str, Any]:
    """Metadata written before render qualities had names (``fast_render`` true or false)."""
    if "fast_render" not in metadata:
        return metadata
    named = {key: value for key, value in metadata.items() if key != "fast_render"}
    named["render_settings"] = named.pop("render_quality")
    named["render_quality"] = "fast" if metadata["fast_render"] else "metaworld"
    return named


def _remove_leftover_temp_files(out_dir: Path) -> None:
    for leftover in out_dir.glob(f".*{_TMP_SUFFIX}"):
        leftover.unlink(missing_ok=True)


def _existing_episode_ids(out_dir: Path, length: int) -> set[str]:
    parsed = (parse_episode_filename(path.name) for path in out_dir.glob("*.npz"))
    return {parts[1] for parts in parsed if parts is not None and parts[2] == length}


def _timestamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S")


def _pending_episodes(
    tasks: tuple[str, ...], episodes_per_task: int, existing: set[str]
) -> Iterator[tuple[str, list[int]]]:
    for task in tasks:
        indices = [i for i in range(episodes_per_task) if episode_id(task, i) not in existing]
        if indices:
            yield task, indices


def generate_scripted_videos(
    out_dir: str | os.PathLike,
    config: ScriptedVideoConfig,
    episodes_per_task: int,
    *,
    on_episode: Callable[[], None] | None = None,
) -> GenerationSummary:
    """Renders ``episodes_per_task`` expert episodes per task into ``out_dir``; resumable.

    Episodes whose final file already exists are skipped; leftover temporary files of an
    interrupted run are removed before the missing episodes are written. Only one generator
    may write to a folder at a time; a complete folder is not written at all, so any number
    of runs may call this on it at once (to check it).

    Args:
        out_dir (str or os.PathLike): output folder (created if needed).
        config (ScriptedVideoConfig): generation settings.
        episodes_per_task (int): number of episodes per task.

    Keyword Args:
        on_episode (Callable, optional): called after each episode written or skipped (e.g. a
            progress bar update). Defaults to ``None``.

    Returns:
        a :class:`GenerationSummary`.

    Raises:
        ValueError: if ``episodes_per_task`` is below 1.
        IncompatibleOutputError: if ``out_dir`` holds episodes generated with other settings.

    Examples:
        >>> config = ScriptedVideoConfig(tasks=("pick-place-v3",), episode_length=20)
        >>> print(generate_scripted_videos("/tmp/videos", config, 2))  # doctest: +SKIP
        2 episodes written (42 frames), 0 already present, 3.1 s
    """
    if episodes_per_task < 1:
        raise ValueError(f"episodes_per_task must be positive, got {episodes_per_task}.")
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_metadata(out, config, episodes_per_task)
    existing = _existing_episode_ids(out, config.episode_length)
    pending = list(_pending_episodes(config.tasks, episodes_per_task, existing))
    if pending:  # a complete folder is left as it is: other runs may be reading it
        _remove_leftover_temp_files(out)
    summary = GenerationSummary()
    summary.skipped = sum(
        episode_id(task, i) in existing for task in config.tasks for i in range(episodes_per_task)
    )
    for _ in range(summary.skipped):
        if on_episode is not None:
            on_episode()
    for task, indices in pending:
        env = make_metaworld_env(
            task,
            image_size=config.image_size,
            camera=config.camera,
            max_episode_steps=config.episode_length,
            render_quality=config.render_quality,
            seed=config.seed,
        )
        try:
            for index in indices:
                episode = rollout_expert_episode(
                    env,
                    task,
                    noise_std=config.noise_std,
                    seed=episode_seed(config.seed, task, index),
                    length=config.episode_length,
                )
                name = f"{_timestamp()}-{episode_id(task, index)}-{config.episode_length}.npz"
                save_episode(out / name, episode)
                summary.written += 1
                summary.frames += len(episode["image"])
                if on_episode is not None:
                    on_episode()
        finally:
            env.close()
    summary.seconds = time.perf_counter() - start
    return summary
