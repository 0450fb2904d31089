"""The one report writer: the markdown tables of the experiments, made from their JSON.

The drivers of ``experiments/`` write JSON only (``experiments/model_gap.py``,
``experiments/compare_finetune.py``); this module renders every table from such a file:

- ``python experiments/results_report.py --docs docs`` writes the tables of
  ``docs/results.md`` from the committed files under ``docs/results/`` (:func:`results_tables`)
  those of ``docs/performance.md`` from the files under ``benchmarks/results/``
  (:func:`performance_tables`) and those of ``docs/latent_actions.md`` from the files under
  ``docs/latent_actions/`` (:func:`latent_action_tables`); ``tests/test_results_tables.py``
  checks that each page holds what its files say;
- ``python experiments/results_report.py --publish SOURCE DEST --rename OLD=NEW`` copies a
  results file written under a scratch folder into ``docs/results/``, naming its runs by their
  place in the repository (:func:`publish`);
- ``python experiments/results_report.py --show FILE [--figure PNG]`` prints the tables of one
  driver's JSON (:func:`show`) and, for a model-gap file with its runs, draws its figure.

The two schemas:

- model gap (``docs/results/model_gap.json``): ``variants`` maps a variant name to its
  ``commands`` and ``rows``; a row has ``arm``, ``seeds`` and, each a ``{"mean", "std"}`` over
  fine-tuning seeds, ``psnr_<step>``, ``psnr_mean_1_<horizon>``, ``mse_mean`` and
  ``final_loss_last10`` (``None`` where it does not apply). ``experiments/model_gap.py`` adds
  ``settings``, ``pretrain``, ``heldout_clips``, ``last_frame`` and ``runs`` (every run's loss
  curve and per-step scores, by arm and seed), from which it resumes and the figure is drawn.
- fine-tuning comparison (``docs/results/reach35k.json``): ``eval_episodes`` and ``runs``, one
  per arm and seed with ``env_steps``, ``updates``, ``final_wm_loss``, ``eval_success``
  (success rate by env step), ``last_eval_return`` and ``wall_s``.
  ``experiments/compare_finetune.py`` adds ``settings``.

Pages several writers share keep each writer's part as a marked section
(:func:`write_section`, :func:`marked_sections`), delimited by ``<!-- <name>:start ... -->``
and ``<!-- <name>:end -->``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "command_line",
    "comparison_tables",
    "latent_action_tables",
    "long_reference_table",
    "machine_description",
    "marked_sections",
    "model_gap_differences",
    "model_gap_figure",
    "model_gap_table",
    "performance_tables",
    "preset_schedule",
    "publish",
    "pretrain_run_record",
    "pretrain_seed_record",
    "pretrain_seed_table",
    "renamed_paths",
    "results_tables",
    "show",
    "welch_test",
    "write_latent_action_tables",
    "write_performance_tables",
    "write_section",
    "write_results_tables",
]

_SECTION = re.compile(r"<!-- (?P<name>[\w-]+):start[^\n]*-->.*?<!-- (?P=name):end -->\n?", re.S)


def machine_description(threads: int | None = None) -> str:
    """CPU model (``/proc/cpuinfo``), CPU count, torch version, its threads, Python version.

    Example:
        >>> "logical CPUs, torch" in machine_description(2)
        True
    """
    import torch

    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{model}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
        f"({threads or torch.get_num_threads()} threads), Python {platform.python_version()}"
    )


def command_line(script: str | Path, argv: Sequence[str] | None = None) -> str:
    """The shell command that runs ``script`` with ``argv`` (default ``sys.argv[1:]``).

    The script path is relative to the working directory when it lies below it.

    Example:
        >>> command_line(Path.cwd() / "experiments" / "x.py", ["--out", "a b"])
        "MUJOCO_GL=egl python experiments/x.py --out 'a b'"
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    path = os.path.relpath(Path(script).resolve(), Path.cwd())
    if path.startswith(".."):
        path = str(Path(script).resolve())
    return "MUJOCO_GL=egl python " + shlex.join([path, *argv])


def marked_sections(text: str) -> str:
    """The marked sections of ``text``, in order, for a writer that replaces the rest.

    Example:
        >>> marked_sections("# a\\n<!-- gap:start -->\\nrows\\n<!-- gap:end -->\\ntail")
        '<!-- gap:start -->\\nrows\\n<!-- gap:end -->\\n'
    """
    return "".join(match.group(0) for match in _SECTION.finditer(text))


