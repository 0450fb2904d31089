"""The latent-action evaluation: probe, state KL, controllability, clips, CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import TINY, tiny
from tensordict import TensorDict
from tensordict.nn import set_interaction_type

from torchrl_prelar import make_world_model
from torchrl_prelar.baselines import make_contextwm_pretrain_model
from torchrl_prelar.data.episodes import Episode
from torchrl_prelar.data.synthetic import moving_square_batch, moving_square_episodes
from torchrl_prelar.evaluation.held_out import (
    LOGGED_FIGURES,
    HeldOutConfig,
    LatentActionMonitor,
    generate_held_out_sets,
)
from torchrl_prelar.evaluation.latent_actions import (
    controllability,
    episode_task,
    episodes_to_clips,
    evaluate_latent_actions,
    fit_linear_probe,
    linear_probe_r2,
    posterior_rollout,
    shuffle_index,
    split_episodes,
    state_kl,
)
from torchrl_prelar.evaluation.open_loop import open_loop_rollout
from torchrl_prelar.io import save_checkpoint, update_summary
from torchrl_prelar.modules.pixels import centred_pixels
from torchrl_prelar.modules.world_model import decode_states

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clips():
    return episodes_to_clips(moving_square_episodes(4, 12, seed=3), num_transitions=6)


@pytest.fixture(scope="module")
def world_model():
    torch.manual_seed(0)
    return make_world_model(**TINY)


def numpy_r2(train_x, train_y, test_x, test_y, ridge):
    """Closed-form ridge (unpenalised bias) and per-dim R^2, in numpy."""
    x_mean, y_mean = train_x.mean(0), train_y.mean(0)
    x, y = train_x - x_mean, train_y - y_mean
    penalty = ridge * (x**2).sum() / x.shape[1]
    weight = np.linalg.solve(x.T @ x + penalty * np.eye(x.shape[1]), x.T @ y)
    prediction = (test_x - x_mean) @ weight + y_mean
    sse = ((test_y - prediction) ** 2).sum(0)
    return 1 - sse / ((test_y - test_y.mean(0)) ** 2).sum(0)


@pytest.mark.parametrize("ridge", [0.0, 1e-2])
def test_probe_matches_closed_form_least_squares(ridge):
    generator = np.random.default_rng(0)
    x = generator.normal(size=(300, 5))
    y = np.concatenate([x @ generator.normal(size=(5, 2)) + 3, generator.normal(size=(300, 1))], 1)
    y[:, 1] += 0.1 * generator.normal(size=300)
    parts = [torch.from_numpy(a) for a in (x[:150], y[:150], x[150:], y[150:])]
    r2 = linear_probe_r2(*parts, ridge=ridge, multioutput="raw_values")
    np.testing.assert_allclose(r2.numpy(), numpy_r2(x[:150], y[:150], x[150:], y[150:], ridge))
    assert r2[0] > 0.99 and r2[1] > 0.95  # linear targets
    assert r2[2] < 0.05  # independent of the features
    assert float(linear_probe_r2(*parts, ridge=ridge)) == pytest.approx(float(r2.mean()))


def test_fitted_probe_predicts_the_closed_form_ridge_fit_and_refuses_other_widths():
    generator = np.random.default_rng(1)
    x, y = generator.normal(size=(200, 4)), generator.normal(size=(200, 2))
    predict = fit_linear_probe(torch.from_numpy(x), torch.from_numpy(y), ridge=1e-2)
    x_mean, y_mean = x.mean(0), y.mean(0)
    centred = x - x_mean
    penalty = 1e-2 * (centred**2).sum() / 4
    weight = np.linalg.solve(centred.T @ centred + penalty * np.eye(4), centred.T @ (y - y_mean))
    new = generator.normal(size=(7, 4))
    np.testing.assert_allclose(
        predict(torch.from_numpy(new)).numpy(), (new - x_mean) @ weight + y_mean, rtol=1e-8
    )
    with pytest.raises(ValueError, match=r"Expected features \[M, 4\]"):
        predict(torch.zeros(3, 5))


def test_probe_of_an_exact_linear_target_is_one_and_pooled_r2_weights_by_variance():
    x = torch.randn(100, 3, generator=torch.Generator().manual_seed(0))
    y = torch.stack([x[:, 0], 10 * x[:, 1] + x[:, 2]], 1)
    assert float(linear_probe_r2(x[:50], y[:50], x[50:], y[50:], ridge=0)) == pytest.approx(1)
    noisy = y + torch.tensor([1.0, 0.0]) * torch.randn(100, 2)
    pooled = linear_probe_r2(
        x[:50], noisy[:50], x[50:], noisy[50:], multioutput="variance_weighted"
    )
    uniform = linear_probe_r2(x[:50], noisy[:50], x[50:], noisy[50:])
    assert pooled > uniform  # the well-predicted dim has the larger variance


def test_episode_split_never_shares_an_episode():
    episode = torch.randint(0, 9, (500,), generator=torch.Generator().manual_seed(0))
    train, test = split_episodes(episode, seed=4)
    assert not (train & test).any() and (train | test).all()
    assert set(episode[train].tolist()).isdisjoint(episode[test].tolist())
    assert len(set(episode[train].tolist())) == episode.unique().numel() // 2
    again, _ = split_episodes(episode, seed=4)
    assert torch.equal(train, again)


def test_split_within_tasks_puts_every_task_on_both_sides():
    # 6 tasks x 4 episodes, as the unseen set: a plain split can leave a task out of the
    # probe's training half (seed 0 of the default job's set did); a split within tasks cannot.
    episode = torch.arange(24).repeat_interleave(10)
    task = episode // 4
    for seed in range(20):
        train, test = split_episodes(episode, seed=seed, groups=task)
        assert set(episode[train].tolist()).isdisjoint(episode[test].tolist())
        assert set(task[train].tolist()) == set(task[test].tolist()) == set(range(6))
        assert episode[train].unique().numel() == 12
    left_out = [
        seed
        for seed in range(20)
        if set(task[split_episodes(episode, seed=seed)[0]].tolist()) != set(range(6))
    ]
    assert left_out  # the plain split does leave a task out for some seeds
    # One episode per task: nothing to stratify, the plain split is used.
    single = torch.arange(8).repeat_interleave(3)
    plain = split_episodes(single, seed=1)
    grouped = split_episodes(single, seed=1, groups=single.clone())
    assert torch.equal(plain[0], grouped[0])
    with pytest.raises(ValueError, match="episode 0 spans groups"):
        split_episodes(torch.tensor([0, 0, 1, 1]), groups=torch.tensor([0, 1, 1, 1]))


def test_clips_carry_the_task_of_their_episode_file():
    frames = np.zeros((9, 4, 4, 3), np.uint8)
    actions = np.zeros((9, 2), np.float32)
    names = ["t-reach_v3_00001-8.npz", "t-door_open_v3_00000-8.npz", "t-reach_v3_00000-8.npz"]
    episodes = [Episode(frames, actions, name=name) for name in names]
    clips = episodes_to_clips(episodes, num_transitions=4)
    assert clips["task"][:, 0].tolist() == [1, 1, 0, 0, 1, 1]  # door_open_v3 < reach_v3
    assert episode_task("x/t-pick_place_v3_00012-500.npz") == "pick_place_v3"
    assert episode_task("video_17.mp4") == "video_17.mp4"


def with_random_states(episodes: list[Episode], *, dims: int, seed: int) -> list[Episode]:
    """The ``episodes`` with a random ``dims``-d state per frame."""
    rng = np.random.default_rng(seed)
    return [
        Episode(e.frames, e.actions, name=e.name, states=rng.normal(size=(e.num_frames, dims)))
        for e in episodes
    ]


def without_states(episodes: list[Episode]) -> list[Episode]:
    """The ``episodes`` without their states (the synthetic ones carry the square's corner)."""
    return [Episode(e.frames, e.actions, name=e.name) for e in episodes]


def test_probe_beside_the_true_state_matches_an_independent_fit(world_model):
    """Episodes with states: the evaluation also probes the action from the state at o_t
    alone and from the latent action beside it, with its split; an independent numpy fit of
    the same halves gives the same figures. Without states neither figure is reported."""
    episodes = moving_square_episodes(4, 12, seed=3)
    with_states = with_random_states(episodes, dims=3, seed=0)
    clips = episodes_to_clips(with_states, num_transitions=6)
    assert clips["true_state"].shape == (*clips.shape, 3)
    torch.testing.assert_close(
        clips["true_state"][0, 2], torch.as_tensor(with_states[0].states[2], dtype=torch.float32)
    )
    figures = evaluate_latent_actions(world_model, clips, context=1, seed=0)

    used = ~clips["is_init"].reshape(clips.shape)
    train, test = split_episodes(clips["episode"][used], seed=0)
    latent = posterior_rollout(world_model, clips, seed=0)["latent_action"][used].double()
    state, action = clips["true_state"][used].double(), clips["true_action"][used].double()
    for name, inputs in (("state_only", state), ("with_state", torch.cat([latent, state], 1))):
        x, y = inputs.numpy(), action.numpy()
        expected = numpy_r2(x[train], y[train], x[test], y[test], 1e-3).mean()
        assert figures[f"probe_r2_{name}"] == pytest.approx(expected, abs=1e-6), name
    assert figures["probe_r2_state_only"] < 0.2  # random states say nothing of the moves

    plain = evaluate_latent_actions(
        world_model, episodes_to_clips(without_states(episodes), num_transitions=6), context=1
    )
    assert "probe_r2_state_only" not in plain and "probe_r2_with_state" not in plain


def test_motion_probe_matches_an_independent_fit_on_standardised_features(world_model):
    """With states, the probe two frames can answer: from the latent action (and the state
    at o_t) to the change of the first three state dims between o_t and o_t+1, on features
    standardised with the train halves; an independent numpy fit gives the same figures."""
    episodes = moving_square_episodes(4, 12, seed=3)
    with_states = with_random_states(episodes, dims=4, seed=1)
    clips = episodes_to_clips(with_states, num_transitions=6)
    states = torch.as_tensor(with_states[1].states, dtype=torch.float32)
    torch.testing.assert_close(clips["true_state_change"][2, 3], states[4] - states[3])
    figures = evaluate_latent_actions(world_model, clips, context=1, seed=0)

    used = ~clips["is_init"].reshape(clips.shape)
    train, test = split_episodes(clips["episode"][used], seed=0)
    latent = posterior_rollout(world_model, clips, seed=0)["latent_action"][used].double()
    state = clips["true_state"][used].double()
    motion = clips["true_state_change"][used][:, :3].double().numpy()
    for name, inputs in (
        ("motion", latent),
        ("motion_state_only", state),
        ("motion_with_state", torch.cat([latent, state], 1)),
    ):
        x = inputs.numpy()
        std = x[train].std(0, ddof=1)
        x = (x - x[train].mean(0)) / np.where(std > 0, std, 1.0)
        expected = numpy_r2(x[train], motion[train], x[test], motion[test], 1e-3).mean()
        assert figures[f"probe_r2_{name}"] == pytest.approx(expected, abs=1e-5), name
    assert figures["probe_r2_action_xyz"] == pytest.approx(np.mean(figures["probe_r2_per_dim"][:3]))
    plain = evaluate_latent_actions(
        world_model, episodes_to_clips(without_states(episodes), num_transitions=6), context=1
    )
    assert "probe_r2_motion" not in plain and "probe_r2_action_xyz" not in plain


def test_shuffle_gives_every_clip_another_clips_sequence():
    for seed in range(5):
        index = shuffle_index(7, seed=seed)
        assert sorted(index.tolist()) == list(range(7))
        assert (index != torch.arange(7)).all()
    with pytest.raises(ValueError, match=">= 2 clips"):
        shuffle_index(1)


def test_state_kl_is_the_categorical_kl_over_used_steps():
    posterior = torch.tensor([0.9, 0.1]).log().expand(1, 3, 2, 2)
    prior = torch.tensor([0.5, 0.5]).log().expand(1, 3, 2, 2)
    out = TensorDict(
        {("next", "posterior_logits"): posterior, ("next", "prior_logits"): prior}, [1, 3]
    )
    used = torch.tensor([[False, True, True]])
    per_categorical = 0.9 * np.log(0.9 / 0.5) + 0.1 * np.log(0.1 / 0.5)
    assert state_kl(out, used) == pytest.approx(2 * per_categorical, rel=1e-5)


def numpy_state_kl(out, used):
    posterior = out["next", "posterior_logits"].log_softmax(-1).numpy()
    prior = out["next", "prior_logits"].log_softmax(-1).numpy()
    kl = (np.exp(posterior) * (posterior - prior)).sum((-1, -2))
    return kl[used.numpy()].mean()


def test_own_and_shuffled_state_kl_equal_a_hand_computation(world_model, clips):
    figures = evaluate_latent_actions(world_model, clips, context=1, seed=2)
    used = ~clips["is_init"].squeeze(-1)
    own = posterior_rollout(world_model, clips, seed=2)
    shuffled_latent = own["latent_action"][shuffle_index(clips.shape[0], seed=2)]
    shuffled = posterior_rollout(world_model, clips, latent_action=shuffled_latent, seed=2)
    assert figures["state_kl"] == pytest.approx(numpy_state_kl(own, used), rel=1e-5)
    assert figures["shuffled_state_kl"] == pytest.approx(numpy_state_kl(shuffled, used), rel=1e-5)
    assert figures["state_kl_shuffled_ratio"] == pytest.approx(
        figures["shuffled_state_kl"] / figures["state_kl"]
    )


def test_delta_psnr_is_positive_when_own_latent_actions_predict_better():
    truth = torch.rand(2, 8, 3, 4, 4) - 0.5
    close, far = truth + 0.01, truth + 0.2
    assert controllability(truth, close, far, context=3)["delta_psnr"] > 0
    assert controllability(truth, far, close, context=3)["delta_psnr"] < 0
    only_context_differs = close.clone()
    only_context_differs[:, :3] = far[:, :3]
    assert controllability(truth, only_context_differs, close, context=3)["delta_psnr"] == 0


def test_identical_clips_gain_nothing_from_their_own_latent_actions(world_model):
    episode = moving_square_episodes(1, 12, seed=5)[0]
    copies = [Episode(episode.frames, episode.actions, name=f"copy{i}") for i in range(3)]
    figures = evaluate_latent_actions(
        world_model, episodes_to_clips(copies, num_transitions=12), context=2
    )
    assert figures["delta_psnr"] == pytest.approx(0, abs=1e-6)
    assert figures["state_kl_shuffled_ratio"] == pytest.approx(1)


def test_clips_follow_the_transition_convention():
    frames = np.arange(9, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    actions = np.arange(9, dtype=np.float32)[:, None] * np.array([[1.0, -1.0]], np.float32)
    episodes = [Episode(frames, actions, name="a"), Episode(frames[:6], actions[:6], name="b")]
    clips = episodes_to_clips(episodes, num_transitions=4)
    assert clips.shape == (3, 4)
    assert clips["pixels"][:2, :, 0, 0, 0].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert clips["next", "pixels"][:2, :, 0, 0, 0].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    # APV action[t + 1] leads from o_t to o_{t+1}: the action taken at o_t.
    assert clips["true_action"][:2, :, 0].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert clips["true_action"][0, :, 1].tolist() == [-1, -2, -3, -4]
    assert clips["is_init"][..., 0].tolist() == [[True, False, False, False]] * 3
    assert clips["episode"][:, 0].tolist() == [0, 0, 1]


def test_bad_inputs_get_errors_naming_the_key_or_episode(world_model, clips):
    with pytest.raises(KeyError, match="true_action"):
        evaluate_latent_actions(world_model, clips.exclude("true_action"), context=1)
    flat = clips.clone()
    flat["true_action"] = flat["true_action"][..., 0]
    with pytest.raises(ValueError, match=r"'true_action' must be \[B, T, A\]"):
        evaluate_latent_actions(world_model, flat, context=1)
    with pytest.raises(ValueError, match=r"context must be in \[1, 1\]"):
        evaluate_latent_actions(world_model, clips, context=2)
    with pytest.raises(ValueError, match="batch size"):
        evaluate_latent_actions(world_model, clips[0], context=1)
    with pytest.raises(ValueError, match=">= 2 to fit the probe"):
        evaluate_latent_actions(world_model, clips[:2], context=1)
    frames = np.zeros((5, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="short.npz: 5 frames, expected at least 7"):
        episodes_to_clips([Episode(frames, np.zeros((5, 2)), name="short.npz")], num_transitions=6)
    with pytest.raises(ValueError, match="bare: no actions"):
        episodes_to_clips([Episode(frames, name="bare")], num_transitions=2)
    with pytest.raises(ValueError, match=r"odd: actions have shape \(4, 2\)"):
        episodes_to_clips([Episode(frames, np.zeros((4, 2)), name="odd")], num_transitions=2)


@pytest.mark.parametrize(
    "make", [make_world_model, make_contextwm_pretrain_model], ids=["prelar", "contextwm"]
)
def test_one_clip_rollout_is_the_single_clip_prediction(make):
    """A ``[1, T]`` rollout of one clip (the pre-training GIF's) is that clip's prediction
    step by step: posterior reconstructions of the context frames, then the prior driven by
    the clip's own latent actions, decoded in eval mode."""
    torch.manual_seed(0)
    model = make(**TINY).eval()
    clip, context = moving_square_batch(1, 6), 2
    torch.manual_seed(1)
    truth, prediction = open_loop_rollout(model, clip, context=context, seed=None)

    torch.manual_seed(1)
    with torch.no_grad(), set_interaction_type("mode"):
        out = model(clip.clone())[0]
        state, belief = out["next", "state"][context - 1], out["next", "belief"][context - 1]
        imagined = []
        for step in range(context, clip.shape[1]):
            _, state, belief = model.rssm_prior(state, belief, out["latent_action"][step])
            imagined.append(decode_states(model.decoder, out[step], state, belief))
    expected = torch.cat([out["next", "reco_pixels"][:context], torch.stack(imagined)])
    assert torch.equal(truth[0], centred_pixels(out["next", "pixels"]))
    assert torch.equal(prediction[0], expected.clamp(-0.5, 0.5))


def test_evaluation_is_seeded_and_leaves_rng_and_mode_alone(world_model, clips):
    world_model.train()
    state = torch.get_rng_state()
    first = evaluate_latent_actions(world_model, clips, context=1, seed=7)
    assert torch.equal(torch.get_rng_state(), state) and world_model.training
    again = evaluate_latent_actions(world_model, clips, context=1, seed=7)
    # The probe's double-precision least squares may differ in the last bit between BLAS
    # thread schedules; everything else must be bit-identical.
    probe_keys = {key for key in first if key.startswith("probe_r2")}
    assert {"probe_r2", "probe_r2_motion", "probe_r2_state_only"} <= probe_keys
    assert {k: v for k, v in again.items() if k not in probe_keys} == {
        k: v for k, v in first.items() if k not in probe_keys
    }
    for key in probe_keys:
        assert again[key] == pytest.approx(first[key], rel=1e-9), key
    assert again["probe_r2_pooled"] == pytest.approx(first["probe_r2_pooled"], rel=1e-9)
    assert len(first["probe_r2_per_dim"]) == 2
    assert first["probe_r2"] == pytest.approx(np.mean(first["probe_r2_per_dim"]))
    batched = evaluate_latent_actions(world_model, clips, context=1, seed=7, batch_size=3)
    assert batched["probe_r2"] == pytest.approx(first["probe_r2"])  # modes: no RSSM sample
    assert np.isfinite(batched["delta_psnr"]) and batched["clips"] == first["clips"]


@pytest.mark.parametrize("output_type", ["deterministic", "discrete"])
def test_deterministic_and_discrete_latent_actions(output_type, clips):
    torch.manual_seed(0)
    model = make_world_model(**tiny(latent_action={"output_type": output_type}))
    figures = evaluate_latent_actions(model, clips, context=1)
    assert all(np.isfinite(figures[key]) for key in ("probe_r2", "state_kl", "delta_psnr"))


def test_monitor_logs_at_its_steps_and_reuses_the_last_result(world_model, clips):
    logged = []
    monitor = LatentActionMonitor(
        world_model,
        {"seen": clips, "unseen": clips[:4]},
        context=1,
        every=2,
        last_step=5,
        log=lambda metrics, step: logged.append((step, metrics)),
    )
    for step in range(1, 6):
        monitor.on_step(step)
    assert [step for step, _ in logged] == [2, 4, 5]
    # synthetic clips carry the square's corner as their state: the motion probe too
    names = {f"{figure}_{name}" for figure in LOGGED_FIGURES for name in ("seen", "unseen")}
    assert set(logged[-1][1]) == names
    assert monitor.evaluate(5)["seen"]["probe_r2"] == pytest.approx(
        logged[-1][1]["probe_r2_seen"], rel=1e-9
    )
    assert len(logged) == 3


def test_cli_writes_json_summary_and_transfer_gif(tmp_path):
    settings = {"num_transitions": 6, "context": 1, "episode_length": 12}
    config = HeldOutConfig.from_mapping({**settings, "seen_episodes": 3, "unseen_episodes": 2})
    generate_held_out_sets(tmp_path / "heldout", config, synthetic=True)
    torch.manual_seed(0)
    save_checkpoint(
        tmp_path / "pretrained_world_model.pt",
        {
            "world_model": make_world_model(**TINY).state_dict(),
            "world_model_kwargs": TINY,
            "evaluation": settings,
        },
    )
    update_summary(tmp_path, "pretrain", {"updates": 6})
    result = subprocess.run(
        [sys.executable, "-m", "torchrl_prelar.evaluation", "latent-actions", str(tmp_path)],
        capture_output=True,
        text=True,
        env=dict(os.environ, MUJOCO_GL="egl"),
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "probe R2" in result.stdout and "unseen" in result.stdout
    figures = json.loads((tmp_path / "latent_actions.json").read_text())
    assert figures["seen"]["episodes"] == 3 and figures["unseen"]["clips"] == 4
    summary = json.loads((tmp_path / "summary.json").read_text())["pretrain"]
    assert summary["updates"] == 6 and summary["latent_actions"] == figures
    gif = iio.imread(tmp_path / "latent_action_transfer.gif")
    assert gif.shape[0] == 6 and gif.shape[2] == 3 * 64 + 4  # three panels, T frames


def test_cli_refuses_an_action_free_pretraining(tmp_path):
    from torchrl_prelar.evaluation.__main__ import load_pretrained_run

    state = {
        k: v for k, v in make_world_model(**TINY).state_dict().items() if "action_model" not in k
    }
    save_checkpoint(
        tmp_path / "pretrained_world_model.pt", {"world_model": state, "world_model_kwargs": TINY}
    )
    with pytest.raises(ValueError, match="no latent action"):
        load_pretrained_run(tmp_path)


def test_cli_defaults_are_the_quick_presets_held_out_sets():
    import yaml

    # The quick preset's values are config.yaml's.
    preset = yaml.safe_load((REPO / "examples" / "config" / "config.yaml").read_text())
    assert HeldOutConfig.from_mapping(preset["evaluation"]) == HeldOutConfig()


def test_cli_evaluates_a_pretraining_checkpoint_like_the_finished_model(tmp_path):
    """``--checkpoint RUN_DIR/pretrain_last.pt``: the world model taken out of the trainer's
    state is the one the run saved as its pre-trained model (the last checkpoint is written
    at the last update), and the figures go to ``RUN_DIR/eval_pretrain_last/``."""
    from dreamer_prelar import run_pretrain
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from torchrl_prelar.evaluation.__main__ import load_pretrained_run, main

    run_dir = tmp_path / "run"
    with initialize_config_dir(str(REPO / "examples" / "config"), version_base=None):
        config = compose("config", overrides=["preset=test", f"run_dir={run_dir}", "threads=1"])
    run_pretrain(OmegaConf.to_container(config, resolve=True))
    checkpoint = run_dir / "pretrain_last.pt"
    finished, settings = load_pretrained_run(run_dir)
    from_checkpoint, stored = load_pretrained_run(run_dir, checkpoint=checkpoint)
    assert stored == settings and stored["probe_every"] == 3
    assert finished.state_dict().keys() == from_checkpoint.state_dict().keys()
    for name, value in finished.state_dict().items():
        assert torch.equal(value, from_checkpoint.state_dict()[name]), name

    results = main(["latent-actions", str(run_dir), "--checkpoint", str(checkpoint)])
    out = run_dir / "eval_pretrain_last"
    assert json.loads((out / "latent_actions.json").read_text()) == json.loads(json.dumps(results))
    assert (out / "latent_action_transfer.gif").stat().st_size > 0
    assert json.loads((run_dir / "latent_actions.json").read_text()) != {}  # the run's own

    # A pre-training checkpoint that does not say which world model it holds is refused.
    content = torch.load(checkpoint, weights_only=True)
    del content["world_model_kwargs"]
    torch.save(content, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="has no 'world_model_kwargs' entry"):
        load_pretrained_run(run_dir, checkpoint=tmp_path / "old.pt")
    save_checkpoint(tmp_path / "other.pt", {"step": 3})
    with pytest.raises(ValueError, match=r"holds \['step'\]: expected a pre-trained model"):
        load_pretrained_run(run_dir, checkpoint=tmp_path / "other.pt")
