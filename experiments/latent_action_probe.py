"""How much of a hidden action does the latent action recover? Pre-train on a synthetic toy.

Runs ``examples/dreamer_prelar.py stage=pretrain`` on a toy whose square moves by a hidden
action (``data.source=synthetic``, ``data.synthetic.toy``): ``--toy square`` (moving squares,
64x64, side 24) or ``--toy grid`` (:func:`~torchrl_prelar.data.synthetic.grid_square_batch`: by
default 16x16 frames, a 4x4 grid of 4-pixel cells, the ``tiny`` world model with two-stage
convolutions; ``--image-size 64`` keeps it as it is), with the paper's objective
(``loss=paper``) in fp32. The options below are Hydra overrides of the example
(:data:`OPTIONS`); any other override follows ``--``. ``--invariant`` makes the latent action
model translation invariant on the torus (``trunk.pool: mean``, ``trunk.padding: circular``);
``--mean-latent-action`` feeds the RSSM the latent action's mean instead of a sample.

The example evaluates the held-out toy episodes every ``--probe-every`` updates (its
``evaluation`` block); this driver prints those figures per evaluation (probe R^2 against the
hidden action and against the square's displacement, state-KL ratio, delta-PSNR, on the seen
and unseen sets), then reads the pre-trained model back and prints
:func:`~torchrl_prelar.training.latent_probe.latent_action_probe` on 64 held-out clips (R^2
against the hidden action and against the square's position in o_{t+1}, the RSSM's state KL
with own and shuffled latent actions). Both go to ``<run_dir>/probe.json``.

    python experiments/latent_action_probe.py --updates 1500
    python experiments/latent_action_probe.py --updates 1000 --beta-action 20
    python experiments/latent_action_probe.py --updates 600 --latent-action input_mode=embedding
    python experiments/latent_action_probe.py --toy grid --updates 1500 --probe-every 250
    python experiments/latent_action_probe.py --toy grid --updates 1500 --invariant \\
        --action-free-nats 2 --seed 1
    python experiments/latent_action_probe.py --toy grid --image-size 64 --cell 16 --square 16 \\
        --updates 300 --probe-every 100 --invariant --action-free-nats 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from torchrl_prelar.data.synthetic import toy_batch
from torchrl_prelar.evaluation.__main__ import load_pretrained_run
from torchrl_prelar.media import read_csv_scalars
from torchrl_prelar.training.latent_probe import latent_action_probe

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "dreamer_prelar.py"
#: Option -> (the example's key, type, help): given options become ``key=value`` overrides.
OPTIONS = {
    "--world-model": ("world_model", str, "paper | small | tiny"),
    "--updates": ("pretrain.updates", int, "pre-training updates"),
    "--probe-every": ("evaluation.probe_every", int, "updates between two evaluations"),
    "--lr": ("pretrain.lr", float, "1e-3 (square), 2e-3 (grid)"),
    "--beta-action": ("loss.beta_action", float, "action KL weight"),
    "--action-free-nats": ("loss.action_free_nats", float, "action KL free nats"),
    "--forward-reco": ("loss.lambda_forward_reco", float, "forward reconstruction weight"),
    "--prior-reco": ("loss.lambda_prior_reco", float, "prior reconstruction weight"),
    "--free-nats": ("loss.free_nats", float, "free nats of the state KL"),
    "--square": ("data.synthetic.square", int, "square side: 24 (square), 8 (grid)"),
    "--num-squares": ("data.synthetic.num_squares", int, "squares per clip (square toy)"),
    "--max-shift": ("data.synthetic.max_shift", int, "pixels per axis and step (square toy)"),
    "--cell": ("data.synthetic.cell", int, "grid cell side, pixels"),
    "--batch": ("data.batch_size", int, "clips per update"),
    "--seed": ("seed", int, "seed of the run and of the toy's episodes"),
}
#: Each toy's settings (Hydra overrides), before the options.
TOYS = {
    "square": [
        "data.synthetic.toy=square",
        "data.synthetic.square=24",
        "data.episodes=128",
        "pretrain.lr=1e-3",
    ],
    "grid": [
        "data.synthetic.toy=grid",
        "data.synthetic.square=8",
        "data.episodes=512",
        "pretrain.lr=2e-3",
    ],
}
#: The grid toy at 16x16: two-stage convolutions.
SMALL_FRAMES = [
    "world_model.encoder.mults=[1,2]",
    "world_model.decoder.mults=[1,2]",
    "world_model.latent_action.trunk.mults=[1,2]",
]
#: Everything else: the paper's objective on toy clips of 8 transitions; held-out sets of
#: 8 episodes of 64 transitions (64 clips of 8), 3 of them observed in imagination.
COMMON = [
    "stage=pretrain",
    "data.source=synthetic",
    "data.episode_length=64",
    "data.num_transitions=8",
    "loss=paper",
    "precision=fp32",
    "pretrain.updates=600",
    "pretrain.video_context=3",
    "evaluation.probe_every=200",
    "evaluation.seen_episodes=8",
    "evaluation.unseen_episodes=8",
    "evaluation.episode_length=64",
    "evaluation.num_transitions=8",
    "evaluation.context=3",
]
#: The logged held-out figures printed per evaluation (``pretrain/<figure>_<set>``).
LOGGED = ("probe_r2", "probe_r2_motion", "state_kl_shuffled_ratio", "delta_psnr")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--toy", default="square", choices=sorted(TOYS))
    parser.add_argument("--image-size", type=int, default=None, help="16 (grid), 64 (square)")
    parser.add_argument("--invariant", action="store_true")
    parser.add_argument("--mean-latent-action", action="store_true")
    parser.add_argument(
        "--latent-action",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="world-model latent_action overrides, e.g. input_mode=difference dim=2",
    )
    parser.add_argument("--run-dir", type=Path, default=None, help="default: runs/probe_<toy>")
    for option, (_, kind, text) in OPTIONS.items():
        parser.add_argument(option, type=kind, default=None, help=text)
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides of the example")
    return parser.parse_args(argv)


def overrides_of(args: argparse.Namespace) -> list[str]:
    """The example's Hydra overrides that make the run ``args`` asks for."""
    image_size = args.image_size or (16 if args.toy == "grid" else 64)
    overrides = [*COMMON, *TOYS[args.toy], "world_model=tiny"]
    overrides += [f"data.synthetic.image_size={image_size}", f"world_model.image_size={image_size}"]
    if image_size == 16:
        overrides += SMALL_FRAMES
    for option, (key, _, _) in OPTIONS.items():
        value = getattr(args, option.lstrip("-").replace("-", "_"))
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.invariant:
        overrides += [
            "world_model.latent_action.trunk.pool=mean",
            "world_model.latent_action.trunk.padding=circular",
        ]
    if args.mean_latent_action:
        overrides.append("loss.sample_latent_action=false")
    overrides += [f"world_model.latent_action.{item}" for item in args.latent_action]
    run_dir = args.run_dir or Path("runs") / f"probe_{args.toy}"
    return [*overrides, *args.overrides, f"run_dir={run_dir}"]


