"""PreLAR with TorchRL: pre-train a Dreamer world model on action-free video, then fine-tune.

    python examples/dreamer_prelar.py                      # quick CPU demo
    python examples/dreamer_prelar.py preset=paper device=cuda data.path=/data/rlbench
    python examples/dreamer_prelar.py stage=pretrain pretrain.updates=1000 loss.beta_action=0.5
    python examples/dreamer_prelar.py stage=pretrain loss=supervised_displacement
    python examples/dreamer_prelar.py stage=finetune finetune.task=drawer-open-v3
    python examples/dreamer_prelar.py stage=finetune arm=dreamer   # DreamerV2, no pre-training
    python examples/dreamer_prelar.py arm=apv        # APV baseline (both stages)
    python examples/dreamer_prelar.py arm=contextwm  # ContextWM baseline (both stages)
    torchrun --nproc-per-node 4 examples/dreamer_prelar.py stage=pretrain device=cuda

Everything is written to ``run_dir`` (default ``runs/prelar_<preset>``): checkpoints, CSV (and
wandb) logs, PNG curves, GIFs and a ``summary.json``; running the same command again resumes
from the last checkpoint. The two stages, :func:`run_pretrain` and :func:`run_finetune`, read
top to bottom; the pieces they build from the configuration are in ``dreamer_prelar_utils.py``.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import contextlib  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Mapping  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import hydra  # noqa: E402
import torch  # noqa: E402
from dreamer_prelar_utils import (  # noqa: E402
    FINETUNE_CHECKPOINT,
    FINETUNE_CURVES,
    PRETRAIN_CHECKPOINT,
    STORED_KEYS,
    FinetuneProgress,
    evaluate,
    make_agent,
    make_collector_env,
    make_finetune_buffer,
    make_finetune_env,
    make_latent_action_monitor,
    make_loggers,
    make_pretrain_buffer,
    make_pretrain_loss,
    restore_finetune_checkpoint,
    sample_batch,
    save_finetune_checkpoint,
    update_metrics,
    validate_arm,
    validate_finetune,
    validate_pretrain,
    world_model_kwargs,
    write_pretrain_media,
)
from omegaconf import DictConfig, OmegaConf  # noqa: E402
from tensordict import TensorDictBase  # noqa: E402
from torchrl.collectors import Collector  # noqa: E402
from torchrl.envs.utils import ExplorationType  # noqa: E402
from torchrl.trainers.algorithms import DreamerV3UpdateRatio  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from torchrl_prelar.envs.metaworld import make_metaworld_env  # noqa: E402
from torchrl_prelar.evaluation.held_out import (  # noqa: E402
    TRANSFER_GIF,
    save_latent_action_results,
)
from torchrl_prelar.io import (  # noqa: E402
    PRETRAINED_MODEL,
    load_checkpoint,
    save_checkpoint,
    update_summary,
)
from torchrl_prelar.media import plot_curves, read_csv_scalars  # noqa: E402
from torchrl_prelar.training.allocator import keep_freed_memory  # noqa: E402
from torchrl_prelar.training.distributed import (  # noqa: E402
    DistributedContext,
    distributed_session,
    scaled_lr,
    seed_everything,
)
from torchrl_prelar.training.finetune_agent import set_representation_frozen  # noqa: E402
from torchrl_prelar.training.pretrain import PreLARPretrainer, make_optimizer  # noqa: E402
from torchrl_prelar.training.run_lock import run_lock  # noqa: E402
from torchrl_prelar.training.run_settings import check_run_settings  # noqa: E402

STAGES = ("pretrain", "finetune", "all")


# ----------------------------------------------------------------------------- pre-training


def pretrain(
    trainer: PreLARPretrainer,
    sample: Callable[[], TensorDictBase],
    *,
    num_updates: int,
    run_dir: str | Path,
    log: Callable[[dict[str, float], int], None] | None = None,
    log_every: int = 10,
    checkpoint_every: int = 100,
    checkpoint_every_seconds: float | None = None,
    on_checkpoint: Callable[[int], None] | None = None,
    on_step: Callable[[int], None] | None = None,
    progress: bool = True,
    distributed: DistributedContext | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Pre-train for ``num_updates`` updates, resuming from ``run_dir`` if it has a checkpoint.

    The loop holds no state that is not in the checkpoint: the step counter, model,
    optimiser and the global RNG (which drives clip sampling and the latent action noise) are
    saved together, so a resumed run continues exactly where it stopped. Under torchrun each
    rank keeps its own random stream (all of them are checkpointed), metrics are averaged
    over the ranks before logging, and only rank 0 writes.

    Args:
        trainer: the update to repeat.
        sample: returns the next ``[B, T]`` batch (e.g. ``replay_buffer.sample``).
        num_updates: total updates of the run (including those of a resumed run).
        run_dir: folder of the checkpoint ``pretrain_last.pt``.
        log: called with ``(metrics, step)`` every ``log_every`` updates.
        checkpoint_every: updates between two atomic checkpoints (one is also written at the end).
        checkpoint_every_seconds: also checkpoint after an update once this many seconds
            passed since the last checkpoint (or the start), so a job stopped from outside
            loses at most that much; ``None``: by ``checkpoint_every`` only. One process only:
            the ranks of a torchrun job would not agree on when.
        on_checkpoint: called with the step after each checkpoint (e.g. to write media).
        on_step: called with the step after each update, after logging and before that
            step's checkpoint (e.g. to evaluate every so many updates).
        progress: show a tqdm progress bar.
        distributed: the data-parallel job (``None``: one process). Every rank calls
            :func:`pretrain`; metrics are averaged over the ranks at logging steps, and only
            rank 0 logs, writes checkpoints and calls ``on_checkpoint`` and ``on_step``.
        metadata: entries stored in every checkpoint beside the trainer's state (the run's
            ``world_model_kwargs`` and ``evaluation`` settings, which let
            ``python -m torchrl_prelar.evaluation latent-actions --checkpoint`` rebuild and
            evaluate the model of an unfinished run).

    Returns:
        The metrics of the last update as floats (empty if nothing was left to do).

    Examples:
        >>> import tempfile
        >>> from torchrl_prelar import PreLARLoss, make_world_model
        >>> from torchrl_prelar.data.synthetic import moving_square_batch
        >>> loss = PreLARLoss(make_world_model())
        >>> trainer = PreLARPretrainer(loss, make_optimizer(loss.parameters()), precision="fp32")
        >>> out = pretrain(trainer, lambda: moving_square_batch(2, 4), num_updates=2,
        ...                run_dir=tempfile.mkdtemp(), progress=False)
        >>> sorted(out)[:2]
        ['action_kl', 'grad_norm']
    """
    run_dir = Path(run_dir)
    context = distributed or DistributedContext()
    if checkpoint_every_seconds is not None and context.is_distributed:
        raise ValueError(
            "checkpoint_every_seconds is for one process: under torchrun the ranks would not "
            "agree on when to checkpoint. Use checkpoint_every (updates) instead."
        )
    checkpoint_path = run_dir / PRETRAIN_CHECKPOINT
    step = 0
    if checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path, map_location=trainer.device)
        trainer.load_state_dict(state["trainer"])
        step = state["step"]
        context.restore_rng_states(state.get("rng_per_rank", [state["rng"]]), step)
    elif context.is_distributed:
        context.seed_rank(step)

    def checkpoint() -> None:
        states = context.gather_rng_states()
        if not context.is_main:
            return
        state = {**(metadata or {}), "trainer": trainer.state_dict(), "rng": states[0]}
        state["step"] = step
        if context.is_distributed:
            state["rng_per_rank"] = states
        save_checkpoint(checkpoint_path, state)
        if on_checkpoint is not None:
            on_checkpoint(step)

    last: dict[str, float] = {}
    last_saved = time.monotonic()
    show = progress and context.is_main
    bar = tqdm(total=num_updates, initial=step, desc="pretrain", disable=not show)
    while step < num_updates:
        metrics = trainer.update(sample())
        step += 1
        bar.update(1)
        if step % log_every == 0 or step == num_updates:
            last = {key: value.item() for key, value in context.mean(metrics).items()}
            bar.set_postfix(
                {key: f"{last[key]:.2f}" for key in ("loss", "action_kl") if key in last}
            )
            if log is not None and context.is_main:
                log(last, step)
        if on_step is not None and context.is_main:
            on_step(step)
        overdue = (
            checkpoint_every_seconds is not None
            and time.monotonic() - last_saved >= checkpoint_every_seconds
        )
        if step % checkpoint_every == 0 or step == num_updates or overdue:
            checkpoint()
            last_saved = time.monotonic()
    bar.close()
    return last


