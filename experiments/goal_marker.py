"""Can the world model learn to draw the goal? Offline world models on reach, marker recall as
they train.

The fine-tuned DreamerV2 world models of ``docs/results.md`` never draw reach's goal marker
(``experiments/goal_probe.py``: recall 0). This script asks whether the world model can learn it
at all, away from the agent: each *variant* trains a world model alone (the agent's world-model
update, :func:`~torchrl_prelar.training.model_gap.finetune_world_model`; no reward head, no
actor) on the same random-action reach-v3 episodes, and every ``--eval-every`` updates
measures the goal marker's recall (:func:`goal_probe.goal_marker_recall`) in its posterior
reconstruction of the last frame of held-out episodes (other seeds). One change per variant:

- ``fast``: a fresh ``small`` world model on frames rendered as the fine-tuning runs render
  them (``render_quality=fast``);
- ``metaworld``: the same on frames with Meta-world's own MSAA and shadows, as the anchors'
  renderer draws them;
- ``depth48``: ``fast``, with the conv encoder and decoder as wide as DreamerV2's
  (``cnn_depth`` 48 instead of the ``small`` model's 16);
- ``prelar``: the pre-trained PreLAR world model of ``--pretrained`` (a new action encoder,
  encoder and RSSM frozen for the first 100 updates, as the ``prelar`` arm fine-tunes), on
  the ``fast`` frames;
- ``free_nats1``: ``fast`` with 1 free nat of state KL per step (DreamerV3's free bits; the
  anchors' DreamerV2 has none): the first nat the posterior spends on an observation, such
  as where the goal is, costs nothing;
- ``free_nats30``: ``fast`` with 30 free nats of state KL per step, of the at most 44
  (ln 16 for each of 16 categoricals) that the ``small`` state holds: the posterior encodes
  its frames at no cost, close to an autoencoder through the RSSM (a diagnostic of whether
  the KL is what keeps the marker out);
- ``rssm1024``: ``fast``, with the RSSM as large as DreamerV2's (1024 deterministic and hidden
  units, 32 categoricals of 32 classes, instead of 256 and 16 x 16);
- ``big_marker``: ``fast`` with the goal's sphere drawn 3 times as wide (about 9 times the
  pixels), in the training and the held-out frames: a diagnostic of whether the marker's
  share of the reconstruction loss is what keeps it out of the model;
- ``reward``: ``fast`` with the agent's two reward heads trained on the episodes' rewards
  with DreamerV2's Gaussian reward loss (``preset=metaworld``'s ``finetune.reward_loss``),
  their gradient reaching the world model as in the agent (and in DreamerV2, whose
  ``grad_heads`` are the decoder and the reward head): reach's reward depends on where the
  goal is, so a model that predicts it must hold the goal. Its batches are drawn by
  :func:`reward_clip_sampler` (the rewards come with them) instead of the video dataset.
- ``reward400``: ``reward`` with reward heads of DreamerV2's size (4 layers of 400 units,
  instead of the ``small`` world model's 2 of 128).

With ``--replay RUN_DIR`` the world models train on a fine-tuning run's own replay buffer (its
latest checkpoint: the agent's episodes, with the hand where the policy took it) instead of
the random-action episodes, on which world models trained from scratch learn to ignore their
frames (``docs/results.md``); variants that change the frames (``metaworld``,
``big_marker``) do not apply.

With ``--action-hold N`` each random action of the training episodes is held for ``N`` env
steps (the held-out episodes keep one action per step), so the hand travels further from
where reach resets it; on such episodes the world models do read their frames
(``docs/results.md``).

Besides the held-out episodes, each evaluation on random-action episodes measures the recall
on the last frames of the training episodes themselves (``seen_goals_recall``: the goals the
model trained on) and of as many new episodes of the same kind (``new_goals_recall``: other
seeds, other goals), so that a model that learns its training goals without generalising to
new ones shows as such.

``OUT`` (JSON) holds the settings and per variant its command, machine, the recall, the
marker's size and the training losses at each evaluation; ``OUT`` with ``.png`` is the figure.
A variant already in ``OUT`` is skipped, so the same command resumes. Each variant is added to
``OUT`` when it finishes, under a lock, so several invocations (one per core) may share one
``OUT``.

    MUJOCO_GL=egl python experiments/goal_marker.py --variants fast metaworld \
        --out runs/goal_marker.json
    MUJOCO_GL=egl python experiments/goal_marker.py --variants prelar \
        --pretrained runs/prelar_long/pretrained_world_model.pt --out runs/goal_marker.json
    MUJOCO_GL=egl python experiments/goal_marker.py --variants fast free_nats1 \
        --replay runs/metaworld/dreamer_seed0 --out runs/goal_marker_replay.json
    MUJOCO_GL=egl python experiments/goal_marker.py --variants fast metaworld --action-hold 25 \
        --updates 600 --eval-every 200 --out runs/goal_marker_hold25.json
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from tensordict import TensorDictBase  # noqa: E402
from torchrl.data import SliceSampler, TensorDictReplayBuffer  # noqa: E402

from torchrl_prelar.data.episodes import Episode  # noqa: E402
from torchrl_prelar.io import atomic_write_text  # noqa: E402
from torchrl_prelar.training.finetune_agent import (  # noqa: E402
    AUX_REWARD_KEY,
    REWARD_KEY,
    build_finetune_world_model,
    make_finetune_optimizer,
    make_world_model_stepper,
)
from torchrl_prelar.training.model_gap import (  # noqa: E402
    finetune_world_model,
    make_model_gap_world_model,
    make_transition_buffer,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from goal_probe import (  # noqa: E402
    episodes_marker_recall,
    last_posterior,
    random_action_episodes,
    reward_readout,
    run_config,
)

#: Each variant's one change: the frames' render quality, the world model's initialisation
#: (a ``MODEL_GAP_ARMS`` key), the updates with encoder and RSSM frozen, changes to the
#: ``--world-model`` arguments of a fresh world model, the state KL's free nats, the goal
#: sphere's radius in the frames (``marker_scale``), and the loss of the reward heads trained
#: with the world model (``reward_loss``; none without it).
VARIANTS: dict[str, dict[str, Any]] = {
    "fast": {"render_quality": "fast", "arm": "dreamer", "freeze_updates": 0},
    "metaworld": {"render_quality": "metaworld", "arm": "dreamer", "freeze_updates": 0},
    "depth48": {
        "render_quality": "fast",
        "arm": "dreamer",
        "freeze_updates": 0,
        "world_model": {"encoder": {"depth": 48}, "decoder": {"depth": 48}},
    },
    "prelar": {"render_quality": "fast", "arm": "prelar", "freeze_updates": 100},
    "free_nats1": {
        "render_quality": "fast",
        "arm": "dreamer",
        "freeze_updates": 0,
        "free_nats": 1.0,
    },
    "free_nats30": {
        "render_quality": "fast",
        "arm": "dreamer",
        "freeze_updates": 0,
        "free_nats": 30.0,
    },
    "rssm1024": {
        "render_quality": "fast",
        "arm": "dreamer",
        "freeze_updates": 0,
        "world_model": {"rssm": {"deter": 1024, "hidden": 1024, "categoricals": 32, "classes": 32}},
    },
    "big_marker": {
        "render_quality": "fast",
        "arm": "dreamer",
        "freeze_updates": 0,
        "marker_scale": 3.0,
    },
    "reward": {
        "render_quality": "fast",
        "arm": "dreamer",
        "freeze_updates": 0,
        "reward_loss": "gaussian",
    },
    "reward400": {
        "render_quality": "fast",
        "arm": "dreamer",
        "freeze_updates": 0,
        "reward_loss": "gaussian",
        "world_model": {"reward_head": {"hidden": 400, "depth": 4}},
    },
}
TASK = "reach-v3"
#: The world models' learning rate (``finetune_world_model``'s default, the agent's).
LR = 3e-4


def as_episodes(data: Mapping[str, np.ndarray], name: str) -> list[Episode]:
    """The rollouts of :func:`goal_probe.random_action_episodes` as action :class:`Episode`\\ s
    (frames channels last; ``actions[t]`` taken just before frame ``t``, a zero row first).

    Examples:
        >>> data = {"frames": np.zeros((2, 4, 3, 8, 8), np.uint8),
        ...         "actions": np.ones((2, 3, 4), np.float32)}
        >>> episodes = as_episodes(data, "train")
        >>> episodes[1].frames.shape, episodes[1].actions[:, 0].tolist(), episodes[1].name
        ((4, 8, 8, 3), [0.0, 1.0, 1.0, 1.0], 'train-1')
    """
    episodes = []
    for index, (frames, actions) in enumerate(zip(data["frames"], data["actions"], strict=True)):
        padded = np.concatenate([np.zeros_like(actions[:1]), actions])
        episodes.append(
            Episode(
                frames.transpose(0, 2, 3, 1).copy(),
                padded,
                name=f"{name}-{index}",
                source=TASK,
            )
        )
    return episodes


def reward_clip_sampler(
    data: Mapping[str, np.ndarray], *, batch_size: int, num_transitions: int
) -> Callable[[], TensorDictBase]:
    """Batches of ``[batch_size, num_transitions]`` clips of :func:`random_action_episodes`
    ``data`` with their rewards: an episode and a start drawn uniformly (torch's global
    generator, so a resumed run draws as an uninterrupted one), ``"pixels"`` o_t,
    ``("next", "pixels")`` o_{t+1}, the ``"action"`` between them, ``("next", "reward")``
    after it, ``"is_init"`` at each clip's first step.

    Examples:
        >>> data = {"frames": np.zeros((4, 7, 3, 8, 8), np.uint8),
        ...         "actions": np.zeros((4, 6, 2), np.float32),
        ...         "reward": np.arange(24, dtype=np.float32).reshape(4, 6)}
        >>> batch = reward_clip_sampler(data, batch_size=3, num_transitions=5)()
        >>> batch["next", "pixels"].shape, batch["next", "reward"].shape
        (torch.Size([3, 5, 3, 8, 8]), torch.Size([3, 5, 1]))
    """
    from tensordict import TensorDict

    frames = torch.from_numpy(data["frames"])
    actions, reward = torch.from_numpy(data["actions"]), torch.from_numpy(data["reward"])
    episodes, steps = actions.shape[:2]
    if steps < num_transitions:
        raise ValueError(f"Episodes of {steps} steps are shorter than {num_transitions}.")
    offsets = torch.arange(num_transitions)

    def sample() -> TensorDictBase:
        episode = torch.randint(episodes, (batch_size, 1))
        step = torch.randint(steps - num_transitions + 1, (batch_size, 1)) + offsets
        is_init = torch.zeros(batch_size, num_transitions, 1, dtype=torch.bool)
        is_init[:, 0] = True
        return TensorDict(
            {
                "pixels": frames[episode, step],
                "action": actions[episode, step],
                "is_init": is_init,
                "next": {
                    "pixels": frames[episode, step + 1],
                    "reward": reward[episode, step].unsqueeze(-1),
                },
            },
            [batch_size, num_transitions],
        )

    return sample


def marker_recall(world_model, data: Mapping[str, np.ndarray]) -> dict[str, float]:
    """The goal marker's recall in ``world_model``'s reconstruction of the episodes' last
    frames (:func:`goal_probe.episodes_marker_recall`)."""
    reconstruction = last_posterior(world_model, data["frames"], data["actions"])["reconstruction"]
    return episodes_marker_recall(reconstruction, data)


def _score_episode_sets(
    world_model, sets: Mapping[str, Mapping[str, np.ndarray]]
) -> dict[str, float]:
    """The marker's recall on each named set of episodes and, for a world model with reward
    heads, how well it predicts their rewards against the hand alone
    (:func:`goal_probe.reward_readout`, each episode its own goal)."""
    result = {}
    for name, data in sets.items():
        if not len(world_model.reward_heads):
            result[f"{name}_recall"] = marker_recall(world_model, data)["recall"]
            continue
        posterior = last_posterior(world_model, data["frames"], data["actions"])  # one pass
        result[f"{name}_recall"] = episodes_marker_recall(posterior["reconstruction"], data)[
            "recall"
        ]
        readout = reward_readout(posterior["reward"], data, np.arange(len(data["goal"])))
        result[f"{name}_reward_r2"] = readout["r2"]
        result[f"{name}_hand_only_r2"] = readout["hand_only_r2"]
    return result


def train_variant(
    settings: Mapping[str, Any],
    *,
    sample: Callable[[], TensorDictBase],
    action_dim: int,
    heldout: Mapping[str, np.ndarray],
    updates: int,
    eval_every: int,
    pretrained: Path | None,
    seed: int,
    world_model_kwargs: Mapping[str, Any] | None = None,
    checkpoint: Path | None = None,
    started: float | None = None,
    also: Mapping[str, Mapping[str, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """Train one variant's world model alone on batches from ``sample`` and measure the
    marker's recall as it goes.

    ``also`` names more sets of episodes (as :func:`goal_probe.random_action_episodes`
    returns them) whose recall each evaluation measures too, as ``<name>_recall``: for
    example the training episodes themselves (the goals the model trained on) and new
    episodes of the same kind (new goals), beside the held-out episodes of ``heldout``.

    Returns the marker's mean ``marker_pixels`` and ``marker_contrast`` per held-out frame
    and, per evaluation (before the first update and every ``eval_every`` updates): the
    ``updates`` done, the ``recall`` (and each ``<name>_recall`` of ``also``), and the mean
    ``reco_mse`` and ``state_kl`` of the updates since the last evaluation; ``seconds``, the
    wall time from ``started`` (a ``time.perf_counter()`` reading, default: the call) over
    every invocation.

    With ``checkpoint`` the state (world model, optimiser, RNG, the curve so far) is written
    there atomically at each evaluation, and a run that finds one resumes from it (a
    checkpoint written for other ``settings`` or ``updates`` is refused). It is left in place:
    the caller removes it once the variant's result is stored.

    Examples:
        >>> data = random_action_episodes(TASK, episodes=4, steps=6, image_size=64,
        ...                               camera="corner", render_quality="fast")  # doctest: +SKIP
        >>> buffer = make_transition_buffer(as_episodes(data, "train"), num_transitions=4,
        ...                                 batch_size=2)  # doctest: +SKIP
        >>> curve = train_variant(VARIANTS["fast"], sample=buffer.sample, action_dim=4,
        ...                       heldout=data, updates=2, eval_every=1, pretrained=None,
        ...                       seed=0)  # doctest: +SKIP
        >>> curve["updates"]  # doctest: +SKIP
        [0, 1, 2]
    """
    if settings.get("reward_loss") is not None and settings["arm"] != "dreamer":
        raise ValueError("reward heads are trained with a fresh (dreamer) world model only.")
    also = dict(also or {})
    torch.manual_seed(seed)
    kwargs = OmegaConf.merge(world_model_kwargs or {}, settings.get("world_model", {}))
    reward_loss = settings.get("reward_loss")
    if reward_loss is None:
        world_model = make_model_gap_world_model(
            settings["arm"],
            action_dim=action_dim,
            pretrained=pretrained,
            world_model_kwargs=OmegaConf.to_container(kwargs),
        )
    else:  # the agent's world model: a fresh one with its two reward heads
        world_model = build_finetune_world_model(
            action_dim,
            init="dreamer",
            pretrained=None,
            reward_keys=[REWARD_KEY, AUX_REWARD_KEY],
            **OmegaConf.to_container(kwargs),
        )
    stepper = make_world_model_stepper(
        world_model,
        free_nats=settings.get("free_nats"),
        reward_loss=reward_loss,
        optimizer_factory=functools.partial(make_finetune_optimizer, model_lr=LR),
    )
    started = time.perf_counter() if started is None else started
    identity = {
        "settings": dict(settings),
        "updates": updates,
        "eval_every": eval_every,
        "also": sorted(also),
    }
    earlier_seconds = 0.0
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=True)
        if json.loads(json.dumps(state["identity"])) != json.loads(json.dumps(identity)):
            raise SystemExit(f"{checkpoint} was written for other settings: remove it.")
        world_model.load_state_dict(state["world_model"])
        stepper.load_state_dict(state["stepper"])
        torch.set_rng_state(state["rng"])
        first, evaluated, losses = state["first"], state["evaluated"], state["losses"]
        earlier_seconds = state["seconds"]
    else:
        first, losses = marker_recall(world_model, heldout), []
        evaluated = {0: {"recall": first["recall"]}}
        evaluated[0].update(_score_episode_sets(world_model, also))

    def evaluate(done: int) -> None:
        if done % eval_every == 0 or done == updates:
            evaluated[done] = {"recall": marker_recall(world_model, heldout)["recall"]}
            evaluated[done].update(_score_episode_sets(world_model, also))
            if checkpoint is not None:
                state = {
                    "identity": identity,
                    "world_model": world_model.state_dict(),
                    "stepper": stepper.state_dict(),
                    "rng": torch.get_rng_state(),
                    "first": first,
                    "evaluated": evaluated,
                    "losses": losses,
                    "seconds": earlier_seconds + time.perf_counter() - started,
                }
                partial = checkpoint.with_name(checkpoint.name + ".partial")
                torch.save(state, partial)
                os.replace(partial, checkpoint)

    finetune_world_model(
        world_model,
        sample,
        updates=updates,
        freeze_updates=settings["freeze_updates"],
        lr=LR,
        progress=True,
        on_update=evaluate,
        stepper=stepper,
        first_update=max(evaluated),
        curve=losses,
    )
    done = sorted(evaluated)
    return {
        "seconds": round(earlier_seconds + time.perf_counter() - started, 1),
        "marker_pixels": first["marker_pixels"],
        "marker_contrast": first["marker_contrast"],
        "updates": done,
        **{key: [evaluated[d][key] for d in done] for key in evaluated[0]},
        **{
            name: [float("nan")]
            + [
                float(np.mean([step[name] for step in losses[start:end]]))
                for start, end in zip(done[:-1], done[1:], strict=True)
            ]
            for name in ("reco_mse", "state_kl")
        },
    }


def replay_sampler(
    run_dir: Path, *, batch_size: int, num_transitions: int
) -> Callable[[], TensorDictBase]:
    """Batches of ``[batch_size, num_transitions]`` slices from the replay buffer of a
    fine-tuning run's latest checkpoint (the agent's own data: its episodes, goals and
    rewards), marked ``is_init`` at their first step as the agent samples them."""
    from dreamer_prelar_utils import make_finetune_buffer, read_finetune_checkpoint, sample_batch

    tune = dict(run_config(run_dir)["finetune"])
    state = read_finetune_checkpoint(run_dir)
    if "replay" not in state:
        raise SystemExit(f"{run_dir}: its checkpoint holds no replay (finetune.save_replay).")
    saved = make_finetune_buffer(tune)  # the run's own layout, to load its dump
    saved.loads(state["replay"])
    tune.update(batch_size=batch_size, batch_length=num_transitions)
    buffer = TensorDictReplayBuffer(
        storage=saved.storage,
        sampler=SliceSampler(slice_len=num_transitions, traj_key="traj_id"),
        batch_size=batch_size * num_transitions,
    )
    return functools.partial(sample_batch, buffer, tune, torch.device("cpu"))


def update_report(
    out: Path,
    settings: Mapping[str, Any],
    name: str | None = None,
    entry: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``out``'s report, with variant ``name`` set to ``entry`` (written atomically, figure
    redrawn) when given; read and written under a lock on ``out`` with ``.lock``, so parallel
    invocations keep each other's variants. ``SystemExit`` if ``out`` holds other settings.

    Examples:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "goal_marker.json"
        >>> update_report(out, {"updates": 2})
        {'settings': {'updates': 2}, 'variants': {}}
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        report = (
            json.loads(out.read_text())
            if out.exists()
            else {"settings": dict(settings), "variants": {}}
        )
        if report["settings"] != settings:
            raise SystemExit(f"{out} holds variants made with other settings: use another --out.")
        if name is not None:
            report["variants"][name] = dict(entry or {})
            atomic_write_text(out, json.dumps(report, indent=1) + "\n")
            plot(report, out.with_suffix(".png"))
    return report


def plot(report: Mapping[str, Any], path: Path) -> None:
    """Recall against updates, one line per variant, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for name, variant in report["variants"].items():
        axis.plot(variant["updates"], variant["recall"], marker="o", label=name)
    axis.axhline(0.0, color="grey", linewidth=0.8)
    axis.set_xlabel("world-model updates")
    axis.set_ylabel("goal marker recall (1: drawn, 0: absent)")
    axis.set_title(f"{TASK}: does the world model draw the goal?")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["fast"])
    parser.add_argument("--pretrained", type=Path, help="pretrained_world_model.pt (prelar)")
    parser.add_argument(
        "--replay",
        type=Path,
        help="train on this fine-tuning run's replay buffer (its latest checkpoint) instead of "
        "random-action episodes",
    )
    parser.add_argument("--updates", type=int, default=1500)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-transitions", type=int, default=50)
    parser.add_argument("--train-episodes", type=int, default=40)
    parser.add_argument("--train-steps", type=int, default=100, help="actions per episode")
    parser.add_argument(
        "--action-hold",
        type=int,
        default=1,
        help="env steps each random action of the training episodes is held for",
    )
    parser.add_argument("--eval-episodes", type=int, default=100)
    parser.add_argument("--eval-steps", type=int, default=30)
    parser.add_argument("--world-model", default="small", help="config/world_model/ file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    args = parser.parse_args(argv)
    if "prelar" in args.variants and args.pretrained is None:
        parser.error("the prelar variant needs --pretrained")
    if args.replay is not None:
        other = [v for v in args.variants if VARIANTS[v]["render_quality"] != "fast"]
        other += [v for v in args.variants if VARIANTS[v].get("marker_scale", 1.0) != 1.0]
        if other:
            parser.error(f"--replay holds the run's own frames: {other} change the frames")
    from results_report import command_line, machine_description

    torch.set_num_threads(args.threads)
    world_model_kwargs = OmegaConf.to_container(
        OmegaConf.load(
            Path(__file__).resolve().parents[1]
            / "examples"
            / "config"
            / "world_model"
            / f"{args.world_model}.yaml"
        )
    )
    settings = {
        k: getattr(args, k)
        for k in (
            "updates",
            "eval_every",
            "batch_size",
            "num_transitions",
            "train_episodes",
            "train_steps",
            "eval_episodes",
            "eval_steps",
            "world_model",
            "seed",
        )
    }
    if args.replay is not None:
        settings["replay"] = str(args.replay)
    if args.action_hold != 1:
        settings["action_hold"] = args.action_hold
    report = update_report(args.out, settings)
    rollouts: dict[tuple[str, str, float], dict[str, np.ndarray]] = {}

    def episodes(split: str, quality: str, marker_scale: float) -> dict[str, np.ndarray]:
        if (split, quality, marker_scale) not in rollouts:
            count, steps, hold, seed = {
                "train": (args.train_episodes, args.train_steps, args.action_hold, args.seed),
                "train_new_goals": (
                    args.train_episodes,
                    args.train_steps,
                    args.action_hold,
                    args.seed + 200_000,
                ),
                "heldout": (args.eval_episodes, args.eval_steps, 1, args.seed + 100_000),
            }[split]
            rollouts[split, quality, marker_scale] = random_action_episodes(
                TASK,
                episodes=count,
                steps=steps,
                image_size=64,
                camera="corner",
                render_quality=quality,
                action_hold=hold,
                marker_scale=marker_scale,
                seed=seed,
            )
        return rollouts[split, quality, marker_scale]

    for name in args.variants:
        if name in report["variants"]:
            continue
        variant = VARIANTS[name]
        started = time.perf_counter()
        rendering = (variant["render_quality"], variant.get("marker_scale", 1.0))
        heldout = episodes("heldout", *rendering)
        also = {}
        if args.replay is None:
            also = {
                "seen_goals": episodes("train", *rendering),
                "new_goals": episodes("train_new_goals", *rendering),
            }
            if variant.get("reward_loss") is None:
                sample = make_transition_buffer(
                    as_episodes(also["seen_goals"], "train"),
                    num_transitions=args.num_transitions,
                    batch_size=args.batch_size,
                ).sample
            else:
                sample = reward_clip_sampler(
                    also["seen_goals"],
                    batch_size=args.batch_size,
                    num_transitions=args.num_transitions,
                )
        else:
            sample = replay_sampler(
                args.replay, batch_size=args.batch_size, num_transitions=args.num_transitions
            )
        checkpoint = args.out.with_name(f"{args.out.stem}.{name}.pt")
        curve = train_variant(
            variant,
            checkpoint=checkpoint,
            started=started,
            sample=sample,
            action_dim=heldout["actions"].shape[-1],
            heldout=heldout,
            updates=args.updates,
            eval_every=args.eval_every,
            pretrained=args.pretrained if variant["arm"] != "dreamer" else None,
            seed=args.seed,
            world_model_kwargs=world_model_kwargs,
            also=also,
        )
        entry = {
            **variant,
            "pretrained": str(args.pretrained) if variant["arm"] != "dreamer" else None,
            "command": command_line(__file__, argv),
            "machine": machine_description(args.threads),
            **curve,
        }
        report = update_report(args.out, settings, name, entry)
        checkpoint.unlink()
        print(
            f"{name}: goal marker recall "
            + ", ".join(f"{r:.2f}" for r in curve["recall"])
            + f" at {curve['updates']} updates"
        )
    return report


if __name__ == "__main__":
    main()
