"""Tests of the pixel-based Meta-world TorchRL environment."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import functools
import gc
import subprocess
import sys

import numpy as np
import pytest
import torch
from metaworld.policies import SawyerReachV3Policy
from torchrl.envs import EnvCreator, ParallelEnv

from torchrl_prelar.envs.metaworld import (
    RENDER_QUALITIES,
    MetaWorldRenderAdapter,
    goal_site,
    make_metaworld_env,
    make_metaworld_gym_env,
    render_settings,
)

TASK = "reach-v3"


@pytest.fixture
def make_env():
    envs = []

    def _make(**kwargs):
        env = make_metaworld_env(TASK, **kwargs)
        envs.append(env)
        return env

    yield _make
    for env in envs:
        env.close()


def _fixed_actions(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 4, generator=generator) * 2 - 1


def _rollout_with_actions(env, actions: torch.Tensor):
    remaining = iter(actions)
    return env.rollout(
        len(actions),
        policy=lambda td: td.set("action", next(remaining)),
        break_when_any_done=False,
    )


def test_keys_shapes_dtypes(make_env):
    env = make_env(max_episode_steps=10)
    td = env.rollout(3)
    assert td["pixels"].shape == (3, 3, 64, 64)
    assert td["pixels"].dtype == torch.uint8
    assert td["next", "pixels"].shape == (3, 3, 64, 64)
    assert td["observation"].shape == (3, 39)
    assert td["action"].shape == (3, 4)
    assert td["next", "success"].shape == (3, 1)
    assert td["next", "success"].dtype == torch.bool
    assert td["next", "reward"].shape == (3, 1)
    env.check_env_specs()


def test_image_size_and_pixels_only(make_env):
    env = make_env(max_episode_steps=10, image_size=32, camera="corner2", pixels_only=True)
    td = env.reset()
    assert td["pixels"].shape == (3, 32, 32)
    assert "observation" not in td.keys()


def test_frames_are_vertical_flip_of_raw_render(make_env):
    env = make_env(max_episode_steps=10)
    td = env.reset()
    raw = env.base_env.unwrapped.mujoco_renderer.render("rgb_array")
    pixels = td["pixels"].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(pixels, raw[::-1])
    assert not np.array_equal(pixels, raw)


@pytest.mark.parametrize("quality", sorted(RENDER_QUALITIES))
def test_render_quality_is_applied(quality):
    env = make_metaworld_gym_env(TASK, render_quality=quality)
    try:
        assert render_settings(env.unwrapped.model) == RENDER_QUALITIES[quality]
        env.reset(seed=0)
        assert env.render().shape == (64, 64, 3)
    finally:
        env.close()


def test_antialiased_frames_blend_the_edges_of_the_fast_ones():
    """Same scene: MSAA changes only edge pixels, and gives them values between the two sides
    (more distinct grey levels than the fast render)."""
    frames = {}
    for quality in ("fast", "antialiased"):
        env = make_metaworld_gym_env(TASK, render_quality=quality)
        try:
            env.reset(seed=0)
            frames[quality] = env.render().astype(int)
        finally:
            env.close()
    changed = np.abs(frames["fast"] - frames["antialiased"]).max(-1) > 0
    assert 0 < changed.mean() < 0.5
    levels = {
        quality: len(np.unique(frame.reshape(-1, 3), axis=0)) for quality, frame in frames.items()
    }
    assert levels["antialiased"] > levels["fast"]


def _reset_goals(env, seeds) -> np.ndarray:
    goals = []
    for seed in seeds:
        env.reset(seed=seed)
        goals.append(env.unwrapped._target_pos.copy())
    return np.array(goals)


def test_mt1_goals_come_from_fifty_variations_and_uniform_goals_are_new_each_reset():
    mt1 = make_metaworld_gym_env(TASK, goals="mt1", seed=0)
    uniform = make_metaworld_gym_env(TASK, goals="uniform", seed=0)
    try:
        mt1_goals = _reset_goals(mt1, range(150))
        uniform_goals = _reset_goals(uniform, range(150))
        uniform.reset(seed=7)
        uniform.reset()  # no seed: the generator goes on
        unseeded = uniform.unwrapped._target_pos.copy()
        goal_space = uniform.unwrapped.goal_space
    finally:
        mt1.close()
        uniform.close()

    assert len(np.unique(mt1_goals.round(6), axis=0)) <= 50
    assert len(np.unique(uniform_goals.round(6), axis=0)) == 150
    assert not np.allclose(unseeded, uniform_goals[7])
    assert (uniform_goals >= goal_space.low).all() and (uniform_goals <= goal_space.high).all()
    # spread over the whole range: each coordinate's quartiles near those of a uniform draw
    quartiles = np.quantile(
        (uniform_goals - goal_space.low) / (goal_space.high - goal_space.low), [0.25, 0.75], axis=0
    )
    assert np.abs(quartiles - [[0.25], [0.75]]).max() < 0.12


def test_mt1_sets_of_goals_differ_between_env_seeds():
    training = make_metaworld_gym_env(TASK, goals="mt1", seed=0)
    evaluation = make_metaworld_gym_env(TASK, goals="mt1", seed=100_000)  # the eval env's offset
    try:
        first = np.unique(_reset_goals(training, range(100)).round(6), axis=0)
        second = np.unique(_reset_goals(evaluation, range(100)).round(6), axis=0)
    finally:
        training.close()
        evaluation.close()
    shared = (np.abs(first[:, None] - second[None]).max(-1) < 1e-6).sum()
    assert len(first) > 30 and len(second) > 30 and shared == 0


def test_a_fixed_goal_is_the_same_at_every_reset_of_envs_of_any_seed():
    training = make_metaworld_gym_env(TASK, goals="fixed", seed=0)
    evaluation = make_metaworld_gym_env(TASK, goals="fixed", seed=100_003)
    try:
        goals = np.concatenate(
            [_reset_goals(training, range(20)), _reset_goals(evaluation, range(50, 70))]
        )
        training.reset()  # no seed
        unseeded = training.unwrapped._target_pos.copy()
    finally:
        training.close()
        evaluation.close()
    assert np.abs(goals - goals[0]).max() == 0 and np.array_equal(unseeded, goals[0])


def test_uniform_goals_repeat_under_the_same_seeds():
    first = make_metaworld_gym_env(TASK, goals="uniform", seed=3)
    second = make_metaworld_gym_env(TASK, goals="uniform", seed=3)
    try:
        assert np.array_equal(_reset_goals(first, [5, 9]), _reset_goals(second, [5, 9]))
    finally:
        first.close()
        second.close()


def test_unknown_goal_distribution_names_the_choices():
    with pytest.raises(ValueError, match="goals must be one of.*'uniform'"):
        make_metaworld_gym_env(TASK, goals="random")


def test_goal_marker_scale_widens_the_rendered_goal_and_not_the_task():
    plain = make_metaworld_gym_env(TASK, goals="uniform", seed=3)
    wide = make_metaworld_gym_env(TASK, goals="uniform", seed=3, goal_marker_scale=3.0)
    try:
        site = goal_site(plain.unwrapped.model)
        radius = plain.unwrapped.model.site_size[site, 0]
        np.testing.assert_allclose(wide.unwrapped.model.site_size[site, 0], 3 * radius)
        marker, rewards = [], []
        for env in (plain, wide):
            env.reset(seed=5)
            _, reward, *_ = env.step(np.full(4, 0.5, np.float32))
            rewards.append(reward)
            shown = env.render()
            env.unwrapped.model.site_rgba[site, 3] = 0.0  # the goal hidden
            marker.append((env.render() != shown).any(-1).sum())
        assert rewards[0] == rewards[1]  # same physics, same reward
        assert np.array_equal(plain.unwrapped._target_pos, wide.unwrapped._target_pos)
        assert marker[1] > 4 * marker[0] > 0  # about 9x the area, less what the arm hides
    finally:
        plain.close()
        wide.close()
    with pytest.raises(ValueError, match="goal_marker_scale must be a finite number > 0"):
        make_metaworld_gym_env(TASK, goal_marker_scale=float("nan"))


def test_unknown_render_quality_names_the_choices():
    with pytest.raises(ValueError, match="render_quality must be one of.*antialiased"):
        make_metaworld_gym_env(TASK, render_quality="msaa")


@pytest.mark.filterwarnings("ignore:Constant.*may be too high")
def test_success_does_not_end_episode_and_truncation_at_limit(make_env):
    limit = 80
    env = make_env(max_episode_steps=limit)
    env.set_seed(0)
    expert = SawyerReachV3Policy()

    def policy(td):
        action = expert.get_action(td["observation"].numpy())
        return td.set("action", torch.as_tensor(action, dtype=torch.float32))

    td = env.rollout(limit + 20, policy=policy)
    assert td.shape == (limit,)
    success = td["next", "success"].squeeze(-1)
    assert success.any(), "the scripted expert should reach the goal within the episode"
    first_success = int(success.nonzero()[0])
    assert first_success < limit - 1
    done = td["next", "done"].squeeze(-1)
    assert not done[:-1].any()
    assert td["next", "truncated"][-1].item()
    assert not td["next", "terminated"].any()


def test_action_repeat_sums_rewards_and_advances_steps(make_env):
    single = make_env(max_episode_steps=12)
    repeated = make_env(max_episode_steps=12, action_repeat=3)
    single.set_seed(5)
    repeated.set_seed(5)
    actions = _fixed_actions(4)
    td_rep = _rollout_with_actions(repeated, actions)
    td_one = _rollout_with_actions(single, actions.repeat_interleave(3, dim=0))
    rewards_one = td_one["next", "reward"].view(4, 3).sum(-1)
    torch.testing.assert_close(td_rep["next", "reward"].view(4), rewards_one)
    torch.testing.assert_close(td_rep["next", "pixels"], td_one["next", "pixels"][2::3])
    assert td_rep["next", "truncated"][-1].item()
    assert td_rep["next", "step_count"].view(-1).tolist() == [1, 2, 3, 4]


def test_same_seed_same_pixels(make_env):
    first = make_env(max_episode_steps=10)
    second = make_env(max_episode_steps=10)
    actions = _fixed_actions(5, seed=1)
    first.set_seed(7)
    second.set_seed(7)
    td_first = _rollout_with_actions(first, actions)
    td_second = _rollout_with_actions(second, actions)
    torch.testing.assert_close(td_first["pixels"], td_second["pixels"])
    torch.testing.assert_close(td_first["next", "pixels"], td_second["next", "pixels"])
    second.close()
    first.set_seed(7)
    td_again = _rollout_with_actions(first, actions)
    torch.testing.assert_close(td_again["next", "pixels"], td_first["next", "pixels"])
    goals = set()
    for seed in range(4):
        first.set_seed(seed)
        goals.add(tuple(first.reset()["observation"][-3:].tolist()))
    assert len(goals) > 1, "different seeds should draw different goal positions"


def test_parallel_env_two_workers():
    create = EnvCreator(functools.partial(make_metaworld_env, TASK, max_episode_steps=10))
    env = ParallelEnv(2, create)
    try:
        env.set_seed(0)
        td = env.rollout(3)
        assert td.shape == (2, 3)
        assert td["pixels"].shape == (2, 3, 3, 64, 64)
        assert td["pixels"].dtype == torch.uint8
        assert td["next", "success"].dtype == torch.bool
        assert not torch.equal(td["observation"][0, 0], td["observation"][1, 0])
    finally:
        env.close()


def test_bad_task_name_lists_valid_names():
    with pytest.raises(ValueError, match="Unknown Meta-world task 'reach-v2'.*reach-v3"):
        make_metaworld_env("reach-v2")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_episode_steps": 501}, "at most"),
        ({"max_episode_steps": 10, "action_repeat": 3}, "multiple of action_repeat"),
        ({"action_repeat": 0}, "action_repeat must be a positive"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_metaworld_env(TASK, **kwargs)


def test_interpreter_exits_clean_without_explicit_close():
    script = (
        "from torchrl_prelar.envs.metaworld import make_metaworld_env\n"
        "env = make_metaworld_env('reach-v3', max_episode_steps=10)\n"
        "env.rollout(2)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "MUJOCO_GL": "egl"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "EGLError" not in result.stderr
    assert "Exception ignored" not in result.stderr


def test_close_closes_the_renderer(make_env):
    env = make_env(max_episode_steps=10)
    env.reset()
    adapter = env.base_env._env.env
    assert isinstance(adapter, MetaWorldRenderAdapter)
    assert not adapter.closed
    env.close()
    assert adapter.closed


def test_closing_one_env_leaves_the_other_rendering():
    kept = make_metaworld_env(TASK, max_episode_steps=10)
    closed = make_metaworld_env(TASK, max_episode_steps=10)
    try:
        kept.set_seed(0)
        expected = kept.reset()["pixels"]
        closed.rollout(2)
        closed.close()
        kept.reset()  # makes the kept env's context current while the closed one is freed
        del closed
        gc.collect()
        kept.set_seed(0)
        torch.testing.assert_close(kept.reset()["pixels"], expected)
        assert expected.float().mean() > 10
    finally:
        kept.close()


RENDER_THREADS_SCRIPT = """
import os
from torchrl_prelar.envs.metaworld import make_metaworld_env
env = make_metaworld_env("reach-v3", max_episode_steps=10, render_threads={threads})
env.rollout(2)
task_dir = f"/proc/{{os.getpid()}}/task"
names = [open(f"{{task_dir}}/{{tid}}/comm").read().strip() for tid in os.listdir(task_dir)]
env.close()
print(sum(name.startswith("llvmpipe") for name in names))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_render_threads_sets_the_software_rasteriser_threads():
    environment = {key: value for key, value in os.environ.items() if key != "LP_NUM_THREADS"}
    environment.setdefault("MUJOCO_GL", "egl")
    counts = []
    for threads in (1, 2):
        result = subprocess.run(
            [sys.executable, "-c", RENDER_THREADS_SCRIPT.format(threads=threads)],
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        counts.append(int(result.stdout.strip().splitlines()[-1]))
    if counts == [0, 0]:
        pytest.skip("the GL driver is not Mesa llvmpipe")
    assert counts == [1, 2]


def test_render_threads_must_be_positive():
    with pytest.raises(ValueError, match="render_threads"):
        make_metaworld_env(TASK, render_threads=0)
