"""experiments/latent_action_variants.py: variants and the supervised references through the
example, each run's summary gathered into one JSON."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from results_report import variants_table

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def load_script(monkeypatch):
    monkeypatch.syspath_prepend(str(EXPERIMENTS))  # as when run: its folder is on the path
    spec = importlib.util.spec_from_file_location(
        "latent_action_variants", EXPERIMENTS / "latent_action_variants.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_variants_and_references_run_through_the_example(tmp_path, monkeypatch):
    module = load_script(monkeypatch)
    out = tmp_path / "out"
    argv = ["--out", str(out), "--data", str(tmp_path / "data"), "--jobs", "2", "--references"]
    argv += ["--variant", "paper", "loss=paper", "--common", "preset=test", "threads=1"]
    report = module.main(argv)

    names = ["paper", "supervised_action", "supervised_displacement"]
    assert list(report["variants"]) == names
    for name in names:
        variant = report["variants"][name]
        assert variant["returncode"] == 0, (out / name / "sweep_stdout.log").read_text()[-2000:]
        # The gathered figures are the run's own summary (and its latent_actions.json).
        summary = json.loads((out / name / "summary.json").read_text())["pretrain"]
        assert variant["summary"] == summary and summary["updates"] == 6
        final = json.loads((out / name / "latent_actions.json").read_text())
        assert (
            summary["latent_actions"]["unseen"]["probe_r2_motion"]
            == final["unseen"]["probe_r2_motion"]
        )
    assert (
        "loss_supervised"
        in report["variants"]["supervised_displacement"]["summary"]["last_metrics"]
    )
    assert "action_kl" in report["variants"]["paper"]["summary"]["last_metrics"]
    config = (out / "supervised_displacement" / "hydra" / "config.yaml").read_text()
    assert "target: true_state_change" in config

    assert json.loads((out / "variants.json").read_text()) == report
    rows = variants_table(report["variants"]).splitlines()[2:]
    assert [row.split("|")[1].strip() for row in rows] == names
    motion = report["variants"]["paper"]["summary"]["latent_actions"]["seen"]["probe_r2_motion"]
    assert rows[0].split("|")[4].strip() == f"{motion:.2f}"  # hand R^2 seen


def test_references_keep_variant_names_distinct(tmp_path, monkeypatch, capsys):
    module = load_script(monkeypatch)
    argv = ["--out", str(tmp_path), "--data", str(tmp_path), "--references"]
    with pytest.raises(SystemExit):
        module.main([*argv, "--variant", "supervised_action", ""])
    assert "must differ" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        module.main(["--out", str(tmp_path), "--data", str(tmp_path)])
    assert "at least one --variant" in capsys.readouterr().err
