"""How much of the true action two consecutive Meta-world frames can reveal: a ceiling for the
latent-action probe of :func:`~torchrl_prelar.evaluation.latent_actions.evaluate_latent_actions`.

Replays the scripted expert episodes of the held-out sets (same tasks, seeds, noise and length
as the ``evaluation`` block of an example preset, ``quick`` by default),
keeps the simulator state that the rendered videos drop, and scores, with the same ridge probe
and the same split by episode as the latent-action evaluation:

* ``state change``: the true change of the hand position and gripper opening from o_t to o_{t+1}
  (4-d), the most a code inferred from the two frames could be expected to carry;
* ``state pair, 256 features``: a fixed random ELU expansion (256-d) of the hand and gripper
  state at t and t+1, which stands for any nonlinear code of the two states;
* ``state change -> the previous action``: the same change against the action of step t-1,
  which shows how much of a step's motion the previous action still drives.

It also projects the hand into the 64x64 ``corner`` camera and prints how far it moves per step,
in pixels. ``--episodes`` > 1 adds episodes per task, so that the probe is fitted and scored on
episodes of the same tasks instead of on other tasks.

With ``--model NAME=RUN_DIR`` (repeatable) it also reads what pre-trained latent actions hold,
on the same replayed episodes (the run's held-out folders, ``evaluation.dir`` or
``RUN_DIR/heldout``, which must hold the episodes this script replays: their actions are
checked): R^2 of the latent action (mode) against the true
action with the linear probe and with the 256-feature nonlinear one (is the action there, but
not linearly?), and linear R^2 against the state change and against the state at t+1 (does the
code carry the motion, or where the hand ends up?).

    MUJOCO_GL=egl python experiments/latent_action_ceiling.py
    MUJOCO_GL=egl python experiments/latent_action_ceiling.py --episodes 4
    MUJOCO_GL=egl python experiments/latent_action_ceiling.py --model default=runs/prelar_quick
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mujoco
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from torchrl_prelar.data.sources.metaworld_scripted import (
    HAND_AND_GRIPPER,
    MetaWorldExpertPolicy,
    default_pretrain_tasks,
    episode_seed,
)
from torchrl_prelar.envs.metaworld import METAWORLD_EVAL_TASKS, make_metaworld_env
from torchrl_prelar.evaluation.__main__ import load_pretrained_run
from torchrl_prelar.evaluation.held_out import HeldOutConfig, spread_tasks
from torchrl_prelar.evaluation.latent_actions import (
    episodes_to_clips,
    linear_probe_r2,
    load_episodes,
    posterior_rollout,
    split_episodes,
)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "examples" / "config"


def _mujoco_handles(env) -> tuple[mujoco.MjModel, mujoco.MjData]:
    base = env
    while not hasattr(base, "_env"):
        base = base.base_env
    simulator = base._env.unwrapped
    return simulator.model, simulator.data


def hand_pixels(
    model: mujoco.MjModel, data: mujoco.MjData, hand: np.ndarray, camera: str, image_size: int
) -> np.ndarray:
    """Project hand positions ``[N, 3]`` (world frame) into the camera image, in pixels."""
    camera_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    position = data.cam_xpos[camera_id]
    rotation = data.cam_xmat[camera_id].reshape(3, 3)
    local = (hand - position) @ rotation  # camera frame: x right, y up, -z forward
    focal = 0.5 * image_size / np.tan(np.deg2rad(model.cam_fovy[camera_id]) / 2)
    return focal * local[:, :2] / -local[:, 2:3]


def replay_episodes(
    tasks: Sequence[str], episodes: int, config: HeldOutConfig, seed: int, camera: str
) -> list[dict[str, np.ndarray]]:
    """The expert episodes of the held-out generator, with state and hand pixels kept."""
    out = []
    with tqdm(total=len(tasks) * episodes, desc="episodes") as bar:
        for task in tasks:
            env = make_metaworld_env(
                task, camera=camera, max_episode_steps=config.episode_length, seed=seed
            )
            model, data = _mujoco_handles(env)
            for index in range(episodes):
                episode_rng = episode_seed(seed, task, index)
                env.set_seed(episode_rng)
                policy = MetaWorldExpertPolicy(task, noise_std=config.noise, seed=episode_rng)
                td = env.rollout(config.episode_length, policy=policy, break_when_any_done=False)
                state = torch.cat([td["observation"][:1], td["next", "observation"]]).numpy()
                pixels = hand_pixels(model, data, state[:, :3].astype(np.float64), camera, 64)
                out.append(
                    {
                        "task": task,
                        "state": state[:, :HAND_AND_GRIPPER],
                        "action": td["action"].numpy(),
                        "pixels": pixels,
                    }
                )
                bar.update()
            env.close()
    return out


def _split(episodes: list[dict[str, np.ndarray]], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Transition indices of the probe's fitting and scoring halves, by episode within task."""
    ids = torch.cat([torch.full((len(e["action"]),), i) for i, e in enumerate(episodes)])
    tasks = sorted({e.get("task", "") for e in episodes})
    groups = torch.cat(
        [torch.full((len(e["action"]),), tasks.index(e.get("task", ""))) for e in episodes]
    )
    return split_episodes(ids, seed=seed, groups=groups)


