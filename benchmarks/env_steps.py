"""Meta-world pixel env speed: steps per second at each render quality (fast, antialiased,
metaworld), and TorchRL ``ParallelEnv`` scaling from 1 to 2 workers.

    python benchmarks/env_steps.py --task reach-v3 --steps 200

Each figure is the best of ``--repeats`` rollouts of ``--steps`` random-action steps (the
64x64 ``corner`` render is part of every step), after one warm-up rollout.

The ``ParallelEnv`` rows give every worker one software-render thread (``render_threads=1``,
one env per core) and compare 2 workers with 1, in TorchRL's two transports: shared-memory
buffers (``use_buffers=True``, TorchRL's default), where the main process spin-waits for the
workers and so occupies a core of its own, and pipes (``use_buffers=False``), where it
sleeps until a worker answers. ``main_cpu_share`` is the main process's CPU time over wall
time during the rollout.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402
from torchrl.envs import ParallelEnv  # noqa: E402

from torchrl_prelar.envs.metaworld import RENDER_QUALITIES, make_metaworld_env  # noqa: E402


def steps_per_second(env, steps: int, repeats: int) -> float:
    """Best rate of ``repeats`` random rollouts of ``steps`` steps (one warm-up first)."""
    env.rollout(10, break_when_any_done=False)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        env.rollout(steps, break_when_any_done=False)
        best = min(best, time.perf_counter() - start)
    return steps * env.batch_size.numel() / best


def parallel_rate(
    task: str, workers: int, steps: int, repeats: int, use_buffers: bool
) -> tuple[float, float]:
    """Steps per second of a ``ParallelEnv`` of ``workers`` envs (one render thread each), and
    the main process's CPU share meanwhile."""
    factory = functools.partial(make_metaworld_env, task, max_episode_steps=500, render_threads=1)
    env = ParallelEnv(workers, factory, use_buffers=use_buffers)
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        rate = steps_per_second(env, steps, repeats)
        return rate, (time.process_time() - cpu) / (time.perf_counter() - wall)
    finally:
        env.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="reach-v3")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-parallel", action="store_true")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)

    rates = {}
    for quality in RENDER_QUALITIES:
        env = make_metaworld_env(args.task, render_quality=quality, max_episode_steps=500)
        rates[quality] = steps_per_second(env, args.steps, args.repeats)
        env.close()
        print(
            f"render {quality:<12} {rates[quality]:7.1f} steps/s  "
            f"{1000 / rates[quality]:6.1f} ms/step"
        )
    print(
        f"fast / metaworld: {rates['fast'] / rates['metaworld']:.1f}x, "
        f"fast / antialiased: {rates['fast'] / rates['antialiased']:.2f}x"
    )
    result = {
        "task": args.task,
        "cores": os.cpu_count(),
        "steps_per_s": {quality: round(rate, 1) for quality, rate in rates.items()},
        "fast_render_steps_per_s": round(rates["fast"], 1),
        "fast_over_default": round(rates["fast"] / rates["metaworld"], 2),
        "fast_over_antialiased": round(rates["fast"] / rates["antialiased"], 2),
    }

    if not args.no_parallel:
        for transport, use_buffers in (("pipes", False), ("shared_buffers", True)):
            one, one_cpu = parallel_rate(args.task, 1, args.steps, args.repeats, use_buffers)
            two, two_cpu = parallel_rate(args.task, 2, args.steps, args.repeats, use_buffers)
            print(
                f"ParallelEnv ({transport}): 1 worker {one:6.1f} steps/s (main CPU {one_cpu:.2f}),"
                f" 2 workers {two:6.1f} steps/s (main CPU {two_cpu:.2f}): {two / one:.2f}x; "
                f"2 workers / one in-process env: {two / rates['fast']:.2f}x"
            )
            result[f"parallel_{transport}"] = {
                "1_worker_steps_per_s": round(one, 1),
                "2_workers_steps_per_s": round(two, 1),
                "scaling_1_to_2": round(two / one, 2),
                "2_workers_over_in_process_env": round(two / rates["fast"], 2),
                "main_cpu_share_1_worker": round(one_cpu, 2),
                "main_cpu_share_2_workers": round(two_cpu, 2),
            }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
