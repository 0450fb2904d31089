import json
from pathlib import Path

import numpy as np
import pytest
import torch
from dreamer_prelar import run_finetune
from dreamer_prelar_utils import make_finetune_env
from goal_probe import (
    best_fixed_point_success,
    critic_readout,
    goal_marker_recall,
    load_run,
    main,
    policy_episodes,
    probe,
    random_action_episodes,
    reset_goals,
    reward_readout,
)
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tensordict import TensorDict

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
    assert data["last_without_goal"].shape == (4, 3, 32, 32)
    assert data["reward"].shape == (4, 3) and np.isfinite(data["reward"]).all()
    assert np.array_equal(data["hands"][:, -1], data["hand"])
    marker = (data["frames"][:, -1] != data["last_without_goal"]).any(1)
    assert marker.any(), "hiding the goal's sphere changes no pixel"
    assert marker.sum() < 0.05 * marker.size, "hiding the goal changed more than the goal"


def test_marker_scale_widens_the_goal_sphere_and_nothing_else():
    settings = dict(episodes=4, steps=2, image_size=64, camera="corner", render_quality="fast")
    plain = random_action_episodes("reach-v3", **settings)
    wide = random_action_episodes("reach-v3", marker_scale=3.0, **settings)

    def marker(data):
        return (data["frames"][:, -1] != data["last_without_goal"]).any(1).sum()

    assert marker(wide) > 4 * marker(plain)  # about 9x the area, less what the arm hides
    assert np.array_equal(wide["last_without_goal"], plain["last_without_goal"])
    assert np.array_equal(wide["goal"], plain["goal"])
    with pytest.raises(ValueError, match="marker_scale"):
        random_action_episodes("reach-v3", marker_scale=0.0, **settings)


def test_a_held_action_repeats_until_the_next_draw_and_carries_the_hand_further():
    settings = dict(episodes=4, steps=12, image_size=32, camera="corner", render_quality="fast")
    single = random_action_episodes("reach-v3", **settings)
    held = random_action_episodes("reach-v3", action_hold=4, **settings)

    actions = held["actions"]
    assert np.array_equal(actions[:, 0:4], np.repeat(actions[:, :1], 4, axis=1))
    assert np.array_equal(actions[:, 4:8], np.repeat(actions[:, 4:5], 4, axis=1))
    assert not np.array_equal(actions[:, 3], actions[:, 4])
    assert np.array_equal(held["goal"], single["goal"])

    def travelled(data):
        return np.linalg.norm(data["hand"] - data["hands"][:, 0], axis=-1).mean()

    assert travelled(held) > 1.5 * travelled(single)
    with pytest.raises(ValueError, match="action_hold"):
        random_action_episodes("reach-v3", action_hold=0, **settings)


def test_reward_readout_tells_a_goal_aware_prediction_from_the_hand_alone():
    generator = np.random.default_rng(0)
    hands = generator.uniform(-1, 1, (40, 6, 3))
    goals = generator.uniform(-1, 1, (40, 1, 3))
    reward = -np.linalg.norm(hands - goals, axis=-1)  # needs the goal
    data = {"hands": hands, "reward": reward}

    knows = reward_readout(torch.from_numpy(reward), data, np.arange(40), splits=3)
    blind = reward_readout(
        torch.from_numpy(-np.linalg.norm(hands, axis=-1)), data, np.arange(40), splits=3
    )

    assert knows["r2"] == pytest.approx(1.0)
    assert knows["hand_only_r2"] == blind["hand_only_r2"] < 0.6
    assert blind["r2"] < knows["r2"] - 0.3


def test_marker_recall_scores_the_share_of_the_marker_contrast_drawn():
    generator = torch.Generator().manual_seed(0)
    without = torch.rand(3, 3, 8, 8, generator=generator) - 0.5
    frame = without.clone()
    frame[:, :, 2:4, 5] = 0.5  # a marker of 2 pixels per frame, full contrast in every channel
    frame[2] = without[2]  # the arm hides the marker in the last frame
    half_drawn = (frame + without) / 2

    drawn = goal_marker_recall(frame, frame, without)
    absent = goal_marker_recall(without, frame, without)
    half = goal_marker_recall(half_drawn, frame, without)
    blurred = goal_marker_recall(half_drawn + 0.1 * (frame == without), frame, without)

    assert drawn["recall"] == pytest.approx(1.0) and absent["recall"] == pytest.approx(0.0)
    assert half["recall"] == pytest.approx(0.75)  # a quarter of the squared contrast is missed
    assert blurred["recall"] == pytest.approx(0.75)  # errors off the marker are not counted
    assert half["marker_pixels"] == pytest.approx(4 / 3)
    contrast = ((0.5 - without[:2, :, 2:4, 5]) ** 2).sum() / 3
    assert half["marker_contrast"] == pytest.approx(float(contrast))


