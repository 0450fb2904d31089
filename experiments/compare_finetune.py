"""Fine-tuning comparison: PreLAR vs ``dreamer`` from scratch (vs APV, ContextWM), several seeds.

    MUJOCO_GL=egl python experiments/compare_finetune.py \\
        --pretrained runs/prelar_quick/pretrained_world_model.pt --out runs/compare_quick
    python experiments/results_report.py --show runs/compare_quick/comparison.json

With ``--arms prelar dreamer apv --apv-pretrained <action-free pretrained_world_model.pt>``
(written by ``examples/dreamer_prelar.py stage=pretrain arm=apv``) the APV
baseline is a third arm; likewise ``contextwm`` with ``--contextwm-pretrained`` (written with
``arm=contextwm``), the ContextWM baseline.

Each run (one per arm and seed, ``<out>/<arm>_seed<seed>``) is ``run_finetune(cfg)`` of
``examples/dreamer_prelar.py`` with the ``finetune`` section of ``examples/config`` preset
``--preset`` (plus Hydra ``key=value`` overrides such as ``finetune.env_steps=2000``) and the
world-model arguments the pre-trained model was trained with (read from the checkpoint), so
both arms have the same structure.
Runs are sequential in this one process. A run whose folder holds a finished summary is
skipped and a half-finished one resumes, so re-running the same command after a kill
continues where it stopped. The finished runs are then summarised in ``<out>/comparison.json``
(the schema of ``docs/results/reach35k.json``; ``experiments/results_report.py`` renders its
tables). ``--collect-only`` runs nothing and summarises the runs of ``--arms`` x ``--seeds``
that have finished (e.g. while other seeds are still running).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples"))  # the pipeline: examples/dreamer_prelar.py
CONFIG_DIR = REPO / "examples" / "config"
ARMS = ("prelar", "dreamer", "apv", "contextwm")
DEFAULT_ARMS = ("prelar", "dreamer")
#: The checkpoint option of each arm that fine-tunes a pre-trained model.
PRETRAINED_OPTIONS = {
    "prelar": "--pretrained",
    "apv": "--apv-pretrained",
    "contextwm": "--contextwm-pretrained",
}
LOSS = "finetune/world_model_loss"
#: Set by this script for every run; overriding them on the command line is an error.
OWN_KEYS = ("stage", "run_dir", "seed", "name", "arm", "finetune.init", "finetune.pretrained")
TIMING_FILE = "compare_timing.json"
CONFIG_FILE = "compare_config.json"
RESULTS_FILE = "comparison.json"

log = logging.getLogger("compare_finetune")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--pretrained", type=Path, help="pretrained_world_model.pt of run_pretrain (prelar arm)"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder of the run folders")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--task", default="reach-v3", help="Meta-world task")
    parser.add_argument("--preset", default="quick", help="examples/config preset")
    parser.add_argument(
        "--apv-pretrained", type=Path, help="action-free pretrained_world_model.pt (apv arm)"
    )
    parser.add_argument(
        "--contextwm-pretrained",
        type=Path,
        help="ContextWM pretrained_world_model.pt (contextwm arm)",
    )
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(DEFAULT_ARMS))
    parser.add_argument(
        "--collect-only",
        action="store_true",
        help="run nothing: summarise the runs of --arms x --seeds under --out that have "
        "finished, each with its saved configuration",
    )
    parser.add_argument(
        "overrides", nargs="*", help="Hydra key=value overrides, e.g. finetune.env_steps=2000"
    )
    args = parser.parse_args(argv)
    if args.collect_only:
        return args
    for override in args.overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if "=" not in override:
            parser.error(f"override {override!r} is not key=value")
        if key in OWN_KEYS or key in ("preset", "finetune.task"):
            parser.error(f"{key} is set by this script (use its options instead)")
    for arm, option in PRETRAINED_OPTIONS.items():
        path = pretrained_path(args, arm)
        if arm in args.arms and path is None:
            parser.error(f"{option} is required for the {arm} arm")
        if path is not None and not path.is_file():
            parser.error(f"{option} {path} does not exist")
    return args


def pretrained_path(args: argparse.Namespace, arm: str) -> Path | None:
    """The checkpoint given for ``arm`` (None for ``dreamer`` or when not given)."""
    option = PRETRAINED_OPTIONS.get(arm)
    return getattr(args, option.lstrip("-").replace("-", "_")) if option else None


def pretrained_world_model_kwargs(path: Path | None) -> dict[str, Any] | None:
    """The world-model arguments a ``run_pretrain`` checkpoint was trained with."""
    if path is None:
        return None
    from torchrl_prelar.training.model_gap import checkpoint_world_model_kwargs

    return checkpoint_world_model_kwargs(path)


def describe_world_model(kwargs: Mapping[str, Any]) -> str:
    """The world model's sizes, for the report.

    Examples:
        >>> describe_world_model({"encoder": {"type": "conv"}, "latent_action": {"dim": 8},
        ...                       "rssm": {"deter": 64, "categoricals": 8, "classes": 8}})
        'conv encoder, RSSM of 64 deterministic + 8 x 8 categorical units, 8-d latent action'
    """
    rssm = kwargs["rssm"]
    return (
        f"{kwargs['encoder']['type']} encoder, RSSM of {rssm['deter']} deterministic + "
        f"{rssm['categoricals']} x {rssm['classes']} categorical units, "
        f"{kwargs['latent_action']['dim']}-d latent action"
    )


def run_config(
    args: argparse.Namespace, arm: str, seed: int, world_model: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The plain configuration dict of one run (composed from ``examples/config``)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    run_dir = (args.out / f"{arm}_seed{seed}").resolve()
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        config = compose(
            "config",
            overrides=[
                f"preset={args.preset}",
                f"arm={arm}",
                f"run_dir={run_dir}",
                *args.overrides,
            ],
        )
    cfg = OmegaConf.to_container(config, resolve=True)
    cfg["stage"] = "finetune"
    cfg["run_dir"] = str(run_dir)
    cfg["seed"] = seed
    cfg["name"] = f"{arm}_seed{seed}"
    cfg["finetune"]["task"] = args.task
    pretrained = pretrained_path(args, arm)
    cfg["finetune"]["pretrained"] = str(pretrained.resolve()) if pretrained else None
    if world_model is not None:  # every arm: the pre-trained model's structure
        cfg["world_model"] = dict(world_model)
    return cfg


def _without_new_unset_keys(cfg: Mapping[str, Any], saved: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg`` less the keys ``saved`` lacks whose value is None: settings added to the
    configuration after a run started, left unset, do not change that run."""
    return {
        key: _without_new_unset_keys(value, saved[key])
        if isinstance(value, Mapping) and isinstance(saved.get(key), Mapping)
        else value
        for key, value in cfg.items()
        if key in saved or value is not None
    }


