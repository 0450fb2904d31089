"""Success and return of fine-tuning runs per evaluation point, beside the published curves.

Reads the evaluation points of each run folder of ``examples/dreamer_prelar.py stage=finetune``
(its latest checkpoint, so an unfinished run shows the points it has), groups the runs by the
label given on the command line (one label per arm, one folder per seed), and writes:

- ``OUT.json``: every run's evaluation points (each episode's success and return), and per
  label and env step the mean success and return with a 95% bootstrap interval over seeds x
  episodes (seeds resampled, then episodes within each seed) and each seed's success; the
  difference of every other label from ``--baseline`` (default ``dreamer``) with its
  interval, both arms resampled; the anchors' bar at 35k env steps for ``--baseline``
  (every seed >= 0.1, mean >= 0.25); and the published curve (mean, min and max over its
  seeds) it is compared with;
  Each run's training episodes (env steps at the episode's end, return, success; actions
  sampled, not the mode) are kept beside its evaluation points, read from its CSV log;
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
    groups = _episode_groups(per_seed)
    means = _resampled_means(groups, np.random.default_rng(seed), resamples)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(np.concatenate(groups).mean()), float(low), float(high)


def difference_interval(
    first: Sequence[Sequence[float]],
    second: Sequence[Sequence[float]],
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean of ``first`` less mean of ``second`` (per seed, per episode values) and its 95%
    interval, each arm resampled as :func:`bootstrap_interval` does, independently.

    Examples:
        >>> difference_interval([[1.0, 1.0], [1.0]], [[0.0, 0.0]])
        (1.0, 1.0, 1.0)
    """
    groups = _episode_groups(first), _episode_groups(second)
    generator = np.random.default_rng(seed)
    means = [_resampled_means(g, generator, resamples) for g in groups]
    low, high = np.percentile(means[0] - means[1], [2.5, 97.5])
    difference = np.concatenate(groups[0]).mean() - np.concatenate(groups[1]).mean()
    return float(difference), float(low), float(high)


def _episode_groups(per_seed: Sequence[Sequence[float]]) -> list[np.ndarray]:
    groups = [np.asarray(values, dtype=float) for values in per_seed if len(values)]
    if not groups:
        raise ValueError("no episode to summarise")
    return groups


def _resampled_means(
    groups: Sequence[np.ndarray], generator: np.random.Generator, resamples: int
) -> np.ndarray:
    """Means of ``resamples`` draws: seeds with replacement, then episodes within each."""
    means = np.empty(resamples)
    for index in range(resamples):
        chosen = generator.integers(len(groups), size=len(groups))
        draws = [generator.choice(groups[i], size=len(groups[i])) for i in chosen]
        means[index] = np.concatenate(draws).mean()
    return means


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


def training_episodes(run_dir: Path) -> list[dict[str, float]]:
    """The training episodes of a fine-tuning run, from its CSV log (``finetune/train_return``
    and ``finetune/train_success``): env steps at each episode's end, its return and success.

    A resumed run logs again the episodes after its last checkpoint; the last row of an env
    step is kept, so episodes of several env workers that end at the same env step count once.
    """
    from torchrl_prelar.media import read_csv_scalars

    series = read_csv_scalars(run_dir / "csv")
    if "finetune/train_return" not in series:
        return []
    (steps, returns), (success_steps, success) = (
        series[f"finetune/train_{name}"] for name in ("return", "success")
    )
    if not np.array_equal(steps, success_steps):
        raise ValueError(f"{run_dir}: the CSV log's train_return and train_success steps differ")
    return [
        {"env_steps": int(step), "return": float(value), "success": float(done)}
        for step, value, done in zip(steps, returns, success, strict=True)
    ]


def summarise(runs: dict[str, list[Path]]) -> dict[str, Any]:
    """Per label and env step: success and return with their bootstrap intervals; each run's
    evaluation points and training episodes."""
    out: dict[str, Any] = {}
    for label, folders in runs.items():
        points: dict[int, dict[str, list]] = defaultdict(lambda: {"success": [], "return": []})
        seeds, training = {}, {}
        for folder in folders:
            history = evaluation_points(folder)
            seeds[str(folder)] = history
            training[str(folder)] = training_episodes(folder)
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
                    "seed_success": [float(np.mean(s)) for s in points[step]["success"]],
                }
            )
        out[label] = {"runs": seeds, "points": table, "training_episodes": training}
    return out