def test_marker_recall_refuses_mismatched_frames_and_frames_without_a_marker():
    frames = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="one shape"):
        goal_marker_recall(frames, frames, torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match="No frame shows the goal marker"):
        goal_marker_recall(frames, frames, frames)


def test_best_fixed_point_counts_the_goals_one_point_reaches():
    generator = np.random.default_rng(0)
    cluster = 0.01 * generator.standard_normal((30, 3))  # 30 goals within a few cm of 0
    spread = generator.uniform(0.5, 1.5, (70, 3))  # 70 goals far apart, far from the cluster
    goals = np.concatenate([cluster, spread])
    within = np.linalg.norm(cluster, axis=1) <= 0.05

    result = best_fixed_point_success(goals, radius=0.05, grid=61)

    assert result["goals"] == 100 and result["radius"] == 0.05
    assert within.sum() / 100 <= result["success"] <= 0.32  # the cluster, and at most 2 more
    assert np.linalg.norm(result["point"]) < 0.05
    with pytest.raises(ValueError, match=r"goals must be \[N, 3\]"):
        best_fixed_point_success(np.zeros((4, 2)), radius=0.05)


def test_uniform_goals_leave_a_fixed_point_less_than_one_set_of_mt1_goals():
    mt1 = best_fixed_point_success(reset_goals("reach-v3", goals="mt1", resets=300), radius=0.05)
    uniform = best_fixed_point_success(
        reset_goals("reach-v3", goals="uniform", resets=300), radius=0.05
    )
    assert uniform["success"] < mt1["success"]


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


@pytest.fixture(scope="module")
def finetuned_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("probe") / "dreamer_seed0"
    finetune_run(run_dir)
    return run_dir


def test_goal_probe_of_a_run_writes_each_target_r2_and_appends(finetuned_run, tmp_path):
    run_dir = finetuned_run
    out = tmp_path / "goal_probe.json"
    argv = ["--run", f"dreamer={run_dir}", "--episodes", "8", "--steps", "2", "--splits", "2"]
    argv += ["--goal-samples", "50"]

    report = main([*argv, "--out", str(out)])

    (run,) = report["runs"]
    assert run["label"] == "dreamer" and run["env_steps"] >= 60
    assert run["task"] == "reach-v3" and run["distinct_goals"] > 1
    assert run["goal_marker"]["marker_pixels"] > 0 and np.isfinite(run["goal_marker"]["recall"])
    assert run["goals"] == "mt1"
    blind = report["fixed_point_success"]["reach-v3"]
    assert set(blind) == {"mt1", "uniform"} and blind["uniform"]["goals"] == 50
    assert 0.0 < blind["uniform"]["success"] <= 1.0
    assert set(run["reward"]) == {"r2", "hand_only_r2"}
    assert all(np.isfinite(value) for value in run["reward"].values())
    for target in ("goal_r2", "hand_r2"):
        assert len(run[target]["per_coordinate"]) == 3
        assert np.isfinite(run[target]["mean"])
    assert "goal_probe.py" in report["command"]
    assert json.loads(out.read_text()) == {"probes": [report]}

    main([*argv, "--out", str(out), "--append"])  # the same checkpoint: its row is replaced
    assert len(json.loads(out.read_text())["probes"]) == 1
    other = json.loads(out.read_text())
    other["probes"][0]["runs"][0]["env_steps"] = 1  # as if probed at an earlier checkpoint
    out.write_text(json.dumps(other))
    main([*argv, "--out", str(out), "--append"])
    assert len(json.loads(out.read_text())["probes"]) == 2
    main([*argv, "--out", str(out), "--append", "--action-hold", "2"])  # other episodes
    assert len(json.loads(out.read_text())["probes"]) == 3
    main([*argv, "--out", str(out)])
    assert len(json.loads(out.read_text())["probes"]) == 1


