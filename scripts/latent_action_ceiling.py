"""How much of the true action two consecutive Meta-world frames can reveal: a ceiling for the
latent-action probe of :func:`~torchrl_prelar.evaluation.latent_actions.evaluate_latent_actions`.

Replays the scripted expert episodes of the held-out sets (same tasks, seeds, noise and length
as the ``evaluation`` block of an example preset, ``quick`` by default),
keeps the simulator state that the rendered videos drop, and scores, with the same ridge probe
and the same split by episode as the latent-action evaluation:

* ``state change``: the true change of the hand position and gripper opening from o_t to o_{t+1}
  (4-d), the most a code inferred from the two frames could be expected to carry;
* ``state pair, 256 features``: a fixed random ELU expansion (256-d) of the hand and gripper
  state at t and t+1, which stands for any nonlinear code of the two states.

It also projects the hand into the 64x64 ``corner`` camera and prints how far it moves per step,
in pixels. ``--episodes`` > 1 adds episodes per task, so that the probe is fitted and scored on
episodes of the same tasks instead of on other tasks.

    MUJOCO_GL=egl python scripts/latent_action_ceiling.py
    MUJOCO_GL=egl python scripts/latent_action_ceiling.py --episodes 4
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import mujoco
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from torchrl_prelar.data.sources.metaworld_scripted import (
    MetaWorldExpertPolicy,
    default_pretrain_tasks,
    episode_seed,
)
from torchrl_prelar.envs.metaworld import METAWORLD_EVAL_TASKS, make_metaworld_env
from torchrl_prelar.evaluation.held_out import HeldOutConfig, spread_tasks
from torchrl_prelar.evaluation.latent_actions import linear_probe_r2, split_episodes

CONFIG_DIR = Path(__file__).resolve().parents[1] / "examples" / "config"
HAND_AND_GRIPPER = slice(0, 4)  # Meta-world's 39-d state starts with hand xyz, gripper opening


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
                        "state": state[:, HAND_AND_GRIPPER],
                        "action": td["action"].numpy(),
                        "pixels": pixels,
                    }
                )
                bar.update()
            env.close()
    return out


def probe_ceiling(episodes: list[dict[str, np.ndarray]], *, seed: int = 0) -> dict[str, float]:
    """R^2 of the ridge probe from the true state change (and a nonlinear code of the state
    pair) to the action, split by episode within each task (an episode's ``"task"``, if
    given) as in the latent-action evaluation."""
    ids = torch.cat([torch.full((len(e["action"]),), i) for i, e in enumerate(episodes)])
    tasks = sorted({e.get("task", "") for e in episodes})
    groups = torch.cat(
        [torch.full((len(e["action"]),), tasks.index(e.get("task", ""))) for e in episodes]
    )
    train, test = split_episodes(ids, seed=seed, groups=groups)
    state_t = torch.tensor(np.concatenate([e["state"][:-1] for e in episodes]), dtype=torch.float64)
    state_next = torch.tensor(
        np.concatenate([e["state"][1:] for e in episodes]), dtype=torch.float64
    )
    action = torch.tensor(np.concatenate([e["action"] for e in episodes]), dtype=torch.float64)
    pair = torch.cat([state_t, state_next - state_t], 1)
    pair = (pair - pair[train].mean(0)) / pair[train].std(0).clamp_min(1e-8)
    generator = torch.Generator().manual_seed(seed)
    projection = torch.randn(pair.shape[1], 256, generator=generator, dtype=torch.float64)
    nonlinear = torch.nn.functional.elu(pair @ projection / pair.shape[1] ** 0.5)
    figures = {}
    for name, features in (
        ("state change", state_next - state_t),
        ("state pair, 256 features", nonlinear),
    ):
        r2 = linear_probe_r2(
            features[train], action[train], features[test], action[test], multioutput="raw_values"
        )
        figures[name] = {
            "r2": round(float(r2.mean()), 3),
            "r2_per_dim": [round(float(v), 3) for v in r2],
        }
    steps = np.concatenate([np.linalg.norm(np.diff(e["pixels"], axis=0), axis=1) for e in episodes])
    figures["hand step (pixels at 64x64)"] = {
        "mean": round(float(steps.mean()), 3),
        "p90": round(float(np.quantile(steps, 0.9)), 3),
    }
    return figures


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
    args = parser.parse_args(argv)
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
        results[name] = {
            "tasks": len(tasks),
            "episodes_per_task": episodes,
            **probe_ceiling(replay_episodes(tasks, episodes, config, seed, args.camera)),
        }
        print(name, json.dumps(results[name]))
    return results


if __name__ == "__main__":
    main()
