"""Model gap: how well a pre-trained world model learns to follow real actions.

PreLAR's claim (SPEC section 1): an action-conditional pre-trained world model has a small
"model gap" to fine-tuning, so it transfers better than APV's action-free one. This module
measures it on real-action Meta-world episodes of the evaluation tasks (never seen in
pre-training), one *arm* per initialisation:

1. data: :func:`generate_model_gap_splits` renders noisy scripted-expert episodes into a
   train and a held-out folder (different seeds); :func:`make_transition_buffer` samples
   train clips and :func:`heldout_clips` cuts the held-out episodes into fixed clips, both as
   TorchRL transitions with the real ``"action"`` taken at o_t (mapped from the APV episode
   format by :func:`~torchrl_prelar.data.episodes.transition_actions`);
2. model: :func:`make_model_gap_world_model` builds the fine-tuning world model of an arm
   (pre-trained encoder / RSSM / decoder and a new action encoder; APV's stacked RSSMs;
   ``dreamer`` from scratch), without reward heads;
3. fine-tuning: :func:`finetune_world_model` trains the world model alone with the agent's
   world-model update (:func:`~torchrl_prelar.training.finetune_agent.
   make_world_model_stepper`) and SPEC section 3's schedule (encoder + pre-trained RSSM at
   learning rate 0 for the first ``freeze_updates``), and records the loss curve;
4. score: :func:`open_loop_scores` observes ``context`` frames of each held-out clip, then
   imagines the rest from the encoded real actions alone
   (:func:`~torchrl_prelar.evaluation.open_loop.open_loop_rollout`) and reports PSNR and MSE
   per imagined step, averaged over clips.

:func:`run_model_gap_arm` chains 2-4 for one arm and seed; ``experiments/model_gap.py`` runs
the arms x seeds and writes their results as JSON.

Examples:
    >>> from torchrl_prelar.data.synthetic import moving_square_episodes
    >>> buffer = make_transition_buffer(moving_square_episodes(4, 12), num_transitions=6,
    ...                                 batch_size=2)
    >>> clips = heldout_clips(moving_square_episodes(2, 12, seed=1), num_transitions=6)
    >>> result = run_model_gap_arm("dreamer", seed=0, sample=buffer.sample, clips=clips,
    ...                            context=2, updates=2, freeze_updates=1,
    ...                            world_model_kwargs={"rssm": {"deter": 64}})
    >>> len(result["loss"]), len(result["psnr"])
    (2, 4)
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDictBase
from torchrl.envs.transforms import RenameTransform

from torchrl_prelar.data.dataset import VideoExperienceReplay
from torchrl_prelar.data.episodes import ACTION_KEY, Episode, EpisodeSource
from torchrl_prelar.data.sources.metaworld_scripted import (
    ScriptedVideoConfig,
    generate_scripted_videos,
)
from torchrl_prelar.data.sources.rlbench import RLBenchSource
from torchrl_prelar.envs.metaworld import METAWORLD_EVAL_TASKS
from torchrl_prelar.evaluation.latent_actions import episodes_to_clips, load_episodes
from torchrl_prelar.evaluation.open_loop import open_loop_rollout, psnr
from torchrl_prelar.legacy import load_world_model_checkpoint
from torchrl_prelar.modules.pixels import centred_pixels
from torchrl_prelar.training.finetune_agent import (
    INITS,
    FinetuneWorldModel,
    WorldModelStepper,
    build_finetune_world_model,
    make_finetune_optimizer,
    make_world_model_stepper,
    set_representation_frozen,
)

__all__ = [
    "MODEL_GAP_ARMS",
    "ModelGapArm",
    "ModelGapSplits",
    "available_arms",
    "checkpoint_world_model_kwargs",
    "finetune_world_model",
    "generate_model_gap_splits",
    "heldout_clips",
    "last_frame_scores",
    "make_model_gap_world_model",
    "make_transition_buffer",
    "open_loop_scores",
    "run_model_gap_arm",
]

#: The real action in the transitions (TorchRL convention: taken at o_t, leads to o_{t+1}).
ACTION = "action"


@dataclass(frozen=True)
class ModelGapArm:
    """One initialisation of the fine-tuning world model.

    Args:
        name (str): arm name.
        init (str): ``init`` of :func:`~torchrl_prelar.training.finetune_agent.
            build_finetune_world_model` (``prelar``, ``apv``, ``dreamer``, ...).
        pretrain_overrides (tuple of str, optional): Hydra overrides of
            ``examples/dreamer_prelar.py stage=pretrain`` that give this arm's pre-training;
            ``None`` for an arm without pre-training.

    Examples:
        >>> MODEL_GAP_ARMS["apv"].pretrain_overrides
        ('arm=apv',)
    """

    name: str
    init: str
    pretrain_overrides: tuple[str, ...] | None

    @property
    def pretrained(self) -> bool:
        """Whether the arm starts from a pre-trained world model."""
        return self.pretrain_overrides is not None


#: The arms of the benchmark. ``prelar_no_action_learning`` is the paper's "w/o action
#: learning" ablation: the latent action model is deterministic (no action KL, no sampling).
#: ``contextwm`` starts from a ContextWM pre-training.
MODEL_GAP_ARMS: dict[str, ModelGapArm] = {
    arm.name: arm
    for arm in (
        ModelGapArm("prelar", "prelar", ()),
        ModelGapArm(
            "prelar_no_action_learning",
            "prelar",
            ("world_model.latent_action.output_type=deterministic",),
        ),
        ModelGapArm("apv", "apv", ("arm=apv",)),
        ModelGapArm("dreamer", "dreamer", None),
        ModelGapArm("contextwm", "contextwm", ("arm=contextwm",)),
    )
}


def available_arms() -> tuple[str, ...]:
    """The arms whose initialisation fine-tuning can build (their ``init`` is in ``INITS``).

    Examples:
        >>> {"prelar", "apv", "dreamer"} <= set(available_arms())
        True
    """
    return tuple(name for name, arm in MODEL_GAP_ARMS.items() if arm.init in INITS)


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class ModelGapSplits:
    """Folders of the train and held-out episodes (APV ``.npz`` format).

    Args:
        train (Path): the train split.
        heldout (Path): the held-out split.
    """

    train: Path
    heldout: Path


def generate_model_gap_splits(
    root: str | Path,
    *,
    tasks: Sequence[str] = METAWORLD_EVAL_TASKS,
    train_episodes: int = 4,
    heldout_episodes: int = 2,
    episode_length: int = 100,
    noise_std: float = 0.1,
    train_seed: int = 1,
    heldout_seed: int = 2,
    on_episode: Callable[[], None] | None = None,
) -> ModelGapSplits:
    """Renders noisy scripted-expert episodes of ``tasks`` into ``root/train`` and ``root/heldout``.

    The two folders use different base seeds, so no episode (goal, object placement, action
    noise) is on both sides. Resumable: episodes already written are skipped.

    Args:
        root (str or Path): output folder.

    Keyword Args:
        tasks (sequence of str, optional): Meta-world v3 tasks. Defaults to the six
            evaluation tasks (never pre-trained on).
        train_episodes (int, optional): episodes per task in the train split. Defaults to
            ``4``.
        heldout_episodes (int, optional): episodes per task in the held-out split. Defaults
            to ``2``.
        episode_length (int, optional): actions per episode (``episode_length + 1`` frames).
            Defaults to ``100``.
        noise_std (float, optional): Gaussian action noise of the experts. Defaults to
            ``0.1``.
        train_seed (int, optional): base seed of the train episodes. Defaults to ``1``.
        heldout_seed (int, optional): base seed of the held-out episodes; must differ from
            ``train_seed``. Defaults to ``2``.
        on_episode (Callable, optional): called after each episode (e.g. a progress bar
            update). Defaults to ``None``.

    Returns:
        the :class:`ModelGapSplits` folders.

    Raises:
        ValueError: if ``train_seed`` equals ``heldout_seed``.

    Examples:
        >>> splits = generate_model_gap_splits("/tmp/gap", tasks=("reach-v3",),
        ...     train_episodes=1, heldout_episodes=1, episode_length=10)  # doctest: +SKIP
        >>> sorted(p.name for p in splits.heldout.glob("*.npz"))  # doctest: +SKIP
        ['20261127T000000-reach_v3_00000-10.npz']
    """
    if train_seed == heldout_seed:
        raise ValueError(
            f"train_seed and heldout_seed must differ (both {train_seed}): the splits would "
            "hold the same episodes."
        )
    root = Path(root)
    splits = ModelGapSplits(train=root / "train", heldout=root / "heldout")
    for folder, episodes, seed in (
        (splits.train, train_episodes, train_seed),
        (splits.heldout, heldout_episodes, heldout_seed),
    ):
        config = ScriptedVideoConfig(
            tasks=tuple(tasks), noise_std=noise_std, episode_length=episode_length, seed=seed
        )
        generate_scripted_videos(folder, config, episodes, on_episode=on_episode)
    return splits


EpisodesLike = str | Path | EpisodeSource | Iterable[Episode]


def _as_source(episodes: EpisodesLike) -> EpisodeSource | Iterable[Episode]:
    if isinstance(episodes, str | Path):
        return RLBenchSource(episodes, name="model_gap")
    return episodes


def _check_actions(buffer: VideoExperienceReplay, origin: EpisodesLike) -> None:
    if len(buffer) == 0:
        raise ValueError(f"{origin}: no episode long enough for the requested clips.")
    if ACTION_KEY not in buffer.storage[0].keys():
        raise ValueError(
            f"{origin}: the episodes have no actions (expected key 'action' in the APV "
            "episodes, one per frame): the model gap needs real actions."
        )


def make_transition_buffer(
    episodes: EpisodesLike, *, num_transitions: int, batch_size: int
) -> VideoExperienceReplay:
    """Builds an in-memory video dataset of ``[batch_size, num_transitions]`` action clips.

    Each sample has ``"pixels"``, ``("next", "pixels")`` (floats in [-0.5, 0.5]),
    ``"is_init"`` and the real ``"action"`` taken at o_t (TorchRL convention; the APV
    episodes' ``action[t + 1]``).

    Args:
        episodes (str, Path, EpisodeSource or iterable of Episode): a folder of APV ``.npz``
            episodes with ``action``, a source or episodes.

    Keyword Args:
        num_transitions (int): T, transitions per clip.
        batch_size (int): clips per sample.

    Raises:
        ValueError: if no episode is long enough for the clips, or the episodes have no
            actions.

    Examples:
        >>> from torchrl_prelar.data.synthetic import moving_square_episodes
        >>> buffer = make_transition_buffer(moving_square_episodes(2, 10), num_transitions=4,
        ...                                 batch_size=3)
        >>> buffer.sample()["action"].shape
        torch.Size([3, 4, 2])
    """
    buffer = VideoExperienceReplay(
        [_as_source(episodes)],
        num_transitions=num_transitions,
        batch_size=batch_size,
        transform=RenameTransform([ACTION_KEY], [ACTION]),
    )
    _check_actions(buffer, episodes)
    return buffer


def heldout_clips(
    episodes: str | Path | Sequence[Episode], *, num_transitions: int
) -> TensorDictBase:
    """Cuts the held-out episodes into consecutive, non-overlapping clips, in file order.

    :func:`~torchrl_prelar.evaluation.latent_actions.episodes_to_clips` with its
    ``"true_action"`` named ``"action"``: an episode of ``L + 1`` frames gives
    ``L // num_transitions`` clips; the result is the same on every call.

    Args:
        episodes (str, Path or sequence of Episode): a folder of APV ``.npz`` episodes with
            ``action``, or episodes.

    Keyword Args:
        num_transitions (int): T, transitions per clip (context + imagined steps).

    Returns:
        A ``[N, T]`` TensorDict: uint8 ``"pixels"`` and ``("next", "pixels")``,
        ``"is_init"``, the real ``"action"`` taken at o_t and ``"episode"``.

    Examples:
        >>> from torchrl_prelar.data.synthetic import moving_square_episodes
        >>> clips = heldout_clips(moving_square_episodes(2, 10), num_transitions=4)
        >>> clips.batch_size  # two clips in each 11-frame episode
        torch.Size([4, 4])
    """
    if isinstance(episodes, str | Path):
        episodes = load_episodes(episodes)
    clips = episodes_to_clips(list(episodes), num_transitions=num_transitions)
    return clips.rename_key_(ACTION_KEY, ACTION)


# ----------------------------------------------------------------------------- model


def checkpoint_world_model_kwargs(path: str | Path) -> dict[str, Any]:
    """Reads the world-model arguments a pre-trained model file stores.

    They are the ``"world_model_kwargs"`` of a ``pretrained_world_model.pt`` written by
    ``examples/dreamer_prelar.py``; a legacy file whose world model is named by a preset is
    read through :func:`~torchrl_prelar.legacy.upgrade_checkpoint`.

    Args:
        path (str or Path): the model file.

    Raises:
        ValueError: if the file has no ``"world_model_kwargs"``.

    Examples:
        >>> checkpoint_world_model_kwargs("runs/prelar_quick/pretrained_world_model.pt")["rssm"]
        ... # doctest: +SKIP
        {'deter': 256, 'hidden': 256, 'categoricals': 16, 'classes': 16}
    """
    content = load_world_model_checkpoint(path)
    if "world_model_kwargs" not in content:
        raise ValueError(
            f"{path} has no 'world_model_kwargs' (expected a pretrained_world_model.pt "
            "written by examples/dreamer_prelar.py)."
        )
    return dict(content["world_model_kwargs"])


def make_model_gap_world_model(
    arm: str,
    *,
    action_dim: int,
    pretrained: str | Path | None = None,
    world_model_kwargs: Mapping[str, Any] | None = None,
) -> FinetuneWorldModel:
    """Builds the fine-tuning world model of ``arm``: a new action encoder, no reward heads.

    A pre-trained arm is rebuilt from the world-model arguments stored in the
    ``pretrained`` file; ``dreamer`` from ``world_model_kwargs``.

    Args:
        arm (str): a key of :data:`MODEL_GAP_ARMS`.

    Keyword Args:
        action_dim (int): the size of the real actions.
        pretrained (str or Path, optional): the pre-trained model file, required by a
            pre-trained arm. Defaults to ``None``.
        world_model_kwargs (Mapping, optional): the arguments of
            :func:`~torchrl_prelar.modules.make_world_model` for an arm without pre-training
            (give it the pre-trained arms' to compare like with like). Defaults to ``None``.

    Raises:
        ValueError: if ``arm`` is unknown, or a pre-trained arm has no ``pretrained`` file.

    Examples:
        >>> model = make_model_gap_world_model("dreamer", action_dim=4,
        ...                                    world_model_kwargs={"rssm": {"deter": 64}})
        >>> model.rssm.action_key, len(model.reward_heads)
        ('latent_action', 0)
    """
    if arm not in MODEL_GAP_ARMS:
        raise ValueError(f"arm must be one of {tuple(MODEL_GAP_ARMS)}, got {arm!r}.")
    spec = MODEL_GAP_ARMS[arm]
    if spec.pretrained:
        if pretrained is None:
            raise ValueError(f"arm {arm!r} needs pretrained=<pretrained_world_model.pt>.")
        world_model_kwargs = checkpoint_world_model_kwargs(pretrained)
    else:
        pretrained = None
    return build_finetune_world_model(
        action_dim, init=spec.init, pretrained=pretrained, **(world_model_kwargs or {})
    )


# ----------------------------------------------------------------------------- fine-tuning


def finetune_world_model(
    world_model: FinetuneWorldModel,
    sample: Callable[[], TensorDictBase],
    *,
    updates: int,
    freeze_updates: int,
    lr: float = 3e-4,
    free_nats: float | None = None,
    progress: bool = False,
    on_update: Callable[[int], None] | None = None,
    stepper: WorldModelStepper | None = None,
    first_update: int = 0,
    curve: list[dict[str, float]] | None = None,
) -> list[dict[str, float]]:
    """Fine-tunes ``world_model`` alone for ``updates`` updates on batches from ``sample``.

    Each update is the world-model half of the agent's
    (:func:`~torchrl_prelar.training.finetune_agent.make_world_model_stepper`:
    :class:`~torchrl_prelar.objectives.PreLARLoss`, reconstruction and the balanced state KL;
    one Adam with the ``representation`` and ``model`` groups at ``lr``, each group's
    gradient norm clipped), with the agent's schedule: the ``representation`` group (encoder
    + pre-trained RSSM, the action-free one for APV) at learning rate 0 for the first
    ``freeze_updates`` updates
    (:func:`~torchrl_prelar.training.finetune_agent.set_representation_frozen`).

    Args:
        world_model (PreLARWorldModel or APVWorldModel): the world model to fine-tune.
        sample (Callable): returns a ``[B, T]`` batch of transitions with ``"action"``.

    Keyword Args:
        updates (int): number of updates.
        freeze_updates (int): updates with the ``representation`` group frozen.
        lr (float, optional): the learning rate. Defaults to ``3e-4``.
        free_nats (float, optional): the state KL free nats (per step, summed over the
            categoricals). Defaults to ``None`` (the agent's loss: 0).
        progress (bool, optional): show a progress bar. Defaults to ``False``.
        on_update (Callable, optional): called after each update with the number of updates
            done (e.g. to evaluate the model as it trains; it may switch the model to eval
            mode, the next update switches it back). Defaults to ``None``.
        stepper (WorldModelStepper, optional): the stepper to update with, e.g. one whose
            optimiser state was restored to resume; ``free_nats`` is then not used. Defaults
            to ``None``: a new :func:`make_world_model_stepper` of ``world_model``.
        first_update (int, optional): updates already done (resuming): the loop runs from
            there to ``updates``, the freeze schedule counted from 0. Defaults to ``0``.
        curve (list, optional): the list each update's entry is appended to and that is
            returned (entries of updates already done may be in it); give one to read the
            entries during training, e.g. from ``on_update``. Defaults to ``None``: a new list.

    Returns:
        ``curve`` with one entry per update from ``first_update`` on: ``"loss"`` (the sum of
        the loss terms), ``"reco_mse"`` and ``"state_kl"``.

    Examples:
        >>> from torchrl_prelar.data.synthetic import moving_square_episodes
        >>> model = make_model_gap_world_model("dreamer", action_dim=2)
        >>> buffer = make_transition_buffer(moving_square_episodes(2, 10), num_transitions=4,
        ...                                 batch_size=2)
        >>> curve = finetune_world_model(model, buffer.sample, updates=2, freeze_updates=1)
        >>> len(curve), sorted(curve[0])
        (2, ['loss', 'reco_mse', 'state_kl'])
    """
    if freeze_updates < 0:
        raise ValueError(f"freeze_updates must be >= 0, got {freeze_updates}.")
    if not 0 <= first_update <= updates:
        raise ValueError(f"first_update must be in [0, updates={updates}], got {first_update}.")
    if stepper is None:
        stepper = make_world_model_stepper(
            world_model,
            free_nats=free_nats,
            optimizer_factory=functools.partial(make_finetune_optimizer, model_lr=lr),
        )
    steps: Iterable[int] = range(first_update, updates)
    if progress:
        from tqdm import tqdm

        steps = tqdm(
            steps,
            desc="fine-tuning",
            unit="update",
            leave=False,
            initial=first_update,
            total=updates,
        )
    curve = [] if curve is None else curve
    for update in steps:
        world_model.train()
        set_representation_frozen(stepper.optimizer, update < freeze_updates, lr)
        losses = stepper.step(None, sample())
        total = sum(value.sum() for key, value in losses.items() if key.startswith("loss_"))
        curve.append(
            {
                "loss": total.item(),
                "reco_mse": losses["reco_mse"].item(),
                "state_kl": losses["state_kl"].item(),
            }
        )
        if progress:
            steps.set_postfix(loss=f"{curve[-1]['loss']:.1f}")
        if on_update is not None:
            on_update(update + 1)
    return curve


# ----------------------------------------------------------------------------- scores


def _per_step_scores(
    truth: torch.Tensor, prediction: torch.Tensor, context: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """PSNR and MSE ``[B, H]`` of the imagined frames ``context ..``."""
    truth, prediction = truth[:, context:].float(), prediction[:, context:].float()
    return psnr(prediction, truth), (prediction - truth).pow(2).mean((-1, -2, -3))


def open_loop_scores(
    world_model: FinetuneWorldModel,
    clips: TensorDictBase,
    *,
    context: int,
    seed: int = 0,
    chunk_size: int = 32,
) -> dict[str, list[float]]:
    """Scores the PSNR (dB) and MSE of each imagined step, averaged over ``clips``.

    ``context`` transitions are observed (posterior); the remaining ``T - context`` frames
    are imagined by the RSSM prior from the clips' real actions, encoded by the world
    model's action encoder (the action-conditional RSSM's own input for APV). PSNR is
    computed per clip and step, then averaged over clips. Clips are scored ``chunk_size`` at
    a time, each chunk with the RSSM samples seeded by ``seed``.

    Args:
        world_model (PreLARWorldModel or APVWorldModel): the fine-tuned world model.
        clips (TensorDictBase): ``[N, T]`` clips with ``"action"`` (:func:`heldout_clips`).

    Keyword Args:
        context (int): observed transitions.
        seed (int, optional): seed of the RSSM samples. Defaults to ``0``.
        chunk_size (int, optional): clips per forward pass. Defaults to ``32``.

    Returns:
        ``{"psnr": [...], "mse": [...]}``, one entry per imagined step (1 .. T - context).

    Examples:
        >>> scores = open_loop_scores(model, clips, context=5)  # doctest: +SKIP
        >>> len(scores["psnr"]) == clips.shape[1] - 5  # doctest: +SKIP
        True
    """
    psnrs, mses = [], []
    for start in range(0, clips.shape[0], chunk_size):
        truth, prediction = open_loop_rollout(
            world_model, clips[start : start + chunk_size], context, seed=seed
        )
        step_psnr, step_mse = _per_step_scores(truth, prediction, context)
        psnrs.append(step_psnr)
        mses.append(step_mse)
    return {"psnr": torch.cat(psnrs).mean(0).tolist(), "mse": torch.cat(mses).mean(0).tolist()}


def last_frame_scores(clips: TensorDictBase, *, context: int) -> dict[str, list[float]]:
    """The scores of :func:`open_loop_scores` for "nothing moves": the last observed frame.

    A floor any useful world model should beat on the later steps.

    Args:
        clips (TensorDictBase): ``[N, T]`` clips (:func:`heldout_clips`).

    Keyword Args:
        context (int): observed transitions.

    Examples:
        >>> from torchrl_prelar.data.synthetic import moving_square_episodes
        >>> clips = heldout_clips(moving_square_episodes(2, 10), num_transitions=4)
        >>> len(last_frame_scores(clips, context=2)["psnr"])
        2
    """
    truth = centred_pixels(clips.get(("next", "pixels")))
    prediction = truth[:, context - 1 : context].expand_as(truth)
    step_psnr, step_mse = _per_step_scores(truth, prediction, context)
    return {"psnr": step_psnr.mean(0).tolist(), "mse": step_mse.mean(0).tolist()}


# ----------------------------------------------------------------------------- one arm


def run_model_gap_arm(
    arm: str,
    *,
    seed: int,
    sample: Callable[[], TensorDictBase],
    clips: TensorDictBase,
    context: int,
    updates: int,
    freeze_updates: int,
    lr: float = 3e-4,
    pretrained: str | Path | None = None,
    world_model_kwargs: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Builds, fine-tunes and scores the world model of one arm and seed.

    ``seed`` seeds the new weights (action encoder, APV's new RSSM), the batches drawn from
    ``sample`` and the RSSM samples of the scoring. The action size is read from ``clips``.

    Args:
        arm (str): a key of :data:`MODEL_GAP_ARMS`.

    Keyword Args:
        seed (int): random seed of the fine-tuning (initialisation and sampling).
        sample (Callable): returns a ``[B, T]`` training batch with ``"action"``
            (:func:`make_transition_buffer`).
        clips (TensorDictBase): the held-out clips (:func:`heldout_clips`).
        context (int): observed transitions of the scoring.
        updates (int): fine-tuning updates.
        freeze_updates (int): updates with the representation frozen.
        lr (float, optional): the learning rate. Defaults to ``3e-4``.
        pretrained (str or Path, optional): the pre-trained model file of a pre-trained arm.
            Defaults to ``None``.
        world_model_kwargs (Mapping, optional): the world-model arguments of an arm without
            pre-training. Defaults to ``None``.
        progress (bool, optional): show a progress bar. Defaults to ``False``.

    Returns:
        ``{"loss": [...], "reco_mse": [...], "psnr": [...], "mse": [...], "seconds": s}``:
        the total fine-tuning loss and reconstruction MSE of every update, the per-step
        open-loop scores of :func:`open_loop_scores` after fine-tuning, and the wall time.

    Examples:
        >>> result = run_model_gap_arm("apv", seed=0, sample=buffer.sample, clips=clips,
        ...     context=5, updates=300, freeze_updates=100,
        ...     pretrained="runs/apv/pretrained_world_model.pt")  # doctest: +SKIP
    """
    started = time.perf_counter()
    torch.manual_seed(seed)
    world_model = make_model_gap_world_model(
        arm,
        action_dim=clips.get(ACTION).shape[-1],
        pretrained=pretrained,
        world_model_kwargs=world_model_kwargs,
    )
    curve = finetune_world_model(
        world_model,
        sample,
        updates=updates,
        freeze_updates=freeze_updates,
        lr=lr,
        progress=progress,
    )
    scores = open_loop_scores(world_model, clips, context=context, seed=seed)
    return {
        "loss": [step["loss"] for step in curve],
        "reco_mse": [step["reco_mse"] for step in curve],
        **scores,
        "seconds": round(time.perf_counter() - started, 1),
    }