def test_a_run_without_its_configuration_is_named(tmp_path):
    run_dir = tmp_path / "copied_run"
    run_dir.mkdir()
    with pytest.raises(SystemExit, match="copied_run: no hydra/config.yaml"):
        main(["--run", f"dreamer={run_dir}", "--out", str(tmp_path / "out.json")])


def test_policy_episodes_record_the_policys_actions_and_where_they_take_the_hand(finetuned_run):
    cfg, agent, _ = load_run(finetuned_run)
    env = make_finetune_env(cfg["finetune"], agent.carried, 3, render_quality="fast")
    torch.manual_seed(0)
    data = policy_episodes(agent.policy, env, episodes=4, steps=6, seed=11)
    again = policy_episodes(agent.policy, env, episodes=4, steps=6, seed=11)

    assert data["frames"].shape == (4, 7, 3, 64, 64) and data["actions"].shape == (4, 6, 4)
    np.testing.assert_array_equal(data["goal"], again["goal"])  # a goal per reset seed
    assert len(np.unique(data["goal"].round(5), axis=0)) > 1
    assert not np.allclose(data["actions"], again["actions"])  # sampled, not the mode
    marker = (data["frames"][:, -1] != data["last_without_goal"]).any(1).sum((1, 2))
    assert (marker > 0).all() and (marker < 20).all()  # the goal's few pixels, nothing else
    gym_env = env.base_env._env.unwrapped
    for episode in range(4):  # the recorded actions, replayed, give the recorded steps
        env.set_seed(11 + episode)
        td = env.reset()
        np.testing.assert_array_equal(td["pixels"].numpy(), data["frames"][episode, 0])
        for step, action in enumerate(data["actions"][episode]):
            td.set("action", torch.from_numpy(action))
            td = env.step(td)
            assert float(td["next", "reward"]) == pytest.approx(data["reward"][episode, step])
            np.testing.assert_allclose(gym_env.tcp_center, data["hands"][episode, step])
            np.testing.assert_array_equal(
                td["next", "pixels"].numpy(), data["frames"][episode, step + 1]
            )
            td = td["next"].exclude("reward", "done", "terminated", "truncated", "success")
    env.close()


def test_goal_probe_can_drive_its_episodes_with_the_runs_policy(finetuned_run, tmp_path):
    out = tmp_path / "goal_probe.json"
    argv = ["--run", f"dreamer={finetuned_run}", "--episodes", "8", "--steps", "4", "--splits", "2"]
    argv += ["--goal-samples", "20", "--out", str(out)]

    report = main([*argv, "--driver", "policy", "--critic-horizon", "2"])

    assert report["settings"]["driver"] == "policy"
    (run,) = report["runs"]
    assert run["distinct_goals"] > 1 and np.isfinite(run["goal_marker"]["recall"])
    assert all(np.isfinite(value) for value in run["reward"].values())
    assert run["critic"]["steps"] == 1 and np.isfinite(run["critic"]["value"])
    assert main([*argv, "--driver", "policy"])["runs"][0]["critic"] is None  # 4 steps < 300
    with pytest.raises(SystemExit):
        main([*argv, "--driver", "policy", "--action-hold", "5"])


def test_critic_readout_scores_the_value_against_the_return_that_followed():
    rng = np.random.default_rng(0)
    reward = rng.uniform(size=(3, 12))
    value = torch.from_numpy(rng.uniform(size=(3, 12)))
    result = critic_readout(value, reward, gamma=0.9, horizon=8)
    realised = [
        sum(0.9**k * reward[e, t + 1 + k] for k in range(12 - t - 1))
        for e in range(3)
        for t in range(3)
    ]
    assert result["steps"] == 3
    assert result["value"] == pytest.approx(float(value[:, :3].mean()))
    assert result["return"] == pytest.approx(np.mean(realised))
    assert result["ratio"] == pytest.approx(result["value"] / result["return"])
    expected = np.corrcoef(value[:, :3].numpy().ravel(), np.array(realised).reshape(3, 3).ravel())
    assert result["correlation"] == pytest.approx(expected[0, 1])
    assert critic_readout(value, reward, gamma=0.9, horizon=11) is None


