import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from anchor_curves import anchor_bar, bootstrap_interval, difference_interval, main
from dreamer_prelar import run_finetune
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from results_report import anchor_table

REPO = Path(__file__).resolve().parents[1]


def finetune(run_dir: Path, seed: int) -> dict:
    with initialize_config_dir(str(REPO / "examples" / "config"), version_base=None):
        config = compose(
            "config",
            overrides=[
                "preset=test",
                "arm=dreamer",
                f"run_dir={run_dir}",
                f"seed={seed}",
                "finetune.eval_every=50",
                "finetune.eval_episodes=3",
                "finetune.env_steps=100",
            ],
        )
    return run_finetune(OmegaConf.to_container(config, resolve=True))


def test_bootstrap_interval_holds_the_mean_and_widens_with_spread():
    mean, low, high = bootstrap_interval([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    assert mean == pytest.approx(2 / 6)
    assert low < mean < high and low >= 0 and high <= 1
    assert bootstrap_interval([[0.5, 0.5], [0.5]]) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="no episode"):
        bootstrap_interval([[], []])


def test_report_of_two_seeds_against_the_published_curve(tmp_path):
    runs = [tmp_path / f"dreamer_seed{seed}" for seed in (0, 1)]
    summaries = [finetune(run, seed) for seed, run in enumerate(runs)]
    out = tmp_path / "report" / "reach"
    main(["--run", f"dreamer={runs[0]}", "--run", f"dreamer={runs[1]}", "--out", str(out)])
    report = json.loads(out.with_suffix(".json").read_text())
    assert out.with_suffix(".png").stat().st_size > 10_000
    points = report["arms"]["dreamer"]["points"]
    assert [p["env_steps"] for p in points] == [50, 100]
    for point in points:
        assert (point["seeds"], point["episodes"]) == (2, 6)
        returns = [
            e["episode_returns"]
            for s in summaries
            for e in s["evaluations"]
            if e["env_steps"] == point["env_steps"]
        ]
        assert point["return"]["mean"] == pytest.approx(np.mean(returns))
        assert point["return"]["low"] <= point["return"]["mean"] <= point["return"]["high"]
    assert report["published"]["points"]["35000"]["mean"] == pytest.approx(0.3375)
    # Training episodes, from each run's CSV log: one per 50-step episode, as logged.
    for run in runs:
        episodes = report["arms"]["dreamer"]["training_episodes"][str(run)]
        assert [e["env_steps"] for e in episodes] == [50, 100]
        logged = (run / "csv").rglob("scalars/finetune/train_return.csv")
        rows = [line.split(",") for line in next(logged).read_text().split()]
        assert [e["return"] for e in episodes] == pytest.approx([float(v) for _, v in rows])
        assert all(e["success"] in (0.0, 1.0) for e in episodes)
    assert report["differences"] == {} and report["anchor_bar"] is None  # 35k not reached

    # Two labels: the other one against the baseline, per env step, with its interval.
    out = tmp_path / "report" / "two_labels"
    main(["--run", f"dreamer={runs[0]}", "--run", f"other={runs[1]}", "--out", str(out)])
    two_labels = json.loads(out.with_suffix(".json").read_text())
    table = anchor_table(two_labels)  # what docs/results.md shows
    assert "| dreamer | 50 | 1 x 3 |" in table and "| other | 100 | 1 x 3 |" in table
    assert table.count("| other | ") == 4 and table.endswith("not reached yet.\n")
    rows = two_labels["differences"]["other"]
    assert [row["env_steps"] for row in rows] == [50, 100]
    for row in rows:
        first, second = (
            [e["episode_returns"] for e in s["evaluations"] if e["env_steps"] == row["env_steps"]]
            for s in (summaries[1], summaries[0])
        )
        difference = row["return"]
        assert difference["mean"] == pytest.approx(np.mean(first) - np.mean(second))
        assert difference["low"] <= difference["mean"] <= difference["high"]


def test_difference_interval_is_the_difference_of_means_and_widens_with_spread():
    assert difference_interval([[1.0, 1.0], [1.0]], [[0.0], [0.0, 0.0]]) == (1.0, 1.0, 1.0)
    first, second = [[1.0, 0.0, 1.0, 1.0], [0.0, 1.0]], [[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    mean, low, high = difference_interval(first, second)
    assert mean == pytest.approx(4 / 6 - 1 / 6)
    assert -1 <= low < mean < high <= 1


def _summary(seed_successes: list[float], step: int = 35000) -> dict:
    return {
        "dreamer": {
            "points": [
                {
                    "env_steps": step,
                    "seed_success": seed_successes,
                    "success": {"mean": float(np.mean(seed_successes))},
                }
            ]
        }
    }


def test_anchor_bar_asks_every_seed_at_least_0_1_and_a_mean_of_0_25():
    assert anchor_bar(_summary([0.1, 0.4]), "dreamer")["met"]
    assert not anchor_bar(_summary([0.05, 0.9]), "dreamer")["met"]  # one seed below 0.1
    assert not anchor_bar(_summary([0.2, 0.25]), "dreamer")["met"]  # mean below 0.25
    assert anchor_bar(_summary([0.5, 0.5], step=30000), "dreamer") is None
    assert anchor_bar(_summary([0.5, 0.5]), "prelar") is None


def test_report_refuses_a_malformed_run_argument(tmp_path):
    with pytest.raises(SystemExit, match="LABEL=RUN_DIR"):
        main(["--run", "dreamer", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="no folder"):
        main(["--run", f"dreamer={tmp_path / 'missing'}", "--out", str(tmp_path / "x")])


def test_gpu_protocol_script_runs_reports_and_resumes_on_the_cpu(tmp_path):
    """``scripts/metaworld_runs.sh``: the runs, then the report; run again, nothing re-runs."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "metaworld_runs.sh"
    out = tmp_path / "mw"
    env = {
        **os.environ,
        "DEVICE": "cpu",
        "PRESET": "test",
        "ENV_STEPS": "100",
        "SEEDS": "0",
        "OUT": str(out),
        "THREADS": "1",
    }
    subprocess.run(["bash", str(script)], env=env, check=True, capture_output=True)
    report = json.loads((out / "reach.json").read_text())
    run = str(out / "dreamer_seed0")
    assert [p["env_steps"] for p in report["arms"]["dreamer"]["runs"][run]] == [100]
    assert (out / "reach.png").stat().st_size > 10_000
    summary = (out / "dreamer_seed0" / "summary.json").read_text()

    subprocess.run(["bash", str(script)], env=env, check=True, capture_output=True)
    again = json.loads((out / "dreamer_seed0" / "summary.json").read_text())["finetune"]
    first = json.loads(summary)["finetune"]
    for key in ("env_steps", "updates", "episodes", "evaluations"):
        assert again[key] == first[key], key  # resumed at its end: nothing collected or trained