def differences(summary: dict[str, Any], baseline: str) -> dict[str, list[dict[str, Any]]]:
    """Per label other than ``baseline``, at each env step both have: the difference in
    success and in return from ``baseline``, with its 95% interval (:func:`difference_interval`)."""
    if baseline not in summary:
        return {}
    keys = {"success": "episode_successes", "return": "episode_returns"}

    def episodes(label: str, step: int, metric: str) -> list[list[float]]:
        histories = summary[label]["runs"].values()
        return [p[keys[metric]] for h in histories for p in h if p["env_steps"] == step]

    base_steps = {point["env_steps"] for point in summary[baseline]["points"]}
    out = {}
    for label, result in summary.items():
        if label == baseline:
            continue
        rows = []
        for step in [p["env_steps"] for p in result["points"] if p["env_steps"] in base_steps]:
            row: dict[str, Any] = {"env_steps": step}
            for metric in keys:
                values = difference_interval(
                    episodes(label, step, metric), episodes(baseline, step, metric)
                )
                row[metric] = dict(zip(("mean", "low", "high"), values, strict=True))
            rows.append(row)
        out[label] = rows
    return out


#: The anchors' bar: success at 35k env steps inside the published DreamerV2 range.
ANCHOR_BAR = {"env_steps": 35000, "every_seed_at_least": 0.1, "mean_at_least": 0.25}


def anchor_bar(summary: dict[str, Any], label: str) -> dict[str, Any] | None:
    """The bar for ``label``'s runs at 35k env steps; ``None`` before any run reaches it."""
    if label not in summary:
        return None
    at = [p for p in summary[label]["points"] if p["env_steps"] >= ANCHOR_BAR["env_steps"]]
    if not at:
        return None
    point = at[0]
    seeds, mean = point["seed_success"], point["success"]["mean"]
    met = min(seeds) >= ANCHOR_BAR["every_seed_at_least"] and mean >= ANCHOR_BAR["mean_at_least"]
    return {
        **ANCHOR_BAR,
        "label": label,
        "at": point["env_steps"],
        "seed_success": seeds,
        "mean": mean,
        "met": bool(met),
    }


def plot(summary: dict[str, Any], published: dict[int, dict], title: str, path: Path) -> None:
    """Success (beside the published curve) and return per evaluation point, each label with
    its 95% bootstrap interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (success_axis, return_axis) = plt.subplots(1, 2, figsize=(12, 4.2))
    steps = sorted(published)
    success_axis.plot(
        [s / 1000 for s in steps],
        [published[s]["mean"] for s in steps],
        color="black",
        label="DreamerV2, published (mean of 8 seeds)",
    )
    success_axis.fill_between(
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
        seeds = max((p["seeds"] for p in points), default=0)
        name = f"{label} ({seeds} seed{'s' * (seeds != 1)}, 95% bootstrap)"
        for axis, metric in ((success_axis, "success"), (return_axis, "return")):
            y = [p[metric]["mean"] for p in points]
            low = [p[metric]["mean"] - p[metric]["low"] for p in points]
            high = [p[metric]["high"] - p[metric]["mean"] for p in points]
            axis.errorbar(x, y, yerr=[low, high], marker="o", capsize=3, label=name)
    success_axis.set_ylabel("success rate")
    success_axis.set_ylim(-0.02, 1.02)
    for axis in (success_axis, return_axis):
        axis.set_xlim(0, max([s / 1000 for s in steps if s <= 60000] + [1]))
    success_axis.set_title(title)
    return_axis.set_ylabel("evaluation return (sum over the episode)")
    return_axis.set_title("return per evaluation point (no published curve)")
    for axis in (success_axis, return_axis):
        axis.set_xlabel("env steps (thousands)")
        axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def add_run_argument(parser: argparse.ArgumentParser) -> None:
    """``--run LABEL=RUN_DIR``, repeatable and required (read with :func:`labelled_runs`)."""
    parser.add_argument(
        "--run",
        action="append",
        required=True,
        metavar="LABEL=RUN_DIR",
        help="a fine-tuning run folder and its arm's label (repeatable)",
    )


def labelled_runs(items: Sequence[str]) -> list[tuple[str, Path]]:
    """``(label, folder)`` of each ``LABEL=RUN_DIR``; a malformed item or a missing folder
    stops the script with a message naming it.

    Example:
        >>> labelled_runs(["dreamer=."])
        [('dreamer', PosixPath('.'))]
    """
    runs = []
    for item in items:
        label, sep, folder = item.partition("=")
        if not sep or not label or not folder:
            raise SystemExit(f"--run takes LABEL=RUN_DIR, got {item!r}")
        if not Path(folder).is_dir():
            raise SystemExit(f"--run {item}: no folder {folder}")
        runs.append((label, Path(folder)))
    return runs


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_argument(parser)
    parser.add_argument("--task", default="reach", help="published task, e.g. reach")
    parser.add_argument("--algorithm", default="DreamerV2", help="published algorithm")
    parser.add_argument(
        "--baseline", default="dreamer", help="the label the others are compared with"
    )
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.png")
    args = parser.parse_args(argv)
    from torchrl_prelar.evaluation.published import load_published_curves, published_summary

    runs: dict[str, list[Path]] = defaultdict(list)
    for label, folder in labelled_runs(args.run):
        runs[label].append(folder)
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
        "differences": differences(summary, args.baseline),
        "anchor_bar": anchor_bar(summary, args.baseline),
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
