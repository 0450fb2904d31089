"""What PreLAR adds to a Dreamer world-model update: time and FLOPs of the latent action model.

Times forward + backward of the same world model on the same batch twice:

* Dreamer: the action comes from data (an :class:`~torchrl_prelar.ActionEncoder` on a random
  4-d action), so :class:`~torchrl_prelar.PreLARLoss` reduces to TorchRL's
  ``DreamerV3ModelLoss`` terms;
* PreLAR: the :class:`~torchrl_prelar.LatentActionModel` infers the action from the frames and
  the action KL is added.

and prints the time ratio beside the latent action model's share of the FLOPs, so any extra
cost is explained by the work it adds.

    python benchmarks/loss_overhead.py --preset paper --batch 16 --steps 25
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from _machine import FlopCount, synchronize

from torchrl_prelar import PreLARLoss, make_action_encoder, make_world_model
from torchrl_prelar.data.synthetic import moving_square_batch
from torchrl_prelar.training.precision import autocast, resolve_precision

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))  # the example's world models
from dreamer_prelar_utils import example_world_model  # noqa: E402


def forward_backward(loss: PreLARLoss, batch, dtype) -> None:
    with autocast(batch.device, dtype):
        losses, _ = loss(batch)
    sum(value for key, value in losses.items() if key.startswith("loss_")).backward()
    loss.zero_grad(set_to_none=True)


def measure(loss: PreLARLoss, batch, dtype, iters: int) -> tuple[float, int]:
    counter = FlopCount()
    with counter:
        forward_backward(loss, batch, dtype)
    forward_backward(loss, batch, dtype)  # warm-up: oneDNN builds its kernels on first use
    times = []
    for _ in range(iters):
        synchronize(batch.device)
        start = time.perf_counter()
        forward_backward(loss, batch, dtype)
        synchronize(batch.device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), counter.total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset", default="small", choices=["paper", "small", "tiny"], help="world model"
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = resolve_precision(args.precision, device)
    torch.manual_seed(0)
    batch = moving_square_batch(args.batch, args.steps)
    batch["action"] = torch.rand(args.batch, args.steps, 4) * 2 - 1
    batch = batch.to(device)
    settings = example_world_model(args.preset)
    world_model = make_world_model(**settings, validate_inputs=False).to(device)
    world_model.to(memory_format=torch.channels_last)
    prelar = PreLARLoss(world_model)
    prelar_seconds, prelar_flops = measure(prelar, batch, dtype, args.iters)

    latent_action_model = world_model.action_model
    action_encoder = make_action_encoder(
        **settings["action_encoder"], action_dim=4, latent_dim=settings["latent_action"]["dim"]
    ).to(device)
    world_model.action_model = action_encoder
    dreamer = PreLARLoss(world_model)
    dreamer_seconds, dreamer_flops = measure(dreamer, batch, dtype, args.iters)

    share = (prelar_flops - dreamer_flops) / prelar_flops
    print(
        f"preset {args.preset}, batch {args.batch}x{args.steps}, precision "
        f"{'fp32' if dtype is None else dtype}, threads {torch.get_num_threads()}, "
        f"torch {torch.__version__}"
    )
    print(
        f"latent action model parameters: "
        f"{sum(p.numel() for p in latent_action_model.parameters()) / 1e6:.2f}M"
    )
    print(
        f"Dreamer world-model loss (action encoder): {dreamer_seconds:.3f} s, "
        f"{dreamer_flops / 1e12:.3f} TFLOP"
    )
    print(
        f"PreLARLoss (latent action model):          {prelar_seconds:.3f} s, "
        f"{prelar_flops / 1e12:.3f} TFLOP"
    )
    print(
        f"time ratio PreLAR / Dreamer: {prelar_seconds / dreamer_seconds:.2f}; "
        f"FLOP ratio {prelar_flops / dreamer_flops:.2f}; latent action model's FLOP share "
        f"{share:.1%}"
    )
    if args.json:
        result = {
            "preset": args.preset,
            "batch": args.batch,
            "transitions": args.steps,
            "precision": "fp32" if dtype is None else str(dtype).removeprefix("torch."),
            "threads": torch.get_num_threads(),
            "dreamer_seconds": round(dreamer_seconds, 3),
            "prelar_seconds": round(prelar_seconds, 3),
            "dreamer_tflop": round(dreamer_flops / 1e12, 3),
            "prelar_tflop": round(prelar_flops / 1e12, 3),
            "time_ratio": round(prelar_seconds / dreamer_seconds, 3),
            "flop_ratio": round(prelar_flops / dreamer_flops, 3),
            "latent_action_flop_share": round(share, 3),
        }
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