def random_features(
    features: torch.Tensor, train: torch.Tensor, *, seed: int = 0, width: int = 256
) -> torch.Tensor:
    """A fixed random ELU expansion of standardised ``features``: a nonlinear code for the
    linear probe (standardised with the fitting half's statistics)."""
    features = features.double()
    features = (features - features[train].mean(0)) / features[train].std(0).clamp_min(1e-8)
    generator = torch.Generator().manual_seed(seed)
    projection = torch.randn(features.shape[1], width, generator=generator, dtype=torch.float64)
    return torch.nn.functional.elu(features @ projection / features.shape[1] ** 0.5)


def _transitions(episodes: list[dict[str, np.ndarray]]) -> tuple[torch.Tensor, ...]:
    """Hand-and-gripper state at t and t+1, and the action, of every transition."""
    state_t = np.concatenate([e["state"][:-1] for e in episodes])
    state_next = np.concatenate([e["state"][1:] for e in episodes])
    action = np.concatenate([e["action"] for e in episodes])
    return tuple(torch.tensor(a, dtype=torch.float64) for a in (state_t, state_next, action))


def _r2(features, targets, train, test) -> dict[str, Any]:
    r2 = linear_probe_r2(
        features[train], targets[train], features[test], targets[test], multioutput="raw_values"
    )
    return {"r2": round(float(r2.mean()), 3), "r2_per_dim": [round(float(v), 3) for v in r2]}


