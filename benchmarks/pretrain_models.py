"""Time one pre-training update of PreLAR, APV and ContextWM on the same batch, in one run.

Each model (PreLAR's world model with its latent action model; APV's action-free one;
ContextWM's action-free one with the context encoder and the cross-attention decoder) is
trained by :class:`~torchrl_prelar.objectives.PreLARLoss` with the same
:class:`~torchrl_prelar.training.pretrain.PreLARPretrainer` settings on one moving-squares
batch. Updates are timed round-robin (one update of each model per round), so a change in
the machine's load affects every model alike; the medians, their ratios, parameter counts,
FLOPs (``torch.utils.flop_counter``) and the 1-minute load average are printed.

    python benchmarks/pretrain_models.py --preset small --batch 16 --steps 25 --iters 3
    python benchmarks/pretrain_models.py --preset paper --device cuda --models apv contextwm
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from _machine import machine_info, print_table, synchronize
from pretrain_step import count_update_flops, example_world_model

from torchrl_prelar import PreLARLoss, make_world_model
from torchrl_prelar.baselines.apv import make_action_free_world_model
from torchrl_prelar.baselines.contextwm import make_contextwm_pretrain_model
from torchrl_prelar.data.synthetic import moving_square_batch
from torchrl_prelar.training.pretrain import PreLARPretrainer, make_optimizer

MODELS = {
    "prelar": make_world_model,
    "apv": make_action_free_world_model,
    "contextwm": make_contextwm_pretrain_model,
}


def make_trainer(model: str, args: argparse.Namespace) -> PreLARPretrainer:
    """The pre-training update of ``model`` at ``args.preset`` (inputs not validated)."""
    torch.manual_seed(0)
    world_model = MODELS[model](**example_world_model(args.preset))
    world_model.validate_inputs = False
    loss = PreLARLoss(world_model.to(args.device))
    return PreLARPretrainer(
        loss, make_optimizer(loss.parameters()), precision=args.precision, device=args.device
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset", default="small", choices=["paper", "small", "tiny"], help="world model"
    )
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=25, help="transitions per clip")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds")
    parser.add_argument("--iters", type=int, default=3, help="timed rounds")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    trainers = {model: make_trainer(model, args) for model in args.models}
    batch = moving_square_batch(args.batch, args.steps).to(device)
    flops = {model: count_update_flops(trainer, batch).total for model, trainer in trainers.items()}
    times: dict[str, list[float]] = {model: [] for model in trainers}
    for round_index in range(args.warmup + args.iters):
        for model, trainer in trainers.items():
            synchronize(device)
            start = time.perf_counter()
            trainer.update(batch)
            synchronize(device)
            if round_index >= args.warmup:
                times[model].append(time.perf_counter() - start)
    seconds = {model: statistics.median(values) for model, values in times.items()}

    result = {
        "preset": args.preset,
        "batch": args.batch,
        "transitions": args.steps,
        "precision": str(next(iter(trainers.values())).autocast_dtype or "fp32").removeprefix(
            "torch."
        ),
        **machine_info(device),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    for model, trainer in trainers.items():
        parameters = sum(p.numel() for p in trainer.loss.parameters())
        result[f"{model}_parameters_m"] = round(parameters / 1e6, 2)
        result[f"{model}_gflop_per_update"] = round(flops[model] / 1e9, 1)
        result[f"{model}_seconds_per_update"] = round(seconds[model], 3)
        result[f"{model}_update_times"] = [round(t, 3) for t in times[model]]
    ratios = [("prelar", "apv"), ("contextwm", "apv"), ("contextwm", "prelar")]
    for model, baseline in ratios:
        if {model, baseline} <= trainers.keys():
            ratio = seconds[model] / seconds[baseline]
            result[f"{model}_time_over_{baseline}"] = round(ratio, 2)
    print_table({key: str(value) for key, value in result.items()})
    if args.json:
        with open(args.json, "w") as file:
            json.dump({key: str(value) for key, value in result.items()}, file, indent=2)


if __name__ == "__main__":
    main()
