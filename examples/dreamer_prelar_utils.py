"""Builders of ``dreamer_prelar.py``: each makes one piece of the pipeline from the Hydra
configuration (a plain dict, see ``config/config.yaml``), with the library's components.

    import dreamer_prelar_utils as utils
    loss = utils.make_pretrain_loss(cfg)
    agent = utils.make_agent(cfg, action_dim=4)
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from tensordict import TensorDictBase
from torchrl.checkpoint import (
    Checkpoint,
    CheckpointLoadResult,
    CheckpointRotation,
    GlobalRNGState,
    JSONCheckpointAdapter,
)
from torchrl.data import (
    LazyTensorStorage,
    ReplayBuffer,
    SliceSampler,
    TensorDictReplayBuffer,
    Unbounded,
)
from torchrl.envs import EnvBase, InitTracker, ParallelEnv, TensorDictPrimer, TransformedEnv
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.record.loggers import Logger
from torchrl.record.loggers.csv import CSVLogger
from torchrl.trainers.algorithms import DreamerV3UpdateRatio
from tqdm.auto import tqdm

from torchrl_prelar.baselines.contextwm import STACKED_BASELINES, resolve_contextwm_kwargs
from torchrl_prelar.data.dataset import VideoExperienceReplay
from torchrl_prelar.data.episode_slices import EpisodeSliceSampler
from torchrl_prelar.data.episodes import EpisodeSource
from torchrl_prelar.envs.metaworld import check_goal_distribution, make_metaworld_env
from torchrl_prelar.evaluation.held_out import (
    HeldOutConfig,
    LatentActionMonitor,
    generate_held_out_sets,
    load_clip_sets,
)
from torchrl_prelar.evaluation.latent_actions import check_context
from torchrl_prelar.evaluation.open_loop import open_loop_rollout
from torchrl_prelar.io import PRETRAINED_MODEL
from torchrl_prelar.media import plot_curves, read_csv_scalars, save_prediction_gif
from torchrl_prelar.modules import (
    LatentActionModel,
    PreLARWorldModel,
    make_world_model,
    resolve_world_model_kwargs,
)
from torchrl_prelar.objectives import PreLARLoss, SupervisedLatentActionLoss
from torchrl_prelar.training.checkpoint import (
    ReplayDumpAdapter,
    latest_checkpoint,
    load_torchrl_checkpoint,
    read_torchrl_checkpoint,
    remove_interrupted_saves,
)
from torchrl_prelar.training.finetune_agent import (
    AUX_REWARD_KEY,
    REWARD_KEY,
    FinetuneAgent,
    FinetuneWorldModel,
    build_finetune_world_model,
    make_finetune_agent,
    make_finetune_optimizer,
)

#: The world models of the ``world_model`` group, ``<name>.yaml``.
WORLD_MODELS = Path(__file__).resolve().parent / "config" / "world_model"
#: Resumable pre-training checkpoint in ``run_dir`` (every ``pretrain.checkpoint_every``).
PRETRAIN_CHECKPOINT = "pretrain_last.pt"
#: Folder of the fine-tuning checkpoint in ``run_dir``: a TorchRL ``CheckpointRotation`` holding
#: the latest ``checkpoint-<env_steps>/`` (atomic, written every ``finetune.checkpoint_every``).
FINETUNE_CHECKPOINT = "finetune_checkpoints"
#: Entries of a collected step that go into the fine-tuning replay buffer.
STORED_KEYS = (
    "action",
    "is_init",
    "traj_id",
    ("next", "pixels"),
    ("next", "reward"),
    ("next", "done"),
    ("next", "terminated"),
    ("next", "truncated"),
    ("next", "success"),
)
#: Curves of ``finetune_curves.png``.
#: The panels of ``pretrain_curves.png``: title -> the ``pretrain/`` scalars drawn in it
#: (held-out evaluations as markers, ``<figure>_<set>``).
PRETRAIN_CURVES = {
    "total loss": ["pretrain/loss"],
    "reconstruction (sum over pixels)": [
        "pretrain/loss_model_reco",
        "pretrain/loss_prior_reco",
        "pretrain/loss_forward_reco",
    ],
    "KL (nats)": ["pretrain/action_kl", "pretrain/state_kl"],
    "held-out probe R^2": [
        f"pretrain/{figure}_{held_out}"
        for figure in ("probe_r2", "probe_r2_motion")
        for held_out in ("seen", "unseen")
    ],
    "state KL, shuffled / own latent actions": [
        "pretrain/state_kl_shuffled_ratio_seen",
        "pretrain/state_kl_shuffled_ratio_unseen",
    ],
    "delta-PSNR of imagination (dB)": ["pretrain/delta_psnr_seen", "pretrain/delta_psnr_unseen"],
}
FINETUNE_CURVES = {
    "evaluation success rate": ["finetune/eval_success_rate"],
    "return per episode": ["finetune/eval_return", "finetune/train_return"],
    "world-model loss": ["finetune/world_model_loss"],
}


# ----------------------------------------------------------------------------- logging


class RunLoggers:
    """Fan-out to several TorchRL loggers, with a key prefix per stage.

    Examples:
        >>> import tempfile
        >>> loggers = RunLoggers.create(tempfile.mkdtemp(), "demo", backends=["csv"])
        >>> loggers.log({"loss": 1.0}, step=1, prefix="pretrain/")
    """

    def __init__(self, loggers: list[Logger]):
        self.loggers = loggers

    @classmethod
    def create(
        cls,
        run_dir: str | Path,
        exp_name: str,
        *,
        backends: list[str] = ("csv",),
        project: str = "torchrl_prelar",
        wandb_mode: str = "offline",
    ) -> RunLoggers:
        """CSV under ``run_dir/csv``; wandb under ``run_dir/wandb`` (offline: no network)."""
        loggers: list[Logger] = []
        for backend in backends:
            if backend == "csv":
                loggers.append(CSVLogger(exp_name, log_dir=str(Path(run_dir) / "csv")))
            elif backend == "wandb":
                from torchrl.record.loggers.wandb import WandbLogger

                os.environ.setdefault("WANDB_SILENT", "true")
                loggers.append(
                    WandbLogger(
                        exp_name,
                        offline=wandb_mode == "offline",
                        save_dir=str(Path(run_dir)),
                        project=project,
                        log_env_packages=False,
                    )
                )
            else:
                raise ValueError(
                    f"Unknown logger.backends entry {backend!r}: expected 'csv' or 'wandb'."
                )
        return cls(loggers)

    def log(self, metrics: Mapping[str, float], step: int, prefix: str = "") -> None:
        for logger in self.loggers:
            for name, value in metrics.items():
                logger.log_scalar(f"{prefix}{name}", float(value), step=step)

    def log_hparams(self, config: Mapping[str, Any]) -> None:
        """Log the run's resolved ``config``, nested sections flattened to dotted keys.

        Each logger's ``log_hparams``: wandb stores it as the run config; the CSV logger
        writes ``texts/hparams<N>.txt`` (``key: value`` lines) in its run folder, one new
        file per call, so a later stage or a resume in the same ``run_dir`` keeps the
        earlier ones (``hparams0.txt`` is the first stage started there).

        Examples:
            >>> import tempfile
            >>> run_dir = Path(tempfile.mkdtemp())
            >>> loggers = RunLoggers.create(run_dir, "demo", backends=["csv"])
            >>> loggers.log_hparams({"seed": 1, "pretrain": {"lr": 0.001}})
            >>> print((run_dir / "csv/demo/texts/hparams0.txt").read_text())
            pretrain.lr: 0.001
            seed: 1
        """
        flat = flatten_config(config)
        for logger in self.loggers:
            if isinstance(logger, CSVLogger):
                texts = Path(logger.experiment.log_dir) / "texts"
                written = [p for p in texts.glob("hparams*.txt") if _HPARAMS.fullmatch(p.name)]
                logger.experiment.text_counter["hparams"] = len(written)
            logger.log_hparams(flat)


_HPARAMS = re.compile(r"hparams\d+\.txt")


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``config`` with its nested mappings flattened to dotted keys (empty ones kept as ``{}``).

    Examples:
        >>> flatten_config({"seed": 1, "loss": {"kl": {"free": 1.0}}, "overrides": {}})
        {'seed': 1, 'loss.kl.free': 1.0, 'overrides': {}}
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def make_loggers(cfg: Mapping[str, Any], run_dir: Path, default_name: str) -> RunLoggers:
    """The loggers of ``cfg["logger"]``, named ``cfg["name"]``, with ``cfg`` logged as
    hyperparameters."""
    loggers = RunLoggers.create(run_dir, cfg.get("name", default_name), **cfg["logger"])
    loggers.log_hparams(cfg)
    return loggers


# ----------------------------------------------------------------------------- pre-training


def check_counts(section: Mapping[str, Any], prefix: str, least: Mapping[str, int]) -> None:
    """Reject an entry of ``section`` named in ``least`` that is not an integer of at least
    that value; the message names it as ``<prefix>.<name>`` (absent entries are not checked).

    Examples:
        >>> check_counts({"log_every": 0}, "pretrain", {"log_every": 1})
        Traceback (most recent call last):
        ...
        ValueError: pretrain.log_every must be an integer >= 1, got 0.
    """
    for name, minimum in least.items():
        value = section.get(name, minimum)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{prefix}.{name} must be an integer >= {minimum}, got {value!r}.")


def validate_pretrain(cfg: Mapping[str, Any]) -> None:
    """Reject pre-training settings no run can use, before anything is written: the loop's
    counts, a NaN, infinite or negative ``checkpoint_every_seconds``, and an
    ``evaluation.context`` that leaves too few imagined frames."""
    least = {"updates": 0, "log_every": 1, "checkpoint_every": 1, "video_context": 1}
    check_counts(cfg["pretrain"], "pretrain", least)
    seconds = cfg["pretrain"].get("checkpoint_every_seconds")  # None: by updates only
    if seconds is not None and not 0 <= seconds < math.inf:  # NaN too
        raise ValueError(
            f"pretrain.checkpoint_every_seconds must be a finite number >= 0, got {seconds}."
        )
    settings = cfg.get("evaluation") or {}
    if settings.get("enabled"):
        check_context(settings["context"], settings["num_transitions"], "evaluation.context")


def make_video_sources(
    data: Mapping[str, Any], run_dir: Path, *, render_quality: str = "fast"
) -> list[EpisodeSource | list]:
    """The episode sources named by ``data["source"]``.

    ``synthetic``: the toy of ``data["synthetic"]`` (moving squares or the grid world, see
    :func:`~torchrl_prelar.data.synthetic.toy_episodes`); ``metaworld``: scripted Meta-world
    videos generated into ``data["video_dir"]`` (resumable); ``rlbench``: a folder of APV
    ``.npz`` episodes; ``ssv2``: Something-Something-V2 frame folders with a list file;
    ``video_folder``: video files or image-sequence folders.
    """
    kind = data["source"]
    needed = {"rlbench": ("path",), "ssv2": ("path", "list_file"), "video_folder": ("path",)}
    missing = [f"data.{key}" for key in needed.get(kind, ()) if not data.get(key)]
    if missing:
        raise ValueError(
            f"data.source={kind} reads {' and '.join(missing)}, not set: give the folder of its "
            f"videos (and the list file of ssv2), e.g. data.path=/data/{kind}."
        )
    if kind == "synthetic":
        from torchrl_prelar.data.synthetic import toy_episodes

        toy = data.get("synthetic") or {}
        try:
            episodes = toy_episodes(
                data["episodes"], data["episode_length"], seed=data["seed"], **toy
            )
        except ValueError as error:  # names the toy's setting: say where it is set
            raise ValueError(f"data.synthetic: {error}") from None
        return [episodes]
    if kind == "metaworld":
        from torchrl_prelar.data.sources.metaworld_scripted import (
            ScriptedVideoConfig,
            generate_scripted_videos,
        )
        from torchrl_prelar.data.sources.rlbench import RLBenchSource

        video_dir = Path(data.get("video_dir") or run_dir / "videos")
        settings = {"tasks": tuple(data["tasks"])} if data.get("tasks") else {}
        config = ScriptedVideoConfig(
            noise_std=data["noise"],
            episode_length=data["episode_length"],
            render_quality=render_quality,
            seed=data["seed"],
            **settings,
        )
        with tqdm(total=len(config.tasks) * data["episodes"], desc="rendering videos") as bar:
            generate_scripted_videos(video_dir, config, data["episodes"], on_episode=bar.update)
        return [RLBenchSource(video_dir, name="metaworld")]
    if kind == "rlbench":
        from torchrl_prelar.data.sources.rlbench import RLBenchSource

        return [RLBenchSource(data["path"])]
    if kind == "ssv2":
        from torchrl_prelar.data.sources.ssv2 import SSv2Source

        return [SSv2Source(data["path"], data["list_file"])]
    if kind == "video_folder":
        from torchrl_prelar.data.sources.video_folder import VideoFolderSource

        return [VideoFolderSource(data["path"])]
    raise ValueError(
        f"Unknown data.source {kind!r}: expected synthetic, metaworld, rlbench, ssv2 or "
        "video_folder."
    )


def make_pretrain_buffer(cfg: Mapping[str, Any], run_dir: Path) -> VideoExperienceReplay:
    """The run's video dataset in ``<run_dir>/video_buffer``: preprocessed from the sources of
    ``cfg["data"]`` once, then reopened as it is (its sources are not built again)."""
    data = cfg["data"]
    root = run_dir / "video_buffer"
    sources = []
    if not VideoExperienceReplay.is_preprocessed(root):
        sources = make_video_sources(data, run_dir, render_quality=cfg["render_quality"])
    return VideoExperienceReplay(
        sources,
        num_transitions=data["num_transitions"],
        batch_size=data["batch_size"],
        root=root,
        prefetch=data.get("prefetch") or None,
    )


def example_world_model(name: str, changes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The arguments of the world model ``config/world_model/<name>.yaml`` with ``changes``
    merged in, nested mappings key by key (for the scripts and tests that build one).

    Examples:
        >>> example_world_model("tiny", {"rssm": {"deter": 32}})["rssm"]
        {'deter': 32, 'hidden': 64, 'categoricals': 8, 'classes': 8}
    """
    settings = OmegaConf.merge(OmegaConf.load(WORLD_MODELS / f"{name}.yaml"), changes or {})
    return OmegaConf.to_container(settings)


