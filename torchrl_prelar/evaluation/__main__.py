"""Evaluations of a pre-training run folder, from the command line.

Usage::

    python -m torchrl_prelar.evaluation latent-actions RUN_DIR [--seen DIR] [--unseen DIR]
        [--num-transitions 24] [--context 5] [--seed 0] [--device cpu]
        [--seen-tasks 10] [--seen-episodes 1] [--unseen-episodes 2] [--episode-length 48]

``latent-actions`` loads ``RUN_DIR/pretrained_world_model.pt``, evaluates its latent actions
(:func:`~torchrl_prelar.evaluation.evaluate_latent_actions`) on the held-out sets ``seen`` and
``unseen``, prints a table, writes ``RUN_DIR/latent_actions.json`` and
``RUN_DIR/latent_action_transfer.gif``, and merges the figures into ``RUN_DIR/summary.json``
(``"pretrain" -> "latent_actions"``). The sets default to ``seen`` and ``unseen`` in the
run's ``evaluation.dir`` (default ``RUN_DIR/heldout``, written by the pre-training job); a
default folder without episodes is rendered first with the scripted Meta-world generator (the
generation flags). Settings not given on the command line come from the run's ``evaluation``
block, stored in its checkpoint, else from the quick preset's.

Example:
    >>> from torchrl_prelar.evaluation.__main__ import main
    >>> main(["latent-actions", "runs/prelar_quick"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from torchrl_prelar.evaluation.held_out import (
    HELD_OUT_SETS,
    RESULTS_FILE,
    TRANSFER_GIF,
    HeldOutConfig,
    LatentActionMonitor,
    generate_held_out_set,
    load_clip_sets,
    save_latent_action_results,
)
from torchrl_prelar.modules import PreLARWorldModel, make_world_model, world_model_config
from torchrl_prelar.training.checkpoint import load_checkpoint
from torchrl_prelar.training.pretrain import PRETRAINED_MODEL

__all__ = ["build_parser", "format_table", "load_pretrained_run", "main"]

#: Settings of the quick preset's ``evaluation`` block, for runs without one.
CLI_DEFAULTS = {
    "num_transitions": 24,
    "context": 5,
    **asdict(HeldOutConfig()),
}
_COLUMNS = (
    ("episodes", "episodes", "d"),
    ("clips", "clips", "d"),
    ("probe R2", "probe_r2", ".3f"),
    ("state KL", "state_kl", ".3f"),
    ("KL shuf", "shuffled_state_kl", ".3f"),
    ("KL ratio", "state_kl_shuffled_ratio", ".3f"),
    ("PSNR own", "psnr_own", ".2f"),
    ("PSNR shuf", "psnr_shuffled", ".2f"),
    ("dPSNR", "delta_psnr", ".3f"),
)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (one sub-command per evaluation)."""
    parser = argparse.ArgumentParser(
        prog="python -m torchrl_prelar.evaluation",
        description="Evaluate a pre-training run folder.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    latent = commands.add_parser(
        "latent-actions",
        help="linear probe, state KL and controllability of the latent actions",
        description="Evaluate the latent actions of RUN_DIR's pre-trained world model on "
        "held-out episodes with true actions; write latent_actions.json, the transfer GIF and "
        "summary.json entries into RUN_DIR. Settings not given default to the run's "
        "evaluation block (stored in its checkpoint), then to the quick preset's.",
    )
    latent.add_argument("run_dir", type=Path, help=f"run folder holding {PRETRAINED_MODEL}")
    latent.add_argument("--seen", type=Path, help="seen set (default RUN_DIR/heldout/seen)")
    latent.add_argument("--unseen", type=Path, help="unseen set (default RUN_DIR/heldout/unseen)")
    latent.add_argument("--num-transitions", type=int, help="transitions per clip (24)")
    latent.add_argument("--context", type=int, help="observed transitions (5)")
    latent.add_argument("--seed", type=int, default=0, help="evaluation seed (0)")
    latent.add_argument("--device", default="cpu", help="torch device (cpu)")
    generation = latent.add_argument_group("rendering a default set that has no episode")
    generation.add_argument("--seen-tasks", type=int, help="pre-training tasks covered (10)")
    generation.add_argument("--seen-episodes", type=int, help="episodes per seen task (1)")
    generation.add_argument("--unseen-episodes", type=int, help="per evaluation task (2)")
    generation.add_argument("--episode-length", type=int, help="actions per episode (48)")
    generation.add_argument("--seen-seed", type=int, help="(1000)")
    generation.add_argument("--unseen-seed", type=int, help="(2000)")
    generation.add_argument("--noise", type=float, help="expert action-noise std (0.1)")
    return parser


