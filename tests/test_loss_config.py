"""The example's loss settings: a Hydra group with the default and the paper's objective."""

from pathlib import Path

import pytest
from conftest import TINY
from hydra import compose, initialize_config_dir

from torchrl_prelar import PreLARLoss, make_world_model

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "examples" / "config")


def loss_settings(*overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return dict(compose("config", overrides=list(overrides)).loss)


def test_paper_setting_is_the_papers_objective():
    paper = loss_settings("loss=paper")
    assert paper["beta_action"] == 1.0 and paper["kl_balance"] == 0.8
    assert paper["lambda_forward_reco"] == paper["lambda_prior_reco"] == 0.0
    assert paper["action_free_nats"] == paper["free_nats"] == 0.0
    assert paper["sample_latent_action"] is True and paper["consistency"] == "off"


def test_default_adds_the_reconstructions_through_the_latent_action():
    default = loss_settings()
    assert default == {
        **loss_settings("loss=paper"),
        "beta_action": 0.1,
        "lambda_forward_reco": 0.5,
        "lambda_prior_reco": 0.5,
    }
    assert loss_settings("loss.beta_action=0.3")["beta_action"] == 0.3


def test_long_preset_weights_the_prior_reconstruction_and_the_command_line_still_wins():
    long = loss_settings("preset=long")
    assert long == {**loss_settings(), "lambda_prior_reco": 2.0}
    assert long == loss_settings("loss=prelar_prior2")
    assert loss_settings("preset=long", "loss=paper") == loss_settings("loss=paper")
    assert loss_settings("preset=long", "loss=prelar") == loss_settings()


@pytest.mark.parametrize("setting", ["prelar", "prelar_prior2", "paper"])
def test_every_setting_builds_a_prelar_loss(setting):
    loss = PreLARLoss(make_world_model(**TINY), **loss_settings(f"loss={setting}"))
    assert (loss.forward_model is not None) == (setting != "paper")
