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
import time

import torch
from _machine import FlopCount, gemm_peak, machine_info, peak_memory_gib, print_table, synchronize

from torchrl_prelar import PreLARLoss, make_world_model
from torchrl_prelar.data.synthetic import moving_square_batch
from torchrl_prelar.training.precision import autocast
from torchrl_prelar.training.pretrain import PreLARPretrainer, make_optimizer


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper", choices=["paper", "small", "tiny"])
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
    parser.add_argument("--reference-seconds", type=float, default=None)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    world_model = make_world_model(
        args.preset,
        validate_inputs=False,
        latent_action={"input_mode": args.latent_action_input},
    ).to(device)
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
    times = []
    for index in range(args.warmup + args.iters):
        synchronize(device)
        start = time.perf_counter()
        trainer.update(batch)
        synchronize(device)
        if index >= args.warmup:
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    peak = gemm_peak(dtype or torch.float32, device)
    memory = peak_memory_gib(device)

    result = {
        "preset": args.preset,
        "batch": args.batch,
        "transitions": args.steps,
        "precision": "fp32" if dtype is None else str(dtype).removeprefix("torch."),
        "channels_last": not args.no_channels_last,
        "latent_action_input": args.latent_action_input,
        **machine_info(device),
        "parameters_m": round(sum(p.numel() for p in loss.parameters()) / 1e6, 2),
        "seconds_per_update": round(seconds, 3),
        "update_times": [round(t, 3) for t in times],
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
