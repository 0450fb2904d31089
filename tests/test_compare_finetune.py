"""experiments/compare_finetune.py end to end on the `test` preset at its smallest settings."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import WORLD_MODELS
from results_report import show

from torchrl_prelar.io import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "experiments" / "compare_finetune.py"
# 40 env steps: 20 of random prefill, then one update per 5 steps from step 20 (5 updates);
# evaluations of one 20-step episode at 20 and 40 env steps.
TINY = [
    "finetune.env_steps=40",
    "finetune.prefill=20",
    "finetune.update_every=5",
    "finetune.batch_size=2",
    "finetune.batch_length=10",
    "finetune.max_episode_steps=20",
    "finetune.eval_every=20",
    "finetune.eval_episodes=1",
    "finetune.log_every=1",
    "finetune.checkpoint_every=40",
    "threads=1",
]


def load_script():
    spec = importlib.util.spec_from_file_location("compare_finetune", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("pretrain") / "run"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "dreamer_prelar.py"),
            "stage=pretrain",
            "preset=test",
            "threads=1",
            f"run_dir={run_dir}",
        ],
        env={**os.environ, "MUJOCO_GL": "egl"},
        cwd=run_dir.parent,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir / "pretrained_world_model.pt"


def last_logged(run_dir: Path, name: str) -> float:
    """The last value of a CSV scalar, read without the library's reader."""
    (path,) = run_dir.glob(f"csv/**/{name}.csv")
    return float(path.read_text().strip().splitlines()[-1].split(",")[1])


def test_compare_runs_both_arms_writes_json_and_resumes(pretrained, tmp_path, monkeypatch):
    out = tmp_path / "runs"
    argv = ["--pretrained", str(pretrained), "--out", str(out), "--seeds", "0", "1"]
    argv += ["--preset", "test", *TINY]
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *argv],
        env={**os.environ, "MUJOCO_GL": "egl"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    print(result.stdout[-3000:], result.stderr[-3000:])  # shown if a check below fails
    assert result.returncode == 0, result.stderr[-3000:]

    # One run folder per arm and seed, each a finished 40-step fine-tuning of the tiny model.
    stored = json.loads(json.dumps(load_checkpoint(pretrained)["world_model_kwargs"]))
    for arm in ("prelar", "dreamer"):
        for seed in (0, 1):
            run_dir = out / f"{arm}_seed{seed}"
            summary = json.loads((run_dir / "summary.json").read_text())["finetune"]
            assert summary["init"] == arm and summary["env_steps"] == 40
            assert summary["updates"] == 5
            cfg = json.loads((run_dir / "compare_config.json").read_text())
            assert cfg["seed"] == seed and cfg["world_model"] == stored
            assert (cfg["finetune"]["pretrained"] is not None) == (arm == "prelar")

    # The summary: one record per run, from the run's own summary and logs.
    path = out / "comparison.json"
    results = json.loads(path.read_text())
    assert "experiments/compare_finetune.py --pretrained" in results["commands"][0]
    assert "torch " in results["machine"] and results["eval_episodes"] == 1
    assert results["settings"]["env_steps"] == 40 and results["settings"]["task"] == "reach-v3"
    runs = results["runs"]
    assert [(run["arm"], run["seed"]) for run in runs] == [
        ("prelar", 0),
        ("dreamer", 0),
        ("prelar", 1),
        ("dreamer", 1),
    ]
    for run in runs:
        run_dir = out / f"{run['arm']}_seed{run['seed']}"
        evaluations = json.loads((run_dir / "summary.json").read_text())["finetune"]["evaluations"]
        assert (run["env_steps"], run["updates"]) == (40, 5)
        assert sorted(run["eval_success"], key=int) == ["20", "40"]
        assert run["last_eval_return"] == evaluations[-1]["eval_return"]
        assert run["final_wm_loss"] == pytest.approx(
            last_logged(run_dir, "world_model_loss"), rel=1e-6
        )
        assert run["wall_s"] > 0
    assert "| prelar | 0 | 5 |" in show(results) and "| dreamer | 2 |" in show(results)

    # A second invocation skips every finished run (it must not fine-tune again) and
    # writes the same runs.
    module = load_script()

    def no_run(cfg):
        raise AssertionError(f"finished run {cfg['run_dir']} was run again")

    monkeypatch.setattr("dreamer_prelar.run_finetune", no_run)
    path.unlink()
    assert module.main(argv) == path
    assert json.loads(path.read_text())["runs"] == runs

    # Changing a setting other than env_steps for the same folder is refused.
    with pytest.raises(ValueError, match="another configuration"):
        module.main([*argv, "finetune.batch_size=3"])

    # A run started before a setting existed is still the same run while that setting is
    # left unset (None); a per-invocation wall-clock limit does not change it either.
    saved = out / "prelar_seed0" / "compare_config.json"
    cfg = json.loads(saved.read_text())
    del cfg["finetune"]["max_seconds"]
    saved.write_text(json.dumps(cfg))
    module.main([*argv, "finetune.max_seconds=600"])
    with pytest.raises(ValueError, match="another configuration"):
        module.main([*argv, "finetune.max_seconds=600", "finetune.batch_size=3"])

    # --collect-only runs nothing (run_finetune is still the failing stand-in) and summarises
    # the finished runs of arms x seeds: not the unfinished dreamer seed 1, nor those never run.
    summary_path = out / "dreamer_seed1" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["finetune"]["env_steps"] = 20
    summary_path.write_text(json.dumps(summary))
    collect_argv = ["--out", str(out), "--collect-only"]
    collect_argv += ["--arms", "prelar", "dreamer", "apv", "--seeds", "0", "1", "2"]
    assert module.main(collect_argv) == path
    collected = json.loads(path.read_text())["runs"]
    assert collected == [run for run in runs if (run["arm"], run["seed"]) != ("dreamer", 1)]
    with pytest.raises(SystemExit, match="no finished run"):
        module.main([*collect_argv[:3], "--arms", "apv"])


def test_apv_arm_needs_its_action_free_checkpoint(tmp_path, capsys):
    module = load_script()
    with pytest.raises(SystemExit):
        module.parse_args(["--out", str(tmp_path), "--arms", "dreamer", "apv"])
    assert "--apv-pretrained is required" in capsys.readouterr().err
    checkpoint = tmp_path / "apv.pt"
    checkpoint.write_bytes(b"")
    args = module.parse_args(
        ["--out", str(tmp_path), "--arms", "dreamer", "apv", "--apv-pretrained", str(checkpoint)]
    )
    cfg = module.run_config(args, "apv", 0, WORLD_MODELS["tiny"])
    assert cfg["finetune"]["init"] == "apv"
    assert cfg["finetune"]["pretrained"] == str(checkpoint.resolve())
    assert module.run_config(args, "dreamer", 0, None)["finetune"]["pretrained"] is None
