"""Fine-tuning comparison: PreLAR vs ``dreamer`` from scratch (vs APV, ContextWM), several seeds.

    MUJOCO_GL=egl python experiments/compare_finetune.py \\
        --pretrained runs/prelar_quick/pretrained_world_model.pt --out runs/compare_quick \\
        --docs docs

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
continues where it stopped. With ``--docs DIR`` the CSV logs of all runs are then read and
``DIR/results/finetune_comparison.png`` and ``DIR/results.md`` are written; without it no
page is touched. ``--report-only --docs DIR`` runs nothing and writes the report of those runs
of ``--arms`` x ``--seeds`` that have finished (e.g. while other seeds are still running).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples"))  # the pipeline: examples/dreamer_prelar.py
CONFIG_DIR = REPO / "examples" / "config"
ARMS = ("prelar", "dreamer", "apv", "contextwm")
DEFAULT_ARMS = ("prelar", "dreamer")
COLOURS = {
    "prelar": "tab:blue",
    "dreamer": "tab:orange",
    "apv": "tab:green",
    "contextwm": "tab:red",
}
# Visible where they coincide.
STYLES = {
    "prelar": ("-", "o", 7),
    "dreamer": ("--", "s", 4),
    "apv": (":", "^", 5),
    "contextwm": ("-.", "D", 4),
}
#: The checkpoint option of each arm that fine-tunes a pre-trained model.
PRETRAINED_OPTIONS = {
    "prelar": "--pretrained",
    "apv": "--apv-pretrained",
    "contextwm": "--contextwm-pretrained",
}
#: Baseline arms named in the report, with their labels.
BASELINES = {"apv": "APV", "contextwm": "ContextWM"}
LOSS = "finetune/world_model_loss"
SUCCESS = "finetune/eval_success_rate"
RETURN = "finetune/eval_return"
#: Set by this script for every run; overriding them on the command line is an error.
OWN_KEYS = ("stage", "run_dir", "seed", "name", "arm", "finetune.init", "finetune.pretrained")
TIMING_FILE = "compare_timing.json"
CONFIG_FILE = "compare_config.json"

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
        "--docs",
        type=Path,
        help="folder of results.md and results/ to write the report into "
        "(default: no report, the runs only)",
    )
    parser.add_argument(
        "--section",
        help="write the report as this marked section of results.md (its figure "
        "results/finetune_SECTION.png) and keep the rest of the page; default: the whole page",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: write the report (--docs) from the runs of --arms x --seeds under "
        "--out that have finished, each with its saved configuration",
    )
    parser.add_argument(
        "overrides", nargs="*", help="Hydra key=value overrides, e.g. finetune.env_steps=2000"
    )
    args = parser.parse_args(argv)
    if args.report_only:
        if args.docs is None:
            parser.error("--report-only writes a report: give --docs")
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


# ----------------------------------------------------------------------------- reporting


def run_seconds(run_dir: Path) -> float | None:
    path = run_dir / TIMING_FILE
    return json.loads(path.read_text())["seconds"] if path.exists() else None


def collect(out: Path, runs: Sequence[tuple[str, int]]) -> dict[str, dict[int, Any]]:
    """``{arm: {seed: {"series": {...}, "summary": {...}, "seconds": s}}}`` from the logs
    of the ``(arm, seed)`` runs under ``out``."""
    from torchrl_prelar.media import read_csv_scalars

    results: dict[str, dict[int, Any]] = {}
    for arm, seed in runs:
        results.setdefault(arm, {})
        run_dir = out / f"{arm}_seed{seed}"
        summary = json.loads((run_dir / "summary.json").read_text())["finetune"]
        series = read_csv_scalars(run_dir / "csv")
        if SUCCESS not in series and summary["evaluations"]:
            steps = np.array([e["env_steps"] for e in summary["evaluations"]])
            series[SUCCESS] = (
                steps,
                np.array([e["eval_success_rate"] for e in summary["evaluations"]]),
            )
        results[arm][seed] = {
            "series": series,
            "summary": summary,
            "seconds": run_seconds(run_dir),
        }
    return results


def on_common_steps(runs: Sequence[tuple[np.ndarray, np.ndarray]]):
    """Series of several seeds on one grid of steps (linear interpolation where they differ).

    Returns ``steps`` and a ``[seeds, steps]`` array; the grid is the union of the logged
    steps within the range every seed covers.
    """
    runs = [(s, v) for s, v in runs if len(s)]
    if not runs:
        return np.array([]), np.zeros((0, 0))
    low = max(s[0] for s, _ in runs)
    high = min(s[-1] for s, _ in runs)
    grid = np.unique(np.concatenate([s for s, _ in runs]))
    grid = grid[(grid >= low) & (grid <= high)]
    return grid, np.stack([np.interp(grid, s, v) for s, v in runs])


def figure_name(section: str | None) -> str:
    """The file name of the comparison's figure under ``docs/results/``.

    Example:
        >>> figure_name(None), figure_name("reach35k")
        ('finetune_comparison.png', 'finetune_reach35k.png')
    """
    return f"finetune_{section or 'comparison'}.png"


def plot(results: Mapping[str, Mapping[int, Any]], path: Path, task: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(16, 4))
    for axis, key, label, markers in (
        (axes[0], LOSS, "world-model loss", False),
        (axes[1], SUCCESS, "eval success rate", True),
        (axes[2], RETURN, "eval return", True),
    ):
        for arm, runs in results.items():
            steps, values = on_common_steps(
                [run["series"].get(key, (np.array([]), np.array([]))) for run in runs.values()]
            )
            if not len(steps):
                continue
            line, marker, size = STYLES[arm]
            axis.plot(
                steps,
                values.mean(0),
                color=COLOURS[arm],
                linestyle=line,
                marker=marker if markers else None,
                markersize=size,
                label=f"{arm} (mean of {len(values)} seeds)",
            )
            axis.fill_between(
                steps, values.min(0), values.max(0), color=COLOURS[arm], alpha=0.2, linewidth=0
            )
        axis.set_xlabel("env steps")
        axis.set_ylabel(label)
        axis.set_title(f"{label}, {task} (band: min-max over seeds)", fontsize=9)
        axis.legend(fontsize=8)
    axes[1].set_ylim(-0.05, 1.05)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _mean_std(values: Sequence[float]) -> str:
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return f"{values.mean():.3f}" if len(values) else "n/a"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def _span(values: Sequence[int]) -> str:
    return str(min(values)) if min(values) == max(values) else f"{min(values)}-{max(values)}"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _loss_stats(run: Mapping[str, Any]) -> tuple[float, float, float]:
    """First logged, last logged, and mean of the last 5 logged world-model losses."""
    _, values = run["series"].get(LOSS, (np.array([]), np.array([np.nan])))
    return float(values[0]), float(values[-1]), float(values[-5:].mean())


def describe(results: Mapping[str, Mapping[int, Any]], cfg: Mapping[str, Any]) -> str:
    """A short factual paragraph on what the numbers show."""
    tune = cfg["finetune"]
    parts = []
    finals, firsts, successes = {}, {}, {}
    for arm, runs in results.items():
        stats = [_loss_stats(run) for run in runs.values()]
        firsts[arm] = np.array([s[0] for s in stats])
        finals[arm] = np.array([s[2] for s in stats])
        successes[arm] = np.array(
            [v for run in runs.values() for v in run["series"].get(SUCCESS, ((), ()))[1]]
        )
    updates = [run["summary"]["updates"] for runs in results.values() for run in runs.values()]
    parts.append(
        f"Each run is {tune['env_steps']} env steps on {tune['task']} ({_span(updates)} "
        f"updates, from step {tune['prefill']} after random prefill), evaluated "
        f"every {tune['eval_every']} steps on {tune['eval_episodes']} episode(s)."
    )
    if {"prelar", "dreamer"} <= set(results):
        p, d = finals["prelar"], finals["dreamer"]
        lower = "lower" if p.mean() < d.mean() else "higher"
        overlap = p.min() <= d.max() and d.min() <= p.max()
        parts.append(
            f"World-model loss (mean of the last 5 logged values): PreLAR {p.mean():.3f}, "
            f"dreamer {d.mean():.3f}; PreLAR is {lower} by {abs(p.mean() - d.mean()):.3f} "
            + (
                "with one seed per arm: no spread to compare it with."
                if min(len(p), len(d)) < 2
                else "but the seed ranges overlap, so this is not a clear difference."
                if overlap
                else "and the seed ranges do not overlap."
            )
        )
        parts.append(
            f"At the first logged update the loss is {firsts['prelar'].mean():.3f} (PreLAR) vs "
            f"{firsts['dreamer'].mean():.3f} (dreamer)."
        )
    for arm, label in BASELINES.items():
        if arm in results:
            parts.append(
                f"{label}: world-model loss {finals[arm].mean():.3f} (mean of the last 5 logged "
                f"values; {firsts[arm].mean():.3f} at the first logged update)."
            )
    if all(len(s) == 0 or not s.any() for s in successes.values()):
        parts.append(
            "The evaluation success rate is 0 for every run and evaluation point: runs this "
            "short do not learn the task, so they say nothing about success-rate sample "
            "efficiency; the comparison rests on the world-model loss alone."
        )
    else:
        rates = ", ".join(
            f"{arm} {s.mean():.2f} (mean over all seeds and evaluation points)"
            for arm, s in successes.items()
        )
        parts.append(f"Evaluation success rate: {rates}.")
    return " ".join(parts)


def write_report(
    results: Mapping[str, Mapping[int, Any]],
    cfg: Mapping[str, Any],
    docs: Path,
    command: str,
    wall_seconds: float,
    section: str | None = None,
) -> Path:
    """Write the comparison into ``docs/results.md``: the whole page (keeping the marked
    sections other scripts write), or only the marked section ``section`` of it."""
    from results_report import machine_description, marked_sections, write_section

    image = plot(results, docs / "results" / figure_name(section), cfg["finetune"]["task"])
    tune = cfg["finetune"]
    eval_steps = sorted(
        {
            int(s)
            for runs in results.values()
            for run in runs.values()
            for s in run["series"].get(SUCCESS, ((), ()))[0]
        }
    )
    lines = [
        "# Results: fine-tuning from PreLAR vs `dreamer` from scratch"
        + "".join(f" vs {label}" for arm, label in BASELINES.items() if arm in results),
        "",
        f"Generated by `experiments/compare_finetune.py` on {datetime.date.today().isoformat()}.",
        "",
        "Command:",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Machine: {machine_description(cfg.get('threads'))}.",
        "",
        "Settings: `preset` {}, world model: {}; task `{}`, {} env steps, prefill {}, one "
        "update per {} env steps, batch {} x {}, evaluation every {} env steps on {} "
        "episode(s) of at most {} steps (success = ever succeeded).".format(
            cfg.get("preset_name"),
            describe_world_model(cfg["world_model"]),
            tune["task"],
            tune["env_steps"],
            tune["prefill"],
            tune["update_every"],
            tune["batch_size"],
            tune["batch_length"],
            tune["eval_every"],
            tune["eval_episodes"],
            tune["max_episode_steps"],
        ),
        "",
    ]
    seconds = [run["seconds"] for runs in results.values() for run in runs.values()]
    total = sum(s for s in seconds if s is not None)
    lines += [
        f"Wall time: {_duration(total)} of fine-tuning in all ({len(seconds)} runs, "
        f"{total / max(1, len(seconds)):.0f} s per run on average, summed over resumed parts); "
        f"the invocation that wrote this file took {_duration(wall_seconds)}.",
        "",
        "## What it shows",
        "",
        describe(results, cfg),
        "",
        f"![fine-tuning comparison]({image.relative_to(docs).as_posix()})",
        "",
        "## Per arm (mean ± std over seeds, sample std)",
        "",
    ]
    header = ["arm", "seeds", "first WM loss", "final WM loss", "WM loss, mean of last 5"]
    header += [f"success @ {s}" for s in eval_steps]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm, runs in results.items():
        stats = np.array([_loss_stats(run) for run in runs.values()])
        row = [arm, ", ".join(str(s) for s in runs), *(_mean_std(stats[:, i]) for i in range(3))]
        for step in eval_steps:
            values = []
            for run in runs.values():
                steps, rates = run["series"].get(SUCCESS, ((), ()))
                values += [float(r) for s, r in zip(steps, rates, strict=False) if int(s) == step]
            row.append(_mean_std(values))
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "## Per run", ""]
    header = [
        "arm",
        "seed",
        "env steps",
        "updates",
        "final WM loss",
        "eval success (step: rate)",
        "eval return (last)",
        "wall time (s)",
    ]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm, runs in results.items():
        for seed, run in runs.items():
            summary = run["summary"]
            steps, rates = run["series"].get(SUCCESS, ((), ()))
            evals = ", ".join(f"{int(s)}: {r:.2f}" for s, r in zip(steps, rates, strict=False))
            returns = run["series"].get(RETURN, ((), ()))[1]
            row = [
                arm,
                str(seed),
                str(summary["env_steps"]),
                str(summary["updates"]),
                f"{_loss_stats(run)[1]:.3f}",
                evals or "none",
                f"{returns[-1]:.1f}" if len(returns) else "n/a",
                f"{run['seconds']:.0f}" if run["seconds"] is not None else "n/a",
            ]
            lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "World-model loss: the sum of the fine-tuning world-model terms (KL, reconstruction, "
        "reward and auxiliary reward) logged every `log_every` updates, plotted against env "
        "steps; `prelar` and `dreamer` have the same world-model structure (PreLAR's action "
        "encoder in place of the latent action model), `dreamer` starts from random weights"
        + (
            "; `apv` stacks a new action-conditional RSSM on the pre-trained action-free one "
            "and its KL term is that of the new RSSM (`docs/guide.md`)"
            if "apv" in results
            else ""
        )
        + (
            "; `contextwm` is APV's structure with ContextWM's context encoder, whose "
            "multi-scale features the decoder reads through cross-attention"
            if "contextwm" in results
            else ""
        )
        + ". It is a "
        "training loss on each run's own replay batches (random prefill, then that run's "
        "policy), not a held-out measure. Run folders "
        "(CSV logs, checkpoints, `finetune_curves.png`) are under the `--out` folder of the "
        "command.",
        "",
    ]
    path = docs / "results.md"
    if section is not None:
        demoted = [f"#{line}" if line.startswith("#") else line for line in lines]
        return write_section(
            path, section, "\n".join(demoted), generator="experiments/compare_finetune.py"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    # keep the sections other scripts write into this page (e.g. experiments/model_gap.py)
    kept = marked_sections(path.read_text()) if path.exists() else ""
    path.write_text("\n".join(lines) + (f"\n{kept}" if kept else ""))
    return path


def main(argv: Sequence[str] | None = None) -> Path | None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    started = time.time()
    if args.report_only:
        return report_finished_runs(args, argv)
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
    if args.docs is None:
        log.info("no --docs: runs done, no report written")
        return None
    results = collect(args.out, jobs)
    return report(args, argv, results, cfg, time.time() - started)


def report(
    args: argparse.Namespace,
    argv: Sequence[str] | None,
    results: Mapping[str, Mapping[int, Any]],
    cfg: Mapping[str, Any],
    seconds: float,
) -> Path:
    """Write the report of ``results`` (runs configured like ``cfg``) into ``args.docs``."""
    from results_report import command_line

    command = command_line(__file__, argv)
    path = write_report(results, cfg, args.docs, command, seconds, args.section)
    log.info("wrote %s and %s", path, args.docs / "results" / figure_name(args.section))
    return path


def report_finished_runs(args: argparse.Namespace, argv: Sequence[str] | None) -> Path:
    """``--report-only``: the report of the finished runs of ``--arms`` x ``--seeds``.

    Each run is read with the configuration it saved; runs that have not reached their env
    steps (or were never started) are left out and named in the log. Raises
    :class:`SystemExit` when none has finished.
    """
    started = time.time()
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
    return report(args, argv, collect(args.out, done), cfg, time.time() - started)


if __name__ == "__main__":
    main()
