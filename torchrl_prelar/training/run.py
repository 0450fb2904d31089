"""Stages of ``examples/dreamer_prelar.py``, as functions of a plain configuration dict.

Each stage builds its pieces from the configuration (see ``examples/config/``), runs, and
writes into ``cfg["run_dir"]``: checkpoints, CSV (and wandb) logs, PNG curves, a GIF, and a
``summary.json``. Re-running the same command resumes from the last checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torchrl.data import ReplayBuffer
from tqdm.auto import tqdm

from torchrl_prelar.data.episodes import EpisodeSource
from torchrl_prelar.data.replay import make_video_replay_buffer
from torchrl_prelar.evaluation.held_out import (
    TRANSFER_GIF,
    HeldOutConfig,
    LatentActionMonitor,
    generate_held_out_sets,
    load_clip_sets,
    save_latent_action_results,
)
from torchrl_prelar.modules import (
    LatentActionModel,
    PreLARWorldModel,
    make_world_model,
    world_model_config,
)
from torchrl_prelar.modules.contextwm import STACKED_BASELINES
from torchrl_prelar.objectives import PreLARLoss
from torchrl_prelar.training.checkpoint import save_checkpoint, update_summary
from torchrl_prelar.training.distributed import (
    DistributedContext,
    distributed_session,
    scaled_lr,
    seed_everything,
)
from torchrl_prelar.training.evaluate import open_loop_prediction
from torchrl_prelar.training.logging import RunLoggers
from torchrl_prelar.training.media import plot_curves, read_csv_scalars, save_prediction_gif
from torchrl_prelar.training.pretrain import PreLARPretrainer, make_optimizer, pretrain

PRETRAINED_MODEL = "pretrained_world_model.pt"


def video_sources(data: Mapping[str, Any], run_dir: Path) -> list[EpisodeSource | list]:
    """The episode sources named by ``data["source"]``.

    ``synthetic``: moving squares; ``metaworld``: scripted Meta-world videos generated into
    ``data["video_dir"]`` (resumable); ``rlbench``: a folder of APV ``.npz`` episodes;
    ``ssv2``: Something-Something-V2 frame folders with a list file; ``video_folder``: video
    files or image-sequence folders.
    """
    kind = data["source"]
    if kind == "synthetic":
        from torchrl_prelar.data.synthetic import moving_square_episodes

        return [moving_square_episodes(data["episodes"], data["episode_length"], seed=0)]
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
        f"Unknown data source {kind!r}: expected synthetic, metaworld, rlbench, ssv2 or "
        "video_folder."
    )


def make_pretrain_buffer(cfg: Mapping[str, Any], run_dir: Path) -> ReplayBuffer:
    """The on-disk video replay buffer of the run (reopened as it is when it exists)."""
    data = cfg["data"]
    root = run_dir / "video_buffer"
    sources = [] if (root / "storage").exists() else video_sources(data, run_dir)
    return make_video_replay_buffer(
        sources,
        num_transitions=data["num_transitions"],
        batch_size=data["batch_size"],
        root=root,
        prefetch=data.get("prefetch") or None,
    )


def make_pretrain_loss(cfg: Mapping[str, Any]) -> PreLARLoss:
    """The world model of ``cfg["world_model"]`` inside a :class:`PreLARLoss`."""
    model_cfg = cfg["world_model"]
    config = world_model_config(model_cfg["preset"], **model_cfg.get("overrides", {}))
    init = cfg.get("finetune", {}).get("init")
    loss_settings = dict(cfg["loss"])
    if init in STACKED_BASELINES:  # APV / ContextWM pre-train an action-free RSSM
        world_model = STACKED_BASELINES[init][0](config).to(cfg["device"])
        # No latent action: the terms that decode through one do not apply.
        loss_settings.update(lambda_forward_reco=0.0, lambda_prior_reco=0.0)
    else:
        world_model = make_world_model(config).to(cfg["device"])
    return PreLARLoss(world_model, **loss_settings)


def make_latent_action_monitor(
    cfg: Mapping[str, Any],
    run_dir: Path,
    world_model: PreLARWorldModel,
    log: Callable[[dict[str, float], int], None],
) -> LatentActionMonitor | None:
    """The held-out latent-action evaluation of ``cfg["evaluation"]``.

    Writes (or completes) the held-out episodes under ``evaluation.dir`` (default
    ``<run_dir>/heldout``): Meta-world scripted episodes, or moving squares when the run
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
        HeldOutConfig.from_mapping({"noise": data["noise"], **settings}),
        synthetic=data["source"] == "synthetic",
        pretrain_tasks=data.get("tasks") if data["source"] == "metaworld" else None,
    )
    return LatentActionMonitor(
        world_model,
        load_clip_sets(folders, num_transitions=settings["num_transitions"]),
        context=settings["context"],
        every=settings["probe_every"],
        last_step=cfg["pretrain"]["updates"],
        log=log,
    )


