import math
from pathlib import Path

import pytest
import torch
from conftest import TINY, pretraining_totals, tiny
from dreamer_prelar import run_finetune, run_pretrain
from dreamer_prelar_utils import make_finetune_world_model, read_finetune_checkpoint
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tensordict import TensorDict

from torchrl_prelar.baselines.apv import (
    APVWorldModel,
    make_action_free_world_model,
    make_apv_world_model,
)
from torchrl_prelar.io import PRETRAINED_MODEL, load_checkpoint, save_checkpoint
from torchrl_prelar.modules import make_world_model

REPO = Path(__file__).resolve().parents[1]
STOCH, DETER = 64, 64  # the tiny world model: 8 x 8 categoricals, deter 64


def preset_config(run_dir, *overrides):
    with initialize_config_dir(str(REPO / "examples" / "config"), version_base=None):
        config = compose("config", overrides=["preset=test", f"run_dir={run_dir}", *overrides])
    return OmegaConf.to_container(config, resolve=True)


def transitions(batch=2, steps=5, action_dim=4):
    generator = torch.Generator().manual_seed(0)
    is_init = torch.zeros(batch, steps, 1, dtype=torch.bool)
    is_init[:, 0] = True
    frames = torch.randint(0, 256, (batch, steps, 3, 64, 64), generator=generator)
    return TensorDict(
        {
            "action": torch.rand(batch, steps, action_dim, generator=generator) * 2 - 1,
            "is_init": is_init,
            ("next", "pixels"): frames.to(torch.uint8),
        },
        [batch, steps],
    )


def test_action_free_prior_reads_no_action_and_stacked_model_shapes():
    action_free = make_action_free_world_model(**TINY)
    assert action_free.rssm_prior.action_state_projector[0].in_features == STOCH
    model = make_apv_world_model(4, action_free=action_free, **TINY)
    # The new prior reads state + real action; its posterior observes [af_state, af_belief].
    assert model.rssm_prior.action_state_projector[0].in_features == STOCH + 4
    posterior = model.rssm.rssm_posterior.module
    assert posterior.obs_rnn_to_post_projector[0].in_features == DETER + STOCH + DETER
    # Encoder, action-free RSSM and decoder are the action-free model's modules.
    assert model.encoder.module is action_free.encoder.module
    assert model.action_free.rssm is action_free.rssm
    assert model.decoder is action_free.decoder

    out = model(transitions())
    assert out["next", "af_state"].shape == (2, 5, STOCH)
    assert out["next", "encoded_latents"].shape == (2, 5, STOCH + DETER)
    assert out["next", "state"].shape == (2, 5, STOCH)
    assert out["next", "prior_logits"].shape == (2, 5, 8, 8)
    assert out["next", "reco_pixels"].shape == (2, 5, 3, 64, 64)
    features = model.action_free_features(transitions())
    assert features.shape == (2, 5, STOCH + DETER) and not features.requires_grad
    # The action-conditional losses train the action-free RSSM through its features.
    out["next", "reco_pixels"].square().mean().backward()
    assert action_free.rssm_prior.rnn.weight_ih.grad.abs().sum() > 0


def test_action_free_pretraining_loss_falls():
    torch.manual_seed(0)
    model = make_action_free_world_model(**TINY)
    totals, action_kls = pretraining_totals(model)
    assert all(kl == 0.0 for kl in action_kls)  # no latent action at all
    assert all(math.isfinite(value) for value in totals)
    assert sum(totals[-5:]) / 5 < 0.7 * sum(totals[:5]) / 5


def test_apv_loads_action_free_pretraining(tmp_path):
    path = tmp_path / PRETRAINED_MODEL
    action_free = make_action_free_world_model(**TINY)
    save_checkpoint(path, {"world_model": action_free.state_dict(), "world_model_kwargs": TINY})
    model = make_finetune_world_model(preset_config(tmp_path, "arm=apv"), 4)
    assert isinstance(model, APVWorldModel)
    loaded = {
        "encoder.module.": model.encoder.module.state_dict(),
        "rssm.": model.action_free.rssm.state_dict(),
        "decoder.module.": model.decoder.module.state_dict(),
    }
    saved = action_free.state_dict()
    for prefix, state in loaded.items():
        for name, value in state.items():
            assert torch.equal(value, saved[prefix + name]), prefix + name


def test_apv_checkpoint_mismatch_errors(tmp_path):
    path = tmp_path / PRETRAINED_MODEL
    cfg = preset_config(tmp_path, "arm=apv")
    # A PreLAR pre-training (latent action model, action input) is not an APV one ...
    save_checkpoint(path, {"world_model": make_world_model(**TINY).state_dict()})
    with pytest.raises(ValueError, match=r"PreLAR \(with a latent action model\) pre-training"):
        make_finetune_world_model(cfg, action_dim=4)
    # ... nor the reverse ...
    cfg_prelar = preset_config(tmp_path, "arm=prelar")
    action_free = make_action_free_world_model(**TINY)
    save_checkpoint(path, {"world_model": action_free.state_dict()})
    with pytest.raises(ValueError, match=r"action_state_projector.*pre-trained shape"):
        make_finetune_world_model(cfg_prelar, action_dim=4)
    # ... and an action-free model of another size is named parameter by parameter.
    settings = tiny(rssm={"deter": 32})
    other = make_action_free_world_model(**settings)
    save_checkpoint(path, {"world_model": other.state_dict(), "world_model_kwargs": settings})
    with pytest.raises(ValueError, match=r"rssm\.rssm_prior.*pre-trained shape"):
        make_finetune_world_model(cfg, action_dim=4)


def test_apv_pretrain_then_finetune_end_to_end(tmp_path):
    run_dir = tmp_path / "run"
    cfg = preset_config(run_dir, "arm=apv", "finetune.env_steps=200")
    run_pretrain(cfg)
    pretrained = load_checkpoint(run_dir / PRETRAINED_MODEL)["world_model"]
    assert not any(name.startswith("action_model.") for name in pretrained)

    summary = run_finetune(cfg)
    assert summary["init"] == "apv"
    assert summary["env_steps"] == 200 and summary["updates"] == 31  # at steps 50, 55, ..., 200
    metrics = summary["last_metrics"]
    assert math.isfinite(metrics["world_model_loss"]) and metrics["intrinsic_bonus"] >= 0
    state = read_finetune_checkpoint(run_dir)["loss"]
    prefix = "model_loss.prelar_loss.model_loss.world_model.world_model."
    names = [name[len(prefix) :] for name in state if name.startswith(prefix)]
    assert any(name.startswith("action_free.rssm.rssm_prior.") for name in names)
    assert any(name.startswith("rssm.rssm_prior.") for name in names)
    # The encoder + action-free RSSM were frozen for 5 updates, then trained (26 updates).
    moved = [
        name
        for name, value in pretrained.items()
        if name.startswith("rssm.")
        and not torch.equal(value, state[prefix + "action_free." + name])
    ]
    assert moved
