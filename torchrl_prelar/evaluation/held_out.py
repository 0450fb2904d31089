"""Held-out episodes with true actions, and the latent-action evaluation run on them.

Two sets, each a folder of APV-format ``.npz`` episodes (``<root>/seen``, ``<root>/unseen``):

* ``seen``: new episodes (another seed than the training videos) of pre-training tasks;
* ``unseen``: episodes of the six evaluation tasks ``METAWORLD_EVAL_TASKS``, never in
  pre-training.

They are rendered by the scripted Meta-world generator (resumable: only missing episodes are
rendered), or, for runs pre-trained on synthetic video, written as episodes of the run's toy
(:func:`~torchrl_prelar.data.synthetic.toy_episodes`; moving squares by default, whose
``unseen`` set shows two smaller squares instead of one). :class:`LatentActionMonitor` runs
:func:`~torchrl_prelar.evaluation.latent_actions.evaluate_latent_actions` on both sets during
pre-training; :func:`save_latent_action_results` writes the figures of a run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from tensordict import TensorDict
from tqdm.auto import tqdm

from torchrl_prelar.evaluation.latent_actions import (
    check_context,
    episodes_to_clips,
    evaluate_latent_actions,
    load_episodes,
    save_transfer_gif,
)
from torchrl_prelar.io import atomic_write, atomic_write_text, update_summary
from torchrl_prelar.modules import PreLARWorldModel

__all__ = [
    "HELD_OUT_SETS",
    "LOGGED_FIGURES",
    "HeldOutConfig",
    "LatentActionMonitor",
    "generate_held_out_set",
    "generate_held_out_sets",
    "load_clip_sets",
    "save_latent_action_results",
    "spread_tasks",
    "transfer_pair",
]

HELD_OUT_SETS = ("seen", "unseen")
#: Figures logged during pre-training, as ``<figure>_<set>`` (e.g. ``probe_r2_seen``);
#: ``probe_r2_motion`` only for held-out sets whose episodes carry states.
LOGGED_FIGURES = ("probe_r2", "probe_r2_motion", "state_kl_shuffled_ratio", "delta_psnr")
RESULTS_FILE = "latent_actions.json"
TRANSFER_GIF = "latent_action_transfer.gif"
#: The synthetic ``unseen`` set: two smaller squares (training videos show one of side 12).
UNSEEN_SQUARES = {"num_squares": 2, "square": 8}


@dataclass(frozen=True)
class HeldOutConfig:
    """How the held-out episodes are made (the ``evaluation`` block of the presets).

    Args:
        seen_episodes (int, optional): episodes per seen task (synthetic video: in all).
            Defaults to ``4``.
        unseen_episodes (int, optional): episodes per evaluation task (synthetic video: in
            all). Defaults to ``4``.
        seen_tasks (int, optional): how many pre-training tasks the seen set covers, evenly
            spread over them (:func:`spread_tasks`); ``None``: all. Defaults to ``10``.
        episode_length (int, optional): actions per episode (``L + 1`` frames). Defaults to
            ``48``.
        seen_seed (int, optional): base seed of the seen episodes (must differ from the
            training videos'). Defaults to ``1000``.
        unseen_seed (int, optional): base seed of the unseen episodes. Defaults to ``2000``.
        noise (float, optional): action-noise std of the scripted experts. Defaults to
            ``0.1``.
        render_quality (str, optional): how the frames are rendered (see
            :data:`~torchrl_prelar.envs.metaworld.RENDER_QUALITIES`), that of the training
            videos. Defaults to ``"fast"``.

    Examples:
        >>> HeldOutConfig.from_mapping({"seen_episodes": 2, "probe_every": 100}).seen_episodes
        2
    """

    seen_episodes: int = 4
    unseen_episodes: int = 4
    seen_tasks: int | None = 10
    episode_length: int = 48
    seen_seed: int = 1000
    unseen_seed: int = 2000
    noise: float = 0.1
    render_quality: str = "fast"

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> HeldOutConfig:
        """Builds a config from the fields found in ``settings``; other keys are ignored.

        Args:
            settings (Mapping): e.g. the ``evaluation`` block of a preset.
        """
        names = {item.name for item in fields(cls)}
        return cls(**{key: value for key, value in settings.items() if key in names})


def spread_tasks(tasks: Sequence[str], count: int | None) -> tuple[str, ...]:
    """Picks ``count`` of ``tasks``, evenly spread over the list.

    Args:
        tasks (sequence of str): the tasks to pick from.
        count (int, optional): how many to pick; ``None`` (or ``len(tasks)`` and more) picks
            all.

    Raises:
        ValueError: if ``count`` is below 1.

    Examples:
        >>> spread_tasks(["a", "b", "c", "d", "e", "f"], 3)
        ('a', 'c', 'e')
    """
    if count is None or count >= len(tasks):
        return tuple(tasks)
    if count < 1:
        raise ValueError(f"seen_tasks must be >= 1 or None, got {count}.")
    return tuple(tasks[index * len(tasks) // count] for index in range(count))


def generate_held_out_sets(
    root: str | Path,
    config: HeldOutConfig,
    *,
    synthetic: bool = False,
    toy: Mapping[str, Any] | None = None,
    pretrain_tasks: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Writes (or completes) the ``seen`` and ``unseen`` folders under ``root``.

    Args:
        root (str or Path): the parent folder.
        config (HeldOutConfig): how the episodes are made.

    Keyword Args:
        synthetic (bool, optional): write episodes of a synthetic toy instead of rendering
            Meta-world ones. Defaults to ``False``.
        toy (Mapping, optional): the toy's settings (see :func:`generate_held_out_set`).
            Defaults to ``None``.
        pretrain_tasks (sequence of str, optional): the pre-training tasks. Defaults to
            ``None`` (all but the evaluation tasks).

    Returns:
        the folder of each set, by name.

    Examples:
        >>> import tempfile
        >>> folders = generate_held_out_sets(tempfile.mkdtemp(), HeldOutConfig(
        ...     seen_episodes=2, unseen_episodes=2, episode_length=8), synthetic=True)
        >>> [len(list(folder.glob("*.npz"))) for folder in folders.values()]
        [2, 2]
    """
    folders = {name: Path(root) / name for name in HELD_OUT_SETS}
    for name, folder in folders.items():
        generate_held_out_set(
            folder, name, config, synthetic=synthetic, toy=toy, pretrain_tasks=pretrain_tasks
        )
    return folders


def generate_held_out_set(
    folder: str | Path,
    name: str,
    config: HeldOutConfig,
    *,
    synthetic: bool = False,
    toy: Mapping[str, Any] | None = None,
    pretrain_tasks: Sequence[str] | None = None,
) -> Path:
    """Writes (or completes) held-out set ``name`` (``"seen"`` or ``"unseen"``) in ``folder``.

    Meta-world episodes come from the scripted generator; with ``synthetic``, episodes of the
    toy ``toy``, the ``unseen`` set of the square toy with :data:`UNSEEN_SQUARES`, that of
    other toys with another seed only. Episodes already written are kept, so an interrupted
    call resumes.

    Args:
        folder (str or Path): the set's folder.
        name (str): ``"seen"`` or ``"unseen"``.
        config (HeldOutConfig): how the episodes are made.

    Keyword Args:
        synthetic (bool, optional): write episodes of a synthetic toy instead of rendering
            Meta-world ones. Defaults to ``False``.
        toy (Mapping, optional): the keyword arguments of
            :func:`~torchrl_prelar.data.synthetic.toy_episodes` but ``seed``. Defaults to
            ``None`` (moving squares).
        pretrain_tasks (sequence of str, optional): the pre-training tasks the seen set draws
            from. Defaults to ``None`` (all but the evaluation tasks).

    Returns:
        ``folder``, as a :class:`~pathlib.Path`.

    Raises:
        ValueError: if ``name`` is not ``"seen"`` or ``"unseen"``.

    Examples:
        >>> import tempfile
        >>> folder = generate_held_out_set(tempfile.mkdtemp(), "unseen", HeldOutConfig(
        ...     unseen_episodes=1, episode_length=8), synthetic=True)
        >>> len(list(folder.glob("*.npz")))
        1
    """
    if name not in HELD_OUT_SETS:
        raise ValueError(f"name must be one of {HELD_OUT_SETS}, got {name!r}.")
    folder = Path(folder)
    episodes = config.seen_episodes if name == "seen" else config.unseen_episodes
    seed = config.seen_seed if name == "seen" else config.unseen_seed
    if synthetic:
        toy = dict(toy or {})
        if name == "unseen" and toy.get("toy", "square") == "square":
            toy.update(UNSEEN_SQUARES)
        _write_toy_episodes(folder, episodes, config, seed, toy)
        return folder
    from torchrl_prelar.data.sources.metaworld_scripted import default_pretrain_tasks
    from torchrl_prelar.envs.metaworld import METAWORLD_EVAL_TASKS

    if name == "seen":
        tasks = spread_tasks(tuple(pretrain_tasks or default_pretrain_tasks()), config.seen_tasks)
    else:
        tasks = METAWORLD_EVAL_TASKS
    _render_scripted(folder, tasks, episodes, config, seed)
    return folder


def _render_scripted(
    folder: Path, tasks: Sequence[str], episodes: int, config: HeldOutConfig, seed: int
) -> None:
    from torchrl_prelar.data.sources.metaworld_scripted import (
        ScriptedVideoConfig,
        generate_scripted_videos,
    )

    video_config = ScriptedVideoConfig(
        tasks=tuple(tasks),
        noise_std=config.noise,
        episode_length=config.episode_length,
        render_quality=config.render_quality,
        seed=seed,
    )
    with tqdm(total=len(tasks) * episodes, desc=f"held-out {folder.name} videos") as bar:
        generate_scripted_videos(folder, video_config, episodes, on_episode=bar.update)


def _write_toy_episodes(
    folder: Path, episodes: int, config: HeldOutConfig, seed: int, toy: Mapping[str, Any]
) -> None:
    from torchrl_prelar.data.synthetic import toy_episodes

    folder.mkdir(parents=True, exist_ok=True)
    length = config.episode_length
    name = toy.get("toy", "square")
    for index, episode in enumerate(toy_episodes(episodes, length, seed=seed, **toy)):
        path = folder / f"synthetic-{name}_{seed}_{index:05d}-{length}.npz"
        if path.exists():
            continue
        atomic_write(
            path,
            lambda handle, e=episode: np.savez_compressed(
                handle, image=e.frames, action=e.actions, state=e.states
            ),
        )


def load_clip_sets(
    folders: Mapping[str, str | Path], *, num_transitions: int, image_size: int = 64
) -> dict[str, TensorDict]:
    """Loads the ``[B, T]`` clips of each held-out folder (see :func:`episodes_to_clips`).

    Args:
        folders (Mapping): the folder of each set, by name.

    Keyword Args:
        num_transitions (int): T, transitions per clip.
        image_size (int, optional): frame height and width. Defaults to ``64``.

    Examples:
        >>> import tempfile
        >>> folders = generate_held_out_sets(tempfile.mkdtemp(), HeldOutConfig(
        ...     seen_episodes=2, unseen_episodes=2, episode_length=8), synthetic=True)
        >>> sets = load_clip_sets(folders, num_transitions=4)
        >>> {name: clips.shape for name, clips in sets.items()}
        {'seen': torch.Size([4, 4]), 'unseen': torch.Size([4, 4])}
    """
    return {
        name: episodes_to_clips(
            load_episodes(folder, image_size=image_size), num_transitions=num_transitions
        )
        for name, folder in folders.items()
    }


def transfer_pair(clips: TensorDict) -> tuple[int, int]:
    """Picks the clip indices ``(source, target)`` of the transfer GIF.

    They are the first clip of the first episode and the first clip of the middle episode
    (another task in scripted sets, whose files sort by generation time, task by task).

    Args:
        clips (TensorDict): ``[B, T]`` clips with their ``"episode"``.

    Examples:
        >>> import torch
        >>> clips = TensorDict({"episode": torch.tensor([[0], [0], [1], [2]])}, [4, 1])
        >>> transfer_pair(clips)
        (0, 2)
    """
    episode = clips["episode"][:, 0]
    ids = episode.unique()
    middle = ids[ids.numel() // 2]
    return 0, int((episode == middle).nonzero()[0])


class LatentActionMonitor:
    """Evaluates the latent actions on the held-out sets every ``every`` updates.

    Call :meth:`on_step` after each pre-training update: at multiples of ``every`` and at
    ``last_step`` it runs :func:`evaluate_latent_actions` on every set and logs
    :data:`LOGGED_FIGURES` as ``<figure>_<set>`` through ``log(metrics, step)``. The last
    result is kept, so :meth:`evaluate` at the same step costs nothing.

    Args:
        world_model (PreLARWorldModel): the world model being pre-trained.
        clip_sets (Mapping): held-out clips per set name (:func:`load_clip_sets`).

    Keyword Args:
        context (int): observed transitions of the open-loop imagination.
        every (int): updates between two evaluations (0: only at ``last_step``).
        last_step (int): the run's final update.
        log (Callable, optional): receives the logged figures and the step. Defaults to
            ``None`` (nothing logged).
        seed (int, optional): seed of the evaluation. Defaults to ``0``.

    Raises:
        ValueError: if ``context`` leaves fewer than ``MIN_IMAGINED`` imagined frames in the
            clips of a set (checked here, not at the first evaluation).
    """

    def __init__(
        self,
        world_model: PreLARWorldModel,
        clip_sets: Mapping[str, TensorDict],
        *,
        context: int,
        every: int,
        last_step: int,
        log: Callable[[dict[str, float], int], None] | None = None,
        seed: int = 0,
    ) -> None:
        self.world_model = world_model
        self.clip_sets = dict(clip_sets)
        self.context = context
        self.every = every
        self.last_step = last_step
        self.log = log
        self.seed = seed
        self._last: tuple[int, dict[str, dict]] | None = None
        for clips in self.clip_sets.values():
            check_context(context, clips.shape[1])

    def on_step(self, step: int) -> None:
        """Evaluates at multiples of ``every`` and at ``last_step``."""
        if step == self.last_step or (self.every and step % self.every == 0):
            self.evaluate(step)

    def evaluate(self, step: int) -> dict[str, dict]:
        """Returns the figures of every set at ``step`` (logged when computed)."""
        if self._last is not None and self._last[0] == step:
            return self._last[1]
        results = {
            name: evaluate_latent_actions(
                self.world_model, clips, context=self.context, seed=self.seed
            )
            for name, clips in self.clip_sets.items()
        }
        if self.log is not None:
            logged = {
                f"{figure}_{name}": results[name][figure]
                for name in results
                for figure in LOGGED_FIGURES
                if figure in results[name]
            }
            self.log(logged, step)
        self._last = (step, results)
        return results

    def save_transfer_gif(self, path: str | Path, set_name: str = "unseen") -> Path:
        """Saves the transfer GIF (:func:`save_transfer_gif`) on a pair of ``set_name`` clips.

        Args:
            path (str or Path): the GIF file.
            set_name (str, optional): the held-out set. Defaults to ``"unseen"``.

        Returns:
            the path of the GIF.
        """
        clips = self.clip_sets[set_name]
        source, target = transfer_pair(clips)
        return save_transfer_gif(
            self.world_model,
            clips,
            path,
            source=source,
            target=target,
            context=self.context,
            seed=self.seed,
        )


def save_latent_action_results(run_dir: str | Path, results: Mapping[str, Any]) -> Path:
    """Writes ``results`` to ``run_dir/latent_actions.json`` and into ``summary.json``.

    ``summary.json`` gets them under ``"pretrain" -> "latent_actions"``, the rest of the
    ``"pretrain"`` section kept.

    Args:
        run_dir (str or Path): the run's folder.
        results (Mapping): the figures per set.

    Returns:
        the path of ``latent_actions.json``.

    Examples:
        >>> import tempfile
        >>> run_dir = Path(tempfile.mkdtemp())
        >>> path = save_latent_action_results(run_dir, {"seen": {"probe_r2": 0.5}})
        >>> json.loads((run_dir / "summary.json").read_text())["pretrain"]["latent_actions"]
        {'seen': {'probe_r2': 0.5}}
    """
    path = Path(run_dir) / RESULTS_FILE
    atomic_write_text(path, json.dumps(results, indent=2))
    update_summary(run_dir, "pretrain", {"latent_actions": dict(results)}, merge=True)
    return path