def _write_pretrain_media(
    world_model: PreLARWorldModel, buffer: ReplayBuffer, run_dir: Path, context: int
) -> None:
    clip = buffer.sample()[0].to(next(world_model.parameters()).device)
    truth, prediction = open_loop_prediction(world_model, clip, context=context)
    save_prediction_gif(truth.cpu(), prediction.cpu(), context, run_dir / "pretrain_prediction.gif")
    series = read_csv_scalars(run_dir / "csv")
    names = [name for name in series if name.startswith("pretrain/")]
    plot_curves(series, run_dir / "pretrain_curves.png", names, title="PreLAR pre-training")


def run_pretrain(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Pre-train a PreLAR world model on action-free video; return the summary.

    Under torchrun every rank calls this: it joins the job (``cfg["distributed"]``, see
    :mod:`torchrl_prelar.training.distributed`) and leaves it when done.
    """
    settings = dict(cfg.get("distributed") or {})
    lr_scaling = settings.pop("lr_scaling", "none")
    with distributed_session(cfg["device"], seed=cfg["seed"], **settings) as job:
        return _run_pretrain({**cfg, "device": str(job.device)}, job, lr_scaling)


def _run_pretrain(
    cfg: Mapping[str, Any], job: DistributedContext, lr_scaling: str
) -> dict[str, Any]:
    run_dir = Path(cfg["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg["seed"])
    torch.set_num_threads(cfg.get("threads") or torch.get_num_threads())
    buffer = job.main_first(lambda: make_pretrain_buffer(cfg, run_dir))
    loss = make_pretrain_loss(cfg)
    train = cfg["pretrain"]
    lr = scaled_lr(train["lr"], job.world_size, lr_scaling)
    trainer = PreLARPretrainer(
        loss,
        make_optimizer(loss.parameters(), lr, train["eps"], train["weight_decay"]),
        grad_clip=train["grad_clip"],
        precision=cfg["precision"],
        device=cfg["device"],
        channels_last=train["channels_last"],
        compile_networks=train.get("compile", False),
        distributed=job,
    )
    loggers = RunLoggers.create(run_dir, cfg["name"], **cfg["logger"]) if job.is_main else None
    if loggers is not None:
        loggers.log_hparams(cfg)
    log = partial(loggers.log, prefix="pretrain/") if job.is_main else None
    monitor = (
        make_latent_action_monitor(cfg, run_dir, loss.world_model, log) if job.is_main else None
    )
    context = min(train["video_context"], cfg["data"]["num_transitions"] - 1)
    started = time.time()
    last = pretrain(
        trainer,
        buffer.sample,
        num_updates=train["updates"],
        run_dir=run_dir,
        log=log,
        log_every=train["log_every"],
        checkpoint_every=train["checkpoint_every"],
        on_checkpoint=lambda step: _write_pretrain_media(
            loss.world_model, buffer, run_dir, context
        ),
        on_step=monitor.on_step if monitor is not None else None,
        distributed=job,
    )
    summary = {
        "updates": train["updates"],
        "seconds_this_run": round(time.time() - started, 1),
        "last_metrics": last,
        "world_model": dict(cfg["world_model"]),
        "world_size": job.world_size,
    }
    if job.is_main:
        save_checkpoint(
            run_dir / PRETRAINED_MODEL,
            {
                "world_model": loss.world_model.state_dict(),
                "config": dict(cfg["world_model"]),
                "evaluation": dict(cfg.get("evaluation") or {}),
            },
        )
        update_summary(run_dir, "pretrain", summary)
    if monitor is not None:
        save_latent_action_results(run_dir, monitor.evaluate(train["updates"]))
        monitor.save_transfer_gif(run_dir / TRANSFER_GIF)
    return summary
