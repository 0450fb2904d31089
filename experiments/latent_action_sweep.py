"""Pre-train several variants of the default job side by side and compare their latent actions.

Each variant is ``examples/dreamer_prelar.py stage=pretrain`` with its own Hydra overrides,
run in its own process (``--jobs`` at a time) in ``<out>/<name>``. Every variant reads the same
training videos and held-out sets (``--data``: a folder with ``videos/`` and ``heldout/``, such
as a finished run of the example; rendered there by the first variant when missing), so the
figures compare objectives on the same data with the same probe. The example's own held-out
evaluation runs every ``evaluation.probe_every`` updates; this script gathers those figures
(probe R^2, state-KL ratio shuffled / own, delta-PSNR, on the seen and unseen sets) and the
training loss (the mean of the last ten logged by each evaluation) from each run's CSV log into
``<out>/sweep.json``, a table ``<out>/sweep.md`` (with each variant's wall seconds per update,
start-up and evaluations included) and the curves ``<out>/sweep.png``.

``--max-seconds`` stops every variant after that wall time (a run keeps its last checkpoint;
the same command resumes it), so a fixed lease (a GPU, say) still returns every figure
computed so far.

    python experiments/latent_action_sweep.py --out runs/sweep --data runs/prelar_quick \\
        --variant default "" \\
        --variant paper "loss=paper world_model.latent_action.input_mode=concat" \\
        --common preset=long evaluation.probe_every=300 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from results_report import LOSS_WINDOW, SWEEP_FIGURES, SWEEP_HEADERS, sweep_runs_table

from torchrl_prelar.media import read_csv_scalars

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "dreamer_prelar.py"


def make_parser(description: str) -> argparse.ArgumentParser:
    """The command line of a driver that runs variants of the example side by side."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="folder of the variants' runs")
    parser.add_argument(
        "--data", type=Path, required=True, help="folder holding (or to hold) videos/ and heldout/"
    )
    parser.add_argument(
        "--variant",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "OVERRIDES"),
        help="a variant: its name and its Hydra overrides as one string ('' for the defaults)",
    )
    parser.add_argument("--common", nargs="*", default=[], help="Hydra overrides of every variant")
    parser.add_argument("--jobs", type=int, default=1, help="variants run at a time")
    parser.add_argument(
        "--max-seconds", type=float, default=None, help="wall time of each variant's process"
    )
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Refuse (``parser.error``) no variant, repeated or unusable names, ``--jobs`` below 1,
    and an override that is not ``key=value`` or sets what the driver sets."""
    if not args.variant:
        parser.error("give at least one --variant NAME OVERRIDES")
    names = [name for name, _ in args.variant]
    if len(set(names)) != len(names):
        parser.error(f"variant names must differ, got {names}")
    for name in names:
        if not name or "/" in name:
            parser.error(f"variant name {name!r} must be a non-empty folder name")
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    for override in args.common + [o for _, v in args.variant for o in shlex.split(v)]:
        if "=" not in override:
            parser.error(f"override {override!r} is not key=value")
        if override.split("=", 1)[0].lstrip("+~") in ("stage", "run_dir", "data.video_dir"):
            parser.error(f"{override!r}: stage, run_dir and data.video_dir are set by this script")
    return args


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = make_parser(__doc__.split("\n\n")[0])
    return check_args(parser, parser.parse_args(argv))


def command(args: argparse.Namespace, name: str, overrides: str) -> list[str]:
    """The example's command line of one variant."""
    data = args.data.resolve()
    return [
        sys.executable,
        str(EXAMPLE),
        "stage=pretrain",
        f"run_dir={(args.out / name).resolve()}",
        f"data.video_dir={data / 'videos'}",
        f"evaluation.dir={data / 'heldout'}",
        *args.common,
        *shlex.split(overrides),
    ]