def run_pretrain(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Pre-train a PreLAR world model on action-free video; return the summary.

    Under torchrun every rank calls this: it joins the job (``cfg["distributed"]``, see
    :mod:`torchrl_prelar.training.distributed`) and leaves it when done. Writes
    ``pretrain_last.pt`` (resumable), ``pretrained_world_model.pt``, the held-out
    latent-action results, media and the ``"pretrain"`` section of ``summary.json``.
    """
    settings = dict(cfg.get("distributed") or {})
    lr_scaling = settings.pop("lr_scaling", "none")
    with distributed_session(cfg["device"], seed=cfg["seed"], **settings) as job:
        # One invocation per run folder: rank 0 holds the lock for the whole job.
        with run_lock(cfg["run_dir"], "pretrain") if job.is_main else contextlib.nullcontext():
            return _run_pretrain({**cfg, "device": str(job.device)}, job, lr_scaling)


def _run_pretrain(
    cfg: Mapping[str, Any], job: DistributedContext, lr_scaling: str
) -> dict[str, Any]:
    # Set-up: run folder, seeds, video replay buffer, loss, trainer, loggers, evaluation.
    run_dir = Path(cfg["run_dir"])
    cfg = {**cfg, "world_model": world_model_kwargs(cfg)}  # every default written out
    validate_pretrain(cfg)
    check_run_settings(run_dir, "pretrain", cfg, checkpoint=run_dir / PRETRAIN_CHECKPOINT)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg["seed"])
    torch.set_num_threads(cfg.get("threads") or torch.get_num_threads())
    buffer = job.main_first(lambda: make_pretrain_buffer(cfg, run_dir))
    loss = make_pretrain_loss(cfg, buffer)
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
    loggers = make_loggers(cfg, run_dir, "pretrain") if job.is_main else None
    log = partial(loggers.log, prefix="pretrain/") if job.is_main else None
    monitor = (
        make_latent_action_monitor(cfg, run_dir, loss.world_model, log) if job.is_main else None
    )
    context = min(train["video_context"], cfg["data"]["num_transitions"] - 1)

    # The loop: resumable, checkpointed, data-parallel under torchrun.
    started = time.time()
    last = pretrain(
        trainer,
        buffer.sample,
        num_updates=train["updates"],
        run_dir=run_dir,
        log=log,
        log_every=train["log_every"],
        checkpoint_every=train["checkpoint_every"],
        # A torchrun job checkpoints by updates only: its ranks would not agree on when.
        checkpoint_every_seconds=None
        if job.is_distributed
        else train.get("checkpoint_every_seconds"),
        on_checkpoint=lambda step: write_pretrain_media(loss.world_model, buffer, run_dir, context),
        on_step=monitor.on_step if monitor is not None else None,
        distributed=job,
        metadata={
            "world_model_kwargs": cfg["world_model"],
            "evaluation": dict(cfg.get("evaluation") or {}),
        },
    )

    # The pre-trained model, the summary and the final held-out evaluation.
    summary = {
        "updates": train["updates"],
        "seconds_this_run": round(time.time() - started, 1),
        "last_metrics": last,
        "world_model": cfg["world_model"],
        "world_size": job.world_size,
    }
    if job.is_main:
        save_checkpoint(
            run_dir / PRETRAINED_MODEL,
            {
                "world_model": loss.world_model.state_dict(),
                "world_model_kwargs": cfg["world_model"],
                "evaluation": dict(cfg.get("evaluation") or {}),
            },
        )
        update_summary(run_dir, "pretrain", summary)
    if monitor is not None:
        save_latent_action_results(run_dir, monitor.evaluate(train["updates"]))
        monitor.save_transfer_gif(run_dir / TRANSFER_GIF)
    return summary


# ----------------------------------------------------------------------------- fine-tuning


def run_finetune(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Fine-tune on ``cfg["finetune"]["task"]``; resume from ``run_dir`` if it has a checkpoint.

    One training step: TorchRL's :class:`~torchrl.collectors.Collector` steps the Meta-world
    env (or a ``ParallelEnv`` of ``finetune.env_workers``) for ``update_every`` steps per
    worker with the agent's recurrent policy (uniform random actions for the first
    ``prefill`` steps); the steps go into a slice-sampled replay buffer (time x worker with
    several workers, so episodes stay contiguous; trajectory ids stay unique across workers
    and resumes); :class:`~torchrl.trainers.algorithms.DreamerV3UpdateRatio` grants one
    update (world model, actor, critic; encoder + RSSM frozen for the first
    ``freeze_updates``) per ``update_every`` env steps, and ``prefill_updates`` more once,
    right after the prefill (DreamerV2's ``pretrain``); every ``eval_every`` env steps,
    ``eval_episodes`` mode-action episodes give the success rate and return.

    Checkpoints are TorchRL ``torchrl.checkpoint`` directories
    (``finetune_checkpoints/checkpoint-<env_steps>/``, published atomically, the older one
    deleted; see :func:`~dreamer_prelar_utils.save_finetune_checkpoint`) holding the step
    counters, all model and loss state, the optimiser, the update schedule and the RNG states.
    **Replay re-fill policy on resume**: with ``save_replay`` (the default) the replay buffer
    is saved in each checkpoint, so a resumed run continues with exactly the data it had.
    Without it, the buffer restarts empty and is re-filled with ``prefill`` env steps of the
    restored policy before updates resume (they count as env steps; no catch-up burst of
    updates follows). The environment restarts a fresh episode either way. A run resumes with
    the number of workers it started with (the replay's layout depends on it).

    ``finetune.max_seconds`` bounds the wall time of one invocation: the loop stops at the
    first collected batch past it, checkpoints, and writes the curves and the summary
    (``stopped_by_max_seconds``); the same command run again resumes. Each checkpoint holds
    the run's wall time over all its invocations (``seconds_total`` in the summary), so a
    killed invocation loses only the time since its last checkpoint. A checkpoint comes every
    ``checkpoint_every`` env steps and, with ``finetune.checkpoint_every_seconds``, also once
    that many seconds have passed since the last one: a bound on what a kill can lose when
    updates are slow. While an invocation runs it holds ``<run_dir>/finetune.lock``
    (:func:`~torchrl_prelar.training.run_lock.run_lock`): a second one on the same run folder
    is refused with a ``RuntimeError`` naming the running process.

    On a CPU, ``finetune.keep_freed_memory`` applies
    :func:`~torchrl_prelar.training.allocator.keep_freed_memory` to the whole process.
    Writes ``finetune_checkpoints/``, logs under ``finetune/``,
    ``finetune_curves.png`` and the ``"finetune"`` section of ``summary.json``; returns it.
    """
    with run_lock(cfg["run_dir"], "finetune"):  # one invocation per run folder
        return _run_finetune(cfg)


def _run_finetune(cfg: Mapping[str, Any]) -> dict[str, Any]:
    # Set-up: run folder, seeds, agent, update schedule, replay buffer, resume.
    run_dir = Path(cfg["run_dir"])
    cfg = {**cfg, "world_model": world_model_kwargs(cfg)}  # every default written out
    run_dir.mkdir(parents=True, exist_ok=True)
    tune, device, seed = cfg["finetune"], torch.device(cfg["device"]), cfg["seed"]
    validate_finetune(tune)
    check_run_settings(run_dir, "finetune", cfg, checkpoint=run_dir / FINETUNE_CHECKPOINT)
    seed_everything(seed)
    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    if device.type == "cpu" and tune.get("keep_freed_memory", False):
        keep_freed_memory()

    probe = make_metaworld_env(tune["task"], max_episode_steps=tune["max_episode_steps"])
    action_dim = probe.action_spec.shape[-1]
    probe.close()
    agent = make_agent(cfg, action_dim)
    ratio = DreamerV3UpdateRatio(1.0 / tune["update_every"])
    buffer = make_finetune_buffer(tune)
    progress = FinetuneProgress()
    refill_until = tune["prefill"]
    workers = progress.env_workers = tune.get("env_workers", 1)
    restored = restore_finetune_checkpoint(run_dir, agent, ratio, buffer, progress, device)
    if restored is not None and "replay" not in restored.loaded:
        refill_until = progress.env_steps + tune["prefill"]  # documented re-fill (see above)

    loggers = make_loggers(cfg, run_dir, "finetune")
    quality = cfg["render_quality"]
    env = make_collector_env(tune, agent.carried, seed + progress.env_steps, render_quality=quality)
    eval_env = make_finetune_env(tune, agent.carried, seed + 100_000, render_quality=quality)
    episode_steps = tune["max_episode_steps"] // tune["action_repeat"]
    total = tune["env_steps"]
    max_seconds = tune.get("max_seconds")
    collector = Collector(
        env,
        agent.policy,
        frames_per_batch=tune["update_every"] * workers,
        total_frames=-1,
        init_random_frames=max(0, tune["prefill"] - progress.env_steps),
        exploration_type=ExplorationType.RANDOM,
        env_device="cpu",
        policy_device=device,  # the collector moves observations to the agent and back
        storing_device="cpu",
    )
    agent.loss.eval()  # acting: no BatchNorm statistics updates
    # Per worker: return and success of the episode under way.
    running = [{"return": 0.0, "success": 0.0} for _ in range(workers)]
    traj_offset = progress.next_traj_id  # the collector numbers trajectories from 0 again
    last_metrics: dict[str, float] = {}
    started, elapsed_before = time.time(), progress.elapsed_seconds
    last_saved, every_seconds = started, tune.get("checkpoint_every_seconds")
    bar = tqdm(total=total, initial=progress.env_steps, desc=f"fine-tuning {tune['task']}")
    tick = time.time()

    # The loop: collect, store, update, evaluate, checkpoint. A plain loop over the collector,
    # as TorchRL's sota-implementations/dreamer_v3 drives its stepper, not
    # torchrl.trainers.Trainer: there the update count per batch (DreamerV3UpdateRatio, none
    # during a re-fill) needs optim_steps_per_batch=None with a pre_optim_steps +
    # process_optim_batch hook pair, the per-update metrics reach hooks only as a per-batch
    # average (post_optim_complete_log) while this loop logs a step's output every log_every
    # updates, and the freeze schedule, episode statistics, evaluation, checkpoint and
    # max_seconds stop become five more hooks sharing these counters.
    for data in collector:
        if progress.env_steps >= total:
            break
        progress.collect_seconds += time.time() - tick
        data = data.reshape(workers, -1)  # [workers, steps]
        traj_id = data.get(("collector", "traj_ids")) + traj_offset
        data.set("traj_id", traj_id)
        progress.next_traj_id = max(progress.next_traj_id, int(traj_id.max()) + 1)
        stored = data.select(*STORED_KEYS)
        buffer.extend(stored[0] if workers == 1 else stored)
        progress.env_steps += data.numel()
        progress.collected_this_run += data.numel()
        bar.update(data.numel())
        rewards = data.get(("next", "reward")).reshape(workers, -1).tolist()
        successes = data.get(("next", "success")).reshape(workers, -1).float().tolist()
        dones = data.get(("next", "done")).reshape(*data.shape, -1).any(-1).tolist()
        for episode, *steps in zip(running, rewards, successes, dones, strict=True):
            for reward, success, done in zip(*steps, strict=True):
                episode["return"] += reward
                episode["success"] = max(episode["success"], success)
                if done:
                    progress.episodes += 1
                    loggers.log(
                        {"train_return": episode["return"], "train_success": episode["success"]},
                        progress.env_steps,
                        prefix="finetune/",
                    )
                    episode.update({"return": 0.0, "success": 0.0})

        if progress.env_steps < refill_until or len(buffer) < tune["batch_length"]:
            ratio.reset(progress.env_steps)  # no catch-up burst after (re-)filling
        else:
            burst = tune["prefill_updates"] if progress.updates == 0 else 0
            for _ in range(burst + ratio(progress.env_steps)):
                tick = time.time()
                agent.loss.train()
                set_representation_frozen(
                    agent.optimizer, progress.updates < tune["freeze_updates"], tune["model_lr"]
                )
                metrics = agent.update(sample_batch(buffer, tune, device))
                agent.loss.eval()
                progress.record_update(time.time() - tick)
                if progress.updates % tune["log_every"] == 0 or progress.updates == 1:
                    last_metrics = update_metrics(metrics, agent)
                    last_metrics["updates"] = progress.updates
                    loggers.log(last_metrics, progress.env_steps, prefix="finetune/")
                    bar.set_postfix(wm=f"{last_metrics['world_model_loss']:.1f}")

        step_before = progress.env_steps - data.numel()
        if progress.env_steps // tune["eval_every"] > step_before // tune["eval_every"]:
            result = evaluate(eval_env, agent.policy, tune["eval_episodes"], episode_steps)
            result["env_steps"] = progress.env_steps
            progress.eval_history.append(result)
            loggers.log(
                {k: v for k, v in result.items() if k.startswith("eval_")},
                progress.env_steps,
                prefix="finetune/",
            )
        out_of_time = max_seconds is not None and time.time() - started >= max_seconds
        done = progress.env_steps >= total or out_of_time
        if (
            done
            or progress.env_steps // tune["checkpoint_every"]
            > step_before // tune["checkpoint_every"]
            or (every_seconds is not None and time.time() - last_saved >= every_seconds)
        ):
            progress.elapsed_seconds = elapsed_before + time.time() - started
            save_finetune_checkpoint(run_dir, agent, ratio, buffer, progress, tune["save_replay"])
            last_saved = time.time()
        if done:
            break
        tick = time.time()
    bar.close()
    collector.shutdown()
    if not env.is_closed:  # the collector closes a ParallelEnv itself
        env.close()
    eval_env.close()

    # Curves and summary.
    series = read_csv_scalars(run_dir / "csv")
    plot_curves(
        series,
        run_dir / "finetune_curves.png",
        FINETUNE_CURVES,
        title=f"Fine-tuning {tune['task']}, arm={tune['arm']}",
        xlabel="env step",
    )
    summary = {
        "stage": "finetune",
        "task": tune["task"],
        "init": tune["init"],
        "env_steps": progress.env_steps,
        "stopped_by_max_seconds": progress.env_steps < total,
        "updates": progress.updates,
        "episodes": progress.episodes,
        "evaluations": progress.eval_history,
        "last_metrics": last_metrics,
        "seconds_this_run": round(time.time() - started, 1),
        "seconds_total": round(progress.elapsed_seconds, 1),
        "seconds_per_update": progress.seconds_per_update(),  # after this run's first update
        "first_update_seconds": progress.first_update_seconds,
        "seconds_per_env_step": progress.collect_seconds / max(1, progress.collected_this_run),
    }
    update_summary(run_dir, "finetune", summary)
    return summary


# ----------------------------------------------------------------------------- main


@hydra.main(config_path="config", config_name="config", version_base=None)
def main(config: DictConfig) -> None:
    cfg = OmegaConf.to_container(config, resolve=True)
    if cfg["stage"] not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {cfg['stage']!r}.")
    validate_arm(cfg["finetune"])  # the pre-training kind follows the arm too
    if cfg["stage"] != "pretrain" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(
            f"stage={cfg['stage']} under torchrun: only stage=pretrain runs on several ranks; "
            "fine-tune with a single process (see docs/distributed.md)."
        )
    if cfg["stage"] in ("pretrain", "all"):
        summary = run_pretrain(cfg)
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"pre-training done: {summary['last_metrics']} -> {cfg['run_dir']}")
    if cfg["stage"] in ("finetune", "all"):
        summary = run_finetune(cfg)
        print(f"fine-tuning done: {summary['evaluations'][-1:]} -> {cfg['run_dir']}")


if __name__ == "__main__":
    main()
