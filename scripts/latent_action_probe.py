"""How much of a hidden action does the latent action recover? Probe it on synthetic video.

Trains a world model with :class:`~torchrl_prelar.PreLARLoss` on synthetic clips whose square
moves by a hidden action and, every ``--probe-every`` updates, prints on 64 held-out clips
(:func:`~torchrl_prelar.training.latent_probe.latent_action_probe`): the linear-probe R^2 of
the latent action (its mode) against the hidden action and against the square's position in
o_{t+1}; and the RSSM's state KL with the clips' own latent actions and with latent actions
shuffled across clips.

Toys: ``--toy square`` (:func:`~torchrl_prelar.data.synthetic.moving_square_batch`, 64x64,
the example's ``tiny`` world model) and ``--toy grid``
(:func:`~torchrl_prelar.data.synthetic.grid_square_batch`: by default 16x16 frames, a 4x4
grid of 4-pixel cells, the ``tiny`` world model with two-stage convolutions at
``--image-size 16`` and as it is at 64); ``--world-model`` picks another of
``examples/config/world_model/``. ``--invariant`` makes the
latent action model translation invariant on the torus (``trunk.pool: mean`` and
``trunk.padding: circular``). ``--mean-latent-action`` feeds the RSSM the latent action's mean
instead of a sample.

    python scripts/latent_action_probe.py --updates 1500
    python scripts/latent_action_probe.py --updates 1000 --beta-action 20
    python scripts/latent_action_probe.py --updates 600 --latent-action input_mode=embedding
    python scripts/latent_action_probe.py --toy grid --updates 1500 --probe-every 250
    python scripts/latent_action_probe.py --toy grid --updates 1500 --invariant
    python scripts/latent_action_probe.py --toy grid --updates 1500 --invariant \\
        --action-free-nats 2 --seed 1
    python scripts/latent_action_probe.py --toy grid --image-size 64 --cell 16 --square 16 \\
        --updates 300 --probe-every 100 --invariant --action-free-nats 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import yaml

from torchrl_prelar import PreLARLoss, make_world_model
from torchrl_prelar.data.synthetic import grid_square_batch, moving_square_batch
from torchrl_prelar.training.latent_probe import latent_action_probe
from torchrl_prelar.training.pretrain import PreLARPretrainer, make_optimizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))  # its world models

SMALL_FRAMES = {
    "encoder": {"mults": [1, 2]},
    "decoder": {"mults": [1, 2]},
    "latent_action": {"trunk": {"mults": [1, 2]}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy", default="square", choices=["square", "grid"])
    parser.add_argument("--world-model", default="tiny", choices=["paper", "small", "tiny"])
    parser.add_argument("--updates", type=int, default=600)
    parser.add_argument("--probe-every", type=int, default=200)
    parser.add_argument("--lr", type=float, default=None, help="1e-3 (square), 2e-3 (grid)")
    parser.add_argument("--beta-action", type=float, default=1.0)
    parser.add_argument("--action-free-nats", type=float, default=0.0)
    parser.add_argument("--forward-reco", type=float, default=0.0, help="lambda_forward_reco")
    parser.add_argument("--prior-reco", type=float, default=0.0, help="lambda_prior_reco")
    parser.add_argument(
        "--mean-latent-action",
        action="store_true",
        help="feed the RSSM the latent action's mean instead of a sample (PreLARLoss default)",
    )
    parser.add_argument("--free-nats", type=float, default=0.0, help="on the state KL")
    parser.add_argument("--invariant", action="store_true")
    parser.add_argument("--square", type=int, default=None, help="side: 24 (square), 8 (grid)")
    parser.add_argument("--num-squares", type=int, default=1)
    parser.add_argument("--max-shift", type=int, default=4)
    parser.add_argument("--cell", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=16, choices=[16, 64], help="grid")
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

    if args.toy == "square":
        toy = {
            "square": args.square or 24,
            "num_squares": args.num_squares,
            "max_shift": args.max_shift,
        }
        sample, model = moving_square_batch, {"latent_action": {}}
    else:
        toy = {"cell": args.cell, "square": args.square or 8, "image_size": args.image_size}
        model = yaml.safe_load(yaml.safe_dump(SMALL_FRAMES)) if args.image_size == 16 else {}
        model.setdefault("latent_action", {})
        model["image_size"] = args.image_size
        sample = grid_square_batch
    for item in args.latent_action:
        key, value = item.split("=", 1)
        model["latent_action"][key] = yaml.safe_load(value)
    if args.invariant:
        model["latent_action"].setdefault("trunk", {}).update(pool="mean", padding="circular")
    lr = args.lr or (1e-3 if args.toy == "square" else 2e-3)

    torch.manual_seed(args.seed)
    data = torch.Generator().manual_seed(args.seed)
    from dreamer_prelar_utils import example_world_model

    world_model = make_world_model(**example_world_model(args.world_model, model))
    loss = PreLARLoss(
        world_model,
        beta_action=args.beta_action,
        action_free_nats=args.action_free_nats,
        sample_latent_action=not args.mean_latent_action,
        free_nats=args.free_nats,
        lambda_forward_reco=args.forward_reco,
        lambda_prior_reco=args.prior_reco,
    )
    trainer = PreLARPretrainer(loss, make_optimizer(loss.parameters(), lr=lr), precision="fp32")
    held_out = sample(64, 8, generator=torch.Generator().manual_seed(1000 + args.seed), **toy)
    print(f"settings: {vars(args)}, lr {lr}, threads {torch.get_num_threads()}")
    print(
        f"{'update':>6} {'seconds':>7} {'loss':>8} {'action KL':>9} {'R2 action':>9} "
        f"{'R2 next pos':>11} {'state KL':>8} {'shuffled':>8}"
    )
    started, losses, seconds = time.time(), [], 0.0
    for update in range(0, args.updates + 1):
        if update:
            batch = sample(args.batch, args.steps, generator=data, **toy)
            tick = time.time()
            metrics = trainer.update(batch)
            seconds += time.time() - tick
            losses.append(metrics["loss"].item())
        if update % args.probe_every == 0 or update == args.updates:
            probe = latent_action_probe(world_model, held_out)
            recent = losses[-min(50, len(losses)) :] or [float("nan")]
            action_kl = metrics["action_kl"].item() if update else float("nan")
            print(
                f"{update:>6} {seconds:>7.0f} {sum(recent) / len(recent):>8.1f} "
                f"{action_kl:>9.2f} {probe['action_r2']:>9.3f} {probe['position_r2']:>11.3f} "
                f"{probe['state_kl']:>8.2f} "
                f"{probe['shuffled_state_kl']:>8.2f}"
            )
    print(f"wall time {time.time() - started:.0f} s ({seconds:.0f} s in updates)")


if __name__ == "__main__":
    main()
