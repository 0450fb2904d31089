"""experiments/latent_action_probe.py: the synthetic toys through the example's pre-training."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from torchrl_prelar.data.synthetic import grid_square_batch, toy_batch, toy_episodes
from torchrl_prelar.evaluation.held_out import HeldOutConfig, generate_held_out_sets
from torchrl_prelar.evaluation.latent_actions import load_episodes

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "latent_action_probe.py"


def load_script():
    spec = importlib.util.spec_from_file_location("latent_action_probe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_grid_toy_episodes_carry_moves_and_the_squares_corner():
    settings = {"toy": "grid", "image_size": 16, "square": 8, "cell": 4}
    episode = toy_episodes(1, 6, seed=3, **settings)[0]
    batch = toy_batch(1, 6, generator=torch.Generator().manual_seed(3), **settings)
    torch.testing.assert_close(
        batch,
        grid_square_batch(
            1, 6, generator=torch.Generator().manual_seed(3), image_size=16, square=8, cell=4
        ),
    )
    assert episode.frames.shape == (7, 16, 16, 3)
    np.testing.assert_array_equal(episode.actions[1:], batch["true_action"][0].numpy())
    # the state's change is the move in pixels: a cell per unit of the hidden action
    np.testing.assert_array_equal(np.diff(episode.states, axis=0), 4 * episode.actions[1:])
    with pytest.raises(ValueError, match="toy must be one of"):
        toy_batch(1, 2, toy="disc")


def test_held_out_sets_of_the_grid_toy(tmp_path):
    toy = {"toy": "grid", "image_size": 16, "square": 8, "cell": 4}
    config = HeldOutConfig(seen_episodes=2, unseen_episodes=3, episode_length=8)
    folders = generate_held_out_sets(tmp_path, config, synthetic=True, toy=toy)
    seen, unseen = (load_episodes(folders[name], image_size=16) for name in ("seen", "unseen"))
    assert len(seen) == 2 and len(unseen) == 3
    assert all(e.frames.shape == (9, 16, 16, 3) and e.states.shape == (9, 2) for e in seen)
    assert seen[0].name.startswith("synthetic-grid_1000_")


def test_options_become_the_examples_overrides():
    module = load_script()
    args = module.parse_args(
        ["--toy", "grid", "--lr", "0.01", "--invariant", "--mean-latent-action"]
        + ["--latent-action", "dim=2", "--run-dir", "out", "seed=4"]
    )
    overrides = module.overrides_of(args)
    assert overrides[-1] == "run_dir=out" and "seed=4" in overrides
    assert "world_model.image_size=16" in overrides and "data.synthetic.image_size=16" in overrides
    assert set(module.SMALL_FRAMES) <= set(overrides)
    # an option comes after the toy's setting of the same key: Hydra keeps the last one
    assert overrides.index("pretrain.lr=0.01") > overrides.index("pretrain.lr=2e-3")
    assert "world_model.latent_action.trunk.padding=circular" in overrides
    assert "loss.sample_latent_action=false" in overrides
    assert "world_model.latent_action.dim=2" in overrides
    square = module.overrides_of(module.parse_args([]))
    assert "world_model.image_size=64" in square and not set(module.SMALL_FRAMES) & set(square)


def test_grid_toy_pretrains_through_the_example_and_is_probed(tmp_path):
    module = load_script()
    run_dir = tmp_path / "grid"
    argv = ["--toy", "grid", "--updates", "4", "--probe-every", "2", "--run-dir", str(run_dir)]
    argv += ["data.episodes=8", "data.episode_length=16", "evaluation.seen_episodes=2"]
    argv += ["evaluation.unseen_episodes=2", "evaluation.episode_length=16", "threads=1"]
    argv += ["logger.backends=[csv]"]
    result = module.main(argv)

    assert set(result["probe"]) == {"action_r2", "position_r2", "state_kl", "shuffled_state_kl"}
    assert {"probe_r2_seen", "probe_r2_motion_unseen", "delta_psnr_seen"} <= set(result["figures"])
    assert all(set(values) == {2, 4} for values in result["figures"].values())
    summary = json.loads((run_dir / "summary.json").read_text())["pretrain"]
    assert summary["world_model"]["image_size"] == 16 and summary["updates"] == 4
    final = summary["latent_actions"]["seen"]["probe_r2_motion"]
    assert result["figures"]["probe_r2_motion_seen"][4] == pytest.approx(final)
    saved = json.loads((run_dir / "probe.json").read_text())
    assert saved["probe"] == result["probe"] and saved["overrides"] == result["overrides"]
