"""Time the actor-critic imagination step of fine-tuning at several numbers of start states.

One step is what :class:`~torchrl.objectives.DreamerV3Loss` does after the world-model loss:
TorchRL's :class:`~torchrl.objectives.DreamerV3ActorLoss` rolls the actor out for
``--horizon`` steps in the world model (``DreamerEnv``: action encoder -> latent action ->
RSSM prior -> reward head) from every start state, computes lambda returns, and
:class:`~torchrl.objectives.DreamerV3ValueLoss` scores the critic; then both backward passes.
Agent and world model are built by ``make_agent`` (``examples/dreamer_prelar_utils.py``) from an
example preset.

For each number of starts it prints seconds, microseconds per start, FLOPs and the process's
peak memory. The fixed cost (fitted intercept) versus the per-start cost (slope) shows whether
Python work grows with the batch: the rollout loops over the horizon only, every step is one
batched call. Sizes run in increasing order (peak RSS cannot be reset on the CPU).

    python benchmarks/imagination.py --preset paper --starts 250 1000 2500 --horizon 15
    python benchmarks/imagination.py --preset paper --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from _machine import (
    FlopCount,
    gemm_peak,
    machine_info,
    peak_memory_gib,
    print_table,
    synchronize,
)
from finetune_update import finetune_config, make_agent
from tensordict import TensorDict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset", default="paper", choices=["paper", "small", "tiny"], help="world model"
    )
    parser.add_argument("--starts", type=int, nargs="+", default=[250, 1000, 2500])
    parser.add_argument("--horizon", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    example = "paper" if args.preset == "paper" else "quick"
    cfg = finetune_config(example, args.preset, args.device, {})
    cfg["finetune"]["imagination_horizon"] = args.horizon
    agent = make_agent(cfg, action_dim=4)
    actor_loss, value_loss = agent.loss.actor_loss, agent.loss.value_loss
    prior = agent.world_model.rssm_prior
    stoch, deter = prior.num_categoricals * prior.num_classes, prior.rnn_hidden_dim

    def step(starts: TensorDict) -> None:
        actor_losses, imagined = actor_loss(starts)
        value_losses, _ = value_loss(imagined.detach())
        total = actor_losses["loss_actor"].sum() + value_losses["loss_value"].sum()
        agent.optimizer.zero_grad(set_to_none=True)
        total.backward()

    rows = []
    for count in sorted(args.starts):
        starts = TensorDict(
            {
                "state": torch.randn(count, stoch, device=device),
                "belief": torch.randn(count, deter, device=device),
            },
            [count],
        )
        counter = FlopCount()
        with counter:
            step(starts)
        times = []
        for _ in range(args.iters):
            synchronize(device)
            start = time.perf_counter()
            step(starts)
            synchronize(device)
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        rows.append(
            {
                "starts": count,
                "seconds": round(seconds, 4),
                "us_per_start": round(seconds / count * 1e6, 1),
                "gflop": round(counter.total / 1e9, 2),
                "gflop_s": round(counter.total / seconds / 1e9, 1),
                "peak_memory_gib": round(peak_memory_gib(device), 2),
            }
        )
    if len(rows) > 1:
        counts = torch.tensor([row["starts"] for row in rows], dtype=torch.float64)
        seconds = torch.tensor([row["seconds"] for row in rows], dtype=torch.float64)
        slope = ((counts - counts.mean()) * (seconds - seconds.mean())).sum() / (
            (counts - counts.mean()) ** 2
        ).sum()
        intercept = seconds.mean() - slope * counts.mean()
    else:
        slope, intercept = torch.tensor(float("nan")), torch.tensor(float("nan"))
    peak = gemm_peak(torch.float32, device)
    largest = rows[-1]
    result = {
        "preset": args.preset,
        "horizon": args.horizon,
        **machine_info(device),
        "precision": "fp32",
        "starts": [row["starts"] for row in rows],
        "seconds": [row["seconds"] for row in rows],
        "us_per_start": [row["us_per_start"] for row in rows],
        "gflop": [row["gflop"] for row in rows],
        "peak_memory_gib": [row["peak_memory_gib"] for row in rows],
        "fixed_seconds_fit": round(float(intercept), 4),
        "us_per_start_fit": round(float(slope) * 1e6, 2),
        "largest_seconds": largest["seconds"],
        "largest_fraction_of_gemm_peak": round(largest["gflop_s"] * 1e9 / peak, 3),
        "gemm_peak_gflop_s": round(peak / 1e9, 1),
    }
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
