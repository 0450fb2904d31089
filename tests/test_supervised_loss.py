"""SupervisedLatentActionLoss: the latent action model regressed on the true action or on the
hand displacement, as a library loss and as the example's ``loss=supervised_*``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY, tiny
from hydra import compose, initialize_config_dir
from test_loss_config import CONFIG_DIR
from test_pretrain import run_example

from torchrl_prelar import SupervisedLatentActionLoss, make_world_model
from torchrl_prelar.data.synthetic import moving_square_batch
from torchrl_prelar.io import load_checkpoint
from torchrl_prelar.training.pretrain import PreLARPretrainer, make_optimizer


def batch(seed: int = 0):
    return moving_square_batch(3, 5, generator=torch.Generator().manual_seed(seed))


def test_value_is_the_mean_squared_error_of_a_linear_readout_of_the_mean():
    torch.manual_seed(0)
    world_model = make_world_model(**TINY)
    loss = SupervisedLatentActionLoss(world_model, target_dims=[1], standardize=False)
    loss.set_keys(target="true_state_change")
    data = batch()
    data["true_state_change"][1, 2] = float("nan")  # left out, as the sequence starts are
    value = loss(data)[0]["loss_supervised"]

    # The Gaussian's mean (not a sample), read out linearly, against dim 1 of the target.
    mean = world_model.infer_latent_action(data.clone())["latent_action_loc"]
    prediction = mean @ loss.readout.weight.T + loss.readout.bias
    used = ~data["is_init"].squeeze(-1)
    used[1, 2] = False
    expected = (prediction[..., 0] - data["true_state_change"][..., 1])[used].pow(2).mean()
    torch.testing.assert_close(value, expected)
    assert "latent_action" not in data.keys()  # the batch is left as it was


def test_standardized_target_is_scale_free_and_matches_numpy():
    torch.manual_seed(0)
    world_model = make_world_model(**TINY)
    loss = SupervisedLatentActionLoss(world_model, target_dim=2)
    data = batch()
    value = loss(data)[0]["loss_supervised"]

    used = ~data["is_init"].squeeze(-1).numpy()
    target = data["true_action"].numpy()[used].astype(np.float64)
    standardized = (target - target.mean(0)) / target.std(0, ddof=1)
    mean = world_model.infer_latent_action(data.clone())["latent_action_loc"]
    prediction = (mean @ loss.readout.weight.T + loss.readout.bias).detach().numpy()[used]
    expected = ((prediction - standardized) ** 2).mean()
    assert abs(float(value) - expected) < 1e-5

    # Millimetre-sized targets give the same loss as unit-sized ones.
    data["true_action"] = data["true_action"] * 1e-3
    torch.testing.assert_close(loss(data)[0]["loss_supervised"], value)


@pytest.mark.parametrize("output_type", ["gaussian", "deterministic"])
def test_gradient_reaches_the_latent_action_model_only(output_type):
    world_model = make_world_model(**tiny(latent_action={"output_type": output_type}))
    loss = SupervisedLatentActionLoss(world_model, target_dim=2)
    loss(batch())[0]["loss_supervised"].backward()
    action_grads = [p.grad for p in world_model.action_model.parameters()]
    assert all(g is not None for g in action_grads) and any(g.abs().sum() > 0 for g in action_grads)
    assert loss.readout.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in world_model.rssm.parameters())


def test_trainer_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    loss = SupervisedLatentActionLoss(make_world_model(**TINY), target_dim=2)
    trainer = PreLARPretrainer(loss, make_optimizer(loss.parameters(), lr=1e-3), precision="fp32")
    data = batch()
    values = [float(trainer.update(data)["loss_supervised"]) for _ in range(30)]
    assert values[-1] < 0.5 * values[0]


def test_missing_target_key_is_named():
    loss = SupervisedLatentActionLoss(make_world_model(**TINY), target_dim=3)
    loss.set_keys(target="true_hand")
    with pytest.raises(KeyError, match="no 'true_hand' entry"):
        loss(batch())
    loss.set_keys(target="true_action")  # 2 dims, the read-out has 3
    with pytest.raises(ValueError, match=r"'true_action' is \(3, 5, 2\)"):
        loss(batch())


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="arg-max has no gradient"):
        SupervisedLatentActionLoss(
            make_world_model(**tiny(latent_action={"output_type": "discrete"})), target_dim=2
        )
    with pytest.raises(ValueError, match="disagrees with target_dims"):
        SupervisedLatentActionLoss(make_world_model(**TINY), target_dim=2, target_dims=[0])
    with pytest.raises(ValueError, match="target_dim must be >= 1"):
        SupervisedLatentActionLoss(make_world_model(**TINY))


def test_loss_group_selects_the_targets():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        action = dict(compose("config", overrides=["loss=supervised_action"]).loss)
        motion = dict(compose("config", overrides=["loss=supervised_displacement"]).loss)
    assert action == {"objective": "supervised", "target": "true_action", "leading_dims": None}
    assert motion == {**action, "target": "true_state_change", "leading_dims": 3}


def test_example_pretrains_the_supervised_displacement_reference(tmp_path):
    result = run_example(tmp_path, "loss=supervised_displacement")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())["pretrain"]
    assert summary["updates"] == 6 and summary["last_metrics"]["loss_supervised"] > 0
    for name in ("seen", "unseen"):  # the probe two frames can answer, on held-out episodes
        figures = summary["latent_actions"][name]
        assert {"probe_r2_motion", "probe_r2", "probe_r2_action_xyz"} <= set(figures)
    state = load_checkpoint(tmp_path / "pretrain_last.pt")["trainer"]["model"]
    assert state["readout.weight"].shape == (2, TINY["latent_action"]["dim"])

    bad = run_example(tmp_path / "bad", "loss=supervised_action", "loss.target=true_hand")
    assert bad.returncode != 0 and "carry no 'true_hand' entry" in bad.stderr