def write_section(path: str | Path, name: str, body: str, *, generator: str) -> Path:
    """Write ``body`` as section ``name`` of ``path``: replace it, or append it the first time.

    Everything outside the section is left as it is.

    Example:
        >>> import tempfile
        >>> page = Path(tempfile.mkdtemp()) / "results.md"
        >>> _ = page.write_text("# Results\\n")
        >>> _ = write_section(page, "gap", "old\\n", generator="x.py")
        >>> _ = write_section(page, "gap", "new\\n", generator="x.py")
        >>> print(page.read_text())
        # Results
        <BLANKLINE>
        <!-- gap:start (generated by x.py) -->
        new
        <!-- gap:end -->
        <BLANKLINE>
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    section = (
        f"<!-- {name}:start (generated by {generator}) -->\n{body.rstrip()}\n<!-- {name}:end -->\n"
    )
    current = path.read_text() if path.exists() else ""
    own = [m for m in _SECTION.finditer(current) if m.group("name") == name]
    if own:
        updated = current[: own[0].start()] + section + current[own[0].end() :]
    else:
        updated = current.rstrip("\n") + ("\n\n" if current else "") + section
    path.write_text(updated)
    return path


#: The generated tables of ``docs/results.md``, each with the raw file it is made from.
TABLES = {
    "table-model-gap-pixel-trunk": "model_gap.json",
    "table-model-gap-embedding": "model_gap.json",
    "table-model-gap-differences": "model_gap.json",
    "table-model-gap-pretrain-seeds-quick": "model_gap_pretrain_seeds_quick.json",
    "table-reach35k-runs": "reach35k.json",
    "table-reach35k-arms": "reach35k.json",
    "table-metaworld-reach": "metaworld_reach.json",
    "table-metaworld-reach-goals": "metaworld_reach_goals.json",
    "table-goal-probe": "goal_probe_reach.json",
    "table-goal-marker": "goal_marker_reach.json",
    "table-goal-marker-held": "goal_marker_reach_hold25.json",
    "table-goal-marker-seen": "goal_marker_reach_hold25_seen.json",
}
#: The model-gap comparisons docs/results.md reads (pixel-trunk and embedding variants).
GAP_PAIRS = (
    ("prelar", "apv"),
    ("prelar", "dreamer"),
    ("contextwm", "dreamer"),
    ("apv", "dreamer"),
    ("prelar", "prelar_no_action_learning"),
)
EMBEDDING_PAIRS = (("prelar, embedding", "prelar_no_action_learning, embedding"),)
_GAP_COLUMNS = {
    "mse_mean": "MSE, mean",
    "final_loss_last10": "final loss (mean of last 10)",
}
_PSNR_STEP = re.compile(r"psnr_(\d+)")
_PSNR_MEAN = re.compile(r"psnr_mean_1_(\d+)")


def _gap_column(name: str) -> str | None:
    """The header of a model-gap row entry (``None``: not a table column)."""
    if match := _PSNR_STEP.fullmatch(name):
        return f"PSNR @ {match.group(1)}"
    if match := _PSNR_MEAN.fullmatch(name):
        return f"PSNR, mean 1-{match.group(1)}"
    return _GAP_COLUMNS.get(name)


def _markdown(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _mean_std(value: dict | None, digits: int) -> str:
    if value is None:
        return "-"
    if value["std"] is None:
        return f"{value['mean']:.{digits}f}"
    return f"{value['mean']:.{digits}f} ± {value['std']:.{digits}f}"


def model_gap_table(results: dict, variant: str) -> str:
    """The model-gap table of one latent-action ``variant`` of ``docs/results/model_gap.json``.

    Example:
        >>> row = {"arm": "a", "seeds": 3, "psnr_1": {"mean": 25.0, "std": 0.1}}
        >>> print(model_gap_table({"variants": {"v": {"rows": [row]}}}, "v"), end="")
        | arm | seeds | PSNR @ 1 |
        |---|---|---|
        | a | 3 | 25.00 ± 0.10 |
    """
    rows = results["variants"][variant]["rows"]
    columns = [name for name in dict.fromkeys(k for row in rows for k in row) if _gap_column(name)]
    body = [
        [
            row["arm"],
            row["seeds"] if row["seeds"] is not None else "-",
            *(
                _mean_std(row.get(name), 4 if name == "mse_mean" else 2 if "psnr" in name else 1)
                for name in columns
            ),
        ]
        for row in rows
    ]
    return _markdown(["arm", "seeds", *(_gap_column(name) for name in columns)], body)


def welch_test(first: dict, second: dict, n_first: int, n_second: int) -> tuple[float, float]:
    """Welch's two-sided t-test from means and sample stds: ``(t, p)``.

    Example:
        >>> t, p = welch_test({"mean": 1.0, "std": 0.1}, {"mean": 0.0, "std": 0.1}, 3, 3)
        >>> round(t, 2), round(p, 4)
        (12.25, 0.0003)
    """
    from scipy.stats import ttest_ind_from_stats

    result = ttest_ind_from_stats(
        first["mean"],
        first["std"],
        n_first,
        second["mean"],
        second["std"],
        n_second,
        equal_var=False,
    )
    return float(result.statistic), float(result.pvalue)


def _mean_over_steps(row: dict) -> dict:
    """The ``psnr_mean_1_<horizon>`` entry of a model-gap row."""
    for name, value in row.items():
        if _PSNR_MEAN.fullmatch(name):
            return value
    raise KeyError(f"model-gap row {row['arm']!r} has no 'psnr_mean_1_<horizon>' entry")


def model_gap_differences(results: dict, variant: str, pairs: Sequence[tuple[str, str]]) -> str:
    """Differences of held-out PSNR (mean over the imagined steps) between arm ``pairs`` of
    one ``variant``, with Welch's t-test over the fine-tuning seeds.

    Example:
        >>> rows = [{"arm": a, "seeds": 3, "psnr_mean_1_15": {"mean": m, "std": 0.1}}
        ...         for a, m in (("a", 25.0), ("b", 24.0))]
        >>> print(model_gap_differences({"variants": {"v": {"rows": rows}}}, "v",
        ...                             [("a", "b")]), end="")
        | pair | difference (dB) | Welch t | p | n |
        |---|---|---|---|---|
        | a - b | +1.00 | 12.25 | 0.0003 | 3 + 3 |
    """
    rows = {row["arm"]: row for row in results["variants"][variant]["rows"]}
    body = []
    for first, second in pairs:
        a, b = rows[first], rows[second]
        mean_a, mean_b = _mean_over_steps(a), _mean_over_steps(b)
        difference = f"{mean_a['mean'] - mean_b['mean']:+.2f}"
        if min(a["seeds"], b["seeds"]) < 2:  # no spread: no test
            body.append(
                [f"{first} - {second}", difference, "-", "-", f"{a['seeds']} + {b['seeds']}"]
            )
            continue
        t, p = welch_test(mean_a, mean_b, a["seeds"], b["seeds"])
        body.append(
            [
                f"{first} - {second}",
                difference,
                f"{t:.2f}",
                f"{p:.4f}",
                f"{a['seeds']} + {b['seeds']}",
            ]
        )
    return _markdown(["pair", "difference (dB)", "Welch t", "p", "n"], body)


def _steps(step: str | int) -> str:
    """Env steps as the tables write them: thousands as ``k``, to a tenth of a thousand.

    Example:
        >>> _steps("35010"), _steps(7500), _steps(40)
        ('35k', '7.5k', '40')
    """
    step = int(step)
    return f"{step / 1000:.1f}".removesuffix(".0") + "k" if step >= 1000 else str(step)


def comparison_runs_table(results: dict) -> str:
    """One row per run of a fine-tuning comparison (``docs/results/reach35k.json``'s schema):
    successes per evaluation point.

    Example:
        >>> run = {"arm": "a", "seed": 0, "updates": 5, "final_wm_loss": 9.87,
        ...        "eval_success": {"20": 0.0, "40": 1.0}, "last_eval_return": 12.3}
        >>> comparison_runs_table({"eval_episodes": 1, "runs": [run]}).splitlines()[-1]
        '| a | 0 | 5 | 9.9 | 20: 0/1, 40: 1/1 | 1/2 | 12 |'
    """
    episodes = results["eval_episodes"]
    body = []
    for run in results["runs"]:
        points = ", ".join(
            f"{_steps(step)}: {round(rate * episodes)}/{episodes}"
            for step, rate in run["eval_success"].items()
        )
        successes = round(sum(run["eval_success"].values()) * episodes)
        total = episodes * len(run["eval_success"])
        body.append(
            [
                run["arm"],
                run["seed"],
                run["updates"],
                f"{run['final_wm_loss']:.1f}",
                points,
                f"{successes}/{total}",
                f"{run['last_eval_return']:.0f}",
            ]
        )
    header = [
        "arm",
        "seed",
        "updates",
        "final WM loss",
        "successes per evaluation (env steps: episodes)",
        "all",
        "return, last evaluation",
    ]
    return _markdown(header, body)


def comparison_arms_table(results: dict) -> str:
    """Per arm of a fine-tuning comparison (``docs/results/reach35k.json``'s schema): successes
    over every evaluation episode of every seed, and the final world-model loss (mean ± sample
    std over seeds)."""
    episodes = results["eval_episodes"]
    arms: dict[str, list[dict]] = {}
    for run in results["runs"]:
        arms.setdefault(run["arm"], []).append(run)
    body = []
    for arm, runs in arms.items():
        successes = round(sum(sum(run["eval_success"].values()) for run in runs) * episodes)
        total = episodes * sum(len(run["eval_success"]) for run in runs)
        losses = [run["final_wm_loss"] for run in runs]
        loss = (
            f"{statistics.mean(losses):.1f} ± {statistics.stdev(losses):.1f}"
            if len(losses) > 1
            else f"{losses[0]:.1f}"
        )
        body.append([arm, len(runs), f"{successes}/{total}", loss])
    return _markdown(["arm", "seeds", "successes / episodes", "final WM loss"], body)


def _interval(value: dict, form: str) -> str:
    return f"{value['mean']:{form}} [{value['low']:{form}}, {value['high']:{form}}]"


def anchor_table(report: dict) -> str:
    """The anchors' report of ``experiments/anchor_curves.py``: per arm and evaluation point,
    success and return with their 95% bootstrap intervals (seeds x episodes), each seed's
    success and the published curve; then each arm's difference from the baseline; then the
    bar at 35k env steps.

    Example:
        >>> point = {"env_steps": 5000, "seeds": 2, "episodes": 40, "seed_success": [0.0, 0.1],
        ...          "success": {"mean": 0.05, "low": 0.0, "high": 0.1},
        ...          "return": {"mean": 250.0, "low": 200.0, "high": 300.0}}
        >>> report = {"published": {"algorithm": "DreamerV2",
        ...                         "points": {"5000": {"mean": 0.0, "min": 0.0, "max": 0.1}}},
        ...           "arms": {"dreamer": {"points": [point]}}, "differences": {},
        ...           "anchor_bar": None}
        >>> lines = anchor_table(report).splitlines()
        >>> lines[2].split(" | ")[1:]
        ['5k', '2 x 20', '0.05 [0.00, 0.10]', '0.00, 0.10', '250 [200, 300]', '0.00 (0.00-0.10) |']
        >>> print(lines[-1])
        Bar (success at 35k env steps: every seed >= 0.1, mean >= 0.25): not reached yet.
    """
    published = report["published"]
    body = []
    for arm, result in report["arms"].items():
        for point in result["points"]:
            anchor = published["points"].get(str(point["env_steps"]))
            body.append(
                [
                    arm,
                    _steps(point["env_steps"]),
                    f"{point['seeds']} x {point['episodes'] // point['seeds']}",
                    _interval(point["success"], ".2f"),
                    ", ".join(f"{value:.2f}" for value in point["seed_success"]),
                    _interval(point["return"], ".0f"),
                    "-"
                    if anchor is None
                    else f"{anchor['mean']:.2f} ({anchor['min']:.2f}-{anchor['max']:.2f})",
                ]
            )
    header = [
        "arm",
        "env steps",
        "seeds x episodes",
        "success [95% interval]",
        "success per seed",
        "return [95% interval]",
        f"{published['algorithm']} published: mean (min-max)",
    ]
    parts = [_markdown(header, body)]
    rows = [
        [
            arm,
            _steps(row["env_steps"]),
            _interval(row["success"], "+.2f"),
            _interval(row["return"], "+.0f"),
        ]
        for arm, points in report["differences"].items()
        for row in points
    ]
    if rows:
        header = ["arm - baseline", "env steps", "success difference", "return difference"]
        parts.append(_markdown(header, rows))
    bar = report["anchor_bar"]
    rule = "success at 35k env steps: every seed >= 0.1, mean >= 0.25"
    if bar is None:
        parts.append(f"Bar ({rule}): not reached yet.\n")
    else:
        seeds = ", ".join(f"{value:.2f}" for value in bar["seed_success"])
        verdict = "met" if bar["met"] else "not met"
        parts.append(
            f"Bar ({rule}): {verdict} by `{bar['label']}` at {_steps(bar['at'])} "
            f"(seeds {seeds}; mean {bar['mean']:.2f}).\n"
        )
    return "\n".join(parts)


def _probe_episodes(settings: Mapping[str, Any], goals: int) -> str:
    """A goal probe's episodes: how many, how long, what acted in them, and the distinct goals.

    Example:
        >>> _probe_episodes({"episodes": 100, "steps": 100, "driver": "random",
        ...                  "action_hold": 25}, 100)
        '100 x 100, random actions held 25 steps (100)'
    """
    driver = settings.get("driver", "random")
    hold = settings.get("action_hold", 1)
    acted = "the run's policy" if driver == "policy" else "random actions"
    if driver == "random" and hold > 1:
        acted += f" held {hold} steps"
    return f"{settings['episodes']} x {settings['steps']}, {acted} ({goals})"


def goal_probe_table(report: dict) -> str:
    """The probes of ``experiments/goal_probe.py``: per run and checkpoint, the goal marker's
    recall in the reconstruction of the last frame (``-`` for probes made before it was
    measured), the test R^2 of the goal's and the hand's position read linearly from the
    world model's latent state, the R^2 of the reward head's prediction beside that of a
    predictor that sees the hand alone (``-`` before it was measured), and the critic's mean
    value of the states the episodes passed through beside the mean discounted return that
    followed them (``-`` for episodes too short to score it).

    Example:
        >>> run = {"label": "dreamer", "run_dir": "runs/dreamer_seed0", "env_steps": 20785,
        ...        "distinct_goals": 50, "goal_r2": {"per_coordinate": [0.1, 0.2, 0.3],
        ...        "mean": 0.2}, "hand_r2": {"per_coordinate": [0.9, 0.9, 0.9], "mean": 0.9}}
        >>> probe = {"settings": {"episodes": 400, "steps": 30}, "runs": [run]}
        >>> goal_probe_table({"probes": [probe]}).splitlines()[2].split(" | ")[2:5]
        ['20785', '400 x 30, random actions (50)', '-']
    """
    rows = []
    for probe in report["probes"]:
        for run in probe["runs"]:
            floor = run["goal_r2"].get("train_mean_r2")
            marker, reward, critic = run.get("goal_marker"), run.get("reward"), run.get("critic")
            rows.append(
                [
                    run["label"],
                    Path(run["run_dir"]).name,
                    run["env_steps"],
                    _probe_episodes(probe["settings"], run["distinct_goals"]),
                    "-"
                    if marker is None
                    else f"{marker['recall']:.2f} ({marker['marker_pixels']:.1f} px)",
                    *(
                        f"{run[target]['mean']:.2f} ("
                        + ", ".join(f"{v:.2f}" for v in run[target]["per_coordinate"])
                        + ")"
                        for target in ("goal_r2", "hand_r2")
                    ),
                    "-" if floor is None else f"{floor:.2f}",
                    "-" if reward is None else f"{reward['r2']:.2f} / {reward['hand_only_r2']:.2f}",
                    "-" if critic is None else f"{critic['value']:.1f} / {critic['return']:.1f}",
                ]
            )
    header = [
        "arm",
        "run",
        "env steps",
        "episodes x steps, driven by (goals)",
        "goal marker recall (marker pixels per frame)",
        "goal R^2: mean (x, y, z)",
        "hand R^2: mean (x, y, z)",
        "goal R^2 of the train half's mean goal",
        "reward R^2: reward head / hand alone",
        "critic value / discounted return that followed",
    ]
    return _markdown(header, rows)


#: What each ``experiments/goal_marker.py`` variant changes, as docs/results.md names it.
GOAL_MARKER_CHANGES = {
    "fast": "the fine-tuning runs' render, `small` world model from scratch",
    "metaworld": "Meta-world's MSAA and shadows",
    "depth48": "conv encoder and decoder 48 channels wide (DreamerV2's), not 16",
    "prelar": "PreLAR's pre-trained world model (`preset=long`)",
    "free_nats1": "1 free nat of state KL per step",
    "free_nats30": "30 free nats of state KL per step (diagnostic)",
    "rssm1024": "RSSM as large as DreamerV2's (1024 units, 32 x 32 categoricals)",
    "big_marker": "the goal's sphere drawn 3x as wide (diagnostic)",
    "reward": "the agent's reward heads trained with it (Gaussian loss)",
    "reward400": "`reward` with reward heads of DreamerV2's size (4 x 400, not 2 x 128)",
}


def goal_marker_table(report: dict) -> str:
    """The variants of ``experiments/goal_marker.py``: each one's change, the marker's size,
    its recall at each evaluation after the first, at the last evaluation on the training
    episodes and on new episodes of their kind where measured (``seen_goals_recall``,
    ``new_goals_recall``; ``-`` for runs made before), for world models with reward heads the
    R^2 of their reward prediction on the new episodes against the hand alone's, the state KL
    of the last stretch of updates, and the minutes it took.

    Example:
        >>> variant = {"marker_pixels": 2.74, "updates": [0, 200, 400],
        ...            "recall": [-0.1, 0.07, 0.08], "state_kl": [None, 0.5, 0.0021],
        ...            "seconds": 2533.0}
        >>> goal_marker_table({"variants": {"free_nats1": variant}}).splitlines()[2]
        '| `free_nats1`: 1 free nat of state KL per step | 2.7 | 0.07, 0.08 | 0.002 | 42 |'
        >>> seen = {**variant, "seen_goals_recall": [0, 0.31], "new_goals_recall": [0, 0.1]}
        >>> table = goal_marker_table({"variants": {"fast": seen, "free_nats1": variant}})
        >>> table.splitlines()[2].split(" | ")[3]
        '0.31 / 0.10'
        >>> table.splitlines()[3]
        '| `free_nats1`: 1 free nat of state KL per step | 2.7 | 0.07, 0.08 | - | 0.002 | 42 |'
        >>> reward = {**seen, "new_goals_reward_r2": [0, 0.5], "new_goals_hand_only_r2": [0, 0.4]}
        >>> goal_marker_table({"variants": {"reward": reward}}).splitlines()[2].split(" | ")[4]
        '0.50 / 0.40'
    """
    variants = report["variants"]
    with_seen = any("seen_goals_recall" in variant for variant in variants.values())
    with_reward = any("new_goals_reward_r2" in variant for variant in variants.values())
    rows = []
    for name, variant in variants.items():
        row = [
            f"`{name}`: {GOAL_MARKER_CHANGES.get(name, name)}",
            f"{variant['marker_pixels']:.1f}",
            ", ".join(f"{value:.2f}" for value in variant["recall"][1:]),
        ]
        if with_seen:
            seen, new = variant.get("seen_goals_recall"), variant.get("new_goals_recall")
            row.append("-" if seen is None else f"{seen[-1]:.2f} / {new[-1]:.2f}")
        if with_reward:
            head, hand = variant.get("new_goals_reward_r2"), variant.get("new_goals_hand_only_r2")
            row.append("-" if head is None else f"{head[-1]:.2f} / {hand[-1]:.2f}")
        row += [f"{variant['state_kl'][-1]:.3f}", f"{variant['seconds'] / 60:.0f}"]
        rows.append(row)
    evaluations = next(iter(variants.values()), {}).get("updates", [])
    header = [
        "variant (one change)",
        "marker pixels per frame",
        "recall at " + ", ".join(str(done) for done in evaluations[1:]) + " updates",
    ]
    if with_seen:
        header.append(
            f"recall at {evaluations[-1]} updates, training episodes: their goals / new goals"
        )
    if with_reward:
        header.append("reward R^2 there, new goals: reward head / hand alone")
    header += ["state KL, last stretch (nats per step)", "minutes"]
    return _markdown(header, rows)


def results_tables(results_dir: str | Path) -> dict[str, str]:
    """Every generated table of ``docs/results.md``, by section name, from ``results_dir``."""
    results_dir = Path(results_dir)
    names = sorted(set(TABLES.values()))  # a missing file is named in a fixed order
    loaded = {name: json.loads((results_dir / name).read_text()) for name in names}
    gap, reach = loaded["model_gap.json"], loaded["reach35k.json"]
    return {
        "table-model-gap-pixel-trunk": model_gap_table(gap, "pixel_trunk"),
        "table-model-gap-embedding": model_gap_table(gap, "embedding"),
        "table-model-gap-differences": model_gap_differences(gap, "pixel_trunk", GAP_PAIRS)
        + model_gap_differences(gap, "embedding", EMBEDDING_PAIRS).split("\n", 2)[2],
        "table-model-gap-pretrain-seeds-quick": pretrain_seed_table(
            loaded["model_gap_pretrain_seeds_quick.json"]
        ),
        "table-reach35k-runs": comparison_runs_table(reach),
        "table-reach35k-arms": comparison_arms_table(reach),
        "table-metaworld-reach": anchor_table(loaded["metaworld_reach.json"]),
        "table-metaworld-reach-goals": anchor_table(loaded["metaworld_reach_goals.json"]),
        "table-goal-probe": goal_probe_table(loaded["goal_probe_reach.json"]),
        "table-goal-marker": goal_marker_table(loaded["goal_marker_reach.json"]),
        "table-goal-marker-held": goal_marker_table(loaded["goal_marker_reach_hold25.json"]),
        "table-goal-marker-seen": goal_marker_table(loaded["goal_marker_reach_hold25_seen.json"]),
    }


def write_results_tables(docs: str | Path) -> Path:
    """Write every table of :func:`results_tables` into ``docs/results.md``."""
    page = Path(docs) / "results.md"
    for name, body in results_tables(Path(docs) / "results").items():
        generator = f"experiments/results_report.py from {TABLES[name]}"
        write_section(page, name, body, generator=generator)
    return page


#: The generated tables of ``docs/performance.md``, each with the raw files under
#: ``benchmarks/results/`` it is made from.
PERFORMANCE_TABLES = {
    "table-latest": ("latest.json",),
    "table-render-quality": ("env_render_quality.json",),
    "table-finetune-update": (
        "finetune_step_small_16x50.json",
        "finetune_step_small_50x50.json",
        "finetune_step_small_16x50_bf16peak412.json",
    ),
    "table-finetune-update-parts": (
        "finetune_step_small_16x50.json",
        "finetune_step_small_50x50.json",
    ),
    "table-finetune-projection": (
        "finetune_step_small_16x50.json",
        "finetune_step_small_50x50.json",
    ),
    "table-finetune-fresh-clone": ("reach35k_summary_24a9aeb.json",),
    "table-finetune-loop": ("finetune_loop_1thread.json",),
    "table-gpu-pretrain-update": ("gpu_h200_2026-11-27.json",),
    "table-gpu-finetune-arms": (
        "gpu_h200_2026-11-27.json",
        "gpu_h200_2026-11-27_finetune_losses.json",
    ),
    "table-pretrain-update-history": ("pretrain_update_history_2026-11-25.json",),
}
#: The example's Hydra configuration, whose presets give the update schedule of a run.
CONFIG_DIR = Path(__file__).resolve().parents[1] / "examples" / "config"
_RENDER_QUALITY = {
    "fast": "`fast` (no MSAA, no shadows; the default)",
    "antialiased": "`antialiased` (4x MSAA)",
    "metaworld": "`metaworld` (4x MSAA, 4096 shadow map)",
}
_UPDATE_PARTS = {
    "wm_forward": "world model forward",
    "wm_backward": "world model backward",
    "actor_forward": "imagination + actor loss forward",
    "actor_backward": "actor backward",
    "critic_forward": "critic forward",
    "critic_backward": "critic backward",
    "optimizer": "optimiser",
}
_LOOP_PARTS = {
    "world_model": "world-model update (forward + backward)",
    "actor_critic": "actor-critic (imagination, actor, critic, backward)",
    "env": "env step incl. render",
    "policy": "policy inference",
    "optimizer": "optimiser (clipping, Adam)",
    "replay": "replay (write + sample)",
    "update_other": "other, inside the update",
    "other": "other (collector bookkeeping, logging)",
}


def _verdict(met: bool | None) -> str:
    return "-" if met is None else ("yes" if met else "NO")


def latest_table(latest: dict) -> str:
    """The figures of ``benchmarks/run_all.py`` (``benchmarks/results/latest.json``'s ``rows``)
    with their targets.

    Example:
        >>> row = {"figure": "  its fraction", "measured": "0.59", "target": ">= 0.75",
        ...        "met": False}
        >>> latest_table({"rows": [row]}).splitlines()[-1]
        '| its fraction | 0.59 | >= 0.75 | NO |'
    """
    body = [
        [row["figure"].strip(), row["measured"], row["target"], _verdict(row["met"])]
        for row in latest["rows"]
    ]
    return _markdown(["figure", "measured", "target", "met"], body)


def render_quality_table(record: dict) -> str:
    """Env steps per second at each ``render_quality`` (``benchmarks/env_steps.py --json``).

    Example:
        >>> render_quality_table({"steps_per_s": {"fast": 100.0}}).splitlines()[-1]
        '| `fast` (no MSAA, no shadows; the default) | 100.0 | 10.0 |'
    """
    body = [
        [_RENDER_QUALITY.get(name, f"`{name}`"), f"{rate:.1f}", f"{1000 / rate:.1f}"]
        for name, rate in record["steps_per_s"].items()
    ]
    return _markdown(["`render_quality`", "steps / s", "ms / step"], body)


def _code(record: dict, label: str) -> str:
    """The commit a ``benchmarks/finetune_step.py`` result was measured on."""
    return record["working_tree_commit"] if label == "working tree" else label


def _batch(record: dict) -> str:
    return f"{record['batch']} x {record['length']}"


def finetune_update_table(records: Sequence[dict]) -> str:
    """Seconds per fine-tuning update, before and after, from ``benchmarks/finetune_step.py``
    results (one per machine and batch size), with the machine's bf16 GEMM peak measured in
    the same invocation and the fraction of it the update reaches.

    Example:
        >>> result = {"seconds_per_update": 0.857, "frames_per_s": 933.7,
        ...           "speedup_vs_first": 1.4, "gflop_per_update": 196.5,
        ...           "fraction_of_gemm_peak": 0.281}
        >>> record = {"batch": 16, "length": 50, "preset": "reach35k",
        ...           "gemm_peak_gflop_s": {"fp32": 203.9, "bf16": 816.3},
        ...           "working_tree_commit": "5c6b67b", "results": {"working tree": result}}
        >>> finetune_update_table([record]).splitlines()[-1]
        '| 816 | 16 x 50 (`reach35k`) | 5c6b67b | 0.857 | 934 | 1.40 | 196.5 | 28.1% |'
    """
    body = [
        [
            f"{record['gemm_peak_gflop_s']['bf16']:.0f}",
            f"{_batch(record)} (`{record['preset']}`)",
            _code(record, label),
            f"{result['seconds_per_update']:.3f}",
            f"{result['frames_per_s']:.0f}",
            f"{result['speedup_vs_first']:.2f}",
            f"{result['gflop_per_update']:.1f}",
            f"{result['fraction_of_gemm_peak']:.1%}",
        ]
        for record in records
        for label, result in record["results"].items()
    ]
    header = [
        "machine's bf16 GEMM peak (GFLOP/s)",
        "batch",
        "code",
        "s / update",
        "replayed frames / s",
        "speed-up",
        "GFLOP / update",
        "fraction of the bf16 peak",
    ]
    return _markdown(header, body)


def finetune_parts_table(records: Sequence[dict]) -> str:
    """Seconds of each part of the fine-tuning update, one column per batch and commit."""
    columns = [
        (f"{_batch(record)}, {_code(record, label)}", result["parts_s"])
        for record in records
        for label, result in record["results"].items()
    ]
    body = [
        [name, *(f"{parts[key]:.3f}" for _, parts in columns)]
        for key, name in _UPDATE_PARTS.items()
    ]
    return _markdown(["part (s)", *(title for title, _ in columns)], body)


def preset_schedule(preset: str, config_dir: str | Path = CONFIG_DIR) -> dict[str, int]:
    """Env steps, prefill, updates after the prefill and env steps per update of a fine-tuning
    run with ``preset=<preset>`` of the example's configuration, and its number of updates.

    Example:
        >>> preset_schedule("metaworld")["updates"]
        6100
    """
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(Path(config_dir).resolve()), version_base=None):
        finetune = compose("config", overrides=[f"preset={preset}"]).finetune
    schedule = {
        key: int(finetune[key])
        for key in ("env_steps", "prefill", "prefill_updates", "update_every")
    }
    schedule["updates"] = schedule["prefill_updates"] + (
        (schedule["env_steps"] - schedule["prefill"]) // schedule["update_every"]
    )
    return schedule


def finetune_projection_table(records: Sequence[dict], config_dir: str | Path = CONFIG_DIR) -> str:
    """Hours of updates of a whole run of each result's preset at the measured pace of its
    newest code (:func:`preset_schedule` counts the updates)."""
    body = []
    for record in records:
        schedule = preset_schedule(record["preset"], config_dir)
        seconds = record["results"]["working tree"]["seconds_per_update"]
        body.append(
            [
                f"`{record['preset']}`",
                _batch(record),
                f"{schedule['env_steps']:,}",
                f"{schedule['prefill_updates']} + {schedule['env_steps'] - schedule['prefill']:,}"
                f" / {schedule['update_every']} = {schedule['updates']:,}",
                f"{seconds:.3f}",
                f"{schedule['updates'] * seconds / 3600:.2f}",
            ]
        )
    header = [
        "preset",
        "batch",
        "env steps",
        "updates (after the prefill + one per update_every env steps)",
        "s / update",
        "hours of updates",
    ]
    return _markdown(header, body)


def fresh_clone_table(record: dict, config_dir: str | Path = CONFIG_DIR) -> str:
    """The pace of a fine-tuning command's ``summary.json`` and of its steady state, and the
    update alone: the steady pace less the env steps between two updates."""
    summary = record["summary"]
    preset = re.search(r"preset=(\w+)", record["command"]).group(1)
    every = preset_schedule(preset, config_dir)["update_every"]
    steady = record["steady_seconds_per_update_incl_env_steps"]
    env_step = summary["seconds_per_env_step"]
    body = [
        [
            f"`summary.json` of {summary['env_steps']:,} env steps at {record['commit']}:"
            f" {summary['updates']} updates, the first one compiling the networks",
            f"{summary['seconds_per_update']:.3f}",
        ],
        [
            f"steady pace at {record['commit']}, each update with its {every} env steps",
            f"{steady:.3f}",
        ],
        [
            f"the update alone: the steady pace less {every} env steps of {env_step:.4f} s",
            f"{steady - every * env_step:.3f}",
        ],
        [record["before"]["source"], record["before"]["seconds_per_update"]],
    ]
    return _markdown(["record", "s / update"], body)


def finetune_loop_table(record: dict) -> str:
    """Milliseconds per env step of each part of the fine-tuning loop, one column per variant
    of ``benchmarks/finetune_loop.py``, speeds relative to the first variant."""
    variants = record["variants"]
    first = variants[0]["env_steps_per_s"]
    header = ["ms per env step (share)"] + [
        f"#{index}, every {variant['update_every']}" for index, variant in enumerate(variants)
    ]

    def ratio(value: float) -> str:
        return "" if value == first else f" ({value / first:.2f}x)"

    body = [
        ["env steps/s, whole loop"]
        + [f"{v['env_steps_per_s']:.2f}{ratio(v['env_steps_per_s'])}" for v in variants],
        ["s per update"] + [f"{v['seconds_per_update']:.2f}" for v in variants],
        ["hours for 35k env steps at this rate"]
        + [f"{35000 / v['env_steps_per_s'] / 3600:.1f}" for v in variants],
    ]
    for key, name in _LOOP_PARTS.items():
        cells = []
        for variant in variants:
            ms, share = variant["ms_per_env_step"][key], variant["fraction"][key]
            percent = f"{share:.0%}" if round(share * 100) >= 1 else "<1%"
            cells.append(f"{ms:.0f} ({percent})" if ms >= 20 else f"{ms:.1f} ({percent})")
        body.append([name, *cells])
    legend = "".join(
        f"- #{index}: `{variant['variant']}`\n"
        if variant["variant"] not in ("", "(base)")
        else f"- #{index}: no override\n"
        for index, variant in enumerate(variants)
    )
    return legend + "\n" + _markdown(header, body)


def gpu_pretrain_table(record: dict) -> str:
    """Pre-training update on one GPU, ours beside the reference's
    (``benchmarks/gpu_figures.py``)."""
    updates = record["updates"]
    references = {
        "fp32": updates["reference fp32"]["seconds_per_update"],
        "fp16 AMP": updates["reference fp16 AMP"]["seconds_per_update"],
    }
    body = []
    for name, run in updates.items():
        seconds = run["seconds_per_update"]
        ratios = [f"{reference / seconds:.2f}x" for reference in references.values()]
        if name.startswith("reference"):
            kind = "fp32" if run["precision"] == 32 else "fp16 AMP"
            label = f"reference, {kind} (`--precision {run['precision']}`)"
            body.append([label, f"{seconds:.3f}", *ratios, "-", "-", "-"])
            continue
        precision = "bf16" if run["precision"] == "bfloat16" else run["precision"]
        body.append(
            [
                f"ours, {precision}, latent action from `{run['latent_action_input']}`",
                f"{seconds:.3f}",
                *ratios,
                f"{run['tflop_per_update']:.2f} TFLOP, {run['achieved_gflop_s'] / 1000:.1f}"
                f" TFLOP/s ({run['fraction_of_gemm_peak']:.2f} of the"
                f" {run['gemm_peak_gflop_s'] / 1000:.0f} TFLOP/s {precision} GEMM measured)",
                f"{run['aten_operators_per_update']:,}",
                f"{run['peak_memory_gib']:.1f} GiB",
            ]
        )
    header = [
        "update",
        "s per update",
        "vs reference fp32",
        "vs reference fp16 AMP",
        "FLOPs, achieved rate",
        "ATen operators",
        "peak GPU memory",
    ]
    return _markdown(header, body)


def _loss(value: float) -> str:
    return f"{value:.0f}" if value >= 1000 else f"{value:.1f}"


def gpu_finetune_table(record: dict, losses: dict) -> str:
    """The fine-tuning runs of ``benchmarks/gpu_figures.py``, one row per arm, with the
    world-model loss at the updates of ``losses`` and at the last logged update."""
    body = []
    for arm, losses_of_arm in losses["world_model_loss"].items():
        run = record["finetune"][arm]
        last = run["last_metrics"]
        points = [*losses_of_arm.values(), last["world_model_loss"]]
        body.append(
            [
                arm,
                run["env_steps"],
                run["updates"],
                f"{run['seconds_per_update']:.3f}",
                f"{run['seconds_per_env_step']:.4f}",
                " / ".join(_loss(value) for value in points),
                ", ".join(
                    f"{e['env_steps']}: {e['eval_success_rate']:.1f}, {e['eval_return']:.0f}"
                    for e in run["evaluations"]
                ),
            ]
        )
    updates = [*next(iter(losses["world_model_loss"].values())), str(last["updates"])]
    header = [
        "arm",
        "env steps",
        "updates",
        "s per update (card shared by 2 runs)",
        "s per env step of collection",
        f"world-model loss at update {' / '.join(updates)}",
        "evaluation (env steps: success, return)",
    ]
    return _markdown(header, body)


def pretrain_history_table(record: dict) -> str:
    """The pre-training update after each change, with its ratio to the reference's update.

    Example:
        >>> row = {"change": "first", "seconds_per_update": {"fp32": 17.68, "bf16": 6.9},
        ...        "speedup_vs_reference": {"fp32": 0.81, "bf16": 0.87},
        ...        "reference_seconds": {"fp32": 14.289, "bf16": 6.042}}
        >>> pretrain_history_table({"rows": [row]}).splitlines()[-1]
        '| first | 17.68 s (0.81x) | 6.90 s (0.87x) | 14.29 s / 6.04 s |'
    """
    body = [
        [row["change"]]
        + [
            f"{row['seconds_per_update'][p]:.2f} s ({row['speedup_vs_reference'][p]:.2f}x)"
            for p in ("fp32", "bf16")
        ]
        + [" / ".join(f"{row['reference_seconds'][p]:.2f} s" for p in ("fp32", "bf16"))]
        for row in record["rows"]
    ]
    return _markdown(["change", "fp32 update", "bf16 update", "reference, fp32 / bf16"], body)


def performance_tables(
    results_dir: str | Path, config_dir: str | Path = CONFIG_DIR
) -> dict[str, str]:
    """Every generated table of ``docs/performance.md``, by section name, from the raw files
    of ``results_dir`` (``benchmarks/results/``) and the presets of ``config_dir``."""
    results_dir = Path(results_dir)
    names = {name for files in PERFORMANCE_TABLES.values() for name in files}
    raw = {name: json.loads((results_dir / name).read_text()) for name in sorted(names)}
    steps = [raw["finetune_step_small_16x50.json"], raw["finetune_step_small_50x50.json"]]
    gpu = raw["gpu_h200_2026-11-27.json"]
    return {
        "table-latest": latest_table(raw["latest.json"]),
        "table-render-quality": render_quality_table(raw["env_render_quality.json"]),
        "table-finetune-update": finetune_update_table(
            [*steps, raw["finetune_step_small_16x50_bf16peak412.json"]]
        ),
        "table-finetune-update-parts": finetune_parts_table(steps),
        "table-finetune-projection": finetune_projection_table(steps, config_dir),
        "table-finetune-fresh-clone": fresh_clone_table(
            raw["reach35k_summary_24a9aeb.json"], config_dir
        ),
        "table-finetune-loop": finetune_loop_table(raw["finetune_loop_1thread.json"]),
        "table-gpu-pretrain-update": gpu_pretrain_table(gpu),
        "table-gpu-finetune-arms": gpu_finetune_table(
            gpu, raw["gpu_h200_2026-11-27_finetune_losses.json"]
        ),
        "table-pretrain-update-history": pretrain_history_table(
            raw["pretrain_update_history_2026-11-25.json"]
        ),
    }


def write_performance_tables(docs: str | Path, results_dir: str | Path) -> Path:
    """Write every table of :func:`performance_tables` into ``docs/performance.md``."""
    page = Path(docs) / "performance.md"
    for name, body in performance_tables(results_dir).items():
        generator = "experiments/results_report.py from " + ", ".join(PERFORMANCE_TABLES[name])
        write_section(page, name, body, generator=generator)
    return page


#: The generated tables of ``docs/latent_actions.md``, each with the raw files under
#: ``docs/latent_actions/`` it is made from.
LATENT_ACTION_TABLES = {
    "table-default-job": ("default_job_656f7c0.json", "default_job_motion_probe.json"),
    "table-render-quality": ("render_quality.json",),
    "table-probe-ceiling": ("diagnosis.json",),
    "table-supervised-reference": ("supervised_reference.json",),
    "table-code-content": ("diagnosis.json",),
    "table-objectives": ("objectives_short_runs.json",),
    "table-objectives-prelar-run": ("objectives_short_runs.json",),
    "table-input-settings": ("quick_job_settings_cpu.json",),
    "table-sweep": ("sweep_h200.json",),
    "table-long-preset": ("long_preset_cpu.json",),
    "table-long-run": ("long_prior2_24a9aeb.json",),
    "table-long-reference": (
        "long_prior2_24a9aeb.json",
        "long_supervised_displacement_1f666df.json",
    ),
    "table-toy-grid": ("toy_results.json",),
}
_CEILING_ROWS = {
    "state change": "true change of hand position and gripper opening -> action",
    "state pair, 256 features": "256 random ELU features of the true state at t and t+1 -> action",
    "state change -> the previous action": "true change -> the action of the step before",
}
_CODE_MODELS = {
    "default": "default job (300 updates)",
    "fresh_default_job": "default job, another run (300)",
    "prior2_quick": "`loss=prelar_prior2` (300)",
    "long3000": "`preset=long loss=prelar` (3000)",
    "long_prior2_3000": "`preset=long` (`prelar_prior2`, 3000)",
    "concat": "pixel trunk, `concat` (300)",
    "concat_shift4": "`concat`, `shift=4` (300)",
    "embdiff": "`embedding_difference` (300)",
}
_CODE_TARGETS = {
    "latent -> action": "code -> action (the evaluation's probe)",
    "latent, 256 features -> action": "code, 256 random features -> action",
    "latent -> state change": "code -> change of the hand state",
    "latent -> state at t+1": "code -> hand state at t+1",
    "latent + state at t -> action": "code + true state at t -> action",
    "state at t -> action": "true state at t alone -> action",
    "latent -> the previous action": "code -> the action of the step before",
}


def _signed(value: float) -> str:
    """A difference in dB: signed, without a sign when it rounds to zero.

    Example:
        >>> _signed(0.956), _signed(-0.001), _signed(-0.33)
        ('+0.96', '0.00', '-0.33')
    """
    return "0.00" if round(value, 2) == 0 else f"{value:+.2f}"


def _pair(first: float | None, second: float | None, form=lambda value: f"{value:.2f}") -> str:
    """``first / second`` (``-`` where both are missing)."""
    if first is None and second is None:
        return "-"
    return " / ".join("-" if value is None else form(value) for value in (first, second))


def _with_dims(value: float, dims: Sequence[float] | None) -> str:
    """An R^2 with its per-dimension values (x, y, z, gripper) when there are some."""
    if not dims:
        return f"{value:.2f}"
    return f"{value:.2f} (" + ", ".join(f"{dim:.2f}" for dim in dims) + ")"


def default_job_table(runs: Sequence[tuple[str, dict]]) -> str:
    """The held-out figures of the end-of-job evaluation of runs of the default job, one row
    per run (``label``, its evaluation JSON) and held-out set.

    Example:
        >>> figures = {"probe_r2": 0.29, "probe_r2_per_dim": [0.1, 0.4, 0.2, 0.5],
        ...            "probe_r2_action_xyz": 0.2, "probe_r2_state_only": 0.23,
        ...            "probe_r2_with_state": 0.38, "probe_r2_motion": 0.26,
        ...            "probe_r2_motion_state_only": 0.21, "probe_r2_motion_with_state": 0.39,
        ...            "state_kl": 1.3, "shuffled_state_kl": 3.9,
        ...            "state_kl_shuffled_ratio": 3.0, "delta_psnr": 0.96}
        >>> row = default_job_table([("", {"seen": figures})]).splitlines()[-1]
        >>> row.split(" | ")[:2], row.split(" | ")[-2:]
        (['| seen tasks', '0.29 (0.10, 0.40, 0.20, 0.50)'], ['1.30 / 3.90 (3.00x)', '+0.96 |'])
    """
    body = []
    for label, run in runs:
        for held_out in ("seen", "unseen"):
            if held_out not in run:
                continue
            f = run[held_out]
            body.append(
                [
                    f"{held_out} tasks{label}",
                    _with_dims(f["probe_r2"], f.get("probe_r2_per_dim")),
                    f"{f['probe_r2_action_xyz']:.2f}",
                    f"{f['probe_r2_state_only']:.2f}",
                    f"{f['probe_r2_with_state']:.2f}",
                    f"{f['probe_r2_motion']:.2f} / {f['probe_r2_motion_state_only']:.2f} / "
                    f"{f['probe_r2_motion_with_state']:.2f}",
                    f"{f['state_kl']:.2f} / {f['shuffled_state_kl']:.2f} "
                    f"({f['state_kl_shuffled_ratio']:.2f}x)",
                    _signed(f["delta_psnr"]),
                ]
            )
    header = [
        "held-out set",
        "action R^2 (x, y, z, gripper)",
        "action R^2, x y z only",
        "state alone -> action",
        "code + state -> action",
        "motion R^2: code / state alone / both",
        "state KL own / shuffled",
        "delta-PSNR (dB)",
    ]
    return _markdown(header, body)


def render_quality_runs_table(record: dict) -> str:
    """The default job's pre-training at each ``render_quality`` (``render_quality.json``): one
    row per run (PreLAR's code and the supervised hand-displacement reference), then per
    quality the mean of the PreLAR runs and its ratio to the reference, the commands below.

    Examples:
        >>> figures = {"probe_r2_motion": 0.2, "probe_r2_action_xyz": 0.1,
        ...            "state_kl_shuffled_ratio": 2.0, "delta_psnr": 1.0}
        >>> run = {"render_quality": "fast", "seed": 0, "commit": "abc", "command": "c",
        ...        "seen": figures, "unseen": figures}
        >>> reference = {**run, "objective": "supervised_displacement", "seen":
        ...              {**figures, "probe_r2_motion": 0.4}}
        >>> table = render_quality_runs_table({"machine": "m", "runs": [
        ...     {**run, "objective": "prelar"}, reference]})
        >>> table.splitlines()[7]
        '| `fast` | 1 | 0.20 / 0.20 | 0.40 / 0.20 | 0.50 / 1.00 |'
    """
    runs = record["runs"]
    body = [
        [
            f"`{run['render_quality']}`",
            f"`{run['objective']}`",
            run["seed"],
            run["commit"],
            _pair(run["seen"]["probe_r2_motion"], run["unseen"]["probe_r2_motion"]),
            _pair(run["seen"]["probe_r2_action_xyz"], run["unseen"]["probe_r2_action_xyz"]),
            _pair(run["seen"]["state_kl_shuffled_ratio"], run["unseen"]["state_kl_shuffled_ratio"]),
            _pair(run["seen"]["delta_psnr"], run["unseen"]["delta_psnr"], _signed),
        ]
        for run in runs
    ]
    header = [
        "`render_quality`",
        "objective",
        "seed",
        "commit",
        "hand-displacement R^2, seen / unseen",
        "action x, y, z R^2, seen / unseen",
        "state-KL ratio, seen / unseen",
        "delta-PSNR seen / unseen (dB)",
    ]
    summary = []
    for quality in dict.fromkeys(run["render_quality"] for run in runs):
        code = [r for r in runs if r["render_quality"] == quality and r["objective"] == "prelar"]
        references = [
            r
            for r in runs
            if r["render_quality"] == quality and r["objective"] == "supervised_displacement"
        ]
        means = [
            sum(r[held_out]["probe_r2_motion"] for r in code) / len(code)
            for held_out in ("seen", "unseen")
        ]
        reference = references[0] if references else None
        ratios = (
            [
                mean / reference[held_out]["probe_r2_motion"]
                for mean, held_out in zip(means, ("seen", "unseen"), strict=True)
            ]
            if reference
            else [None, None]
        )
        summary.append(
            [
                f"`{quality}`",
                len(code),
                _pair(*means),
                "-"
                if reference is None
                else _pair(
                    reference["seen"]["probe_r2_motion"], reference["unseen"]["probe_r2_motion"]
                ),
                _pair(*ratios),
            ]
        )
    summary_header = [
        "`render_quality`",
        "PreLAR runs",
        "PreLAR hand-displacement R^2, mean, seen / unseen",
        "supervised reference, seen / unseen",
        "PreLAR / reference, seen / unseen",
    ]
    commands = "".join(
        f"- `{run['render_quality']}`, `{run['objective']}`, seed {run['seed']}: "
        f"`{run['command']}`\n"
        for run in runs
    )
    return (
        f"{_markdown(header, body)}\n{_markdown(summary_header, summary)}\n{commands}\n"
        f"Machine: {record['machine']}.\n"
    )


def probe_ceiling_table(diagnosis: dict) -> str:
    """The probe on the true state (``experiments/latent_action_ceiling.py``), seen and unseen."""
    body = [
        [
            name,
            *(
                _with_dims(diagnosis[held_out][key]["r2"], diagnosis[held_out][key]["r2_per_dim"])
                for held_out in ("seen", "unseen")
            ),
        ]
        for key, name in _CEILING_ROWS.items()
    ]
    header = ["features -> target", "R^2 seen (x, y, z, gripper)", "R^2 unseen (x, y, z, gripper)"]
    return _markdown(header, body)


def supervised_table(record: dict) -> str:
    """The supervised reference: the code of a latent action model trained on the true
    actions, probed as the evaluation does."""
    body = [
        [
            f"`{row['input_mode']}`",
            row["updates"],
            _with_dims(row["r2_seen"], row.get("r2_seen_per_dim")),
            f"{row['r2_unseen']:.2f}",
            _pair(row["with_state_seen"], row["with_state_unseen"]),
            "-" if row["train_mse"] is None else f"{row['train_mse']:.3f}",
        ]
        for row in record["rows"]
    ]
    header = [
        "latent action model",
        "updates",
        "R^2 seen (x, y, z, gripper)",
        "R^2 unseen",
        "code + state, seen / unseen",
        "training MSE",
    ]
    return _markdown(header, body)


def code_content_table(diagnosis: dict) -> str:
    """What each run's code predicts (``experiments/latent_action_ceiling.py --model``), seen /
    unseen R^2, one column per run."""
    models = [name for name in _CODE_MODELS if name in diagnosis["seen"]]
    body = []
    for key, target in _CODE_TARGETS.items():
        cells = []
        for model in models:
            seen, unseen = diagnosis["seen"][model].get(key), diagnosis["unseen"][model].get(key)
            cells.append("-" if seen is None else _pair(seen["r2"], unseen["r2"]))
        body.append([target, *cells])
    return _markdown(["features -> target", *(_CODE_MODELS[m] for m in models)], body)


def _kl(value: float | None) -> str:
    """An action KL in nats, to three significant digits.

    Example:
        >>> _kl(0.0001), _kl(1.54), _kl(0.037), _kl(None)
        ('1e-4', '1.54', '0.037', '-')
    """
    if value is None:
        return "-"
    return f"{value:.0e}".replace("e-0", "e-") if value < 0.001 else f"{value:.3g}"


def objectives_table(record: dict) -> str:
    """Short runs of each objective (``experiments/latent_action_variants.py``): state KL with the
    own and shuffled latent actions, delta-PSNR and action KL."""
    body = [
        [
            row["variant"],
            "-" if row["loss"] is None else f"`{row['loss']}`",
            row["updates"],
            f"{row['state_kl_own_seen']:.3f} / {row['state_kl_shuffled_seen']:.3f} "
            f"({row['state_kl_shuffled_seen'] / row['state_kl_own_seen']:.2f}x)",
            _pair(row["delta_psnr_seen"], row["delta_psnr_unseen"], _signed),
            _kl(row["action_kl_train"]),
        ]
        for row in record["rows"]
    ]
    header = [
        "objective",
        "`--loss`",
        "updates",
        "state KL own / shuffled, seen",
        "delta-PSNR seen / unseen (dB)",
        "action KL (nats)",
    ]
    return _markdown(header, body)


def _ratio_rows(rows: Sequence[dict], first: Sequence[object]) -> list[list[object]]:
    return [
        [
            *first,
            row["updates"],
            _pair(row["ratio_seen"], row["ratio_unseen"]),
            _pair(row["delta_psnr_seen"], row["delta_psnr_unseen"], _signed),
        ]
        for row in rows
    ]


def objectives_prelar_run_table(record: dict) -> str:
    """The longer ``loss=prelar`` run with the pixel trunk: state-KL ratio and delta-PSNR."""
    body = _ratio_rows(record["prelar_2000_update_run"]["rows"], [])
    return _markdown(
        ["updates", "state KL ratio, seen / unseen", "delta-PSNR seen / unseen (dB)"], body
    )


def input_settings_table(record: dict) -> str:
    """The default job with one setting changed, evaluated by the job."""
    body = [
        [
            f"`{row['setting']}`" if row["setting"] else "(none: the default)",
            _pair(row["r2_seen"], row["r2_unseen"]),
            _pair(row["ratio_seen"], row["ratio_unseen"]),
            _pair(row["delta_psnr_seen"], row["delta_psnr_unseen"], _signed),
            f"{row['action_kl_train']:.3g}",
        ]
        for row in record["rows"]
    ]
    header = [
        "`SETTING`",
        "R^2 seen / unseen",
        "state KL ratio, seen / unseen",
        "delta-PSNR seen / unseen (dB)",
        "action KL (train)",
    ]
    return _markdown(header, body)


_SWEEP_LABELS = {
    "default": "default (`loss=prelar`, `embedding`)",
    "default_seed1": "default, `seed=1`",
    "paper": "`loss=paper`, `concat` (the paper's)",
    "prior2": "`loss=prelar_prior2`",
    "dim8": "8-d latent action (default 16)",
    "dim4": "4-d latent action",
    "discrete": "discrete code",
    "difference": "pixel trunk on frame differences",
}
#: The updates of ``docs/latent_actions.md``'s sweep table.
SWEEP_UPDATES = ("300", "1200", "3000")


#: The held-out figures the example logs (``LOGGED_FIGURES`` of each set), in the sweep's
#: table order (``experiments/latent_action_sweep.py``), and their headers.
SWEEP_FIGURES = (
    "probe_r2_seen",
    "probe_r2_unseen",
    "state_kl_shuffled_ratio_seen",
    "state_kl_shuffled_ratio_unseen",
    "delta_psnr_seen",
    "delta_psnr_unseen",
)
SWEEP_HEADERS = (
    "R^2 seen",
    "R^2 unseen",
    "KL ratio seen",
    "KL ratio unseen",
    "dPSNR seen",
    "dPSNR unseen",
)
#: Logged losses averaged into a table row's "loss" (the last ones up to its step).
LOSS_WINDOW = 10


def sweep_runs_table(report: dict) -> str:
    """The runs of ``experiments/latent_action_sweep.py``: one row per variant and evaluation
    step (of a report, or of its JSON, whose steps are strings)."""
    headers = [*SWEEP_HEADERS, f"loss (last {LOSS_WINDOW} logged)", "s / update"]
    lines = [
        "| variant | overrides | updates | " + " | ".join(headers) + " |",
        "|---" * (3 + len(headers)) + "|",
    ]
    for name, variant in report["variants"].items():
        steps = sorted({int(s) for f in variant["figures"].values() for s in f})
        per_update = variant.get("seconds_per_update")
        for step in steps:
            cells = []
            for figure in (*SWEEP_FIGURES, "loss"):
                values = {int(s): v for s, v in variant["figures"].get(figure, {}).items()}
                value = values.get(step)
                cells.append("-" if value is None else f"{value:.2f}")
            cells.append("-" if per_update is None else f"{per_update:.2f}")
            overrides = f"`{variant['overrides']}`" if variant["overrides"] else "(defaults)"
            lines.append(f"| {name} | {overrides} | {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


#: The held-out figures of the variants table (``experiments/latent_action_variants.py``),
#: each on the seen and unseen sets, with their headers.
VARIANT_FIGURES = {
    "probe_r2_motion": "hand R^2",
    "probe_r2_action_xyz": "action xyz R^2",
    "state_kl_shuffled_ratio": "KL ratio",
    "delta_psnr": "dPSNR",
}
VARIANT_SETS = ("seen", "unseen")


def variants_table(variants: dict) -> str:
    """The runs of ``experiments/latent_action_variants.py``: one row per variant, the
    :data:`VARIANT_FIGURES` on each held-out set."""
    headers = [f"{header} {name}" for header in VARIANT_FIGURES.values() for name in VARIANT_SETS]
    lines = [
        "| variant | overrides | updates | " + " | ".join(headers) + " |",
        "|---" * (3 + len(headers)) + "|",
    ]
    for name, variant in variants.items():
        results = variant["summary"].get("latent_actions", {})
        cells = []
        for figure in VARIANT_FIGURES:
            for held_out in VARIANT_SETS:
                value = results.get(held_out, {}).get(figure)
                cells.append("-" if value is None else f"{value:.2f}")
        overrides = f"`{variant['overrides']}`" if variant["overrides"] else "(defaults)"
        updates = variant["summary"].get("updates", "-")
        lines.append(f"| {name} | {overrides} | {updates} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def sweep_table(record: dict, updates: Sequence[str] = SWEEP_UPDATES) -> str:
    """The sweep (``experiments/latent_action_sweep.py``): seen / unseen R^2, state-KL ratio and
    delta-PSNR at ``updates``, one row per variant (``-``: the run stopped before)."""
    measures = (
        ("probe_r2", lambda value: f"{value:.2f}"),
        ("state_kl_shuffled_ratio", lambda value: f"{value:.2f}"),
        ("delta_psnr", _signed),
    )
    body = []
    for name, variant in record["variants"].items():
        figures = variant["figures"]
        cells = [
            _pair(figures[f"{key}_seen"].get(step), figures[f"{key}_unseen"].get(step), form)
            for key, form in measures
            for step in updates
        ]
        body.append([_SWEEP_LABELS.get(name, f"`{name}`"), *cells])
    header = ["variant"]
    for title in ("R^2", "KL ratio", "delta-PSNR (dB)"):
        header += [f"{title} at {updates[0]}", *updates[1:]]
    return _markdown(header, body)


def long_preset_table(record: dict) -> str:
    """``preset=long`` on the CPU, both objectives, at each evaluation kept."""
    body = []
    for objective in ("prelar_prior2", "prelar"):
        for row in record[objective]["rows"]:
            psnr = row.get("psnr_own_seen")
            body.append(
                [
                    f"`loss={objective}`",
                    row["updates"],
                    _pair(row["r2_seen"], row["r2_unseen"]),
                    _pair(row["ratio_seen"], row["ratio_unseen"]),
                    _pair(row["delta_psnr_seen"], row["delta_psnr_unseen"], _signed),
                    "-" if psnr is None else f"{psnr:.1f}",
                ]
            )
    header = [
        "objective",
        "updates",
        "R^2 seen / unseen",
        "KL ratio seen / unseen",
        "delta-PSNR seen / unseen (dB)",
        "PSNR own, seen (dB)",
    ]
    return _markdown(header, body)


def long_run_table(record: dict) -> str:
    """One whole ``preset=long`` run: each evaluation, then the bars against the last one."""
    body = [
        [
            row["updates"],
            _pair(row["motion_seen"], row["motion_unseen"]),
            _pair(row["r2_seen"], row["r2_unseen"]),
            _pair(row["ratio_seen"], row["ratio_unseen"], lambda value: f"{value:.1f}x"),
            _pair(row["delta_psnr_seen"], row["delta_psnr_unseen"], _signed),
        ]
        for row in record["rows"]
    ]
    header = [
        "updates",
        "hand displacement R^2 seen / unseen",
        "action R^2 seen / unseen",
        "state-KL ratio seen / unseen",
        "delta-PSNR seen / unseen (dB)",
    ]
    last, bars = record["rows"][-1], record["bars"]
    checks = [
        ("hand displacement R^2, seen tasks", last["motion_seen"], bars["motion_seen"]),
        ("hand displacement R^2, unseen tasks", last["motion_unseen"], bars["motion_unseen"]),
        ("state-KL ratio, seen tasks", last["ratio_seen"], bars["ratio"]),
        ("state-KL ratio, unseen tasks", last["ratio_unseen"], bars["ratio"]),
        ("delta-PSNR, seen tasks (dB)", last["delta_psnr_seen"], bars["delta_psnr"]),
        ("delta-PSNR, unseen tasks (dB)", last["delta_psnr_unseen"], bars["delta_psnr"]),
    ]
    verdicts = []
    for name, value, bar in checks:
        strict = bar == 0  # delta-PSNR must be positive, the others reach their bar
        met = value > bar if strict else value >= bar
        verdicts.append([name, f"{value:.2f}", f"{'>' if strict else '>='} {bar:g}", _verdict(met)])
    bars_header = [f"at {last['updates']} updates", "measured", "bar", "met"]
    return _markdown(header, body) + "\n" + _markdown(bars_header, verdicts)


#: The held-out figures a pre-training logs at each evaluation (``scalars/pretrain/<figure>_<set>``
#: of its CSV logger), by their key in a pre-training record's rows.
PRETRAIN_RUN_FIGURES = {
    "r2": "probe_r2",
    "motion": "probe_r2_motion",
    "ratio": "state_kl_shuffled_ratio",
    "delta_psnr": "delta_psnr",
}
#: The bars of docs/latent_actions.md at ``preset=long``.
LONG_BARS = {"motion_seen": 0.5, "motion_unseen": 0.4, "ratio": 1.5, "delta_psnr": 0.0}


def pretrain_run_record(run_dir: str | Path) -> dict[str, Any]:
    """The evaluations of one pre-training run folder as a record of ``docs/latent_actions/``:
    each evaluation's held-out figures from its CSV logs, the final evaluation and the wall
    time of the last invocation from ``summary.json``, and the command from Hydra's saved
    overrides.

    Example:
        >>> import tempfile
        >>> run = Path(tempfile.mkdtemp())
        >>> scalars = run / "csv" / "scalars" / "pretrain"
        >>> scalars.mkdir(parents=True)
        >>> for figure in PRETRAIN_RUN_FIGURES.values():
        ...     for name in ("seen", "unseen"):
        ...         _ = (scalars / f"{figure}_{name}.csv").write_text("500,0.25\\n1000,0.5\\n")
        >>> summary = {"pretrain": {"updates": 1000, "seconds_this_run": 60.0,
        ...                         "latent_actions": {"seen": {}, "unseen": {}}}}
        >>> _ = (run / "summary.json").write_text(json.dumps(summary))
        >>> record = pretrain_run_record(run)
        >>> [row["updates"] for row in record["rows"]], record["rows"][1]["motion_unseen"]
        ([500, 1000], 0.5)
    """
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())["pretrain"]
    series: dict[str, dict[int, float]] = {}
    for key, figure in PRETRAIN_RUN_FIGURES.items():
        for name in ("seen", "unseen"):
            found = sorted(run_dir.rglob(f"scalars/pretrain/{figure}_{name}.csv"))
            if not found:
                raise FileNotFoundError(
                    f"{run_dir} has no scalars/pretrain/{figure}_{name}.csv (csv logger)"
                )
            lines = found[0].read_text().split()
            series[f"{key}_{name}"] = {
                int(step): float(value) for step, value in (line.split(",") for line in lines)
            }
    steps = sorted(set.intersection(*(set(values) for values in series.values())))
    overrides = run_dir / "hydra" / "overrides.yaml"
    command = None
    if overrides.exists():
        import yaml

        arguments = [shlex.quote(item) for item in yaml.safe_load(overrides.read_text())]
        command = " ".join(["python examples/dreamer_prelar.py", *arguments])
    return {
        "provenance": "experiments/results_report.py --pretrain-run on the run folder: the "
        "evaluations from its csv logger (scalars/pretrain/*.csv), the end-of-run evaluation "
        "and the wall time of the last invocation from its summary.json",
        "command": command,
        "updates": summary["updates"],
        "seconds_last_invocation": summary["seconds_this_run"],
        "bars": dict(LONG_BARS),
        "rows": [
            {"updates": step, **{key: round(values[step], 4) for key, values in series.items()}}
            for step in steps
        ],
        "final": summary["latent_actions"],
    }


def long_reference_table(prelar: dict, reference: dict, bar: float = 0.7) -> str:
    """Hand-displacement R^2 of PreLAR's code against the supervised reference trained on the
    same data for the same updates, at each evaluation both records share.

    Example:
        >>> row = {"updates": 3000, "motion_seen": 0.35, "motion_unseen": 0.32}
        >>> ref = {"updates": 3000, "motion_seen": 0.5, "motion_unseen": 0.4}
        >>> long_reference_table({"rows": [row]}, {"rows": [ref]}).splitlines()[2]
        '| 3000 | 0.35 / 0.32 | 0.50 / 0.40 | 0.70x / 0.80x | yes / yes |'
    """
    references = {row["updates"]: row for row in reference["rows"]}
    body = []
    for row in prelar["rows"]:
        if row["updates"] not in references:
            continue
        ref = references[row["updates"]]
        ratios = [row[f"motion_{name}"] / ref[f"motion_{name}"] for name in ("seen", "unseen")]
        body.append(
            [
                row["updates"],
                _pair(row["motion_seen"], row["motion_unseen"]),
                _pair(ref["motion_seen"], ref["motion_unseen"]),
                _pair(*ratios, lambda value: f"{value:.2f}x"),
                " / ".join(_verdict(round(ratio, 2) >= bar) for ratio in ratios),
            ]
        )
    header = [
        "updates",
        "PreLAR's code, seen / unseen",
        "supervised reference, seen / unseen",
        "PreLAR / reference",
        f">= {bar:g}x",
    ]
    return _markdown(header, body)


def _spread(values: Sequence[float], digits: int, joiner: str = "-") -> str:
    """One value, or the range of several.

    Example:
        >>> _spread([0.9, 1.0, 0.93], 2), _spread([-0.11, -0.05], 2, " to "), _spread([5.0], 1)
        ('0.90-1.00', '-0.11 to -0.05', '5.0')
    """
    low, high = min(values), max(values)
    if low == high:
        return f"{low:.{digits}f}"
    return f"{low:.{digits}f}{joiner}{high:.{digits}f}"


def toy_grid_table(record: dict) -> str:
    """The grid-world toy (``experiments/latent_action_probe.py --toy grid``), one row per setting
    (its seeds' range where there are several)."""
    settings: dict[str, list[dict]] = {}
    for row in record["grid_world"]["rows"]:
        settings.setdefault(row["flags"], []).append(row)
    body = []
    for flags, rows in settings.items():
        steps = list(rows[0]["r2_move"])
        negative = min(row["r2_next_position"] for row in rows) < 0
        shuffled = [row["state_kl_shuffled"] for row in rows]
        body.append(
            [
                f"{rows[0]['setting']} (`{flags}`)" if flags else f"{rows[0]['setting']} (no flag)",
                len(rows),
                " / ".join(_spread([r["r2_move"][s] for r in rows], 2) for s in steps),
                _spread([r["r2_next_position"] for r in rows], 2, " to " if negative else "-"),
                f"{_spread([r['state_kl_own'] for r in rows], 2)} / "
                + _spread(shuffled, 2 if max(shuffled) < 10 else 1),
                _spread([r["action_kl"] for r in rows], 2),
            ]
        )
    steps = " / ".join(next(iter(settings.values()))[0]["r2_move"])
    header = [
        "setting (`FLAGS`)",
        "seeds",
        f"R^2 move at {steps} updates",
        "R^2 next position",
        "state KL own / shuffled",
        "action KL (nats)",
    ]
    return _markdown(header, body)


def latent_action_tables(results_dir: str | Path) -> dict[str, str]:
    """Every generated table of ``docs/latent_actions.md``, by section name, from the raw files
    of ``results_dir`` (``docs/latent_actions/``)."""
    results_dir = Path(results_dir)
    names = {name for files in LATENT_ACTION_TABLES.values() for name in files}
    raw = {name: json.loads((results_dir / name).read_text()) for name in sorted(names)}
    fresh = raw["default_job_656f7c0.json"]
    return {
        "table-default-job": default_job_table(
            [("", fresh), (", earlier run", raw["default_job_motion_probe.json"])]
        ),
        "table-render-quality": render_quality_runs_table(raw["render_quality.json"]),
        "table-probe-ceiling": probe_ceiling_table(raw["diagnosis.json"]),
        "table-supervised-reference": supervised_table(raw["supervised_reference.json"]),
        "table-code-content": code_content_table(raw["diagnosis.json"]),
        "table-objectives": objectives_table(raw["objectives_short_runs.json"]),
        "table-objectives-prelar-run": objectives_prelar_run_table(
            raw["objectives_short_runs.json"]
        ),
        "table-input-settings": input_settings_table(raw["quick_job_settings_cpu.json"]),
        "table-sweep": sweep_table(raw["sweep_h200.json"]),
        "table-long-preset": long_preset_table(raw["long_preset_cpu.json"]),
        "table-long-run": long_run_table(raw["long_prior2_24a9aeb.json"]),
        "table-long-reference": long_reference_table(
            raw["long_prior2_24a9aeb.json"], raw["long_supervised_displacement_1f666df.json"]
        ),
        "table-toy-grid": toy_grid_table(raw["toy_results.json"]),
    }


def write_latent_action_tables(docs: str | Path) -> Path:
    """Write every table of :func:`latent_action_tables` into ``docs/latent_actions.md``."""
    page = Path(docs) / "latent_actions.md"
    for name, body in latent_action_tables(Path(docs) / "latent_actions").items():
        generator = "experiments/results_report.py from " + ", ".join(LATENT_ACTION_TABLES[name])
        write_section(page, name, body, generator=generator)
    return page


def model_gap_pairs(results: dict, variant: str) -> list[tuple[str, str]]:
    """``prelar`` against every other arm of ``variant`` (the comparisons of the claim).

    Example:
        >>> rows = [{"arm": "prelar", "seeds": 3}, {"arm": "apv", "seeds": 3},
        ...         {"arm": "last observed frame (no model)", "seeds": None}]
        >>> model_gap_pairs({"variants": {"v": {"rows": rows}}}, "v")
        [('prelar', 'apv')]
    """
    arms = [row["arm"] for row in results["variants"][variant]["rows"] if row["seeds"]]
    return [("prelar", arm) for arm in arms if arm != "prelar"] if "prelar" in arms else []


def pretrain_seed_record(files: Sequence[str | Path], variant: str = "default") -> dict[str, Any]:
    """Combine model-gap results files, one per pre-training seed, into one record.

    Each file is ``experiments/model_gap.py``'s ``model_gap.json`` of one ``--out``, made with
    its own ``--pretrain-seed``. Per arm, the held-out PSNR (mean over the imagined steps and
    the fine-tuning seeds) of each pre-training; per pair of :func:`model_gap_pairs`, the
    difference per pre-training seed, its mean and sample std, and a paired t-test over the
    pre-training seeds (each seed's arms share its videos), so that n is the number of
    pre-trainings, not of fine-tuning runs.

    Raises:
        ValueError: if two files share a pre-training seed, or the files hold runs made with
            other settings.
    """
    import numpy as np
    from scipy.stats import ttest_1samp

    loaded = [(str(path), json.loads(Path(path).read_text())) for path in files]
    seeds = [results["settings"].get("pretrain_seed", 0) for _, results in loaded]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"the files share a pre-training seed (seeds {seeds}): {list(files)}")
    shared = [
        {k: v for k, v in results["settings"].items() if k != "pretrain_seed"}
        for _, results in loaded
    ]
    if any(settings != shared[0] for settings in shared):
        raise ValueError(f"the files hold runs made with other settings: {list(files)}")
    per_seed: dict[str, dict[int, dict[str, Any]]] = {}
    for seed, (_, results) in zip(seeds, loaded, strict=True):
        for row in results["variants"][variant]["rows"]:
            if row["seeds"]:
                per_seed.setdefault(row["arm"], {})[seed] = {
                    "finetune_seeds": row["seeds"],
                    "psnr_mean": _mean_over_steps(row)["mean"],
                }
    arms = {}
    for arm, by_seed in per_seed.items():
        values = np.array([entry["psnr_mean"] for entry in by_seed.values()])
        arms[arm] = {
            "per_pretraining": [{"pretrain_seed": k, **v} for k, v in sorted(by_seed.items())],
            "mean": round(float(values.mean()), 3),
            "std": round(float(values.std(ddof=1)), 3) if len(values) > 1 else None,
        }
    pairs = []
    rows = [{"arm": arm, "seeds": 1} for arm in per_seed]
    for first, second in model_gap_pairs({"variants": {variant: {"rows": rows}}}, variant):
        common = sorted(set(per_seed[first]) & set(per_seed[second]))
        differences = np.array(
            [per_seed[first][k]["psnr_mean"] - per_seed[second][k]["psnr_mean"] for k in common]
        )
        test = ttest_1samp(differences, 0.0) if len(differences) > 1 else None
        pairs.append(
            {
                "pair": [first, second],
                "pretrain_seeds": common,
                "differences": [round(float(d), 3) for d in differences],
                "mean": round(float(differences.mean()), 3),
                "std": round(float(differences.std(ddof=1)), 3) if test is not None else None,
                "paired_t": None if test is None else round(float(test.statistic), 3),
                "p": None if test is None else round(float(test.pvalue), 4),
            }
        )
    return {
        "what": (
            "Held-out PSNR (dB, mean over the imagined steps and the fine-tuning seeds) of "
            "the model-gap benchmark, one pre-training per arm and pre-training seed; "
            "differences paired by pre-training seed."
        ),
        "variant": variant,
        "sources": [path for path, _ in loaded],
        "settings": shared[0],
        "arms": arms,
        "pairs": pairs,
    }


def pretrain_seed_table(record: dict) -> str:
    """The tables of :func:`pretrain_seed_record`: each arm per pre-training seed, then the
    differences with their paired t-test over the pre-training seeds.

    Example:
        >>> record = {
        ...     "arms": {a: {"per_pretraining": [{"pretrain_seed": 0, "finetune_seeds": 3,
        ...                                       "psnr_mean": m}], "mean": m, "std": None}
        ...              for a, m in (("prelar", 25.0), ("apv", 24.5))},
        ...     "pairs": [{"pair": ["prelar", "apv"], "pretrain_seeds": [0],
        ...                "differences": [0.5], "mean": 0.5, "std": None,
        ...                "paired_t": None, "p": None}]}
        >>> print(pretrain_seed_table(record), end="")
        | arm | pre-training seed 0 | mean ± std |
        |---|---|---|
        | prelar | 25.00 | 25.00 |
        | apv | 24.50 | 24.50 |
        <BLANKLINE>
        | pair | difference per pre-training seed (dB) | mean ± std | paired t | p | n |
        |---|---|---|---|---|---|
        | prelar - apv | +0.50 | +0.50 | - | - | 1 |
    """
    seeds = sorted(
        {e["pretrain_seed"] for a in record["arms"].values() for e in a["per_pretraining"]}
    )
    body = []
    for arm, entry in record["arms"].items():
        by_seed = {e["pretrain_seed"]: e["psnr_mean"] for e in entry["per_pretraining"]}
        cells = [f"{by_seed[k]:.2f}" if k in by_seed else "-" for k in seeds]
        body.append([arm, *cells, _mean_std(entry, 2)])
    arms = _markdown(["arm", *(f"pre-training seed {k}" for k in seeds), "mean ± std"], body)
    body = []
    for pair in record["pairs"]:
        spread = "" if pair["std"] is None else f" ± {pair['std']:.2f}"
        body.append(
            [
                " - ".join(pair["pair"]),
                ", ".join(f"{d:+.2f}" for d in pair["differences"]),
                f"{pair['mean']:+.2f}{spread}",
                "-" if pair["paired_t"] is None else f"{pair['paired_t']:.2f}",
                "-" if pair["p"] is None else f"{pair['p']:.4f}",
                len(pair["differences"]),
            ]
        )
    header = ["pair", "difference per pre-training seed (dB)", "mean ± std", "paired t", "p", "n"]
    return arms + "\n" + _markdown(header, body)


def comparison_tables(results: dict) -> str:
    """The per-run and per-arm tables of a fine-tuning comparison, one after the other."""
    return comparison_runs_table(results) + "\n" + comparison_arms_table(results)


def show(results: dict) -> str:
    """The markdown tables of one driver's JSON: per variant the model-gap table and the
    differences of ``prelar`` with the other arms (:func:`model_gap_pairs`), or the tables of
    a fine-tuning comparison.

    Example:
        >>> row = {"arm": "a", "seeds": 1, "psnr_mean_1_3": {"mean": 25.0, "std": None}}
        >>> print(show({"variants": {"v": {"rows": [row]}}}), end="")
        ### v
        <BLANKLINE>
        | arm | seeds | PSNR, mean 1-3 |
        |---|---|---|
        | a | 1 | 25.00 |
    """
    if "variants" in results:
        parts = []
        for variant in results["variants"]:
            parts += [f"### {variant}\n", model_gap_table(results, variant)]
            pairs = model_gap_pairs(results, variant)
            if pairs:
                parts.append(model_gap_differences(results, variant, pairs))
        return "\n".join(parts)
    if isinstance(results.get("runs"), list):
        return comparison_tables(results)
    raise ValueError(
        "expected a model-gap JSON (with 'variants') or a fine-tuning comparison JSON (with a "
        f"list of 'runs'), got the keys {sorted(results)}"
    )


#: Line colours of the model-gap figure.
COLOURS = {
    "prelar": "tab:blue",
    "prelar_no_action_learning": "tab:purple",
    "apv": "tab:green",
    "dreamer": "tab:orange",
    "contextwm": "tab:red",
}


def model_gap_figure(results: dict, path: str | Path) -> Path:
    """Held-out PSNR per imagined step and the fine-tuning loss of every arm of a model-gap
    JSON with its ``runs`` (band: min-max over seeds), the last observed frame as a floor."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "runs" not in results:
        raise ValueError("the model-gap figure needs the 'runs' of experiments/model_gap.py")
    freeze = results["settings"]["freeze_updates"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for arm, seeds in results["runs"].items():
        colour = COLOURS.get(arm)
        psnr = np.array([run["psnr"] for run in seeds.values()])
        steps = np.arange(1, psnr.shape[1] + 1)
        left.plot(steps, psnr.mean(0), color=colour, marker="o", markersize=3, label=arm)
        left.fill_between(steps, psnr.min(0), psnr.max(0), color=colour, alpha=0.2, linewidth=0)
        loss = np.array([run["loss"] for run in seeds.values()])
        updates = np.arange(1, loss.shape[1] + 1)
        right.plot(updates, loss.mean(0), color=colour, label=arm)
        right.fill_between(updates, loss.min(0), loss.max(0), color=colour, alpha=0.2, lw=0)
    floor = results["last_frame"]["psnr"]
    left.plot(np.arange(1, len(floor) + 1), floor, color="grey", linestyle="--", label="last frame")
    left.set_xlabel("imagined step")
    left.set_ylabel("held-out PSNR (dB)")
    left.set_title("open loop from real actions (band: min-max over seeds)", fontsize=9)
    left.xaxis.get_major_locator().set_params(integer=True)
    right.axvline(
        freeze + 0.5, color="grey", linestyle=":", label=f"encoder + RSSM frozen to {freeze}"
    )
    right.set_yscale("log")
    right.set_xlabel("fine-tuning update")
    right.set_ylabel("world-model loss (train batches)")
    right.set_title("fine-tuning loss (band: min-max over seeds)", fontsize=9)
    for axis in (left, right):
        axis.legend(fontsize=7)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def renamed_paths(record: Any, renames: Mapping[str, str]) -> Any:
    """``record`` (a JSON value) with every string (object keys too) that starts with a key of
    ``renames``, or holds one after a space, ``=`` or ``:``, given the key's value instead (the
    longest key first, so a file can be renamed apart from its folder): how a results file
    written under a machine's scratch folder names its runs in the repository.

    Example:
        >>> renamed_paths({"run_dir": "/scratch/mw/s2", "command": "probe --run d=/scratch/mw/s2"},
        ...               {"/scratch/mw": "runs/metaworld"})
        {'run_dir': 'runs/metaworld/s2', 'command': 'probe --run d=runs/metaworld/s2'}
        >>> renamed_paths({"/scratch/mw/s2": [1]}, {"/scratch/mw": "runs/metaworld"})
        {'runs/metaworld/s2': [1]}
    """
    if isinstance(record, dict):
        return {
            renamed_paths(key, renames): renamed_paths(value, renames)
            for key, value in record.items()
        }
    if isinstance(record, list):
        return [renamed_paths(value, renames) for value in record]
    if isinstance(record, str):
        for old, new in sorted(renames.items(), key=lambda item: -len(item[0])):
            record = re.sub(rf"(^|[\s=:]){re.escape(old)}(?=/|$|\s)", rf"\g<1>{new}", record)
    return record


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read {path} as a JSON results file: {error}") from error


def publish(source: str | Path, dest: str | Path, renames: Mapping[str, str]) -> Path:
    """Copy the results file ``source`` to ``dest`` (under ``docs/results/``) with its paths
    renamed (:func:`renamed_paths`). A goal-probe file (with ``probes``) is merged into the
    probes ``dest`` already holds (``experiments/goal_probe.py``'s ``merge_probes``), any
    other file replaces ``dest``.

    Example:
        >>> publish("/scratch/mw/goal_probe.json", "docs/results/goal_probe_reach.json",
        ...         {"/scratch/mw": "runs/metaworld"})  # doctest: +SKIP
    """
    from goal_probe import merge_probes

    source, dest = Path(source), Path(dest)
    record = renamed_paths(_read_json(source), renames)
    if "probes" in record and dest.exists():
        earlier = _read_json(dest)
        if "probes" not in earlier:
            raise ValueError(f"{dest} holds no 'probes' to merge the goal probes of {source} with")
        record = {"probes": merge_probes(earlier["probes"], record["probes"])}
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(record, indent=1) + "\n")
    return dest


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--docs",
        default="docs",
        help="the folder of results.md, performance.md, latent_actions.md and their raw files",
    )
    parser.add_argument(
        "--benchmarks",
        default="benchmarks/results",
        help="the folder of the raw files of performance.md",
    )
    parser.add_argument(
        "--show", type=Path, help="print the tables of this JSON instead of writing the docs"
    )
    parser.add_argument("--figure", type=Path, help="with --show: draw the model-gap figure")
    parser.add_argument(
        "--pretrain-seeds",
        nargs="+",
        type=Path,
        metavar="MODEL_GAP_JSON",
        help="combine model-gap results files, one per pre-training seed, and print the tables",
    )
    parser.add_argument(
        "--write",
        type=Path,
        help="with --pretrain-seeds or --pretrain-run: also write the record here",
    )
    parser.add_argument("--variant", default="default", help="with --pretrain-seeds")
    parser.add_argument(
        "--pretrain-run",
        type=Path,
        metavar="RUN_DIR",
        help="the evaluations of a pre-training run folder as a record (with --write)",
    )
    parser.add_argument(
        "--publish",
        nargs=2,
        type=Path,
        metavar=("SOURCE", "DEST"),
        help="copy a results file into the docs' folder, its paths renamed by --rename "
        "(goal-probe files are merged into DEST's probes)",
    )
    parser.add_argument(
        "--rename",
        nargs="+",
        default=[],
        metavar="OLD=NEW",
        help="with --publish: path prefixes to rename, e.g. /work/exp/mw=runs/metaworld",
    )
    args = parser.parse_args(argv)
    if args.publish is not None:
        renames = dict(pair.split("=", 1) for pair in args.rename if "=" in pair)
        if len(renames) != len(args.rename):
            parser.error(f"--rename takes OLD=NEW pairs, got {args.rename}")
        try:
            print(publish(*args.publish, renames))
        except ValueError as error:
            parser.error(str(error))
        return
    if args.pretrain_run is not None:
        record = {**pretrain_run_record(args.pretrain_run), "machine": machine_description()}
        text = json.dumps(record, indent=1) + "\n"
        if args.write is not None:
            args.write.parent.mkdir(parents=True, exist_ok=True)
            args.write.write_text(text)
        print(text, end="")
        return
    if args.pretrain_seeds:
        record = pretrain_seed_record(args.pretrain_seeds, args.variant)
        if args.write is not None:
            args.write.parent.mkdir(parents=True, exist_ok=True)
            args.write.write_text(json.dumps(record, indent=1) + "\n")
        print(pretrain_seed_table(record), end="")
        return
    if args.show is None:
        print(write_results_tables(args.docs))
        print(write_performance_tables(args.docs, args.benchmarks))
        print(write_latent_action_tables(args.docs))
        return
    results = json.loads(args.show.read_text())
    print(show(results), end="")
    if args.figure is not None:
        print(model_gap_figure(results, args.figure))


if __name__ == "__main__":
    main()