def logged_figures(run_dir: Path) -> dict[str, dict[int, float]]:
    """The held-out figures the example logged, per evaluation step."""
    series = read_csv_scalars(run_dir / "csv")
    figures = {}
    for figure in LOGGED:
        for held_out in ("seen", "unseen"):
            name = f"{figure}_{held_out}"
            if f"pretrain/{name}" in series:
                steps, values = series[f"pretrain/{name}"]
                figures[name] = dict(zip(steps.tolist(), values.tolist(), strict=True))
    return figures


def final_probe(run_dir: Path, config: dict[str, Any], seed: int) -> dict[str, float]:
    """:func:`latent_action_probe` of the pre-trained model on 64 held-out toy clips."""
    world_model, _ = load_pretrained_run(run_dir)
    generator = torch.Generator().manual_seed(1000 + seed)
    clips = toy_batch(64, config["num_transitions"], generator=generator, **config["synthetic"])
    return latent_action_probe(world_model, clips)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    overrides = overrides_of(args)
    run_dir = Path(overrides[-1].split("=", 1)[1])
    subprocess.run([sys.executable, str(EXAMPLE), *overrides], check=True)
    config = OmegaConf.to_container(OmegaConf.load(run_dir / "hydra" / "config.yaml"))
    figures = logged_figures(run_dir)
    probe = final_probe(run_dir, config["data"], config["seed"])
    steps = sorted({step for values in figures.values() for step in values})
    print(f"{'update':>6} " + " ".join(f"{name:>28}" for name in figures))
    for step in steps:
        cells = [f"{values.get(step, float('nan')):>28.3f}" for values in figures.values()]
        print(f"{step:>6} " + " ".join(cells))
    print("held-out probe:", {key: round(value, 3) for key, value in probe.items()})
    result = {"overrides": overrides, "figures": figures, "probe": probe}
    (run_dir / "probe.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