@pytest.mark.parametrize(
    "option, value",
    [("--episodes", "3"), ("--steps", "0"), ("--splits", "0"), ("--action-hold", "0")],
)
def test_goal_probe_refuses_counts_below_what_it_needs(tmp_path, capsys, option, value):
    with pytest.raises(SystemExit):
        main(["--run", f"dreamer={tmp_path}", option, value, "--out", str(tmp_path / "o.json")])
    assert f"{option} must be >= " in capsys.readouterr().err


def test_policy_episodes_longer_than_the_envs_are_refused(finetuned_run):
    cfg, agent, _ = load_run(finetuned_run)
    env = make_finetune_env(cfg["finetune"], agent.carried, 3, render_quality="fast")
    limit = cfg["finetune"]["max_episode_steps"] // cfg["finetune"]["action_repeat"]
    with pytest.raises(ValueError, match=f"end after {limit} steps; steps={limit + 1}"):
        policy_episodes(agent.policy, env, episodes=4, steps=limit + 1)
    env.close()


def test_critic_growth_trains_a_fresh_critic_alone_for_each_variant(finetuned_run, tmp_path):
    from critic_growth import fresh_agent, grow_critic
    from critic_growth import main as grow
    from dreamer_prelar_utils import read_finetune_checkpoint
    from goal_probe import run_config

    out = tmp_path / "growth.json"
    argv = ["--run", str(finetuned_run), "--episodes", "4", "--steps", "6", "--critic-horizon"]
    argv += ["3", "--updates", "2", "--eval-every", "1", "--starts", "8", "--out", str(out)]
    report = grow([*argv, "--variants", "default", "width400", "mse_glorot"])

    assert json.loads(out.read_text()) == report
    for variant in ("default", "width400", "mse_glorot"):
        curve = report["variants"][variant]["curve"]
        assert [point["update"] for point in curve] == [0, 1, 2]
        assert all(np.isfinite(point["value"]) for point in curve)
    assert report["return_followed"] > 0 and np.isfinite(report["run_critic"])

    cfg = run_config(finetuned_run)
    cfg["finetune"]["compile_networks"] = False
    agent, params = fresh_agent(cfg, read_finetune_checkpoint(finetuned_run), {"width": 32})
    assert params[0].shape[0] == 32
    frozen = {k: v.clone() for k, v in agent.loss.state_dict().items() if "value_model" not in k}
    before = [param.clone() for param in params]
    states = TensorDict(
        {
            "state": torch.randn(2, 3, agent.carried["state"]),
            "belief": torch.randn(2, 3, agent.carried["belief"]),
        },
        [2, 3],
    )
    grow_critic(
        agent,
        params,
        states,
        np.ones((2, 3)),
        tune=cfg["finetune"],
        variant={},
        updates=2,
        eval_every=1,
        starts=4,
        horizon=1,
        seed=0,
    )
    assert any(not torch.equal(b, a) for b, a in zip(before, params, strict=True))
    after = agent.loss.state_dict()
    assert all(torch.equal(value, after[key]) for key, value in frozen.items())


def test_imagined_actions_compares_imagined_and_real_returns_of_held_actions(
    finetuned_run, tmp_path
):
    from imagined_actions import main as compare

    out = tmp_path / "imagined.json"
    argv = ["--run", f"dreamer={finetuned_run}", "--episodes", "4", "--steps", "6", "--every"]
    report = compare([*argv, "2", "--horizon", "3", "--samples", "2", "--out", str(out)])

    assert json.loads(out.read_text()) == report
    assert out.with_suffix(".png").stat().st_size > 0
    run = report["runs"]["dreamer"]
    assert run["starts"] == 4 * 3  # actions 0, 2, 4 of each episode
    assert all(np.isfinite(value) for plan in run["plans"].values() for value in plan.values())
    for axis in ("x", "y", "z"):
        agreement = run[axis]["agreement"]
        assert agreement is None or 0 <= agreement <= 1
        assert run["hand_moves"][axis]["real"] > 0  # +1 takes the hand further than -1
        assert np.isfinite(run["hand_moves"][axis]["imagined"])
        assert run["hand_probe_r2"][axis] <= 1
        assert set(run["goal_averaged"][axis]) == set(run[axis])
    recorded = run["recorded_actions"]
    assert all(recorded[axis]["real_size"] > 0 for axis in ("x", "y", "z"))
    episodes = run["policy_episodes"]
    assert len(episodes["action_mean"]) == 3
    assert np.all(np.array(episodes["goal_min"]) <= np.array(episodes["goal_max"]))

    near = compare([*argv, "2", "--horizon", "3", "--around-policy", "0.25", "--out", str(out)])
    moves = near["runs"]["dreamer"]["hand_moves"]
    for axis in ("x", "y", "z"):  # +-0.25 moves the hand less than +-1 (clipping only shrinks)
        assert 0 <= moves[axis]["real"] < run["hand_moves"][axis]["real"]


