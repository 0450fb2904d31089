"""Meta-world pixel env speed: steps per second with and without the fast render setting,
and TorchRL ``ParallelEnv`` scaling from 1 to 2 workers.

    python benchmarks/env_steps.py --task reach-v3 --steps 200

Each figure is the best of ``--repeats`` rollouts of ``--steps`` random-action steps (the
64x64 ``corner`` render is part of every step), after one warm-up rollout.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402
from torchrl.envs import ParallelEnv  # noqa: E402

from torchrl_prelar.envs.metaworld import make_metaworld_env  # noqa: E402


def steps_per_second(env, steps: int, repeats: int) -> float:
    """Best rate of ``repeats`` random rollouts of ``steps`` steps (one warm-up first)."""
    env.rollout(10, break_when_any_done=False)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        env.rollout(steps, break_when_any_done=False)
        best = min(best, time.perf_counter() - start)
    return steps * env.batch_size.numel() / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="reach-v3")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-parallel", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)

    rates = {}
    for fast in (True, False):
        env = make_metaworld_env(args.task, fast_render=fast, max_episode_steps=500)
        rates[fast] = steps_per_second(env, args.steps, args.repeats)
        env.close()
        label = "fast render (no shadows, no MSAA)" if fast else "Meta-world default render"
        print(f"{label:<36} {rates[fast]:7.1f} steps/s  {1000 / rates[fast]:6.1f} ms/step")
    print(f"fast / default: {rates[True] / rates[False]:.1f}x")

    if not args.no_parallel:
        single = rates[True]
        env = ParallelEnv(2, lambda: make_metaworld_env(args.task, max_episode_steps=500))
        double = steps_per_second(env, args.steps, args.repeats)
        env.close()
        print(f"ParallelEnv, 2 workers: {double:7.1f} steps/s, {double / single:.2f}x one env")


if __name__ == "__main__":
    main()
