import json
from pathlib import Path

import numpy as np
import pytest
import torch
from dreamer_prelar import run_finetune
from goal_probe import main, probe, random_action_episodes
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]


def test_probe_reads_a_linear_target_and_not_an_unrelated_one():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(160, 12, generator=generator)
    groups = np.repeat(np.arange(80), 2)  # two rows per goal, never split apart
    linear = (features @ torch.randn(12, 3, generator=generator)).numpy()
    unrelated = np.random.default_rng(0).normal(size=(80, 3)).repeat(2, axis=0)

    read = probe(features, linear, groups, splits=3)
    missed = probe(features, unrelated, groups, splits=3)

    assert read["mean"] > 0.99 and len(read["per_coordinate"]) == 3
    assert missed["mean"] < 0.1
    assert missed["train_mean_r2"] <= 0.0 and missed["mean"] == pytest.approx(
        missed["train_mean_r2"], abs=0.1
    )
    assert len(missed["ridges_chosen"]) == 3


def test_episodes_hold_each_reset_goal_and_the_hand_moves():
    data = random_action_episodes(
        "reach-v3", episodes=4, steps=3, image_size=32, camera="corner", render_quality="fast"
    )

    assert data["frames"].shape == (4, 4, 3, 32, 32) and data["frames"].dtype == np.uint8
    assert data["actions"].shape == (4, 3, 4)
    assert np.abs(data["actions"]).max() <= 1.0
    assert len(np.unique(data["goal"].round(5), axis=0)) > 1
    assert not np.array_equal(data["frames"][:, 0], data["frames"][:, -1])


def finetune_run(run_dir: Path) -> None:
    """A seconds-long fine-tuning run, its configuration where the command line writes it."""
    with initialize_config_dir(str(REPO / "examples" / "config"), version_base=None):
        config = compose(
            "config",
            overrides=["preset=test", "arm=dreamer", f"run_dir={run_dir}", "finetune.env_steps=60"],
        )
    (run_dir / "hydra").mkdir(parents=True)
    OmegaConf.save(config, run_dir / "hydra" / "config.yaml")
    run_finetune(OmegaConf.to_container(config, resolve=True))


def test_goal_probe_of_a_run_writes_each_target_r2_and_appends(tmp_path):
    run_dir = tmp_path / "dreamer_seed0"
    finetune_run(run_dir)
    out = tmp_path / "goal_probe.json"
    argv = ["--run", f"dreamer={run_dir}", "--episodes", "8", "--steps", "2", "--splits", "2"]

    report = main([*argv, "--out", str(out)])

    (run,) = report["runs"]
    assert run["label"] == "dreamer" and run["env_steps"] >= 60
    assert run["task"] == "reach-v3" and run["distinct_goals"] > 1
    for target in ("goal_r2", "hand_r2"):
        assert len(run[target]["per_coordinate"]) == 3
        assert np.isfinite(run[target]["mean"])
    assert "goal_probe.py" in report["command"]
    assert json.loads(out.read_text()) == {"probes": [report]}

    main([*argv, "--out", str(out), "--append"])
    assert len(json.loads(out.read_text())["probes"]) == 2
    main([*argv, "--out", str(out)])
    assert len(json.loads(out.read_text())["probes"]) == 1


def test_a_run_without_its_configuration_is_named(tmp_path):
    run_dir = tmp_path / "copied_run"
    run_dir.mkdir()
    with pytest.raises(SystemExit, match="copied_run: no hydra/config.yaml"):
        main(["--run", f"dreamer={run_dir}", "--out", str(tmp_path / "out.json")])