def load_pretrained_run(
    run_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[PreLARWorldModel, dict[str, Any]]:
    """The pre-trained world model of a run (latent action model included) and its
    ``evaluation`` settings (empty for runs without them).

    Raises:
        ValueError: if the checkpoint has no latent action model (an APV or ContextWM
            action-free pre-training).
    """
    from torchrl_prelar.training.finetune_agent import load_pretrained_world_model

    path = Path(run_dir) / PRETRAINED_MODEL
    checkpoint = load_checkpoint(path)
    if not any(name.startswith("action_model.") for name in checkpoint["world_model"]):
        raise ValueError(
            f"{path} is an action-free pre-training (APV or ContextWM): it has no latent "
            "action to evaluate."
        )
    config = checkpoint["config"]
    world_model = make_world_model(
        world_model_config(config["preset"], **config.get("overrides", {}))
    )
    load_pretrained_world_model(world_model, path, config)
    return world_model.to(device), dict(checkpoint.get("evaluation") or {})


def _settings(args: argparse.Namespace, stored: Mapping[str, Any]) -> dict[str, Any]:
    given = {key: value for key, value in vars(args).items() if value is not None}
    return {**CLI_DEFAULTS, **stored, **given}


def _held_out_folders(settings: Mapping[str, Any]) -> dict[str, Path]:
    config = HeldOutConfig.from_mapping(settings)
    folders = {}
    for name in HELD_OUT_SETS:
        folder = settings.get(name)
        if folder is None:
            folder = Path(settings.get("dir") or settings["run_dir"] / "heldout") / name
            if not any(folder.glob("*.npz")):
                generate_held_out_set(folder, name, config)
        folders[name] = Path(folder)
    return folders


def format_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """The figures of each set as a text table.

    Examples:
        >>> row = dict(episodes=2, clips=4, probe_r2=0.5, state_kl=1.0, shuffled_state_kl=2.0,
        ...            state_kl_shuffled_ratio=2.0, psnr_own=20.0, psnr_shuffled=18.0,
        ...            delta_psnr=2.0)
        >>> print(format_table({"seen": row}).splitlines()[1])
        seen           2        4    0.500    1.000    2.000    2.000    20.00    18.00    2.000
    """
    header = f"{'set':<8}" + "".join(f"{title:>9}" for title, _, _ in _COLUMNS)
    rows = [
        f"{name:<8}" + "".join(f"{figures[key]:>9{spec}}" for _, key, spec in _COLUMNS)
        for name, figures in results.items()
    ]
    return "\n".join([header, *rows])


def latent_actions(args: argparse.Namespace) -> dict[str, dict]:
    """Run the ``latent-actions`` command; return the figures per set."""
    world_model, stored = load_pretrained_run(args.run_dir, args.device)
    settings = _settings(args, stored)
    clip_sets = load_clip_sets(
        _held_out_folders(settings), num_transitions=settings["num_transitions"]
    )
    monitor = LatentActionMonitor(
        world_model,
        clip_sets,
        context=settings["context"],
        every=0,
        last_step=0,
        seed=settings["seed"],
    )
    results = monitor.evaluate(0)
    print(format_table(results))
    save_latent_action_results(args.run_dir, results)
    monitor.save_transfer_gif(args.run_dir / TRANSFER_GIF)
    print(f"wrote {args.run_dir / RESULTS_FILE}, {args.run_dir / TRANSFER_GIF}")
    return results


def main(argv: Sequence[str] | None = None) -> dict[str, dict]:
    """Parse ``argv`` and run the chosen evaluation."""
    args = build_parser().parse_args(argv)
    return latent_actions(args)


if __name__ == "__main__":
    main()