def _lagged(episodes: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """The episodes from their second transition on, each paired with the action before it."""
    return [{**e, "state": e["state"][1:], "action": e["action"][:-1]} for e in episodes]


def probe_ceiling(episodes: list[dict[str, np.ndarray]], *, seed: int = 0) -> dict[str, float]:
    """R^2 of the ridge probe from the true state change (and a nonlinear code of the state
    pair) to the action, split by episode within each task (an episode's ``"task"``, if
    given) as in the latent-action evaluation."""
    train, test = _split(episodes, seed)
    state_t, state_next, action = _transitions(episodes)
    pair = torch.cat([state_t, state_next - state_t], 1)
    figures = {
        "state change": _r2(state_next - state_t, action, train, test),
        "state pair, 256 features": _r2(
            random_features(pair, train, seed=seed), action, train, test
        ),
    }
    # The motion from t to t+1 against the action of t-1: how much of a step's motion the
    # previous action drives (a lag of the simulator's mocap would show here).
    lagged = _lagged(episodes)
    lag_train, lag_test = _split(lagged, seed)
    lag_t, lag_next, lag_action = _transitions(lagged)
    figures["state change -> the previous action"] = _r2(
        lag_next - lag_t, lag_action, lag_train, lag_test
    )
    steps = np.concatenate([np.linalg.norm(np.diff(e["pixels"], axis=0), axis=1) for e in episodes])
    figures["hand step (pixels at 64x64)"] = {
        "mean": round(float(steps.mean()), 3),
        "p90": round(float(np.quantile(steps, 0.9)), 3),
    }
    return figures


def latent_actions_of(world_model, folder: Path, episodes: list[dict[str, np.ndarray]]):
    """The latent action (mode) of every transition of the held-out episodes in ``folder``,
    ``[transitions, D]`` in the order of ``episodes`` (the same episodes, replayed: their
    actions must agree)."""
    stored = load_episodes(folder)
    if len(stored) != len(episodes):
        raise ValueError(f"{folder} holds {len(stored)} episodes, {len(episodes)} were replayed")
    for record, replayed in zip(stored, episodes, strict=True):
        if not np.allclose(np.asarray(record.actions)[1:], replayed["action"], atol=1e-5):
            raise ValueError(f"{record.name} is not the replayed episode of {replayed['task']}")
    clips = episodes_to_clips(stored, num_transitions=len(episodes[0]["action"]))
    return posterior_rollout(world_model, clips)["latent_action"].flatten(0, 1).double()


def diagnose_model(latent: torch.Tensor, episodes, *, seed: int = 0) -> dict[str, Any]:
    """What the latent actions hold: R^2 against the action (linear and 256 random features),
    the state change and the state at t+1 (linear), and against the action beside the state at
    t (what the code adds to it), with the ceiling's split."""
    train, test = _split(episodes, seed)
    state_t, state_next, action = _transitions(episodes)
    lagged = _lagged(episodes)
    per_episode = latent.split([len(e["action"]) for e in episodes])
    lag_latent = torch.cat([part[1:] for part in per_episode])  # transitions 1.. of each
    return {
        "latent -> action": _r2(latent, action, train, test),
        "latent, 256 features -> action": _r2(
            random_features(latent, train, seed=seed), action, train, test
        ),
        "latent -> state change": _r2(latent, state_next - state_t, train, test),
        "latent -> state at t+1": _r2(latent, state_next, train, test),
        # The expert's action depends on the state: how much the code adds to the state at t.
        "state at t -> action": _r2(state_t, action, train, test),
        "latent + state at t -> action": _r2(torch.cat([latent, state_t], 1), action, train, test),
        "latent -> the previous action": _r2(
            lag_latent, _transitions(lagged)[2], *_split(lagged, seed)
        ),
    }


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="quick", help="examples/config/preset to replay")
    parser.add_argument(
        "--episodes",
        type=int,
        default=None,
        help="episodes per task for both sets (default: the preset's)",
    )
    parser.add_argument("--camera", default="corner")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=RUN_DIR",
        help="a pre-training run whose latent actions to diagnose on its held-out episodes "
        "(its evaluation.dir, default RUN_DIR/heldout)",
    )
    args = parser.parse_args(argv)
    models = {}
    for item in args.model:
        name, sep, run_dir = item.partition("=")
        if not sep:
            parser.error(f"--model {item!r} is not NAME=RUN_DIR")
        world_model, evaluation = load_pretrained_run(run_dir)
        models[name] = (world_model, Path(evaluation.get("dir") or Path(run_dir) / "heldout"))
    torch.set_num_threads(1)
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        resolved = compose("config", overrides=[f"preset={args.preset}"])
    config = HeldOutConfig.from_mapping(OmegaConf.to_container(resolved.evaluation))
    sets = {
        "seen": (
            spread_tasks(default_pretrain_tasks(), config.seen_tasks),
            args.episodes or config.seen_episodes,
            config.seen_seed,
        ),
        "unseen": (
            METAWORLD_EVAL_TASKS,
            args.episodes or config.unseen_episodes,
            config.unseen_seed,
        ),
    }
    results = {}
    for name, (tasks, episodes, seed) in sets.items():
        replayed = replay_episodes(tasks, episodes, config, seed, args.camera)
        results[name] = {
            "tasks": len(tasks),
            "episodes_per_task": episodes,
            **probe_ceiling(replayed),
        }
        for model_name, (world_model, heldout) in models.items():
            latent = latent_actions_of(world_model, heldout / name, replayed)
            results[name][model_name] = diagnose_model(latent, replayed)
        print(name, json.dumps(results[name]))
    return results


if __name__ == "__main__":
    main()
