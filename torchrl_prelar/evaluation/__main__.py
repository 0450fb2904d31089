"""Evaluations of a pre-training run folder, from the command line.

Usage::

    python -m torchrl_prelar.evaluation latent-actions RUN_DIR [--checkpoint FILE]
        [--seen DIR] [--unseen DIR]
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
block, stored in its checkpoint, else from the quick preset's. ``--checkpoint FILE`` evaluates
another file instead, e.g. ``RUN_DIR/pretrain_last.pt`` of a run that has not finished, and
writes into ``RUN_DIR/eval_<file name>/``.

Examples:
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
from torchrl_prelar.io import PRETRAINED_MODEL
from torchrl_prelar.legacy import load_world_model_checkpoint
from torchrl_prelar.modules import PreLARWorldModel, make_world_model

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
    """Returns the command-line parser (one sub-command per evaluation).

    Examples:
        >>> build_parser().parse_args(["latent-actions", "runs/a"]).command
        'latent-actions'
    """
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
    latent.add_argument(
        "--checkpoint",
        type=Path,
        help=f"evaluate this file instead of RUN_DIR/{PRETRAINED_MODEL}: a pre-trained model "
        "or a pre-training checkpoint (e.g. RUN_DIR/pretrain_last.pt of a stopped run); the "
        "results go to RUN_DIR/eval_<file name>/",
    )
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
    run_dir: str | Path,
    device: str | torch.device = "cpu",
    checkpoint: str | Path | None = None,
) -> tuple[PreLARWorldModel, dict[str, Any]]:
    """Loads the pre-trained world model of a run and its ``evaluation`` settings.

    The model (latent action model included) is rebuilt from the ``"world_model_kwargs"``
    stored in the file; a legacy file whose world model is named by a preset is read through
    :func:`~torchrl_prelar.legacy.upgrade_checkpoint`.

    Args:
        run_dir (str or Path): the run folder; its ``pretrained_world_model.pt`` is read by
            default.
        device (str or torch.device, optional): where the model goes. Defaults to ``"cpu"``.
        checkpoint (str or Path, optional): another file to read: a pre-trained model
            (``"world_model"`` and ``"world_model_kwargs"`` entries), or a pre-training
            checkpoint (``"trainer"``, with the ``"world_model_kwargs"`` the example stores in
            it), whose world-model weights are taken out of the trainer's state. Defaults to
            ``None``.

    Returns:
        ``(world_model, settings)``: the settings are the stored ``evaluation`` block, empty
        for runs without one.

    Raises:
        ValueError: if the file is neither, if it has no ``"world_model_kwargs"``, or if it
            has no latent action model (an APV or ContextWM action-free pre-training).

    Examples:
        >>> import tempfile
        >>> from torchrl_prelar.io import save_checkpoint
        >>> run_dir = Path(tempfile.mkdtemp())
        >>> kwargs = {"rssm": {"deter": 64}}
        >>> model = make_world_model(**kwargs)
        >>> state = {f"loss.world_model.{k}": v for k, v in model.state_dict().items()}
        >>> _ = save_checkpoint(run_dir / "pretrain_last.pt", {
        ...     "trainer": {"model": state}, "step": 5, "world_model_kwargs": kwargs})
        >>> loaded, _ = load_pretrained_run(run_dir, checkpoint=run_dir / "pretrain_last.pt")
        >>> bool((loaded.state_dict()["action_model.head.0.weight"]
        ...       == model.state_dict()["action_model.head.0.weight"]).all())
        True
    """
    path = Path(checkpoint) if checkpoint is not None else Path(run_dir) / PRETRAINED_MODEL
    content = load_world_model_checkpoint(path)
    if "world_model" in content:
        state = names = content["world_model"]
    elif "trainer" in content:
        state, names = None, content["trainer"]["model"]
    else:
        raise ValueError(
            f"{path} holds {sorted(content)}: expected a pre-trained model ('world_model', "
            "'world_model_kwargs') or a pre-training checkpoint ('trainer', "
            "'world_model_kwargs')."
        )
    if "world_model_kwargs" not in content:
        raise ValueError(
            f"{path} has no 'world_model_kwargs' entry (a pre-training checkpoint written "
            "before the example stored its world model's arguments): its world model cannot "
            "be rebuilt."
        )
    if not any(name.split(".").count("action_model") for name in names):
        raise ValueError(
            f"{path} is an action-free pre-training (APV or ContextWM): it has no latent "
            "action to evaluate."
        )
    world_model = make_world_model(**content["world_model_kwargs"])
    if state is None:
        state = world_model_entries(content["trainer"]["model"], world_model, path)
    world_model.load_state_dict(state)
    return world_model.to(device), dict(content.get("evaluation") or {})


def world_model_entries(
    trainer_state: Mapping[str, torch.Tensor], world_model: torch.nn.Module, path: Path
) -> dict[str, torch.Tensor]:
    """Takes the entries of ``world_model`` out of a trainer's state dict, whatever module holds it.

    The prefix is found from the first entry of ``world_model`` (e.g. ``"model_loss.
    world_model.world_model."`` inside a :class:`~torchrl_prelar.PreLARLoss`); every other
    entry must be there with that prefix.

    Args:
        trainer_state (Mapping): the trainer's model state dict.
        world_model (torch.nn.Module): the world model whose entries are looked for.
        path (Path): the checkpoint file, named in the error message.

    Returns:
        the world model's state dict, its entries' names without the prefix.

    Raises:
        ValueError: naming the entries of the world model the state does not hold.
    """
    names = list(world_model.state_dict())
    for key in trainer_state:
        prefix = key.removesuffix(names[0])
        if prefix != key and all(prefix + name in trainer_state for name in names):
            return {name: trainer_state[prefix + name] for name in names}
    raise ValueError(
        f"{path}: the trainer's state does not hold the configured world model "
        f"(looked for {names[0]!r} and {len(names) - 1} more entries under one prefix)."
    )


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
    """Formats the figures of each set as a text table.

    Args:
        results (Mapping): the figures of each set, as
            :func:`~torchrl_prelar.evaluation.evaluate_latent_actions` returns them.

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
    """Runs the ``latent-actions`` command and returns the figures per set.

    Args:
        args (argparse.Namespace): the parsed command line (:func:`build_parser`).
    """
    world_model, stored = load_pretrained_run(args.run_dir, args.device, args.checkpoint)
    settings = _settings(args, stored)
    out = args.run_dir
    if args.checkpoint is not None:
        out = args.run_dir / f"eval_{args.checkpoint.stem}"
        out.mkdir(parents=True, exist_ok=True)
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
    save_latent_action_results(out, results)
    monitor.save_transfer_gif(out / TRANSFER_GIF)
    print(f"wrote {out / RESULTS_FILE}, {out / TRANSFER_GIF}")
    return results


def main(argv: Sequence[str] | None = None) -> dict[str, dict]:
    """Parses ``argv`` and runs the chosen evaluation.

    Args:
        argv (sequence of str, optional): the arguments. Defaults to ``None``
            (``sys.argv[1:]``).

    Returns:
        the figures per held-out set.
    """
    args = build_parser().parse_args(argv)
    return latent_actions(args)


if __name__ == "__main__":
    main()