def _comparable(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg`` without what may change between invocations of the same comparison."""
    out = json.loads(json.dumps(cfg))
    out["finetune"].pop("env_steps", None)
    out["finetune"].pop("max_seconds", None)  # a limit of one invocation
    out.pop("threads", None)
    out.pop("distributed", None)  # pre-training only
    out["finetune"].setdefault("env_workers", 1)  # configs older than the key: one worker
    out["finetune"]["pretrained"] = bool(out["finetune"]["pretrained"])
    return out


def finished(run_dir: Path, env_steps: int) -> dict[str, Any] | None:
    """The finetune summary of ``run_dir`` if it reached ``env_steps``, else None."""
    path = run_dir / "summary.json"
    if not path.exists():
        return None
    summary = json.loads(path.read_text()).get("finetune")
    if summary and summary.get("env_steps", 0) >= env_steps:
        return summary
    return None


def run_one(cfg: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Run (or resume, or skip) one fine-tuning run; return its summary and whether it ran."""
    from dreamer_prelar import run_finetune

    run_dir = Path(cfg["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = run_dir / CONFIG_FILE
    previous = json.loads(saved.read_text()) if saved.exists() else None
    if previous is not None and _comparable(previous) != _comparable(
        _without_new_unset_keys(cfg, previous)
    ):
        raise ValueError(
            f"{run_dir} was started with another configuration ({saved}); use another --out "
            "or delete that folder."
        )
    saved.write_text(json.dumps(cfg, indent=2))
    summary = finished(run_dir, cfg["finetune"]["env_steps"])
    if summary is not None:
        return summary, False
    started = time.time()
    summary = run_finetune(cfg)
    wandb = sys.modules.get("wandb")  # one wandb run per fine-tuning run in this process
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
    timing_path = run_dir / TIMING_FILE
    timing = json.loads(timing_path.read_text()) if timing_path.exists() else {"seconds": 0.0}
    timing["seconds"] = round(timing["seconds"] + time.time() - started, 1)
    timing_path.write_text(json.dumps(timing))
    return summary, True


# ----------------------------------------------------------------------------- summary


def run_seconds(run_dir: Path) -> float | None:
    path = run_dir / TIMING_FILE
    return json.loads(path.read_text())["seconds"] if path.exists() else None


def run_record(out: Path, arm: str, seed: int) -> dict[str, Any]:
    """One finished run of ``out`` in the schema of ``docs/results/reach35k.json``'s runs."""
    from torchrl_prelar.media import read_csv_scalars

    run_dir = out / f"{arm}_seed{seed}"
    summary = json.loads((run_dir / "summary.json").read_text())["finetune"]
    _, losses = read_csv_scalars(run_dir / "csv").get(LOSS, ((), ()))
    evaluations = summary["evaluations"]
    return {
        "arm": arm,
        "seed": seed,
        "env_steps": summary["env_steps"],
        "updates": summary["updates"],
        "final_wm_loss": float(losses[-1]) if len(losses) else None,
        "eval_success": {str(e["env_steps"]): e["eval_success_rate"] for e in evaluations},
        "last_eval_return": evaluations[-1]["eval_return"] if evaluations else None,
        "wall_s": run_seconds(run_dir),
    }


def settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The fine-tuning settings every run of the comparison shares."""
    tune = cfg["finetune"]
    keys = ("task", "env_steps", "prefill", "update_every", "batch_size", "batch_length")
    keys += ("eval_every", "max_episode_steps")
    return {
        "preset": cfg.get("preset_name"),
        "world_model": describe_world_model(cfg["world_model"]),
        **{key: tune[key] for key in keys},
    }


def write_summary(
    args: argparse.Namespace,
    argv: Sequence[str] | None,
    runs: Sequence[tuple[str, int]],
    cfg: Mapping[str, Any],
) -> Path:
    """Write the finished ``runs`` (configured like ``cfg``) into ``<out>/comparison.json``."""
    from results_report import command_line, machine_description

    from torchrl_prelar.io import atomic_write_text

    results = {
        "what": f"Fine-tuning on {cfg['finetune']['task']}: arms {', '.join(args.arms)}.",
        "machine": machine_description(cfg.get("threads")),
        "commands": [command_line(__file__, argv)],
        "eval_episodes": cfg["finetune"]["eval_episodes"],
        "settings": settings(cfg),
        "runs": [run_record(args.out, arm, seed) for arm, seed in runs],
    }
    path = args.out / RESULTS_FILE
    atomic_write_text(path, json.dumps(results, indent=1))
    log.info("wrote %s", path)
    return path


def main(argv: Sequence[str] | None = None) -> Path:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    if args.collect_only:
        return collect_finished_runs(args, argv)
    checkpoints = [pretrained_path(args, arm) for arm in PRETRAINED_OPTIONS]
    world_model = pretrained_world_model_kwargs(next(filter(None, checkpoints), None))
    jobs = [(arm, seed) for seed in args.seeds for arm in args.arms]
    cfg = None
    for index, (arm, seed) in enumerate(jobs, 1):
        cfg = run_config(args, arm, seed, world_model)
        log.info("[%d/%d] %s seed %d -> %s", index, len(jobs), arm, seed, cfg["run_dir"])
        tick = time.time()
        summary, ran = run_one(cfg)
        if ran:
            log.info(
                "[%d/%d] %s seed %d done in %.0f s: %d env steps, %d updates, evaluations %s",
                index,
                len(jobs),
                arm,
                seed,
                time.time() - tick,
                summary["env_steps"],
                summary["updates"],
                [(e["env_steps"], e["eval_success_rate"]) for e in summary["evaluations"]],
            )
        else:
            log.info("[%d/%d] %s seed %d: finished before, skipped", index, len(jobs), arm, seed)
    return write_summary(args, argv, jobs, cfg)


def collect_finished_runs(args: argparse.Namespace, argv: Sequence[str] | None) -> Path:
    """``--collect-only``: the summary of the finished runs of ``--arms`` x ``--seeds``.

    Each run is read with the configuration it saved; runs that have not reached their env
    steps (or were never started) are left out and named in the log. Raises
    :class:`SystemExit` when none has finished.
    """
    done, cfg = [], None
    for seed in args.seeds:
        for arm in args.arms:
            saved = args.out / f"{arm}_seed{seed}" / CONFIG_FILE
            run_cfg = json.loads(saved.read_text()) if saved.exists() else None
            steps = run_cfg["finetune"]["env_steps"] if run_cfg else None
            if run_cfg is None or finished(saved.parent, steps) is None:
                log.info("%s seed %d: not finished under %s, left out", arm, seed, args.out)
                continue
            done.append((arm, seed))
            cfg = cfg or run_cfg
    if not done:
        raise SystemExit(f"no finished run of {args.arms} x seeds {args.seeds} in {args.out}")
    return write_summary(args, argv, done, cfg)


if __name__ == "__main__":
    main()
