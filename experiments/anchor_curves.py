"""Success and return of fine-tuning runs per evaluation point, beside the published curves.

Reads the evaluation points of each run folder of ``examples/dreamer_prelar.py stage=finetune``
(its latest checkpoint, so an unfinished run shows the points it has), groups the runs by the
label given on the command line (one label per arm, one folder per seed), and writes:

- ``OUT.json``: every run's evaluation points (each episode's success and return), and per
  label and env step the mean success and return with a 95% bootstrap interval over seeds x
  episodes (seeds resampled, then episodes within each seed), and the published curve
  (mean, min and max over its seeds) it is compared with;
- ``OUT.png``: the success curves, the published one as a line with its min-max band.

    python experiments/anchor_curves.py --run dreamer=runs/mw/dreamer_seed0 \
        --run dreamer=runs/mw/dreamer_seed1 --task reach --out docs/results/metaworld_reach
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples"))

#: The published curves committed with their source (APV's repository, Meta-world v2).
PUBLISHED = REPO / "docs" / "results" / "published" / "metaworld_success_apv_repo.json"


def bootstrap_interval(
    per_seed: Sequence[Sequence[float]], *, resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of all episodes and its 95% interval, resampling seeds then episodes per seed.

    Examples:
        >>> bootstrap_interval([[1.0, 1.0], [1.0, 1.0]])
        (1.0, 1.0, 1.0)
    """
    groups = [np.asarray(values, dtype=float) for values in per_seed if len(values)]
    if not groups:
        raise ValueError("no episode to summarise")
    generator = np.random.default_rng(seed)
    means = np.empty(resamples)
    for index in range(resamples):
        chosen = generator.integers(len(groups), size=len(groups))
        draws = [generator.choice(groups[i], size=len(groups[i])) for i in chosen]
        means[index] = np.concatenate(draws).mean()
    everything = np.concatenate(groups).mean()
    low, high = np.percentile(means, [2.5, 97.5])
    return float(everything), float(low), float(high)


def evaluation_points(run_dir: Path) -> list[dict[str, Any]]:
    """The evaluation points of a fine-tuning run, from its latest checkpoint."""
    from dreamer_prelar_utils import read_finetune_checkpoint

    history = read_finetune_checkpoint(run_dir)["progress"]["eval_history"]
    missing = [point["env_steps"] for point in history if "episode_successes" not in point]
    if missing:
        raise ValueError(
            f"{run_dir}: the evaluations at env steps {missing} keep no per-episode results "
            "(written by an older version of the example): re-run them."
        )
    return history


def summarise(runs: dict[str, list[Path]]) -> dict[str, Any]:
    """Per label and env step: success and return with their bootstrap intervals."""
    out: dict[str, Any] = {}
    for label, folders in runs.items():
        points: dict[int, dict[str, list]] = defaultdict(lambda: {"success": [], "return": []})
        seeds = {}
        for folder in folders:
            history = evaluation_points(folder)
            seeds[str(folder)] = history
            for point in history:
                points[point["env_steps"]]["success"].append(point["episode_successes"])
                points[point["env_steps"]]["return"].append(point["episode_returns"])
        table = []
        for step in sorted(points):
            success = bootstrap_interval(points[step]["success"])
            returns = bootstrap_interval(points[step]["return"])
            table.append(
                {
                    "env_steps": step,
                    "seeds": len(points[step]["success"]),
                    "episodes": sum(map(len, points[step]["success"])),
                    "success": dict(zip(("mean", "low", "high"), success, strict=True)),
                    "return": dict(zip(("mean", "low", "high"), returns, strict=True)),
                }
            )
        out[label] = {"runs": seeds, "points": table}
    return out


def plot(summary: dict[str, Any], published: dict[int, dict], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.2))
    steps = sorted(published)
    axis.plot(
        [s / 1000 for s in steps],
        [published[s]["mean"] for s in steps],
        color="black",
        label="DreamerV2, published (mean of 8 seeds)",
    )
    axis.fill_between(
        [s / 1000 for s in steps],
        [published[s]["min"] for s in steps],
        [published[s]["max"] for s in steps],
        color="black",
        alpha=0.12,
        label="published min-max",
    )
    for label, result in summary.items():
        points = result["points"]
        x = [p["env_steps"] / 1000 for p in points]
        y = [p["success"]["mean"] for p in points]
        low = [p["success"]["mean"] - p["success"]["low"] for p in points]
        high = [p["success"]["high"] - p["success"]["mean"] for p in points]
        seeds = max((p["seeds"] for p in points), default=0)
        axis.errorbar(
            x,
            y,
            yerr=[low, high],
            marker="o",
            capsize=3,
            label=f"{label} ({seeds} seed{'s' * (seeds != 1)}, 95% bootstrap)",
        )
    axis.set_xlabel("env steps (thousands)")
    axis.set_ylabel("success rate")
    axis.set_ylim(-0.02, 1.02)
    axis.set_xlim(0, max([s / 1000 for s in steps if s <= 60000] + [1]))
    axis.set_title(title)
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run",
        action="append",
        required=True,
        metavar="LABEL=RUN_DIR",
        help="a fine-tuning run folder and its arm's label (repeatable)",
    )
    parser.add_argument("--task", default="reach", help="published task, e.g. reach")
    parser.add_argument("--algorithm", default="DreamerV2", help="published algorithm")
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.png")
    args = parser.parse_args(argv)
    from torchrl_prelar.evaluation.published import load_published_curves, published_summary

    runs: dict[str, list[Path]] = defaultdict(list)
    for item in args.run:
        label, sep, folder = item.partition("=")
        if not sep or not label or not folder:
            raise SystemExit(f"--run takes LABEL=RUN_DIR, got {item!r}")
        if not Path(folder).is_dir():
            raise SystemExit(f"--run {item}: no folder {folder}")
        runs[label].append(Path(folder))
    curves = load_published_curves(PUBLISHED)
    published = published_summary(
        curves, args.algorithm, f"metaworld_{args.task.replace('-', '_')}"
    )
    summary = summarise(runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "command": " ".join(["python", "experiments/anchor_curves.py", *(argv or sys.argv[1:])]),
        "task": args.task,
        "published": {
            "algorithm": args.algorithm,
            "source": curves["source"],
            "points": {str(k): v for k, v in published.items()},
        },
        "arms": summary,
    }
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    plot(
        summary,
        published,
        f"Meta-world {args.task}: success per evaluation point",
        args.out.with_suffix(".png"),
    )
    return report


if __name__ == "__main__":
    main()
