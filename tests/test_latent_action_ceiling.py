"""experiments/latent_action_ceiling.py: the probe ceiling from the true state change."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "latent_action_ceiling.py"


@pytest.fixture(scope="module")
def ceiling():
    spec = importlib.util.spec_from_file_location("latent_action_ceiling", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _episodes(step_scale, *, count=6, length=40, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        action = rng.uniform(-1, 1, (length, 4)).astype(np.float32)
        state = np.concatenate([np.zeros((1, 4)), np.cumsum(step_scale * action, 0)])
        out.append({"state": state, "action": action, "pixels": 10 * state[:, :2]})
    return out


def test_state_change_that_is_the_action_scores_one_and_noise_scores_below_zero(ceiling):
    exact = ceiling.probe_ceiling(_episodes(0.01))
    assert exact["state change"]["r2"] == pytest.approx(1.0, abs=1e-3)
    by_task = _episodes(0.01)
    for index, episode in enumerate(by_task):
        episode["task"] = "ab"[index % 2]
    assert ceiling.probe_ceiling(by_task)["state change"]["r2"] == pytest.approx(1.0, abs=1e-3)
    assert exact["hand step (pixels at 64x64)"]["mean"] > 0
    shuffled = _episodes(0.01)
    for episode in shuffled:
        episode["action"] = np.random.default_rng(1).uniform(-1, 1, episode["action"].shape)
    assert ceiling.probe_ceiling(shuffled)["state change"]["r2"] < 0.05
    # A state that moves by the action of the step before: the lagged probe finds it.
    assert exact["state change -> the previous action"]["r2"] < 0.05
    lagging = _episodes(0.01)
    for episode in lagging:
        episode["state"][1:] = episode["state"][:-1].copy()
    lagged = ceiling.probe_ceiling(lagging)
    assert lagged["state change -> the previous action"]["r2"] == pytest.approx(1.0, abs=1e-3)
    assert lagged["state change"]["r2"] < 0.05


def test_hand_pixels_matches_a_pinhole_projection(ceiling, monkeypatch):
    class Model:
        cam_fovy = np.array([90.0])

    class Data:
        cam_xpos = np.zeros((1, 3))
        cam_xmat = np.eye(3).reshape(1, 9)

    monkeypatch.setattr(ceiling.mujoco, "mj_name2id", lambda model, kind, name: 0)
    # 90 degree field of view, 64 pixels: focal length 32; a point 1 m ahead, 0.5 m right.
    pixels = ceiling.hand_pixels(Model(), Data(), np.array([[0.5, 0.25, -1.0]]), "corner", 64)
    assert pixels[0].tolist() == pytest.approx([16.0, 8.0])


def test_diagnosis_tells_a_code_of_the_motion_from_a_code_of_the_position(ceiling):
    """A latent action that is the true action reads as the action and the state change; one
    that is the hand's next position reads as that position, and as the action only through
    random features of it no better than through the motion code."""
    episodes = _episodes(0.01)
    action = np.concatenate([e["action"] for e in episodes])
    next_state = np.concatenate([e["state"][1:] for e in episodes])
    import torch

    motion = ceiling.diagnose_model(torch.tensor(action @ np.diag([2.0, -1.0, 0.5, 3.0])), episodes)
    assert motion["latent -> action"]["r2"] == pytest.approx(1.0, abs=1e-3)
    assert motion["latent -> state change"]["r2"] == pytest.approx(1.0, abs=1e-3)
    assert motion["latent -> state at t+1"]["r2"] < 0.2
    assert motion["latent, 256 features -> action"]["r2"] > 0.8  # nonlinear, but recoverable

    position = ceiling.diagnose_model(torch.tensor(next_state), episodes)
    assert position["latent -> state at t+1"]["r2"] == pytest.approx(1.0, abs=1e-3)
    assert position["latent -> action"]["r2"] < 0.2
    # ... but beside the state at t the next position gives the action back exactly, which
    # the state alone does not (these random actions do not depend on it).
    assert position["latent + state at t -> action"]["r2"] == pytest.approx(1.0, abs=1e-3)
    assert position["state at t -> action"]["r2"] < 0.2
