import json
from pathlib import Path

import numpy as np
import pytest
from dreamer_prelar import run_finetune
from goal_marker import VARIANTS, as_episodes, main, reward_clip_sampler
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]

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
        for key in ("recall", "seen_goals_recall", "new_goals_recall"):
            assert len(variant[key]) == 3 and np.isfinite(variant[key]).all()
        assert len({variant[key][-1] for key in variant if key.endswith("recall")}) == 3
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


@pytest.mark.parametrize("name", ["reward", "reward400"])
def test_the_reward_variants_train_the_agents_reward_heads_and_score_their_readout(tmp_path, name):
    report = main(["--variants", name, *TINY, "--out", str(tmp_path / "o.json")])
    variant = report["variants"][name]
    if name == "reward400":
        assert variant["world_model"] == {"reward_head": {"hidden": 400, "depth": 4}}
    assert variant["reward_loss"] == "gaussian"
    for key in ("new_goals_reward_r2", "new_goals_hand_only_r2", "seen_goals_reward_r2"):
        assert len(variant[key]) == 3 and np.isfinite(variant[key]).all()
    assert variant["new_goals_reward_r2"][0] != variant["new_goals_reward_r2"][-1]  # trained


def test_clips_with_rewards_pair_each_action_with_the_reward_after_it():
    frames = np.arange(2 * 7).reshape(2, 7, 1, 1, 1).astype(np.uint8).repeat(3, 2)
    actions = np.arange(2 * 6, dtype=np.float32).reshape(2, 6, 1)
    data = {"frames": frames, "actions": actions, "reward": actions[..., 0] + 0.5}
    batch = reward_clip_sampler(data, batch_size=16, num_transitions=4)()
    step = batch["pixels"][:, :, 0, 0, 0].long()  # frame t of episode e holds 7 e + t
    assert (batch["next", "pixels"][:, :, 0, 0, 0].long() == step + 1).all()
    episode, t = step // 7, step % 7
    assert (batch["action"][..., 0] == 6 * episode + t).all()
    assert (batch["next", "reward"][..., 0] == batch["action"][..., 0] + 0.5).all()
    assert batch["is_init"][:, 0].all() and not batch["is_init"][:, 1:].any()
    with pytest.raises(ValueError, match="shorter"):
        reward_clip_sampler(data, batch_size=2, num_transitions=7)


def test_the_prelar_variant_needs_its_pretrained_model(tmp_path):
    assert VARIANTS["prelar"]["arm"] == "prelar"
    with pytest.raises(SystemExit):
        main(["--variants", "prelar", "--out", str(tmp_path / "out.json")])


def test_replay_trains_on_a_runs_own_buffer_and_refuses_other_frames(tmp_path):
    run_dir = tmp_path / "dreamer_seed0"
    overrides = ["preset=test", "arm=dreamer", f"run_dir={run_dir}", "finetune.env_steps=60"]
    overrides += ["world_model.image_size=64"]
    with initialize_config_dir(str(REPO / "examples" / "config"), version_base=None):
        config = compose("config", overrides=overrides)
    (run_dir / "hydra").mkdir(parents=True)
    OmegaConf.save(config, run_dir / "hydra" / "config.yaml")
    run_finetune(OmegaConf.to_container(config, resolve=True))
    out = tmp_path / "replay.json"

    report = main(["--variants", "fast", *TINY, "--replay", str(run_dir), "--out", str(out)])

    assert report["settings"]["replay"] == str(run_dir)
    assert len(report["variants"]["fast"]["recall"]) == 3
    assert "seen_goals_recall" not in report["variants"]["fast"]  # no goal-free frames there
    with pytest.raises(SystemExit):  # the run's frames are fast-rendered, normal-sized goals
        main(["--variants", "big_marker", *TINY, "--replay", str(run_dir), "--out", str(out)])
    with pytest.raises(SystemExit, match="no hydra/config.yaml"):
        main(["--variants", "fast", *TINY, "--replay", str(tmp_path), "--out", str(tmp_path / "o")])


def test_an_interrupted_variant_resumes_from_its_checkpoint_to_the_same_curve(
    tmp_path, monkeypatch
):
    import goal_marker

    whole = main(["--variants", "fast", *TINY, "--out", str(tmp_path / "whole.json")])
    out = tmp_path / "cut.json"
    recall, calls = goal_marker.marker_recall, []

    def cut_at_the_third_evaluation(*args, **kwargs):
        calls.append(1)
        if len(calls) == 7:  # 3 episode sets per evaluation: the checkpoint holds 2 updates
            raise KeyboardInterrupt
        return recall(*args, **kwargs)

    monkeypatch.setattr(goal_marker, "marker_recall", cut_at_the_third_evaluation)
    with pytest.raises(KeyboardInterrupt):
        main(["--variants", "fast", *TINY, "--out", str(out)])
    checkpoint = tmp_path / "cut.fast.pt"
    assert checkpoint.exists() and not out.exists()
    monkeypatch.setattr(goal_marker, "marker_recall", recall)

    resumed = main(["--variants", "fast", *TINY, "--out", str(out)])

    first, second = whole["variants"]["fast"], resumed["variants"]["fast"]
    assert second["updates"] == first["updates"] == [0, 2, 4]
    np.testing.assert_allclose(second["recall"], first["recall"], rtol=1e-5)
    np.testing.assert_allclose(second["new_goals_recall"], first["new_goals_recall"], rtol=1e-5)
    np.testing.assert_allclose(second["reco_mse"], first["reco_mse"], rtol=1e-5)
    assert not checkpoint.exists()  # removed once the variant is stored
