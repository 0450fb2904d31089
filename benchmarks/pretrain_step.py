"""Time one PreLAR pre-training update (forward + backward + Adam) and relate it to the machine.

Prints, for one preset / batch / precision, measured in this one run on this machine:
updates/s, frames/s, peak RSS, the FLOPs of one update (counted by
``torch.utils.flop_counter``), the achieved FLOP/s, the GEMM peak of this machine in the
same precision (a large matmul timed here) and the fraction of it the update reaches, and,
with ``--reference-seconds``, the speed-up over the reference update timed on the same
machine by ``../shared/tools/ref_pretrain_bench.py``.

    python benchmarks/pretrain_step.py --preset paper --batch 16 --steps 25
    python benchmarks/pretrain_step.py --preset paper --precision fp32 --reference-seconds 10.9
    python benchmarks/pretrain_step.py --preset small --device cuda

``--steps`` counts transitions: 25 transitions = 26 frames = 25 reconstructed frames and 24
used latent actions, the work of the reference's 25-frame clip. Run one configuration per
process (peak RSS is the process's).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from _machine import FlopCount, gemm_peak, machine_info, peak_memory_gib, print_table, synchronize

from torchrl_prelar import PreLARLoss, make_world_model
from torchrl_prelar.data.synthetic import moving_square_batch
from torchrl_prelar.training.precision import autocast
from torchrl_prelar.training.pretrain import PreLARPretrainer, make_optimizer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))  # the example's world models
from dreamer_prelar_utils import example_world_model  # noqa: E402


def count_update_flops(trainer: PreLARPretrainer, batch) -> FlopCount:
    """FLOPs (matmuls and convolutions, as torch counts them) and ATen operators of one
    forward + backward."""
    counter = FlopCount()
    with counter:
        with autocast(trainer.device, trainer.autocast_dtype):
            losses, _ = trainer.loss(batch)
        total = sum(value for key, value in losses.items() if key.startswith("loss_"))
        total.backward()
    trainer.optimizer.zero_grad(set_to_none=True)
    return counter


def print_time_shares(trainer: PreLARPretrainer, batch, rows: int = 12) -> None:
    """Profile one update with ``torch.profiler``; print the operators' shares of its time."""
    with torch.profiler.profile() as profiler:
        trainer.update(batch)
    events = profiler.key_averages()
    total = sum(event.self_device_time_total or event.self_cpu_time_total for event in events)
    ranked = sorted(
        events, key=lambda e: e.self_device_time_total or e.self_cpu_time_total, reverse=True
    )
    print(f"{'operator (self time)':<44} share")
    for event in ranked[:rows]:
        share = (event.self_device_time_total or event.self_cpu_time_total) / total
        print(f"{event.key:<44} {share:6.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset", default="paper", choices=["paper", "small", "tiny"], help="world model"
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=25, help="transitions per clip")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument(
        "--latent-action-input", default="concat", choices=["concat", "difference", "embedding"]
    )
    parser.add_argument("--consistency", default="off", choices=["off", "sign", "soft"])
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the networks (pretrain.compile)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="also print where one update's time goes"
    )
    parser.add_argument("--reference-seconds", type=float, default=None)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    settings = example_world_model(
        args.preset, {"latent_action": {"input_mode": args.latent_action_input}}
    )
    world_model = make_world_model(**settings, validate_inputs=False).to(device)
    loss = PreLARLoss(world_model, consistency=args.consistency)
    trainer = PreLARPretrainer(
        loss,
        make_optimizer(loss.parameters()),
        precision=args.precision,
        device=device,
        channels_last=not args.no_channels_last,
    )
    batch = moving_square_batch(args.batch, args.steps).to(device)
    dtype = trainer.autocast_dtype

    counted = count_update_flops(trainer, batch)
    flops = counted.total
    compile_seconds = None
    if args.compile:  # after counting: the counter traces eager operators
        loss.world_model.compile_networks()
        synchronize(device)
        start = time.perf_counter()
        trainer.update(batch)
        synchronize(device)
        compile_seconds = time.perf_counter() - start
    times = []
    for index in range(args.warmup + args.iters):
        synchronize(device)
        start = time.perf_counter()
        trainer.update(batch)
        synchronize(device)
        if index >= args.warmup:
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    if args.profile:
        print_time_shares(trainer, batch)
    peak = gemm_peak(dtype or torch.float32, device)
    memory = peak_memory_gib(device)

    result = {
        "preset": args.preset,
        "batch": args.batch,
        "transitions": args.steps,
        "precision": "fp32" if dtype is None else str(dtype).removeprefix("torch."),
        "channels_last": not args.no_channels_last,
        "latent_action_input": args.latent_action_input,
        "compiled_networks": args.compile,
        **machine_info(device),
        "parameters_m": round(sum(p.numel() for p in loss.parameters()) / 1e6, 2),
        "seconds_per_update": round(seconds, 3),
        "update_times": [round(t, 3) for t in times],
        "first_compiled_update_seconds": compile_seconds and round(compile_seconds, 1),
        "updates_per_s": round(1 / seconds, 4),
        "frames_per_s": round(args.batch * (args.steps + 1) / seconds, 1),
        "tflop_per_update": round(flops / 1e12, 3),
        "aten_operators_per_update": counted.operators,
        "achieved_gflop_s": round(flops / seconds / 1e9, 1),
        "gemm_peak_gflop_s": round(peak / 1e9, 1),
        "fraction_of_gemm_peak": round(flops / seconds / peak, 3),
        "peak_memory_gib": round(memory, 2),
    }
    if args.reference_seconds:
        result["reference_seconds"] = args.reference_seconds
        result["speedup_over_reference"] = round(args.reference_seconds / seconds, 2)
    print_table(result)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(result, file, indent=2)


if __name__ == "__main__":
    main()