def test_real_plans_hold_each_plan_from_the_recorded_state(finetuned_run):
    from imagined_actions import PLANS, discounted_sum, held_actions, real_plans

    cfg, agent, _ = load_run(finetuned_run)
    env = make_finetune_env(cfg["finetune"], agent.carried, 3, render_quality="fast")
    data = policy_episodes(agent.policy, env, episodes=4, steps=8, seed=21)
    own_goal = np.stack([data["goal"][2]] * 2)  # episode 2's goal, twice
    held = held_actions(PLANS, (4, 2))
    real = real_plans(
        env, data, starts=[1, 5], held=held, horizon=4, gamma=0.9, seed=21, other_goals=own_goal
    )
    returns = real["returns"]
    np.testing.assert_allclose(real["goal_averaged_returns"][2], returns[2])
    assert not np.allclose(real["goal_averaged_returns"][0], returns[0])  # another goal
    assert returns.shape == (4, 2, len(PLANS))
    gym_env = env.base_env._env
    for start, column in ((1, 0), (5, 1)):  # from a reset each time, no saved state
        for p, plan in enumerate(PLANS.values()):
            env.set_seed(21 + 2)
            env.reset()
            for action in data["actions"][2, : start + 1]:
                gym_env.step(action)
            before = gym_env.unwrapped.tcp_center.copy()
            rewards = [gym_env.step(np.asarray(plan, np.float32))[1] for _ in range(4)]
            assert returns[2, column, p] == pytest.approx(discounted_sum(np.array(rewards), 0.9))
            np.testing.assert_allclose(
                real["hand_moves"][2, column, p], gym_env.unwrapped.tcp_center - before
            )
    assert not np.allclose(returns[..., 0], returns[..., 1])  # x+ and x- differ

    moved = {**data, "hands": data["hands"] + 0.01}
    with pytest.raises(ValueError, match="left the recorded hand after action 1"):
        real_plans(env, moved, starts=[1], held=held, horizon=2, gamma=0.9, seed=21)
    env.close()


def test_compare_effects_counts_sign_agreement_on_decisive_starts_only():
    from imagined_actions import PLANS, compare_effects

    real = np.zeros((4, len(PLANS)))
    real[:, 0] = [2.0, -3.0, 0.5, 4.0]  # x+ ; x- stays 0: the real effect is the x+ column
    imagined = np.zeros((4, len(PLANS)))
    imagined[:, 0] = [1.0, 1.0, -1.0, 2.0]
    figures = compare_effects(imagined, real, plans=list(PLANS), decisive=1.0)
    assert figures["x"]["decisive_starts"] == 3  # 0.5 is not decisive
    assert figures["x"]["agreement"] == pytest.approx(2 / 3)
    assert figures["x"]["correlation"] == pytest.approx(
        np.corrcoef(imagined[:, 0], real[:, 0])[0, 1]
    )
    assert figures["y"]["agreement"] is None and figures["y"]["correlation"] is None
    assert figures["plans"]["x+"] == {"imagined": 0.75, "real": 0.875}


@pytest.mark.parametrize(
    "option, value",
    [("--episodes", "3"), ("--every", "0"), ("--samples", "0"), ("--goal-samples", "0")],
)
def test_imagined_actions_refuses_counts_below_what_it_needs(tmp_path, capsys, option, value):
    from imagined_actions import main as compare

    with pytest.raises(SystemExit):
        compare(["--run", f"dreamer={tmp_path}", option, value, "--out", str(tmp_path / "o.json")])
    assert f"{option} must be >= " in capsys.readouterr().err
