"""experiments/compare_finetune.py end to end on the `test` preset at its smallest settings."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import WORLD_MODELS

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


def table_rows(text, heading):
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("|") and not line.startswith("|---")
    ][1:]


def test_compare_runs_both_arms_writes_report_and_resumes(pretrained, tmp_path, monkeypatch):
    out, docs = tmp_path / "runs", tmp_path / "docs"
    argv = ["--pretrained", str(pretrained), "--out", str(out), "--seeds", "0", "1"]
    argv += ["--preset", "test", "--docs", str(docs), *TINY]
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

    image = docs / "results" / "finetune_comparison.png"
    assert image.read_bytes()[:4] == b"\x89PNG" and image.stat().st_size > 5000
    text = (docs / "results.md").read_text()
    assert "(results/finetune_comparison.png)" in text
    assert "experiments/compare_finetune.py --pretrained" in text
    assert "finetune.env_steps=40" in text
    assert "Machine:" in text and "torch " in text and "Wall time:" in text

    number = re.compile(r"^-?\d+\.\d+( ± \d+\.\d+)?$")
    per_arm = table_rows(text, "## Per arm")
    assert [row[0] for row in per_arm] == ["prelar", "dreamer"]
    for row in per_arm:
        assert row[1] == "0, 1"
        assert len(row) == 7  # first, final, last-5 loss + success at 20 and 40 env steps
        assert all(number.match(cell) and "±" in cell for cell in row[2:]), row
    per_run = table_rows(text, "## Per run")
    assert [(row[0], row[1]) for row in per_run] == [
        ("prelar", "0"),
        ("prelar", "1"),
        ("dreamer", "0"),
        ("dreamer", "1"),
    ]
    for row in per_run:
        assert row[2] == "40" and row[3] == "5"
        assert number.match(row[4]), row
        assert re.fullmatch(r"20: [01]\.\d\d, 40: [01]\.\d\d", row[5]), row
        assert float(row[7]) > 0

    # A second invocation skips every finished run (it must not fine-tune again) and
    # rewrites the report.
    module = load_script()

    def no_run(cfg):
        raise AssertionError(f"finished run {cfg['run_dir']} was run again")

    monkeypatch.setattr("dreamer_prelar.run_finetune", no_run)
    (docs / "results.md").unlink()
    assert module.main(argv) == docs / "results.md"
    assert table_rows((docs / "results.md").read_text(), "## Per run") == per_run

    # --section writes the same report as a marked section, one heading level down, and
    # leaves the rest of the page as it was.
    page = (docs / "results.md").read_text()
    module.main([*argv, "--section", "tiny_run"])
    text = (docs / "results.md").read_text()
    assert text.startswith(page.rstrip("\n"))
    section = text[len(page.rstrip("\n")) :]
    assert "<!-- tiny_run:start (generated by experiments/compare_finetune.py) -->" in section
    assert "\n### Per run" in section and "(results/finetune_tiny_run.png)" in section
    assert table_rows(section, "### Per run") == per_run
    assert (docs / "results" / "finetune_tiny_run.png").read_bytes()[:4] == b"\x89PNG"

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

    # Without --docs the runs are checked (and resumed) but no page is written.
    (docs / "results.md").unlink()
    assert module.main([a for a in argv if a not in ("--docs", str(docs))]) is None
    assert not (docs / "results.md").exists()

    # --report-only runs nothing (run_finetune is still the failing stand-in) and reports the
    # finished runs of arms x seeds: not the unfinished dreamer seed 1, nor those never run.
    summary_path = out / "dreamer_seed1" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["finetune"]["env_steps"] = 20
    summary_path.write_text(json.dumps(summary))
    report_argv = ["--out", str(out), "--docs", str(docs), "--report-only"]
    report_argv += ["--arms", "prelar", "dreamer", "apv", "--seeds", "0", "1", "2"]
    assert module.main(report_argv) == docs / "results.md"
    rows = table_rows((docs / "results.md").read_text(), "## Per run")
    assert [(row[0], row[1]) for row in rows] == [
        ("prelar", "0"),
        ("prelar", "1"),
        ("dreamer", "0"),
    ]
    assert rows == [row for row in per_run if (row[0], row[1]) != ("dreamer", "1")]
    with pytest.raises(SystemExit, match="no finished run"):
        module.main([*report_argv[:5], "--arms", "apv"])
    with pytest.raises(SystemExit):
        module.parse_args(["--out", str(out), "--report-only"])


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
