"""experiments/latent_action_sweep.py: variants side by side on shared data, figures gathered."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from results_report import SWEEP_FIGURES, sweep_runs_table

SCRIPT = Path(__file__).resolve().parent.parent / "experiments" / "latent_action_sweep.py"


def load_script():
    spec = importlib.util.spec_from_file_location("latent_action_sweep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sweep_runs_variants_and_gathers_their_held_out_figures(tmp_path):
    module = load_script()
    out, data = tmp_path / "out", tmp_path / "data"
    common = ["preset=test", "threads=1"]
    argv = ["--out", str(out), "--data", str(data), "--jobs", "2", "--common", *common]
    argv += ["--variant", "default", "", "--variant", "paper", "loss=paper loss.beta_action=2"]
    report = module.main(argv)

    # Each variant is the example's own pre-training in its folder, with its overrides.
    for name in ("default", "paper"):
        variant = report["variants"][name]
        assert variant["returncode"] == 0 and not variant["stopped_by_max_seconds"]
        assert variant["last_logged_update"] == 6
        assert set(variant["figures"]) == {*SWEEP_FIGURES, "loss"}
        assert all(set(values) == {3, 6} for values in variant["figures"].values())
        assert (out / name / "pretrained_world_model.pt").exists()
    config = (out / "paper" / "hydra" / "config.yaml").read_text()
    assert "beta_action: 2" in config and str(data / "heldout") in config
    # The figures are those the example logged at the end (its latent_actions.json).
    final = json.loads((out / "default" / "latent_actions.json").read_text())
    figures = report["variants"]["default"]["figures"]
    assert figures["probe_r2_seen"][6] == pytest.approx(final["seen"]["probe_r2"])
    assert figures["delta_psnr_unseen"][6] == pytest.approx(final["unseen"]["delta_psnr"])

    # "loss": the mean of the logged losses up to the step (all six here, fewer than the window).
    logged = np.loadtxt(next((out / "default" / "csv").rglob("pretrain/loss.csv")), delimiter=",")
    assert figures["loss"][6] == pytest.approx(logged[logged[:, 0] <= 6, 1][-10:].mean())
    assert figures["loss"][3] == pytest.approx(logged[logged[:, 0] <= 3, 1].mean())

    saved = json.loads((out / "sweep.json").read_text())
    assert saved["variants"].keys() == {"default", "paper"}
    assert sweep_runs_table(saved) == sweep_runs_table(report)  # the JSON's steps are strings
    rows = [line for line in (out / "sweep.md").read_text().splitlines()[2:] if line]
    assert [row.split("|")[1].strip() for row in rows] == ["default"] * 2 + ["paper"] * 2
    cells = [cell.strip() for cell in rows[1].strip("|").split("|")]
    assert float(cells[-2]) == pytest.approx(figures["loss"][6], abs=0.005)
    per_update = report["variants"]["default"]["seconds_per_update"]
    assert float(cells[-1]) == pytest.approx(per_update, abs=0.005)  # printed with 2 decimals
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_sweep_stops_a_variant_at_max_seconds_and_keeps_what_it_logged(tmp_path):
    module = load_script()
    out = tmp_path / "out"
    argv = ["--out", str(out), "--data", str(tmp_path / "data"), "--max-seconds", "12"]
    argv += ["--common", "preset=test", "threads=1", "pretrain.updates=100000"]
    argv += ["evaluation.probe_every=4", "--variant", "long", ""]
    variant = module.main(argv)["variants"]["long"]
    assert variant["stopped_by_max_seconds"] and variant["returncode"] != 0
    assert variant["last_logged_update"] > 0 and variant["seconds_per_update"] > 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--variant", "a", "", "--variant", "a", "seed=1"], "must differ"),
        (["--variant", "a", "seed"], "is not key=value"),
        (["--variant", "a", "run_dir=/x"], "set by this script"),
        (["--variant", "a/b", ""], "non-empty folder name"),
    ],
)
def test_sweep_refuses_bad_variants(tmp_path, argv, message, capsys):
    module = load_script()
    with pytest.raises(SystemExit):
        module.parse_args(["--out", str(tmp_path), "--data", str(tmp_path), *argv])
    assert message in capsys.readouterr().err
