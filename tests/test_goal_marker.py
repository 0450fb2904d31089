import json

import numpy as np
import pytest
from goal_marker import VARIANTS, as_episodes, main

TINY = [
    "--updates", "4", "--eval-every", "2", "--batch-size", "2", "--num-transitions", "8",
    "--train-episodes", "4", "--train-steps", "10", "--eval-episodes", "4", "--eval-steps", "3",
]  # fmt: skip


def test_rollouts_become_episodes_whose_actions_precede_their_frames():
    generator = np.random.default_rng(0)
    data = {
        "frames": generator.integers(0, 255, (2, 4, 3, 8, 8), dtype=np.uint8),
        "actions": generator.uniform(-1, 1, (2, 3, 4)).astype(np.float32),
    }
    first, second = as_episodes(data, "train")
    assert second.frames.shape == (4, 8, 8, 3)
    assert np.array_equal(second.frames[2], data["frames"][1, 2].transpose(1, 2, 0))
    assert np.array_equal(second.actions[1:], data["actions"][1])
    assert not second.actions[0].any() and (first.name, second.name) == ("train-0", "train-1")


def test_each_variant_gets_a_recall_curve_and_a_second_call_resumes(tmp_path):
    out = tmp_path / "goal_marker.json"
    report = main(["--variants", "fast", "depth48", *TINY, "--out", str(out)])

    for name in ("fast", "depth48"):
        variant = report["variants"][name]
        assert variant["updates"] == [0, 2, 4]
        assert len(variant["recall"]) == 3 and np.isfinite(variant["recall"]).all()
        assert np.isnan(variant["reco_mse"][0]) and np.isfinite(variant["reco_mse"][1:]).all()
        assert variant["marker_pixels"] > 0 and variant["render_quality"] == "fast"
    assert report["variants"]["depth48"]["world_model"]["decoder"]["depth"] == 48
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert out.with_suffix(".png").stat().st_size > 0

    again = main(["--variants", "fast", *TINY, "--out", str(out)])  # done: not trained again
    assert again["variants"]["fast"]["seconds"] == report["variants"]["fast"]["seconds"]
    other = main(["--variants", "metaworld", *TINY, "--out", str(out)])  # another invocation
    assert set(other["variants"]) == {"fast", "depth48", "metaworld"}
    assert other["variants"]["metaworld"]["render_quality"] == "metaworld"
    assert "--variants metaworld" in other["variants"]["metaworld"]["command"]
    with pytest.raises(SystemExit, match="other settings"):
        main(["--variants", "fast", *TINY[:-1], "4", "--out", str(out)])


def test_big_marker_trains_and_scores_on_frames_with_a_wider_goal(tmp_path):
    report = main(["--variants", "fast", "big_marker", *TINY, "--out", str(tmp_path / "o.json")])
    fast, big = report["variants"]["fast"], report["variants"]["big_marker"]
    assert big["marker_scale"] == 3.0 and big["render_quality"] == "fast"
    assert big["marker_pixels"] > 4 * fast["marker_pixels"]


def test_the_prelar_variant_needs_its_pretrained_model(tmp_path):
    assert VARIANTS["prelar"]["arm"] == "prelar"
    with pytest.raises(SystemExit):
        main(["--variants", "prelar", "--out", str(tmp_path / "out.json")])
