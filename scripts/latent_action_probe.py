"""How much of a hidden action does the latent action recover? Probe it on moving squares.

Trains a world model with :class:`~torchrl_prelar.PreLARLoss` on synthetic videos whose squares
move by a hidden integer displacement, and every ``--probe-every`` updates prints the held-out
linear-probe R^2 of the latent action (its mean) against the displacement and against the
first square's position in o_{t+1} (as sin/cos, the squares live on a torus).

    python scripts/latent_action_probe.py --updates 1500
    python scripts/latent_action_probe.py --updates 1000 --beta-action 20
    python scripts/latent_action_probe.py --updates 600 --latent-action input_mode=embedding
    python scripts/latent_action_probe.py --updates 400 --square 20 --num-squares 3
"""

from __future__ import annotations

import argparse
import time

import torch
import yaml

from torchrl_prelar import PreLARLoss, make_world_model
from torchrl_prelar.data.synthetic import moving_square_batch
from torchrl_prelar.training.latent_probe import moving_square_probe
from torchrl_prelar.training.pretrain import PreLARPretrainer, make_optimizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=["paper", "small", "tiny"])
    parser.add_argument("--updates", type=int, default=600)
    parser.add_argument("--probe-every", type=int, default=200)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--beta-action", type=float, default=1.0)
    parser.add_argument("--free-nats", type=float, default=0.0)
    parser.add_argument("--square", type=int, default=24)
    parser.add_argument("--num-squares", type=int, default=1)
    parser.add_argument("--max-shift", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--latent-action",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="world-model latent_action overrides, e.g. input_mode=difference dim=2",
    )
    args = parser.parse_args()

    overrides = {}
    for item in args.latent_action:
        key, value = item.split("=", 1)
        overrides[key] = yaml.safe_load(value)
    squares = {"square": args.square, "num_squares": args.num_squares, "max_shift": args.max_shift}
    torch.manual_seed(args.seed)
    data = torch.Generator().manual_seed(args.seed)
    loss = PreLARLoss(
        make_world_model(args.preset, latent_action=overrides),
        beta_action=args.beta_action,
        free_nats=args.free_nats,
    )
    trainer = PreLARPretrainer(
        loss, make_optimizer(loss.parameters(), lr=args.lr), precision="fp32"
    )
    print(f"settings: {vars(args)}")
    print(
        f"{'update':>6} {'seconds':>7} {'loss':>8} {'action KL':>9} {'R2 displ.':>9} "
        f"{'R2 next pos':>11}"
    )
    started, losses = time.time(), []
    for update in range(1, args.updates + 1):
        batch = moving_square_batch(args.batch, args.steps, generator=data, **squares)
        metrics = trainer.update(batch)
        losses.append(metrics["loss"].item())
        if update % args.probe_every == 0 or update == args.updates:
            displacement, position = moving_square_probe(loss.world_model, squares)
            recent = losses[-min(50, len(losses)) :]
            print(
                f"{update:>6} {time.time() - started:>7.0f} {sum(recent) / len(recent):>8.1f} "
                f"{metrics['action_kl'].item():>9.2f} {displacement:>9.3f} {position:>11.3f}"
            )


if __name__ == "__main__":
    main()