def world_model_kwargs(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments of the run's world model, ``cfg["world_model"]`` with every default
    filled in (and ContextWM's ``context`` settings with ``arm=contextwm``): what the
    checkpoints and ``run_settings.json`` hold.

    Examples:
        >>> kwargs = world_model_kwargs({"world_model": {"rssm": {"deter": 64}}})
        >>> kwargs["rssm"]["deter"], kwargs["encoder"]["type"]
        (64, 'conv')
    """
    settings = dict(cfg["world_model"])
    if cfg.get("finetune", {}).get("init") == "contextwm":
        return resolve_contextwm_kwargs(**settings)
    return resolve_world_model_kwargs(**settings)


def make_pretrain_loss(
    cfg: Mapping[str, Any], buffer: VideoExperienceReplay | None = None
) -> PreLARLoss | SupervisedLatentActionLoss:
    """The world model of ``cfg["world_model"]`` (the arguments of
    :func:`~torchrl_prelar.modules.make_world_model`, or of the APV / ContextWM pre-training
    model of ``finetune.init``) inside the loss of ``cfg["loss"]``: a :class:`PreLARLoss`, or,
    with ``objective: supervised`` (``loss=supervised_action``,
    ``loss=supervised_displacement``), the supervised reference
    :class:`~torchrl_prelar.objectives.SupervisedLatentActionLoss`, whose target width is read
    from the pre-training ``buffer``."""
    init = cfg.get("finetune", {}).get("init")
    loss_settings = dict(cfg["loss"])
    if loss_settings.get("objective") == "supervised":
        if init in STACKED_BASELINES:
            raise ValueError(
                f"loss.objective=supervised trains a latent action model; arm={init} "
                "pre-trains a world model without one."
            )
        if buffer is None:
            raise ValueError("loss.objective=supervised reads its target width from the buffer.")
        return make_supervised_loss(
            make_world_model(**cfg["world_model"]).to(cfg["device"]), loss_settings, buffer
        )
    if init in STACKED_BASELINES:  # APV / ContextWM pre-train an action-free RSSM
        world_model = STACKED_BASELINES[init][0](**cfg["world_model"])
        # No latent action: the terms that decode through one do not apply.
        loss_settings.update(lambda_forward_reco=0.0, lambda_prior_reco=0.0)
    else:
        world_model = make_world_model(**cfg["world_model"])
    return PreLARLoss(world_model.to(cfg["device"]), **loss_settings)


def make_supervised_loss(
    world_model: PreLARWorldModel, settings: Mapping[str, Any], buffer: VideoExperienceReplay
) -> SupervisedLatentActionLoss:
    """The supervised reference of ``settings`` (``config/loss/supervised_*.yaml``): the
    entry ``target`` of the videos, its first ``leading_dims`` dims (``None``: all), as
    stored in ``buffer``.

    Raises:
        ValueError: if the videos carry no ``target`` entry (naming the entries they carry),
            or ``settings`` holds an unknown key.
    """
    unknown = sorted(set(settings) - {"objective", "target", "leading_dims"})
    if unknown:
        raise ValueError(
            f"loss.{unknown[0]}: not a setting of the supervised reference (objective, target, "
            "leading_dims)."
        )
    key, leading = settings["target"], settings.get("leading_dims")
    row = buffer.storage[0]
    if key not in row.keys():
        raise ValueError(
            f"loss.target={key}: the pre-training videos carry no {key!r} entry (they carry "
            f"{sorted(row.keys())}); the scripted Meta-world and synthetic videos carry "
            "'true_action', 'true_state' and 'true_state_change', and a buffer keeps the "
            f"entries it was preprocessed with: delete {buffer.root} to preprocess them again."
        )
    width = row[key].shape[-1]
    dims = list(range(width if leading is None else min(leading, width)))
    loss = SupervisedLatentActionLoss(world_model, target_dims=dims)
    loss.set_keys(target=key)
    return loss


def make_latent_action_monitor(
    cfg: Mapping[str, Any],
    run_dir: Path,
    world_model: PreLARWorldModel,
    log: Callable[[dict[str, float], int], None],
) -> LatentActionMonitor | None:
    """The held-out latent-action evaluation of ``cfg["evaluation"]``.

    Writes (or completes) the held-out episodes under ``evaluation.dir`` (default
    ``<run_dir>/heldout``): Meta-world scripted episodes, or episodes of the run's toy when it
    pre-trains on synthetic video. ``None`` when ``evaluation.enabled`` is false or the world
    model has no latent action (APV, ContextWM).
    """
    settings = cfg.get("evaluation") or {}
    if not settings.get("enabled") or not isinstance(
        getattr(world_model, "action_model", None), LatentActionModel
    ):
        return None
    data = cfg["data"]
    folders = generate_held_out_sets(
        settings.get("dir") or run_dir / "heldout",
        HeldOutConfig.from_mapping(
            {"noise": data["noise"], "render_quality": cfg["render_quality"], **settings}
        ),
        synthetic=data["source"] == "synthetic",
        toy=data.get("synthetic"),
        pretrain_tasks=data.get("tasks") if data["source"] == "metaworld" else None,
    )
    return LatentActionMonitor(
        world_model,
        load_clip_sets(
            folders,
            num_transitions=settings["num_transitions"],
            image_size=cfg["world_model"]["image_size"],
        ),
        context=settings["context"],
        every=settings["probe_every"],
        last_step=cfg["pretrain"]["updates"],
        log=log,
    )


def write_pretrain_media(
    world_model: PreLARWorldModel, buffer: ReplayBuffer, run_dir: Path, context: int
) -> None:
    """``pretrain_prediction.gif`` (open-loop prediction of a sampled clip after ``context``
    frames) and ``pretrain_curves.png`` (the ``pretrain/`` CSV scalars)."""
    clip = buffer.sample()[:1].to(next(world_model.parameters()).device)
    was_training = world_model.training
    # open_loop_rollout decodes the imagined frames in the model's own mode; the GIF shows
    # them in eval mode (ContextWM's decoder drops context tokens in training).
    world_model.eval()
    try:
        truth, prediction = open_loop_rollout(world_model, clip, context=context, seed=None)
    finally:
        world_model.train(was_training)
    save_prediction_gif(
        truth[0].cpu(), prediction[0].cpu(), context, run_dir / "pretrain_prediction.gif"
    )
    series = read_csv_scalars(run_dir / "csv")
    plot_curves(
        series,
        run_dir / "pretrain_curves.png",
        PRETRAIN_CURVES,
        title="PreLAR pre-training",
        xlabel="update",
    )


# ----------------------------------------------------------------------------- fine-tuning


def validate_arm(tune: Mapping[str, Any]) -> None:
    """Reject a ``finetune.init`` set apart from the arm whose settings are in effect.

    The ``arm`` group (``config/arm/``) sets ``finetune.init`` together with the arm's
    bonus and freeze; ``finetune.init=dreamer`` alone would run DreamerV2 with PreLAR's
    settings.
    """
    arm = tune.get("arm", tune["init"])
    if tune["init"] != arm:
        raise ValueError(
            f"finetune.init={tune['init']} was set apart from its arm: the arm settings in "
            f"effect are {arm}'s (video bonus, frozen stage). Choose the arm with "
            f"arm={tune['init']}: it sets finetune.init and that arm's settings "
            "(docs/guide.md, 'Fine-tuning arms')."
        )


#: Fine-tuning counts and their least values (:func:`validate_finetune`).
_FINETUNE_COUNTS = {
    "update_every": 1,
    "batch_size": 1,
    "batch_length": 1,
    "max_episode_steps": 1,
    "action_repeat": 1,
    "eval_every": 1,
    "eval_episodes": 1,
    "log_every": 1,
    "checkpoint_every": 1,
}


def validate_finetune(tune: Mapping[str, Any]) -> None:
    """Reject ``finetune`` settings under which no replay slice fits or no worker runs, a
    count below its least value, a NaN, infinite or negative learning rate, ``grad_clip``,
    ``max_seconds`` or ``checkpoint_every_seconds``, an unknown ``goals`` distribution, a
    ``goal_marker_scale`` that is not a finite number > 0, a ``replay`` other than
    ``ongoing`` / ``prioritize_ends`` booleans (DreamerV2's draw also needs one env worker and,
    for finished episodes only, a prefill of at least one episode), and a ``finetune.init``
    set apart from its arm (:func:`validate_arm`)."""
    validate_arm(tune)
    check_goal_distribution(tune["goals"])
    scale = tune.get("goal_marker_scale", 1.0)
    if not (isinstance(scale, int | float) and 0 < scale < math.inf):
        raise ValueError(f"finetune.goal_marker_scale must be a finite number > 0, got {scale}.")
    check_counts(tune, "finetune", _FINETUNE_COUNTS)
    limits = ("max_seconds", "checkpoint_every_seconds")  # None: no limit
    for name in ("model_lr", "actor_lr", "critic_lr", "grad_clip", *limits):
        value = tune.get(name)
        if value is not None and not 0 <= value < math.inf:  # NaN too
            raise ValueError(f"finetune.{name} must be a finite number >= 0, got {value}.")
    episode = tune["max_episode_steps"] // tune["action_repeat"]
    if tune["batch_length"] > episode:
        raise ValueError(
            f"finetune.batch_length ({tune['batch_length']}) exceeds the episode length "
            f"({episode} agent steps): no slice would fit in an episode."
        )
    if tune["prefill"] < tune["batch_length"]:
        raise ValueError("finetune.prefill must be at least finetune.batch_length.")
    if tune.get("env_workers", 1) < 1:
        raise ValueError(f"finetune.env_workers must be >= 1, got {tune['env_workers']}.")
    replay = tune.get("replay") or {}
    unknown = sorted(set(replay) - set(REPLAY_DEFAULTS))
    if unknown or not all(isinstance(value, bool) for value in replay.values()):
        raise ValueError(
            f"finetune.replay takes ongoing and prioritize_ends, each true or false; got {replay}."
        )
    if {**REPLAY_DEFAULTS, **replay} != REPLAY_DEFAULTS and tune.get("env_workers", 1) > 1:
        raise ValueError(
            "finetune.replay's DreamerV2 draw (ongoing: false or prioritize_ends: true) reads "
            f"one env worker's replay; finetune.env_workers is {tune['env_workers']}."
        )
    if not replay.get("ongoing", True) and tune["prefill"] < episode:
        raise ValueError(
            f"finetune.replay.ongoing=false draws from finished episodes only: finetune.prefill "
            f"({tune['prefill']}) must hold at least one episode ({episode} agent steps)."
        )


def make_finetune_world_model(cfg: Mapping[str, Any], action_dim: int) -> FinetuneWorldModel:
    """The world model of ``cfg["world_model"]`` with the two reward heads, initialised as
    ``finetune.init`` says from ``finetune.pretrained`` (default
    ``<run_dir>/pretrained_world_model.pt``; see :func:`build_finetune_world_model`)."""
    tune = cfg["finetune"]
    return build_finetune_world_model(
        action_dim,
        init=tune["init"],
        pretrained=tune.get("pretrained") or Path(cfg["run_dir"]) / PRETRAINED_MODEL,
        reward_keys=[REWARD_KEY, AUX_REWARD_KEY],
        **cfg["world_model"],
    )


def make_agent(cfg: Mapping[str, Any], action_dim: int) -> FinetuneAgent:
    """The fine-tuning agent of ``cfg["finetune"]`` (with ``loss``'s KL / reconstruction
    settings) around :func:`make_finetune_world_model` (see :func:`make_finetune_agent`)."""
    tune, loss, intrinsic = cfg["finetune"], cfg.get("loss", {}), cfg["finetune"]["intrinsic"]
    return make_finetune_agent(
        make_finetune_world_model(cfg, action_dim),
        action_dim,
        device=cfg["device"],
        precision=cfg.get("precision", "fp32"),
        seed=cfg["seed"],
        actor_hidden=tune["actor"]["hidden"],
        actor_depth=tune["actor"]["depth"],
        actor_distribution=tune["actor"]["distribution"],
        actor_min_std=tune["actor"]["min_std"],
        critic_hidden=tune["critic"]["hidden"],
        critic_depth=tune["critic"]["depth"],
        imagination_horizon=tune["imagination_horizon"],
        gamma=tune["gamma"],
        lmbda=tune["lmbda"],
        entropy=tune["entropy"],
        return_normalization=tune["return_normalization"],
        slow_critic=tune["slow_critic"],
        target_update_every=tune["target_update_every"],
        critic_target=tune["critic_target"],
        lambda_aux_reward=tune["lambda_aux_reward"],
        reward_loss=tune["reward_loss"],
        kl_balance=loss.get("kl_balance"),
        free_nats=loss.get("free_nats"),
        lambda_reco=loss.get("lambda_reco"),
        intrinsic=intrinsic["enabled"],
        intrinsic_beta=intrinsic["beta"],
        intrinsic_window=intrinsic["window"],
        intrinsic_proj_dim=intrinsic["proj_dim"],
        intrinsic_queue_size=intrinsic["queue_size"],
        intrinsic_k=intrinsic["k"],
        optimizer_factory=partial(
            make_finetune_optimizer,
            model_lr=tune["model_lr"],
            actor_lr=tune["actor_lr"],
            critic_lr=tune["critic_lr"],
            eps=tune["eps"],
            weight_decay=tune["weight_decay"],
            grad_clip=tune["grad_clip"],
        ),
        compile_train_step=tune.get("compile", False),
        cudagraph=tune.get("cudagraph", False),
        compile_networks=tune["compile_networks"],
        channels_last=tune.get("channels_last", False),
        actor_critic_precision=tune["actor_critic_precision"],
    )


def make_finetune_env(
    tune: Mapping[str, Any],
    carried: Mapping[str, int],
    seed: int,
    *,
    render_quality: str = "fast",
) -> TransformedEnv:
    """``make_metaworld_env(task)`` with ``is_init`` and the policy's ``carried`` entries
    (name -> size, see :class:`FinetuneAgent`) primed with zeros."""
    env = make_metaworld_env(
        tune["task"],
        camera=tune["camera"],
        max_episode_steps=tune["max_episode_steps"],
        action_repeat=tune["action_repeat"],
        render_quality=render_quality,
        goals=tune["goals"],
        goal_marker_scale=tune.get("goal_marker_scale", 1.0),  # absent from older runs' configs
        seed=seed,
        pixels_only=True,
    )
    env.append_transform(InitTracker())
    specs = {key: Unbounded(size) for key, size in carried.items()}
    env.append_transform(TensorDictPrimer(random=False, default_value=0, **specs))
    return env


def make_collector_env(
    tune: Mapping[str, Any], carried: Mapping[str, int], seed: int, *, render_quality: str = "fast"
) -> EnvBase:
    """The training environment: one env, or a ``ParallelEnv`` of ``env_workers`` of them.

    Worker ``i`` is seeded with ``seed + 1000 * i``. The workers send their steps through
    pipes (``use_buffers=False``): with TorchRL's shared-memory buffers the main process
    spin-waits for the workers and keeps a whole core busy, which on a 2-core machine left
    2 workers no faster than 1 (measured by ``benchmarks/env_steps.py``).
    """
    workers = tune.get("env_workers", 1)
    if workers == 1:
        return make_finetune_env(tune, carried, seed, render_quality=render_quality)
    return ParallelEnv(
        workers,
        [
            partial(
                make_finetune_env,
                dict(tune),
                dict(carried),
                seed + 1000 * i,
                render_quality=render_quality,
            )
            for i in range(workers)
        ],
        use_buffers=False,
    )


def make_finetune_buffer(tune: Mapping[str, Any]) -> TensorDictReplayBuffer:
    """Replay buffer of transitions sampled as ``batch_size`` slices of ``batch_length``.

    With ``env_workers`` > 1 the storage is two-dimensional (time x worker, the collector's
    ``[workers, steps]`` batches are written along time) so episodes stay contiguous. Slices
    are drawn by TorchRL's ``SliceSampler``, or, where ``finetune.replay`` asks for
    DreamerV2's draw (``ongoing: false`` or ``prioritize_ends: true``), by
    :class:`~torchrl_prelar.data.episode_slices.EpisodeSliceSampler`.
    """
    workers = tune.get("env_workers", 1)
    replay = {**REPLAY_DEFAULTS, **(tune.get("replay") or {})}
    sampler = (
        SliceSampler(slice_len=tune["batch_length"], traj_key="traj_id")
        if replay == REPLAY_DEFAULTS
        else EpisodeSliceSampler(tune["batch_length"], traj_key="traj_id", **replay)
    )
    return TensorDictReplayBuffer(
        storage=LazyTensorStorage(tune["buffer_size"], ndim=1 if workers == 1 else 2),
        sampler=sampler,
        batch_size=tune["batch_size"] * tune["batch_length"],
    )


#: ``finetune.replay`` under which TorchRL's ``SliceSampler`` draws the slices.
REPLAY_DEFAULTS = {"ongoing": True, "prioritize_ends": False}


def sample_batch(
    buffer: TensorDictReplayBuffer, tune: Mapping[str, Any], device: torch.device
) -> TensorDictBase:
    """A ``[batch_size, batch_length]`` batch whose first step is marked ``is_init``."""
    sample = buffer.sample().reshape(tune["batch_size"], tune["batch_length"])
    sample = sample.select(*(key for key in STORED_KEYS if key != "traj_id")).to(device)
    is_init = sample.get("is_init").clone()
    is_init[:, 0] = True
    sample.set("is_init", is_init)
    return sample


@torch.no_grad()
def evaluate(env: EnvBase, policy: Callable, episodes: int, max_steps: int) -> dict[str, Any]:
    """Success rate (success ever set) and mean return of ``episodes`` mode-action episodes,
    and each episode's success and return (``episode_successes``, ``episode_returns``), from
    which intervals over seeds and episodes are drawn."""
    successes, returns = [], []
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        for _ in range(episodes):
            rollout = env.rollout(
                max_steps, policy, break_when_any_done=True, auto_cast_to_device=True
            )
            successes.append(float(rollout.get(("next", "success")).any()))
            returns.append(float(rollout.get(("next", "reward")).sum()))
    return {
        "eval_success_rate": float(np.mean(successes)),
        "eval_return": float(np.mean(returns)),
        "episode_successes": successes,
        "episode_returns": returns,
    }


class FinetuneProgress:
    """Counters and running statistics of fine-tuning; the first seven are checkpointed
    (``elapsed_seconds``: wall time of the run over all its invocations, up to the last
    checkpoint).

    The update timing of one invocation keeps its first update apart (it compiles the
    networks with ``finetune.compile_networks`` and warms the allocator), so
    :meth:`seconds_per_update` is the steady pace.

    Examples:
        >>> progress = FinetuneProgress()
        >>> for seconds in (30.0, 1.0, 0.5):
        ...     progress.record_update(seconds)
        >>> progress.updates, progress.first_update_seconds, progress.seconds_per_update()
        (3, 30.0, 0.75)
    """

    def __init__(self) -> None:
        self.env_steps = 0
        self.elapsed_seconds = 0.0
        self.updates = 0
        self.episodes = 0
        self.next_traj_id = 0
        self.env_workers = 1
        self.eval_history: list[dict[str, float]] = []
        self.first_update_seconds: float | None = None
        self.update_seconds = 0.0  # the updates of this invocation after its first
        self.collect_seconds = 0.0
        self.collected_this_run = 0
        self.updates_this_run = 0

    def record_update(self, seconds: float) -> None:
        """Count one update that took ``seconds`` of wall time."""
        if self.updates_this_run == 0:
            self.first_update_seconds = seconds
        else:
            self.update_seconds += seconds
        self.updates += 1
        self.updates_this_run += 1

    def seconds_per_update(self) -> float | None:
        """Mean wall time of this invocation's updates after its first (the first alone when
        there is one; ``None`` before any)."""
        if self.updates_this_run <= 1:
            return self.first_update_seconds
        return self.update_seconds / (self.updates_this_run - 1)

    def state_dict(self) -> dict[str, Any]:
        keys = (
            "env_steps",
            "updates",
            "episodes",
            "next_traj_id",
            "eval_history",
            "env_workers",
            "elapsed_seconds",
        )
        return {key: getattr(self, key) for key in keys}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def finetune_checkpoint(
    agent: FinetuneAgent,
    ratio: DreamerV3UpdateRatio,
    progress: FinetuneProgress,
    buffer: TensorDictReplayBuffer | None,
) -> Checkpoint:
    """The fine-tuning state as a TorchRL :class:`~torchrl.checkpoint.Checkpoint`.

    Components: ``loss`` (all model and loss state) and ``stepper`` (optimiser) as state
    dicts, ``progress`` and ``update_ratio`` counters as JSON, ``rng`` (``GlobalRNGState``)
    and, if ``buffer`` is given, ``replay`` (dumped, pickle-free).

        finetune_checkpoint(agent, ratio, progress, buffer).save(run_dir / "snapshot")
    """
    checkpoint = Checkpoint(loss=agent.loss, stepper=agent.stepper, rng=GlobalRNGState())
    checkpoint.register("progress", progress.state_dict(), adapter=JSONCheckpointAdapter())
    checkpoint.register("update_ratio", ratio.state_dict(), adapter=JSONCheckpointAdapter())
    if buffer is not None:
        checkpoint.register("replay", buffer, adapter=ReplayDumpAdapter())
    return checkpoint


def save_finetune_checkpoint(
    run_dir: Path,
    agent: FinetuneAgent,
    ratio: DreamerV3UpdateRatio,
    buffer: TensorDictReplayBuffer,
    progress: FinetuneProgress,
    save_replay: bool,
) -> Path:
    """Write ``finetune_checkpoints/checkpoint-<env_steps>/`` and delete the older ones.

    TorchRL's ``CheckpointRotation`` (``keep_last=1``) writes the checkpoint into a hidden
    folder and renames it into place, then deletes the older checkpoint: a kill at any moment
    leaves a complete latest checkpoint. With ``save_replay`` it holds the replay buffer.

    For example ``save_finetune_checkpoint(run_dir, agent, ratio, buffer, progress, True)``
    after 500 env steps writes ``run_dir/finetune_checkpoints/checkpoint-000000000500/``.
    """
    rotation = CheckpointRotation(run_dir / FINETUNE_CHECKPOINT, keep_last=1)
    checkpoint = finetune_checkpoint(agent, ratio, progress, buffer if save_replay else None)
    return rotation.save(checkpoint, step=progress.env_steps)


def restore_finetune_checkpoint(
    run_dir: Path,
    agent: FinetuneAgent,
    ratio: DreamerV3UpdateRatio,
    buffer: TensorDictReplayBuffer,
    progress: FinetuneProgress,
    device: torch.device,
) -> CheckpointLoadResult | None:
    """Restore the latest fine-tuning checkpoint of ``run_dir`` (``None``: there is none).

    ``progress`` is read first: a run resumes with the ``env_workers`` it started with (the
    replay's layout depends on it). The replay is restored if the checkpoint holds one
    (``"replay" in result.loaded``).

        restored = restore_finetune_checkpoint(run_dir, agent, ratio, buffer, progress, device)
        refill = restored is not None and "replay" not in restored.loaded

    Raises:
        ValueError: if ``run_dir`` holds only a checkpoint of the format before
            ``torchrl.checkpoint`` (``finetune_last.pt``), or ``progress.env_workers``
            differs from the checkpoint's.
        torchrl.checkpoint.CheckpointError: if the latest checkpoint is corrupt or lacks a
            component (see ``load_torchrl_checkpoint``).
    """
    directory = run_dir / FINETUNE_CHECKPOINT
    remove_interrupted_saves(directory)
    path = latest_checkpoint(directory)
    if path is None:
        if (run_dir / "finetune_last.pt").exists():
            raise ValueError(
                f"{run_dir / 'finetune_last.pt'} is a fine-tuning checkpoint of the format "
                f"before torchrl.checkpoint ({FINETUNE_CHECKPOINT}/), which is not read any "
                "more: delete it and the replay_* folders to fine-tune from the start."
            )
        return None
    workers = progress.env_workers
    read_progress = Checkpoint().register("progress", {}, adapter=JSONCheckpointAdapter())
    saved = load_torchrl_checkpoint(read_progress, path).values["progress"]
    if saved["env_workers"] != workers:
        raise ValueError(
            f"{path} was written with finetune.env_workers={saved['env_workers']}, the "
            f"configuration asks for {workers}: resume with "
            f"finetune.env_workers={saved['env_workers']} (the replay's layout depends on it)."
        )
    has_replay = "replay" in Checkpoint.manifest(path)["components"]
    checkpoint = finetune_checkpoint(agent, ratio, progress, buffer if has_replay else None)
    result = load_torchrl_checkpoint(checkpoint, path, map_location=device)
    progress.load_state_dict(result.values["progress"])
    ratio.load_state_dict(result.values["update_ratio"])
    return result


def read_finetune_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    """The latest fine-tuning checkpoint's state, to inspect it (``FileNotFoundError``: none).

    Keys: ``loss``, ``stepper`` (state dicts), ``progress``, ``update_ratio`` (dicts),
    ``rng``, ``replay`` (the dump folder, for ``make_finetune_buffer(...).loads``; absent
    without ``save_replay``) and ``path``, the checkpoint's folder.

        state = read_finetune_checkpoint("runs/prelar_quick")
        state["progress"]["env_steps"], sorted(state["stepper"]["optimizer"])
    """
    path = latest_checkpoint(Path(run_dir) / FINETUNE_CHECKPOINT)
    if path is None:
        raise FileNotFoundError(
            f"No fine-tuning checkpoint in {Path(run_dir) / FINETUNE_CHECKPOINT}."
        )
    return {**read_torchrl_checkpoint(path), "path": path}


def update_metrics(metrics: TensorDictBase, agent: FinetuneAgent) -> dict[str, float]:
    """The logged scalars of one update: losses, gradient norms, representation lr."""
    values = {key: float(value) for key, value in metrics.items() if value.numel() == 1}
    out = {
        "world_model_loss": sum(v for k, v in values.items() if k.startswith("loss_model")),
        "actor_loss": values["loss_actor"],
        "value_loss": values["loss_value"],
        "reco_mse": values["reco_mse"],
        "state_kl": values["state_kl"],
        "reward_loss": values["loss_model_reward"],
        "aux_reward_loss": values["loss_model_aux_reward"],
        "actor_entropy": values["actor_entropy"],
        "batch_reward": values["env_reward"],
    }
    if "intrinsic_bonus" in values:
        out["intrinsic_bonus"] = values["intrinsic_bonus"]
    for group in agent.optimizer.param_groups:
        out[f"grad_norm_{group['name']}"] = float(group.get("grad_norm", 0.0))
    out["representation_lr"] = agent.optimizer.param_groups[0]["lr"]
    return out
