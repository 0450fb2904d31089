"""What a pre-trained latent action knows about the true action, and whether the RSSM uses it.

Held-out episodes that carry their true actions (the scripted Meta-world generator writes
them; :class:`~torchrl_prelar.data.sources.RLBenchSource` reads them) are cut into ``[B, T]``
clips by :func:`episodes_to_clips`. :func:`evaluate_latent_actions` then measures three things
with the world model in eval mode, its latent actions being modes (the Gaussian's mean, the
discrete code's arg-max, the deterministic output as it is):

* **probe**: a ridge-regression linear probe from the latent action to the true action, fitted
  on half of the episodes of each task and scored (R^2) on the other half
  (:func:`linear_probe_r2`, :func:`split_episodes`; the task comes from the episode's file
  name, :func:`episode_task`);
* **state KL**: KL(posterior || prior) of the RSSM in nats per step with the clips' own latent
  actions and with latent actions shuffled across clips (:func:`state_kl`); a prior that relies
  on the latent action gets much worse with another clip's;
* **controllability** (as in Genie): PSNR of an open-loop imagination driven by the inferred
  latent actions minus that driven by shuffled ones (:func:`controllability`).

:func:`save_transfer_gif` shows zero-shot transfer: the latent actions of clip A replayed from
clip B's start state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase

from torchrl_prelar.data.clips import transitions_from_frames
from torchrl_prelar.data.episodes import Episode, transition_actions
from torchrl_prelar.evaluation.open_loop import open_loop_rollout, psnr
from torchrl_prelar.media import save_video_panels
from torchrl_prelar.modules import PreLARWorldModel
from torchrl_prelar.modules.pixels import centred_pixels

__all__ = [
    "MIN_IMAGINED",
    "check_context",
    "controllability",
    "episode_task",
    "episodes_to_clips",
    "evaluate_latent_actions",
    "linear_probe_r2",
    "load_episodes",
    "posterior_rollout",
    "save_transfer_gif",
    "shuffle_index",
    "split_episodes",
    "state_kl",
    "step_state_kl",
]

#: Fewest imagined frames (``T - context``) the controllability figure is computed over.
MIN_IMAGINED = 5
_CLIP_KEYS = ("pixels", ("next", "pixels"), "is_init", "true_action", "episode")


def load_episodes(folder: str | Path, *, image_size: int = 64) -> list[Episode]:
    """Loads the episodes of a folder of APV-format ``.npz`` files, in file-name order.

    Every episode must carry its true actions (key ``"action"``) and frames of
    ``image_size`` x ``image_size`` pixels.

    Args:
        folder (str or Path): the folder (read by
            :class:`~torchrl_prelar.data.sources.RLBenchSource`).

    Keyword Args:
        image_size (int, optional): frame height and width. Defaults to ``64``.

    Raises:
        ValueError: naming the episode that cannot be read or has no ``"action"`` key.
        FileNotFoundError: if ``folder`` does not exist or holds no ``.npz`` file.

    Examples:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> np.savez_compressed(folder / "t-a_00000-4.npz", image=np.zeros((5, 64, 64, 3),
        ...                     np.uint8), action=np.zeros((5, 4), np.float32))
        >>> [episode.actions.shape for episode in load_episodes(folder)]
        [(5, 4)]
    """
    from torchrl_prelar.data.sources.rlbench import RLBenchSource

    episodes = []
    source = RLBenchSource(folder, image_size=(image_size, image_size), name=Path(folder).name)
    for item in source:
        if not isinstance(item, Episode):
            raise ValueError(f"held-out episode {item.name} unusable: {item.reason}")
        if item.actions is None:
            raise ValueError(
                f"held-out episode {item.name} in {folder} has no 'action' key: the "
                "latent-action evaluation needs episodes with their true actions."
            )
        episodes.append(item)
    return episodes


def episodes_to_clips(episodes: Sequence[Episode], *, num_transitions: int) -> TensorDict:
    """Cuts episodes into non-overlapping clips of ``num_transitions`` transitions.

    An episode of ``L + 1`` frames gives ``L // T`` clips (frames ``kT .. (k+1)T``); the
    remaining transitions are left out.

    Args:
        episodes (sequence of Episode): the episodes, each with its actions.

    Keyword Args:
        num_transitions (int): T, transitions per clip.

    Returns:
        a ``[B, T]`` TensorDict with uint8 ``"pixels"`` (o_t) and ``("next", "pixels")``
        (o_{t+1}), ``[3, H, W]``; ``"is_init"`` (True at t = 0 of every clip);
        ``"true_action"``: the action taken at o_t that leads to o_{t+1} (TorchRL's transition
        convention, APV ``action[t + 1]``, mapped by
        :func:`~torchrl_prelar.data.episodes.transition_actions`); ``"episode"``: the index of
        the clip's episode in ``episodes``; ``"task"``: the index of its task
        (:func:`episode_task`) among the sorted distinct tasks of ``episodes``;
        ``"true_state"``: the episode's state at o_t, when every episode has states
        (:attr:`Episode.states`).

    Raises:
        ValueError: if ``num_transitions`` is below 1 or ``episodes`` is empty; naming the
            episode that has no actions, actions of the wrong shape, or fewer than ``T + 1``
            frames.

    Examples:
        >>> episode = Episode(np.zeros((11, 8, 8, 3), np.uint8),
        ...                   np.arange(11, dtype=np.float32)[:, None], name="ep")
        >>> clips = episodes_to_clips([episode], num_transitions=4)
        >>> clips.shape, clips["true_action"][1, :, 0].tolist()
        (torch.Size([2, 4]), [5.0, 6.0, 7.0, 8.0])
    """
    if num_transitions < 1:
        raise ValueError(f"num_transitions must be >= 1, got {num_transitions}.")
    if not episodes:
        raise ValueError("episodes is empty: expected at least one episode.")
    tasks = [episode_task(episode.name or f"episode {i}") for i, episode in enumerate(episodes)]
    task_index = {task: index for index, task in enumerate(sorted(set(tasks)))}
    with_states = all(episode.states is not None for episode in episodes)
    clips = [
        _episode_clips(episode, index, task_index[task], num_transitions, with_states)
        for index, (episode, task) in enumerate(zip(episodes, tasks, strict=True))
    ]
    return torch.cat(clips)


def episode_task(name: str) -> str:
    """The task of an episode named as the scripted writer names it, else ``name`` itself.

    The writer's files are ``<time>-<task with "_" for "-">_<index>-<length>.npz``
    (:func:`~torchrl_prelar.data.sources.metaworld_scripted.parse_episode_filename`); an
    episode named otherwise is a task of its own.

    Args:
        name (str): the episode's name (a file name or path).

    Examples:
        >>> episode_task("/data/20261127T104432-lever_pull_v3_00003-48.npz")
        'lever_pull_v3'
        >>> episode_task("clip-7")
        'clip-7'
    """
    from torchrl_prelar.data.sources.metaworld_scripted import parse_episode_filename

    parsed = parse_episode_filename(Path(name).name)
    if parsed is None:
        return name
    task, _, index = parsed[1].rpartition("_")
    return task if task and index.isdigit() else name


def _episode_clips(
    episode: Episode, index: int, task: int, steps: int, with_states: bool
) -> TensorDict:
    name = episode.name or f"episode {index}"
    frames = torch.as_tensor(np.asarray(episode.frames))
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(
            f"{name}: frames have dtype {frames.dtype} and shape {tuple(frames.shape)}, "
            "expected uint8 [L + 1, H, W, 3]."
        )
    if episode.actions is None:
        raise ValueError(f"{name}: no actions ('true_action' needs the episode's actions).")
    actions = torch.as_tensor(np.asarray(episode.actions), dtype=torch.float32)
    if actions.ndim != 2 or actions.shape[0] != frames.shape[0]:
        raise ValueError(
            f"{name}: actions have shape {tuple(actions.shape)}, expected "
            f"[{frames.shape[0]}, A] (one per frame, APV convention)."
        )
    num_clips = (frames.shape[0] - 1) // steps
    if num_clips == 0:
        raise ValueError(
            f"{name}: {frames.shape[0]} frames, expected at least {steps + 1} for one clip of "
            f"{steps} transitions."
        )
    used = num_clips * steps
    pixels = frames[: used + 1].permute(0, 3, 1, 2)
    window = torch.arange(num_clips)[:, None] * steps + torch.arange(steps + 1)
    extra = {}
    if with_states:
        states = torch.as_tensor(np.asarray(episode.states), dtype=torch.float32)
        if states.ndim != 2 or states.shape[0] != frames.shape[0]:
            raise ValueError(
                f"{name}: states have shape {tuple(states.shape)}, expected "
                f"[{frames.shape[0]}, S] (one per frame)."
            )
        extra["true_state"] = states[:used].reshape(num_clips, steps, -1)  # the state at o_t
        # what the two frames show: the state's change from o_t to o_t+1
        extra["true_state_change"] = (states[1 : used + 1] - states[:used]).reshape(
            num_clips, steps, -1
        )
    return transitions_from_frames(
        pixels[window],
        true_action=transition_actions(actions)[:used].reshape(num_clips, steps, -1),
        episode=torch.full((num_clips, steps), index, dtype=torch.int64),
        task=torch.full((num_clips, steps), task, dtype=torch.int64),
        **extra,
    )


def linear_probe_r2(
    train_features: torch.Tensor,
    train_targets: torch.Tensor,
    test_features: torch.Tensor,
    test_targets: torch.Tensor,
    *,
    ridge: float = 1e-3,
    multioutput: Literal["uniform_average", "variance_weighted", "raw_values"] = "uniform_average",
) -> torch.Tensor:
    """Fits ``targets ~ features @ W + b`` on the train set and returns R^2 on the test set.

    Ridge regression (the bias is not penalised) with penalty ``ridge * tr(X^T X) / F`` on
    the centred train features ``X`` (``F`` features), so ``ridge`` does not depend on their
    scale; ``ridge=0`` is least squares. R^2 = 1 - SSE / SST with SST around the test mean,
    as scikit-learn's ``r2_score``: per target dim (``"raw_values"``), averaged uniformly over
    dims (``"uniform_average"``, the default) or pooled (``"variance_weighted"``). A constant
    test target scores 1 if predicted exactly, else 0. 1 is perfect, 0 is no better than the
    test mean, negative is worse.

    Args:
        train_features (torch.Tensor): ``[N, F]`` features the probe is fitted on.
        train_targets (torch.Tensor): ``[N, D]`` targets it is fitted to.
        test_features (torch.Tensor): ``[M, F]`` features it is scored on.
        test_targets (torch.Tensor): ``[M, D]`` targets it is scored against.

    Keyword Args:
        ridge (float, optional): relative ridge penalty. Defaults to ``1e-3``.
        multioutput (str, optional): ``"uniform_average"``, ``"variance_weighted"`` or
            ``"raw_values"``. Defaults to ``"uniform_average"``.

    Returns:
        R^2, a scalar tensor (``[D]`` with ``"raw_values"``).

    Examples:
        >>> x = torch.randn(200, 3)
        >>> y = x @ torch.randn(3, 2) + 1
        >>> round(float(linear_probe_r2(x[:100], y[:100], x[100:], y[100:], ridge=0)), 3)
        1.0
    """
    return _r2_from_errors(
        *_probe_errors(train_features, train_targets, test_features, test_targets, ridge),
        multioutput,
    )


def fit_linear_probe(
    train_features: torch.Tensor, train_targets: torch.Tensor, *, ridge: float = 1e-3
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The ridge fit of :func:`linear_probe_r2`, as a function from features ``[M, F]`` to
    predicted targets ``[M, D]`` (float64).

    Examples:
        >>> x = torch.randn(100, 3)
        >>> predict = fit_linear_probe(x, x @ torch.ones(3, 1) + 2, ridge=0)
        >>> round(float(predict(torch.zeros(1, 3))), 3)
        2.0
    """
    _check_probe_inputs(train_features, train_targets, "train")
    x, y = train_features.double(), train_targets.double()
    x_mean, y_mean = x.mean(0), y.mean(0)
    x, y = x - x_mean, y - y_mean
    penalty = ridge * x.pow(2).sum() / x.shape[1]
    if penalty > 0:
        x = torch.cat([x, penalty.sqrt() * torch.eye(x.shape[1], dtype=x.dtype)])
        y = torch.cat([y, y.new_zeros(x.shape[1], y.shape[1])])
    weight = torch.linalg.lstsq(x, y).solution

    def predict(features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 2 or features.shape[1] != weight.shape[0]:
            raise ValueError(
                f"Expected features [M, {weight.shape[0]}] (the train width), got "
                f"{list(features.shape)}."
            )
        return (features.double() - x_mean) @ weight + y_mean

    return predict


def _probe_errors(
    train_features: torch.Tensor,
    train_targets: torch.Tensor,
    test_features: torch.Tensor,
    test_targets: torch.Tensor,
    ridge: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per target dim, the test SSE of the ridge fit and the test SST around the test mean."""
    _check_probe_inputs(train_features, train_targets, "train")
    _check_probe_inputs(test_features, test_targets, "test")
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(
            f"train and test features differ in width: {train_features.shape[1]} and "
            f"{test_features.shape[1]}."
        )
    prediction = fit_linear_probe(train_features, train_targets, ridge=ridge)(test_features)
    test = test_targets.double()
    return (test - prediction).pow(2).sum(0), (test - test.mean(0)).pow(2).sum(0)


def _r2_from_errors(sse: torch.Tensor, sst: torch.Tensor, multioutput: str) -> torch.Tensor:
    if multioutput == "variance_weighted":
        return 1 - sse.sum() / sst.sum()
    r2 = torch.where(sst > 0, 1 - sse / sst.clamp_min(1e-300), (sse == 0).double())
    if multioutput == "raw_values":
        return r2
    if multioutput == "uniform_average":
        return r2.mean()
    raise ValueError(
        f"multioutput must be 'uniform_average', 'variance_weighted' or 'raw_values', got "
        f"{multioutput!r}."
    )


def _check_probe_inputs(features: torch.Tensor, targets: torch.Tensor, part: str) -> None:
    if features.ndim != 2 or targets.ndim != 2 or features.shape[0] != targets.shape[0]:
        raise ValueError(
            f"Expected {part} features [N, F] and targets [N, A] with the same N, got "
            f"{tuple(features.shape)} and {tuple(targets.shape)}."
        )
    if features.shape[0] < 2:
        raise ValueError(f"The {part} set has {features.shape[0]} samples, expected >= 2.")


def split_episodes(
    episode: torch.Tensor, *, seed: int = 0, groups: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks (train, test) over ``episode`` ids: half of the episodes each.

    The distinct ids are permuted with a generator of ``seed``; the first ``n // 2`` are
    train, the rest test, so no episode is on both sides. With ``groups`` (e.g. the task of
    each row, constant within an episode) the split is made within each group, so every
    group of two or more episodes has episodes on both sides (a group of ``n`` gives
    ``ceil(n / 2)`` to train): a probe is then never scored on a task it was not fitted on.
    If no group holds two episodes, the groups are ignored.

    Args:
        episode (torch.Tensor): the episode id of each row.

    Keyword Args:
        seed (int, optional): seed of the permutation. Defaults to ``0``.
        groups (torch.Tensor, optional): the group of each row, of the shape of ``episode``.
            Defaults to ``None`` (no groups).

    Returns:
        the boolean masks ``(train, test)``, of the shape of ``episode``.

    Raises:
        ValueError: if ``episode`` holds fewer than two distinct ids, ``groups`` has another
            shape, or a group changes within an episode.

    Examples:
        >>> train, test = split_episodes(torch.tensor([0, 0, 1, 1, 2, 3]))
        >>> bool((train ^ test).all()), int(train.sum() > 0), int(test.sum() > 0)
        (True, 1, 1)
        >>> tasks = torch.tensor([5, 5, 6, 6])
        >>> train, _ = split_episodes(torch.tensor([0, 1, 2, 3]), groups=tasks)
        >>> sorted(tasks[train].tolist())
        [5, 6]
    """
    ids = episode.unique()
    if ids.numel() < 2:
        raise ValueError(
            f"'episode' holds {ids.numel()} distinct episode, expected >= 2 to fit the probe on "
            "some episodes and score it on others."
        )
    generator = torch.Generator().manual_seed(seed)
    group_of = _episode_groups(episode, ids, groups)
    if group_of is None or group_of.unique(return_counts=True)[1].max() < 2:
        order = ids[torch.randperm(ids.numel(), generator=generator)]
        train_ids = order[: ids.numel() // 2]
    else:
        parts = []
        for group in group_of.unique():
            members = ids[group_of == group]
            members = members[torch.randperm(members.numel(), generator=generator)]
            parts.append(members[: (members.numel() + 1) // 2])
        train_ids = torch.cat(parts)
    train = torch.isin(episode, train_ids)
    return train, ~train


def _episode_groups(
    episode: torch.Tensor, ids: torch.Tensor, groups: torch.Tensor | None
) -> torch.Tensor | None:
    """The group of each distinct episode id, checked to be constant within the episode."""
    if groups is None:
        return None
    if groups.shape != episode.shape:
        raise ValueError(
            f"groups must have the shape of 'episode' {tuple(episode.shape)}, got "
            f"{tuple(groups.shape)}."
        )
    group_of = torch.empty_like(ids)
    for position, episode_id in enumerate(ids):
        values = groups[episode == episode_id].unique()
        if values.numel() != 1:
            raise ValueError(
                f"episode {int(episode_id)} spans groups {values.tolist()}: a group (task) "
                "must be constant within an episode."
            )
        group_of[position] = values[0]
    return group_of


def shuffle_index(num_clips: int, *, seed: int = 0) -> torch.Tensor:
    """A random permutation without fixed points: clip ``i`` takes clip ``index[i]``'s data.

    A random cycle through all clips (seeded), so every clip gets another clip's sequence.

    Args:
        num_clips (int): the number of clips, at least 2.

    Keyword Args:
        seed (int, optional): seed of the cycle. Defaults to ``0``.

    Raises:
        ValueError: if ``num_clips`` is below 2.

    Examples:
        >>> index = shuffle_index(5, seed=1)
        >>> sorted(index.tolist()), bool((index != torch.arange(5)).all())
        ([0, 1, 2, 3, 4], True)
    """
    if num_clips < 2:
        raise ValueError(f"Shuffling across clips needs >= 2 clips, got {num_clips}.")
    order = torch.randperm(num_clips, generator=torch.Generator().manual_seed(seed))
    index = torch.empty_like(order)
    index[order] = order.roll(-1)
    return index


class _GivenLatentActions(TensorDictModuleBase):
    """Stands in for the action model: writes latent actions computed beforehand."""

    def __init__(self, latent_action: torch.Tensor, like: TensorDictModuleBase):
        super().__init__()
        self.latent_action = latent_action
        self.in_keys = list(like.in_keys)
        self.out_keys = ["latent_action"]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        tensordict.set("latent_action", self.latent_action)
        return tensordict


@torch.no_grad()
def posterior_rollout(
    world_model: PreLARWorldModel,
    clips: TensorDictBase,
    *,
    latent_action: torch.Tensor | None = None,
    seed: int | None = 0,
) -> TensorDictBase:
    """Runs the world model on ``clips`` in eval mode (latent actions are modes).

    The RSSM's state samples are drawn from a stream of ``seed``, and the global random state
    is left as it was; the model's training mode is restored.

    Args:
        world_model (PreLARWorldModel): the world model.
        clips (TensorDictBase): ``[B, T]`` clips (see :func:`episodes_to_clips`).

    Keyword Args:
        latent_action (torch.Tensor, optional): ``[B, T, D]`` latent actions the RSSM reads
            instead of the action model's. Defaults to ``None``.
        seed (int, optional): seed of the RSSM's state samples; ``None`` draws from the
            global random state. Defaults to ``0``.

    Returns:
        the world model's output on a copy of ``clips``.

    Examples:
        >>> from torchrl_prelar import make_world_model
        >>> from torchrl_prelar.data.synthetic import moving_square_batch
        >>> out = posterior_rollout(make_world_model(), moving_square_batch(2, 3))
        >>> out["latent_action"].shape, out["next", "posterior_logits"].shape
        (torch.Size([2, 3, 16]), torch.Size([2, 3, 16, 16]))
    """
    was_training = world_model.training
    action_model = world_model.action_model
    world_model.eval()
    try:
        if latent_action is not None:
            world_model.action_model = _GivenLatentActions(latent_action, action_model)
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            return world_model(clips.clone())
    finally:
        world_model.action_model = action_model
        world_model.train(was_training)


def state_kl(out: TensorDictBase, used: torch.Tensor) -> float:
    """Mean KL(posterior || prior) in nats per step over the ``used`` steps of a rollout.

    ``out`` holds the RSSM's categorical ``("next", "posterior_logits")`` and
    ``("next", "prior_logits")`` (``[B, T, categoricals, classes]``); the KL is summed over
    categoricals and averaged over the steps where ``used`` (``[B, T]``) is True.

    Args:
        out (TensorDictBase): a rollout, as :func:`posterior_rollout` returns it.
        used (torch.Tensor): ``[B, T]`` boolean mask of the steps averaged over.

    Examples:
        >>> logits = torch.zeros(1, 2, 1, 2)
        >>> out = TensorDict({("next", "posterior_logits"): logits,
        ...                   ("next", "prior_logits"): logits}, [1, 2])
        >>> state_kl(out, torch.ones(1, 2, dtype=torch.bool))
        0.0
    """
    return float(step_state_kl(out)[used].mean())


def step_state_kl(out: TensorDictBase) -> torch.Tensor:
    """KL(posterior || prior) per step (``[B, T]``, nats), summed over categoricals.

    Args:
        out (TensorDictBase): a rollout holding ``("next", "posterior_logits")`` and
            ``("next", "prior_logits")``.

    Examples:
        >>> logits = torch.zeros(1, 2, 1, 2)
        >>> out = TensorDict({("next", "posterior_logits"): logits,
        ...                   ("next", "prior_logits"): logits}, [1, 2])
        >>> step_state_kl(out)
        tensor([[0., 0.]])
    """
    posterior = out["next", "posterior_logits"].float().log_softmax(-1)
    prior = out["next", "prior_logits"].float().log_softmax(-1)
    return (posterior.exp() * (posterior - prior)).sum((-1, -2))


def controllability(
    truth: torch.Tensor, own: torch.Tensor, shuffled: torch.Tensor, *, context: int
) -> dict[str, float]:
    """Mean PSNR (dB) of the imagined frames driven by own vs shuffled latent actions.

    ``truth``, ``own`` and ``shuffled`` are ``[B, T, C, H, W]`` as returned by
    :func:`~torchrl_prelar.evaluation.open_loop_rollout`; frames ``context ..`` are imagined.
    ``delta_psnr = psnr_own - psnr_shuffled`` is positive when the imagination follows the
    latent actions it is given.

    Args:
        truth (torch.Tensor): the true frames.
        own (torch.Tensor): frames imagined with each clip's own latent actions.
        shuffled (torch.Tensor): frames imagined with another clip's latent actions.

    Keyword Args:
        context (int): observed frames; the PSNR is taken over the frames after them.

    Returns:
        ``psnr_own``, ``psnr_shuffled`` and ``delta_psnr``, in dB.

    Examples:
        >>> truth = torch.zeros(1, 4, 3, 2, 2)
        >>> out = controllability(truth, truth + 0.01, truth + 0.1, context=2)
        >>> round(out["delta_psnr"], 3)
        20.0
    """
    return _psnr_figures(
        _imagined_psnr(own, truth, context), _imagined_psnr(shuffled, truth, context)
    )


def _standardised(features: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    """``features`` centred and scaled per column by the ``train`` rows' mean and std (a
    constant column is only centred)."""
    mean, std = features[train].mean(0), features[train].std(0)
    return (features - mean) / torch.where(std > 0, std, torch.ones_like(std))


def _check_clips(clips: TensorDictBase, context: int) -> None:
    if clips.ndim != 2:
        raise ValueError(f"Expected clips with batch size [B, T], got {tuple(clips.shape)}.")
    keys = clips.keys(include_nested=True)
    for key in _CLIP_KEYS:
        if key not in keys:
            raise KeyError(
                f"clips have no {key!r} key: expected {list(_CLIP_KEYS)} (see episodes_to_clips)."
            )
    action = clips["true_action"]
    if action.ndim != 3:
        raise ValueError(
            f"'true_action' must be [B, T, A] = [{clips.shape[0]}, {clips.shape[1]}, A], got "
            f"{tuple(action.shape)}."
        )
    check_context(context, clips.shape[1])


def check_context(context: int, steps: int, name: str = "context") -> None:
    """Rejects a ``context`` that leaves fewer than :data:`MIN_IMAGINED` imagined frames.

    Args:
        context (int): observed transitions of the open-loop imagination.
        steps (int): T, transitions per clip.
        name (str, optional): what the error message calls ``context``. Defaults to
            ``"context"``.

    Raises:
        ValueError: if ``context`` is not in ``[1, steps - MIN_IMAGINED]``.

    Examples:
        >>> check_context(5, 24)
        >>> check_context(8, 8, name="evaluation.context")
        Traceback (most recent call last):
        ...
        ValueError: evaluation.context must be in [1, 3] (T = 8 transitions, ...), got 8.
    """
    if not 1 <= context <= steps - MIN_IMAGINED:
        raise ValueError(
            f"{name} must be in [1, {steps - MIN_IMAGINED}] (T = {steps} transitions, at least "
            f"{MIN_IMAGINED} imagined frames), got {context}."
        )


def evaluate_latent_actions(
    world_model: PreLARWorldModel,
    clips: TensorDictBase,
    *,
    context: int = 5,
    seed: int = 0,
    ridge: float = 1e-3,
    batch_size: int = 64,
    motion_dims: int = 3,
) -> dict[str, float | int | list[float]]:
    """Probe, state KL and controllability of the latent actions on held-out ``clips``.

    The model's training mode and the global random state are left as they were.

    Args:
        world_model (PreLARWorldModel): a pre-trained world model whose action model writes
            ``"latent_action"`` (Gaussian, deterministic or discrete
            :class:`~torchrl_prelar.LatentActionModel`).
        clips (TensorDictBase): ``[B, T]`` clips from :func:`episodes_to_clips` (keys
            ``"pixels"``, ``("next", "pixels")``, ``"is_init"``, ``"true_action"``,
            ``"episode"``), of at least two episodes.

    Keyword Args:
        context (int, optional): observed transitions of the open-loop imagination, in
            ``[1, T - 5]``. Defaults to ``5``.
        seed (int, optional): seed of the episode split, the shuffle and the RSSM's state
            samples. Defaults to ``0``.
        ridge (float, optional): relative ridge penalty of the probe
            (:func:`linear_probe_r2`). Defaults to ``1e-3``.
        batch_size (int, optional): clips per forward pass (bounds the memory; the RSSM's
            state samples, drawn per batch from the stream of ``seed``, depend on it).
            Defaults to ``64``.
        motion_dims (int, optional): leading state dims whose change the motion probe targets
            (Meta-world's scripted episodes: 3, the hand's x, y, z), and leading action dims of
            ``probe_r2_action_xyz``. Defaults to ``3``.

    Returns:
        ``probe_r2`` (R^2 averaged uniformly over action dims), ``probe_r2_per_dim`` and
        ``probe_r2_pooled`` (1 - SSE / SST summed over dims, so a dim that barely varies in
        the test episodes cannot dominate it): the linear probe from the latent action (mode)
        to the true action, fitted on half of the episodes of each task (the clips'
        ``"task"``, if they have it) and scored on the others, first transition of each clip
        left out (the RSSM zeroes the action there); with clips that carry ``"true_state"``,
        also ``probe_r2_state_only`` (the same probe from the true state at o_t alone) and
        ``probe_r2_with_state`` (from the latent action and that state side by side): a
        scripted expert's action depends on the state, so the gap between the two is what the
        latent action knows of the action beyond the state; with ``"true_state_change"``,
        the probe two frames can answer, on standardised features: ``probe_r2_motion`` (from
        the latent action to the change of the first ``motion_dims`` state dims between o_t
        and o_t+1, the hand's displacement in Meta-world), ``probe_r2_motion_state_only``
        and ``probe_r2_motion_with_state`` (from the state at o_t, alone and beside the
        latent action), and ``probe_r2_action_xyz`` (the action probe on its first
        ``motion_dims`` dims); ``state_kl`` and ``shuffled_state_kl`` (nats per step, same
        steps) with the clips' own latent actions and with each clip given another clip's
        (:func:`shuffle_index`), and ``state_kl_shuffled_ratio`` (shuffled / own);
        ``psnr_own``, ``psnr_shuffled``, ``delta_psnr`` (:func:`controllability` over the
        ``T - context`` imagined frames); ``episodes``, ``clips``, ``context``.

    Examples:
        >>> from torchrl_prelar import make_world_model
        >>> from torchrl_prelar.data.synthetic import moving_square_episodes
        >>> clips = episodes_to_clips(moving_square_episodes(4, 12), num_transitions=6)
        >>> figures = evaluate_latent_actions(make_world_model(), clips, context=1)
        >>> sorted(figures)[:4]
        ['clips', 'context', 'delta_psnr', 'episodes']
    """
    _check_clips(clips, context)
    clips = clips.cpu()
    used = ~clips["is_init"].reshape(clips.shape)
    groups = clips["task"][used] if "task" in clips.keys() else None
    train, test = split_episodes(clips["episode"][used], seed=seed, groups=groups)
    device = next(world_model.parameters()).device
    batches = [slice(start, start + batch_size) for start in range(0, clips.shape[0], batch_size)]
    own = [_rollout(world_model, clips[part].to(device), None, seed) for part in batches]
    latent = torch.cat([batch_latent for batch_latent, _ in own])
    shuffled_latent = latent[shuffle_index(clips.shape[0], seed=seed)]
    shuffled = [
        _rollout(world_model, clips[part].to(device), shuffled_latent[part].to(device), seed)
        for part in batches
    ]
    features, targets = latent[used], clips["true_action"][used]
    errors = _probe_errors(features[train], targets[train], features[test], targets[test], ridge)
    r2 = _r2_from_errors(*errors, "raw_values")
    pooled_r2 = _r2_from_errors(*errors, "variance_weighted")
    state_figures = {}
    if "true_state" in clips.keys():  # what the code knows of the action beyond the state
        state = clips["true_state"][used]
        for name, inputs in (
            ("state_only", state),
            ("with_state", torch.cat([features, state], 1)),
        ):
            state_figures[f"probe_r2_{name}"] = float(
                linear_probe_r2(
                    inputs[train], targets[train], inputs[test], targets[test], ridge=ridge
                )
            )
        if "true_state_change" in clips.keys():
            motion = clips["true_state_change"][used][:, :motion_dims]
            for name, inputs in (
                ("motion", features),
                ("motion_state_only", state),
                ("motion_with_state", torch.cat([features, state], 1)),
            ):
                inputs = _standardised(inputs, train)
                state_figures[f"probe_r2_{name}"] = float(
                    linear_probe_r2(
                        inputs[train], motion[train], inputs[test], motion[test], ridge=ridge
                    )
                )
            state_figures["probe_r2_action_xyz"] = float(r2[:motion_dims].mean())
    own_kl = float(torch.cat([kl for _, kl in own])[used].mean())
    shuffled_kl = float(torch.cat([kl for _, kl in shuffled])[used].mean())
    figures = {
        "probe_r2": float(r2.mean()),
        "probe_r2_per_dim": r2.tolist(),
        "probe_r2_pooled": float(pooled_r2),
        "state_kl": own_kl,
        "shuffled_state_kl": shuffled_kl,
        "state_kl_shuffled_ratio": shuffled_kl / own_kl if own_kl > 0 else float("nan"),
        **state_figures,
    }
    own_psnr, shuffled_psnr = zip(
        *(
            _clip_psnrs(world_model, clips[part].to(device), shuffled_latent[part], context, seed)
            for part in batches
        ),
        strict=True,
    )
    figures.update(_psnr_figures(torch.cat(own_psnr), torch.cat(shuffled_psnr)))
    figures.update(
        episodes=int(clips["episode"].unique().numel()), clips=clips.shape[0], context=context
    )
    return figures


def _rollout(
    world_model: PreLARWorldModel,
    clips: TensorDictBase,
    latent_action: torch.Tensor | None,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent actions and per-step state KL of one :func:`posterior_rollout`, on the CPU."""
    out = posterior_rollout(world_model, clips, latent_action=latent_action, seed=seed)
    return out["latent_action"].cpu(), step_state_kl(out).cpu()


def _clip_psnrs(
    world_model: PreLARWorldModel,
    clips: TensorDictBase,
    shuffled_latent: torch.Tensor,
    context: int,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-clip PSNR of the open-loop imagination with own and with shuffled latent actions."""
    truth, own = open_loop_rollout(world_model, clips, context, seed=seed)
    _, shuffled = open_loop_rollout(
        world_model, clips, context, latent_action=shuffled_latent.to(truth.device), seed=seed
    )
    return _imagined_psnr(own, truth, context), _imagined_psnr(shuffled, truth, context)


def _imagined_psnr(prediction: torch.Tensor, truth: torch.Tensor, context: int) -> torch.Tensor:
    """``[B]`` mean PSNR of each clip's imagined frames ``context ..``."""
    return psnr(prediction[:, context:], truth[:, context:]).mean(1).cpu()


def _psnr_figures(own: torch.Tensor, shuffled: torch.Tensor) -> dict[str, float]:
    own_psnr, shuffled_psnr = float(own.mean()), float(shuffled.mean())
    return {
        "psnr_own": own_psnr,
        "psnr_shuffled": shuffled_psnr,
        "delta_psnr": own_psnr - shuffled_psnr,
    }


@torch.no_grad()
def save_transfer_gif(
    world_model: PreLARWorldModel,
    clips: TensorDictBase,
    path: str | Path,
    *,
    source: int,
    target: int,
    context: int,
    seed: int = 0,
    fps: int = 4,
) -> Path:
    """Saves a GIF of zero-shot transfer: clip ``source``'s latent actions from ``target``'s start.

    Three panels per step, labelled: ``A`` = clip ``source`` (truth), ``B`` = clip ``target``
    (truth), ``B+A`` = clip ``target`` observed for ``context`` frames, then imagined with the
    latent actions inferred from clip ``source`` (bar under it: green observed, red imagined).
    If the latent action carries the motion, ``B+A`` moves like ``A`` from where ``B`` was.

    Args:
        world_model (PreLARWorldModel): the world model.
        clips (TensorDictBase): ``[B, T]`` clips (see :func:`episodes_to_clips`).
        path (str or Path): the GIF file to write.

    Keyword Args:
        source (int): the clip whose latent actions are replayed.
        target (int): the clip whose start is observed.
        context (int): observed frames of ``target`` before the imagination.
        seed (int, optional): seed of the RSSM's state samples. Defaults to ``0``.
        fps (int, optional): frames per second of the GIF. Defaults to ``4``.

    Returns:
        the path of the GIF.

    Raises:
        ValueError: if ``source`` or ``target`` is not a clip index.

    Examples:
        >>> import tempfile
        >>> from torchrl_prelar import make_world_model
        >>> from torchrl_prelar.data.synthetic import moving_square_batch
        >>> path = Path(tempfile.mkdtemp()) / "transfer.gif"
        >>> save_transfer_gif(make_world_model(), moving_square_batch(2, 6), path,
        ...                   source=0, target=1, context=2).exists()
        True
    """
    for name, index in (("source", source), ("target", target)):
        if not 0 <= index < clips.shape[0]:
            raise ValueError(
                f"{name} must be a clip index in [0, {clips.shape[0] - 1}], got {index}."
            )
    clips = clips.to(next(world_model.parameters()).device)
    pair = clips[[source, target]]
    latent = posterior_rollout(world_model, pair, seed=seed)["latent_action"]
    truth, transferred = open_loop_rollout(
        world_model, pair[1:], context, latent_action=latent[:1], seed=seed
    )
    return save_video_panels(
        [centred_pixels(pair[0]["next", "pixels"]).cpu(), truth[0].cpu(), transferred[0].cpu()],
        path,
        context=context,
        bars=[False, False, True],
        labels=["A", "B", "B+A"],
        fps=fps,
    )
