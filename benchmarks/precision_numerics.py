"""Does bf16 autocast train like fp32? The same updates, data and seed in both precisions.

Runs ``--updates`` pre-training updates twice from the same initial weights on the same
sequence of moving-square batches, once in fp32 and once under bf16 autocast, and prints both
loss curves (every ``--every`` updates), their relative gap, and whether it stays within
``--tolerance`` over the last quarter of the run. Writes the curves to a PNG.

    python benchmarks/precision_numerics.py --preset tiny --updates 300

Both runs take their Gaussian latent-action noise and categorical samples from the same seed,
but bf16 rounding changes which category is drawn now and then, so the two runs drift apart
like two seeds would; the tolerance is on the loss, not on the weights.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

from torchrl_prelar import PreLARLoss, make_world_model
from torchrl_prelar.data.synthetic import moving_square_batch
from torchrl_prelar.media import plot_curves
from torchrl_prelar.training.pretrain import PreLARPretrainer, make_optimizer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))  # the example's world models
from dreamer_prelar_utils import example_world_model  # noqa: E402


def train(loss: PreLARLoss, precision: str, args) -> list[float]:
    optimizer = make_optimizer(loss.parameters(), lr=args.lr)
    trainer = PreLARPretrainer(loss, optimizer, precision=precision, device=args.device)
    data = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    losses = []
    for _ in range(args.updates):
        batch = moving_square_batch(args.batch, args.steps, generator=data, square=24)
        losses.append(trainer.update(batch)["loss"].item())
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset", default="tiny", choices=["paper", "small", "tiny"], help="world model"
    )
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--tolerance", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--png", default="precision_numerics.png")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    world_model = make_world_model(**example_world_model(args.preset), validate_inputs=False)
    fp32_loss = PreLARLoss(world_model.to(args.device))
    bf16_loss = copy.deepcopy(fp32_loss)
    curves = {"fp32": train(fp32_loss, "fp32", args), "bf16": train(bf16_loss, "bf16", args)}

    def window_mean(values: list[float], end: int) -> float:
        window = values[max(0, end - args.every) : end]
        return sum(window) / len(window)

    print(f"{'update':>7} {'fp32 loss':>12} {'bf16 loss':>12} {'rel. gap':>9}")
    gaps = []
    for end in range(args.every, args.updates + 1, args.every):
        fp32, bf16 = window_mean(curves["fp32"], end), window_mean(curves["bf16"], end)
        gap = abs(bf16 - fp32) / abs(fp32)
        gaps.append((end, gap))
        print(f"{end:>7} {fp32:>12.2f} {bf16:>12.2f} {gap:>9.3f}")
    late = [gap for end, gap in gaps if end > 0.75 * args.updates]
    worst = max(late) if late else float("nan")
    verdict = "within" if worst <= args.tolerance else "OUTSIDE"
    print(
        f"last quarter: largest relative gap of {args.every}-update means {worst:.3f}, "
        f"{verdict} the tolerance {args.tolerance} (preset {args.preset}, "
        f"batch {args.batch}x{args.steps}, seed {args.seed})"
    )
    steps = torch.arange(1, args.updates + 1).numpy()
    series = {name: (steps, torch.tensor(values).numpy()) for name, values in curves.items()}
    path = plot_curves(series, Path(args.png), ["fp32", "bf16"], title="loss, fp32 vs bf16")
    print(f"curves: {path}")
    if args.json:
        result = {
            "preset": args.preset,
            "updates": args.updates,
            "largest_gap": round(max(gap for _, gap in gaps), 4),
            "largest_gap_last_quarter": round(worst, 4),
            "tolerance": args.tolerance,
            "within_tolerance": worst <= args.tolerance,
            "first_loss": round(curves["fp32"][0], 2),
            "last_loss_fp32": round(window_mean(curves["fp32"], args.updates), 2),
            "last_loss_bf16": round(window_mean(curves["bf16"], args.updates), 2),
            "png": str(path),
        }
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
