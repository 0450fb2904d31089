"""PreLAR fine-tuning on Meta-world with TorchRL's collector, replay buffer and Dreamer losses.

One training step, top to bottom (:func:`run_finetune`):

1. TorchRL's :class:`~torchrl.collectors.Collector` steps ``make_metaworld_env(task)`` for
   ``update_every`` env steps with the recurrent policy of
   :func:`~torchrl_prelar.training.finetune_agent.make_finetune_agent` (uniform random actions
   for the first ``prefill`` steps). With ``env_workers`` > 1 the collector steps a
   :class:`~torchrl.envs.ParallelEnv` of that many worker processes, ``update_every`` steps
   each per batch; the policy (and the world model in it) stays in this process and acts on
   all workers at once, so no weights are shipped to the workers after updates;
2. the transitions go into a :class:`~torchrl.data.TensorDictReplayBuffer` with a
   :class:`~torchrl.data.SliceSampler` (``batch_size`` slices of ``batch_length`` steps of one
   episode; the first step of every slice is marked ``is_init``, so the RSSM starts it from a
   zero state, as the pre-training clips). Several workers write into a two-dimensional
   storage (time x worker), so every episode stays contiguous along time and slices never
   straddle two workers; trajectory ids stay unique across workers and across resumed runs;
3. :class:`~torchrl.trainers.algorithms.DreamerV3UpdateRatio` grants one update per
   ``update_every`` env steps once ``prefill`` steps are stored; an update is one
   :class:`~torchrl.trainers.algorithms.DreamerV3OptimizationStepper` step of the world model,
   actor and critic, with encoder + RSSM at learning rate 0 for the first ``freeze_updates``;
4. every ``eval_every`` env steps, ``eval_episodes`` episodes with the mode action: success
   rate (an episode succeeds if ``success`` was ever set) and return.

Checkpoints (``finetune_last.pt``, atomic) hold the step counters, all model and loss state
(world model, actor, critic and its target, intrinsic-bonus queue), the optimiser, the update
schedule and the RNG states. **Replay re-fill policy on resume**: with ``save_replay`` (the
default) the replay buffer is written next to each checkpoint (``replay_<env_steps>/``, the
checkpoint names the directory, older ones are deleted after the checkpoint is written), so a
resumed run continues with exactly the data it had. Without it, the buffer restarts empty and is
re-filled with ``prefill`` env steps of the restored policy (not random actions) before updates
resume; these steps count as env steps, and no catch-up burst of updates follows. In both cases
the environment restarts a fresh episode (the episode cut by the stop is kept as a shorter one).
A run resumes with the number of workers it started with (the replay's layout depends on it).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDictBase
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, SliceSampler, TensorDictReplayBuffer, Unbounded
from torchrl.envs import EnvBase, InitTracker, ParallelEnv, TensorDictPrimer, TransformedEnv
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.trainers.algorithms import DreamerV3UpdateRatio
from tqdm.auto import tqdm

from torchrl_prelar.envs.metaworld import make_metaworld_env
from torchrl_prelar.training.allocator import keep_freed_memory
from torchrl_prelar.training.checkpoint import (
    check_no_pickles,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    update_summary,
)
from torchrl_prelar.training.distributed import seed_everything
from torchrl_prelar.training.finetune_agent import (
    FinetuneAgent,
    make_finetune_agent,
    set_representation_frozen,
)
from torchrl_prelar.training.logging import RunLoggers
from torchrl_prelar.training.media import plot_curves, read_csv_scalars

CHECKPOINT_NAME = "finetune_last.pt"
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
CURVES = ("finetune/eval_success_rate", "finetune/eval_return", "finetune/world_model_loss")


def make_finetune_env(
    tune: Mapping[str, Any], carried: Mapping[str, int], seed: int
) -> TransformedEnv:
    """``make_metaworld_env(task)`` with ``is_init`` and the policy's ``carried`` entries
    (name -> size, see :class:`FinetuneAgent`) primed with zeros."""
    env = make_metaworld_env(
        tune["task"],
        camera=tune["camera"],
        max_episode_steps=tune["max_episode_steps"],
        action_repeat=tune["action_repeat"],
        seed=seed,
        pixels_only=True,
    )
    env.append_transform(InitTracker())
    specs = {key: Unbounded(size) for key, size in carried.items()}
    env.append_transform(TensorDictPrimer(random=False, default_value=0, **specs))
    return env


def make_collector_env(tune: Mapping[str, Any], carried: Mapping[str, int], seed: int) -> EnvBase:
    """The training environment: one env, or a ``ParallelEnv`` of ``env_workers`` of them.

    Worker ``i`` is seeded with ``seed + 1000 * i``. The workers send their steps through
    pipes (``use_buffers=False``): with TorchRL's shared-memory buffers the main process
    spin-waits for the workers and keeps a whole core busy, which on a 2-core machine left
    2 workers no faster than 1 (measured by ``benchmarks/env_steps.py``).
    """
    workers = tune.get("env_workers", 1)
    if workers == 1:
        return make_finetune_env(tune, carried, seed)
    return ParallelEnv(
        workers,
        [
            partial(make_finetune_env, dict(tune), dict(carried), seed + 1000 * i)
            for i in range(workers)
        ],
        use_buffers=False,
    )


def make_finetune_buffer(tune: Mapping[str, Any]) -> TensorDictReplayBuffer:
    """Replay buffer of transitions sampled as ``batch_size`` slices of ``batch_length``.

    With ``env_workers`` > 1 the storage is two-dimensional (time x worker, the collector's
    ``[workers, steps]`` batches are written along time) so episodes stay contiguous.
    """
    workers = tune.get("env_workers", 1)
    return TensorDictReplayBuffer(
        storage=LazyTensorStorage(tune["buffer_size"], ndim=1 if workers == 1 else 2),
        sampler=SliceSampler(slice_len=tune["batch_length"], traj_key="traj_id"),
        batch_size=tune["batch_size"] * tune["batch_length"],
    )


def sample_batch(buffer: TensorDictReplayBuffer, tune: Mapping[str, Any], device) -> TensorDictBase:
    """A ``[batch_size, batch_length]`` batch whose first step is marked ``is_init``."""
    sample = buffer.sample().reshape(tune["batch_size"], tune["batch_length"])
    sample = sample.select(*(key for key in STORED_KEYS if key != "traj_id")).to(device)
    is_init = sample.get("is_init").clone()
    is_init[:, 0] = True
    sample.set("is_init", is_init)
    return sample


@torch.no_grad()
def evaluate(env, policy, episodes: int, max_steps: int) -> dict[str, float]:
    """Success rate (success ever set) and mean return of ``episodes`` mode-action episodes."""
    successes, returns = [], []
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        for _ in range(episodes):
            rollout = env.rollout(max_steps, policy, break_when_any_done=True)
            successes.append(float(rollout.get(("next", "success")).any()))
            returns.append(float(rollout.get(("next", "reward")).sum()))
    return {"eval_success_rate": float(np.mean(successes)), "eval_return": float(np.mean(returns))}


def _validate(tune: Mapping[str, Any]) -> None:
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


class _Progress:
    """Counters and running statistics saved in the checkpoint."""

    def __init__(self):
        self.env_steps = 0
        self.updates = 0
        self.episodes = 0
        self.next_traj_id = 0
        self.env_workers = 1
        self.eval_history: list[dict[str, float]] = []
        self.update_seconds = 0.0
        self.collect_seconds = 0.0
        self.collected_this_run = 0
        self.updates_this_run = 0

    def state_dict(self) -> dict[str, Any]:
        keys = ("env_steps", "updates", "episodes", "next_traj_id", "eval_history", "env_workers")
        return {key: getattr(self, key) for key in keys}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def _save(run_dir: Path, agent, ratio, buffer, progress: _Progress, save_replay: bool) -> None:
    replay = None
    if save_replay:
        replay = f"replay_{progress.env_steps}"
        target = run_dir / replay
        shutil.rmtree(target, ignore_errors=True)
        buffer.dumps(target)
        # Only memory-mapped tensors and JSON stay: our buffer has no prefetch queue to keep.
        (target / "prefetch.pkl").unlink(missing_ok=True)
    save_checkpoint(
        run_dir / CHECKPOINT_NAME,
        {
            "progress": progress.state_dict(),
            "loss": agent.loss.state_dict(),
            "stepper": agent.stepper.state_dict(),
            "update_ratio": ratio.state_dict(),
            "rng": rng_state(),
            "replay": replay,
        },
    )
    for old in run_dir.glob("replay_*"):
        if old.name != replay:
            shutil.rmtree(old, ignore_errors=True)


def _update_metrics(metrics: TensorDictBase, agent: FinetuneAgent) -> dict[str, float]:
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


def run_finetune(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Fine-tune on ``cfg["finetune"]["task"]``; resume from ``run_dir`` if it has a checkpoint.

    Reads ``run_dir``, ``finetune``, ``world_model``, ``device``, ``precision``, ``seed``,
    ``logger`` (and ``loss`` for the KL / reconstruction settings). On a CPU,
    ``finetune.keep_freed_memory`` applies :func:`~torchrl_prelar.training.allocator.
    keep_freed_memory` to the whole process. Writes
    ``finetune_last.pt``, ``replay_<step>/``, CSV / wandb logs under ``finetune/`` (and
    ``cfg`` as hyperparameters, see :meth:`RunLoggers.log_hparams`),
    ``finetune_curves.png`` and the ``"finetune"`` section of ``summary.json``; returns it.
    """
    run_dir = Path(cfg["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    tune, device, seed = cfg["finetune"], torch.device(cfg["device"]), cfg["seed"]
    _validate(tune)
    seed_everything(seed)
    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    if device.type == "cpu" and tune.get("keep_freed_memory", False):
        keep_freed_memory()

    probe = make_metaworld_env(tune["task"], max_episode_steps=tune["max_episode_steps"])
    action_dim = probe.action_spec.shape[-1]
    probe.close()
    agent = make_finetune_agent(cfg, action_dim)
    ratio = DreamerV3UpdateRatio(1.0 / tune["update_every"])
    buffer = make_finetune_buffer(tune)
    progress = _Progress()
    refill_until = tune["prefill"]
    workers = progress.env_workers = tune.get("env_workers", 1)
    checkpoint_path = run_dir / CHECKPOINT_NAME
    if checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path, map_location=device)
        progress.load_state_dict(state["progress"])
        if progress.env_workers != workers:
            raise ValueError(
                f"{checkpoint_path} was written with finetune.env_workers="
                f"{progress.env_workers}, the configuration asks for {workers}: resume with "
                f"finetune.env_workers={progress.env_workers} (the replay's layout depends on it)."
            )
        agent.loss.load_state_dict(state["loss"])
        agent.stepper.load_state_dict(state["stepper"])
        ratio.load_state_dict(state["update_ratio"])
        set_rng_state(state["rng"])
        if state["replay"] and (run_dir / state["replay"]).exists():
            check_no_pickles(run_dir / state["replay"])
            buffer.loads(run_dir / state["replay"])
        else:  # documented re-fill: `prefill` steps of the restored policy
            refill_until = progress.env_steps + tune["prefill"]

    loggers = RunLoggers.create(run_dir, cfg.get("name", "finetune"), **cfg["logger"])
    loggers.log_hparams(cfg)
    env = make_collector_env(tune, agent.carried, seed + progress.env_steps)
    eval_env = make_finetune_env(tune, agent.carried, seed + 100_000)
    episode_steps = tune["max_episode_steps"] // tune["action_repeat"]
    total = tune["env_steps"]
    collector = Collector(
        env,
        agent.policy,
        frames_per_batch=tune["update_every"] * workers,
        total_frames=-1,
        init_random_frames=max(0, tune["prefill"] - progress.env_steps),
        exploration_type=ExplorationType.RANDOM,
        storing_device="cpu",
    )
    agent.loss.eval()  # acting: no BatchNorm statistics updates
    # Per worker: return and success of the episode under way.
    running = [{"return": 0.0, "success": 0.0} for _ in range(workers)]
    traj_offset = progress.next_traj_id  # the collector numbers trajectories from 0 again
    last_metrics: dict[str, float] = {}
    started = time.time()
    bar = tqdm(total=total, initial=progress.env_steps, desc=f"fine-tuning {tune['task']}")
    tick = time.time()
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
            for _ in range(ratio(progress.env_steps)):
                tick = time.time()
                agent.loss.train()
                set_representation_frozen(
                    agent.optimizer, progress.updates < tune["freeze_updates"], tune["model_lr"]
                )
                metrics = agent.stepper.step(None, sample_batch(buffer, tune, device))
                agent.loss.eval()
                progress.updates += 1
                progress.updates_this_run += 1
                progress.update_seconds += time.time() - tick
                if progress.updates % tune["log_every"] == 0 or progress.updates == 1:
                    last_metrics = _update_metrics(metrics, agent)
                    last_metrics["updates"] = progress.updates
                    loggers.log(last_metrics, progress.env_steps, prefix="finetune/")
                    bar.set_postfix(wm=f"{last_metrics['world_model_loss']:.1f}")

        step_before = progress.env_steps - data.numel()
        if progress.env_steps // tune["eval_every"] > step_before // tune["eval_every"]:
            result = evaluate(eval_env, agent.policy, tune["eval_episodes"], episode_steps)
            result["env_steps"] = progress.env_steps
            progress.eval_history.append(result)
            loggers.log(
                {k: v for k, v in result.items() if k != "env_steps"},
                progress.env_steps,
                prefix="finetune/",
            )
        done = progress.env_steps >= total
        if (
            done
            or progress.env_steps // tune["checkpoint_every"]
            > step_before // tune["checkpoint_every"]
        ):
            _save(run_dir, agent, ratio, buffer, progress, tune["save_replay"])
        if done:
            break
        tick = time.time()
    bar.close()
    collector.shutdown()
    if not env.is_closed:  # the collector closes a ParallelEnv itself
        env.close()
    eval_env.close()

    series = read_csv_scalars(run_dir / "csv")
    plot_curves(
        series,
        run_dir / "finetune_curves.png",
        list(CURVES),
        title=f"PreLAR fine-tuning, {tune['task']}",
    )
    summary = {
        "stage": "finetune",
        "task": tune["task"],
        "init": tune["init"],
        "env_steps": progress.env_steps,
        "updates": progress.updates,
        "episodes": progress.episodes,
        "evaluations": progress.eval_history,
        "last_metrics": last_metrics,
        "seconds_this_run": round(time.time() - started, 1),
        "seconds_per_update": progress.update_seconds / max(1, progress.updates_this_run),
        "seconds_per_env_step": progress.collect_seconds / max(1, progress.collected_this_run),
    }
    update_summary(run_dir, "finetune", summary)
    return summary