def run_variants(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Run the variants, ``args.jobs`` at a time; the first one alone when it must render the
    data (so two processes never write the same episodes). Returns each one's exit status."""
    pending = list(args.variant)
    status: dict[str, dict[str, Any]] = {}
    running: dict[str, tuple[subprocess.Popen, float, Any]] = {}
    data_ready = (args.data / "videos").is_dir() and (args.data / "heldout").is_dir()
    while pending or running:
        limit = args.jobs if data_ready else 1
        while pending and len(running) < limit:
            name, overrides = pending.pop(0)
            run_dir = args.out / name
            run_dir.mkdir(parents=True, exist_ok=True)
            log = open(run_dir / "sweep_stdout.log", "a")  # noqa: SIM115 (closed when it ends)
            process = subprocess.Popen(
                command(args, name, overrides),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                start_new_session=True,
            )
            running[name] = (process, time.time(), log)
            print(f"started {name}: {overrides or '(defaults)'}", flush=True)
        time.sleep(1.0)
        for name, (process, started, log) in list(running.items()):
            elapsed = time.time() - started
            stopped = False
            if process.poll() is None and args.max_seconds and elapsed > args.max_seconds:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                stopped = True
            if process.poll() is not None:
                log.close()
                del running[name]
                data_ready = True
                status[name] = {
                    "returncode": process.returncode,
                    "seconds": round(elapsed, 1),
                    "stopped_by_max_seconds": stopped,
                }
                print(f"ended {name}: {status[name]}", flush=True)
    return status


def gather(args: argparse.Namespace, status: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every variant's logged held-out figures per evaluation step, and its progress."""
    variants = {}
    for name, overrides in args.variant:
        series = read_csv_scalars(args.out / name / "csv")
        updates = series.get("pretrain/loss", ([0], [0]))[0]
        figures = {
            figure: dict(zip(*(a.tolist() for a in series[f"pretrain/{figure}"]), strict=True))
            for figure in SWEEP_FIGURES
            if f"pretrain/{figure}" in series
        }
        if "pretrain/loss" in series:  # at each evaluation step, the last losses logged by then
            steps, values = series["pretrain/loss"]
            evaluated = sorted({step for figure in figures.values() for step in figure})
            figures["loss"] = {
                int(step): float(values[steps <= step][-LOSS_WINDOW:].mean())
                for step in evaluated
                if (steps <= step).any()
            }
        seconds = status.get(name, {}).get("seconds")
        last_update = int(max(updates)) if len(updates) else 0
        variants[name] = {
            "overrides": overrides,
            **status.get(name, {}),
            "last_logged_update": last_update,
            "seconds_per_update": round(seconds / last_update, 3)
            if seconds and last_update
            else None,
            "figures": figures,
        }
    return {"common": args.common, "data": str(args.data), "variants": variants}


def plot(report: dict[str, Any], path: Path) -> Path:
    """One panel per figure, one line per variant, against pre-training updates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(3, 2, figsize=(10, 9), squeeze=False)
    for axis, name, header in zip(axes.flat, SWEEP_FIGURES, SWEEP_HEADERS, strict=True):
        for variant_name, variant in report["variants"].items():
            values = variant["figures"].get(name, {})
            steps = sorted(values, key=int)
            axis.plot(
                [int(s) for s in steps],
                [values[s] for s in steps],
                marker="o",
                markersize=3,
                label=variant_name,
            )
        axis.set_title(header, fontsize=9)
        axis.set_xlabel("pre-training updates")
    axes[0, 0].legend(fontsize=7)
    figure.suptitle("latent-action sweep (held-out sets)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    status = run_variants(args)
    report = gather(args, status)
    (args.out / "sweep.json").write_text(json.dumps(report, indent=2))
    (args.out / "sweep.md").write_text(sweep_runs_table(report))
    plot(report, args.out / "sweep.png")
    print(sweep_runs_table(report), flush=True)
    return report


if __name__ == "__main__":
    main()
