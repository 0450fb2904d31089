import pytest
import torch
from conftest import TINY, make_clip_batch, tiny
from torch.distributions import Categorical, Independent, Normal, kl_divergence

from torchrl_prelar import PreLARLoss, make_world_model
from torchrl_prelar.modules.pixels import centred_pixels


def total(losses):
    return sum(value for key, value in losses.items() if key.startswith("loss_"))


def tiny_loss(output_type="gaussian", seed=0, **kwargs):
    torch.manual_seed(seed)
    model = make_world_model(**tiny(latent_action={"output_type": output_type}))
    return PreLARLoss(model, **kwargs)


def grads(module):
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in module.parameters()]


def test_outputs_loss_terms_and_detached_metrics():
    losses, model_td = tiny_loss()(make_clip_batch())
    assert set(losses.keys()) == {
        "loss_model_reco",
        "loss_model_dynamic",
        "loss_model_representation",
        "loss_action_kl",
        "action_kl",
        "state_kl",
        "reco_mse",
        "latent_action_std",
    }
    for key in ("action_kl", "state_kl", "reco_mse", "latent_action_std"):
        assert not losses[key].requires_grad
    assert model_td["next", "reco_pixels"].requires_grad
    assert "true_reward" not in model_td["next"].keys()


def test_input_tensordict_is_not_modified():
    batch = make_clip_batch()
    before = set(batch.keys(True, True))
    tiny_loss()(batch)
    assert set(batch.keys(True, True)) == before
    assert batch["pixels"].dtype == torch.uint8


def test_reward_term_only_with_rewards():
    torch.manual_seed(0)
    model = make_world_model(**TINY, reward_keys=[("next", "reward")])
    batch = make_clip_batch()
    batch["next", "reward"] = torch.randn(2, 4, 1)
    losses, _ = PreLARLoss(model)(batch)
    assert losses["loss_model_reward"] > 0
    losses["loss_model_reward"].backward()
    assert model.reward_heads[0].module[0].weight.grad.abs().sum() > 0


def test_set_keys_renames_the_reward():
    torch.manual_seed(0)
    model = make_world_model(**TINY, reward_keys=[("next", "r")])
    loss = PreLARLoss(model)
    loss.set_keys(reward="r")
    batch = make_clip_batch()
    batch["next", "r"] = torch.ones(2, 4, 1)
    losses, _ = loss(batch)
    assert "loss_model_reward" in losses.keys()


@pytest.mark.parametrize("beta, prior_std", [(1.0, 1.0), (0.25, 1.0), (1.0, 1.245)])
def test_gaussian_action_kl_matches_closed_form(beta, prior_std):
    loss = tiny_loss(beta_action=beta, action_prior_std=prior_std)
    losses, model_td = loss(make_clip_batch(3, 5))
    q = Normal(model_td["latent_action_loc"], model_td["latent_action_scale"])
    p = Normal(torch.zeros(()), torch.full((), prior_std))
    per_step = kl_divergence(q, p).sum(-1)[:, 1:]  # t = 0 is a sequence start
    torch.testing.assert_close(losses["action_kl"], per_step.mean().detach())
    torch.testing.assert_close(losses["loss_action_kl"], beta * per_step.mean().reshape(1))


@pytest.mark.parametrize("free_nats", [0.0, 1e3])
def test_action_free_nats_clamp_the_action_kl_loss(free_nats):
    reference, freed = tiny_loss(), tiny_loss(action_free_nats=free_nats, beta_action=2.0)
    batch = make_clip_batch(3, 5)
    torch.manual_seed(1)
    losses, _ = reference(batch)
    torch.manual_seed(1)
    clamped, _ = freed(batch)
    torch.testing.assert_close(clamped["action_kl"], losses["action_kl"])
    expected = 2.0 * max(losses["action_kl"].item(), free_nats)
    assert clamped["loss_action_kl"].item() == pytest.approx(expected, rel=1e-5)
    clamped["loss_action_kl"].sum().backward()
    has_gradient = any(p.grad is not None and p.grad.abs().sum() > 0 for p in freed.parameters())
    assert has_gradient == (free_nats == 0.0)


@pytest.mark.parametrize("sample", [False, True])
def test_latent_action_is_the_mode_unless_sampling_is_asked_for(sample):
    losses, model_td = tiny_loss(sample_latent_action=sample)(make_clip_batch())
    used = ~model_td["is_init"].squeeze(-1)  # the rollout zeroes the action at a start
    is_mode = torch.equal(model_td["latent_action"][used], model_td["latent_action_loc"][used])
    assert is_mode != sample


def test_discrete_action_kl_matches_kl_to_uniform():
    losses, model_td = tiny_loss("discrete")(make_clip_batch())
    logits = model_td["latent_action_logits"]
    q = Categorical(logits=logits)
    p = Categorical(logits=torch.zeros_like(logits))
    expected = kl_divergence(q, p).sum(-1)[:, 1:].mean()
    torch.testing.assert_close(losses["action_kl"], expected.detach())


@pytest.mark.parametrize("output_type", ["gaussian", "discrete"])
def test_action_kl_is_the_kl_of_the_latent_action_models_distribution(output_type):
    loss = tiny_loss(output_type, action_prior_std=1.245)
    batch = make_clip_batch(3, 5)
    losses, _ = loss(batch)
    dist = loss.world_model.action_model.get_dist(batch)
    if output_type == "gaussian":
        prior = Independent(Normal(torch.zeros(8), torch.full((8,), 1.245)), 1)
        per_step = kl_divergence(dist, prior)
    else:
        categoricals = Categorical(logits=dist.logits)
        uniform = Categorical(logits=torch.zeros_like(dist.logits))
        per_step = kl_divergence(categoricals, uniform).sum(-1)
    torch.testing.assert_close(losses["action_kl"], per_step[:, 1:].mean().detach())


def test_deterministic_output_has_no_action_kl_and_no_kl_gradient():
    loss = tiny_loss("deterministic")
    losses, _ = loss(make_clip_batch())
    assert losses["loss_action_kl"].item() == 0.0
    assert not losses["loss_action_kl"].requires_grad
    assert "latent_action_std" not in losses.keys()


def test_state_kl_and_reconstruction_match_independent_computation():
    losses, model_td = tiny_loss(kl_balance=0.8, lambda_reco=0.5)(make_clip_batch())
    posterior = Categorical(logits=model_td["next", "posterior_logits"])
    prior = Categorical(logits=model_td["next", "prior_logits"])
    kl = kl_divergence(posterior, prior).sum(-1).mean().detach()
    torch.testing.assert_close(losses["loss_model_dynamic"], 0.8 * kl.reshape(1))
    torch.testing.assert_close(losses["loss_model_representation"], 0.2 * kl.reshape(1))
    error = model_td["next", "reco_pixels"] - model_td["next", "pixels"]
    expected = 0.5 * error.pow(2).sum((-3, -2, -1)).mean()
    torch.testing.assert_close(losses["loss_model_reco"], expected.detach().reshape(1))


def test_reconstruction_gradient_reaches_latent_action_model_through_the_rssm():
    loss = tiny_loss()
    losses, model_td = loss(make_clip_batch())
    losses["loss_model_reco"].backward()
    lam_grads = grads(loss.world_model.action_model)
    assert sum(g.abs().sum() for g in lam_grads) > 0
    # The decoder reads only the RSSM state: the latent action reaches it through the prior.
    assert loss.world_model.decoder.in_keys == [("next", "state"), ("next", "belief")]


def test_state_kl_gradient_reaches_latent_action_model():
    loss = tiny_loss()
    losses, _ = loss(make_clip_batch())
    losses["loss_model_dynamic"].backward()
    assert sum(g.abs().sum() for g in grads(loss.world_model.action_model)) > 0


def _gradients_with(consistency):
    loss = tiny_loss(consistency=consistency, seed=3)
    torch.manual_seed(11)
    losses, _ = loss(make_clip_batch(4, 5))
    total(losses).backward()
    return losses, grads(loss)


def test_sign_consistency_adds_exactly_zero_gradient():
    off_losses, off_grads = _gradients_with("off")
    sign_losses, sign_grads = _gradients_with("sign")
    assert sign_losses["loss_consistency"] > 0
    for off, sign in zip(off_grads, sign_grads, strict=True):
        assert torch.equal(off, sign)


def test_soft_consistency_trains_the_latent_action_model():
    loss = tiny_loss(consistency="soft", seed=3)
    losses, _ = loss(make_clip_batch(4, 5))
    losses["loss_consistency"].backward()
    assert sum(g.abs().sum() for g in grads(loss.world_model.action_model)) > 0
    rssm_grads = grads(loss.world_model.rssm)
    assert sum(g.abs().sum() for g in rssm_grads) == 0, "the state side is detached"


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="consistency"):
        tiny_loss(consistency="rank")
    with pytest.raises(ValueError, match="kl_balance"):
        tiny_loss(kl_balance=1.5)
    with pytest.raises(ValueError, match="action_free_nats"):
        tiny_loss(action_free_nats=-1.0)


def test_missing_next_pixels_is_reported_by_key():
    batch = make_clip_batch()
    del batch["next", "pixels"]
    with pytest.raises(KeyError, match=r"\('next', 'pixels'\)"):
        tiny_loss()(batch)


def _argmax_one_hot(logits):
    return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float().flatten(-2)


def test_prior_reconstruction_matches_independent_computation(monkeypatch):
    monkeypatch.setattr("torchrl_prelar.objectives.prelar.straight_through_sample", _argmax_one_hot)
    loss = tiny_loss(lambda_prior_reco=0.5)
    losses, model_td = loss(make_clip_batch(2, 5))
    state = _argmax_one_hot(model_td["next", "prior_logits"])
    decoded = loss.world_model.decoder.module(state, model_td["next", "belief"])
    error = (decoded - model_td["next", "pixels"]).pow(2).sum((-3, -2, -1))[:, 1:]
    torch.testing.assert_close(
        losses["loss_prior_reco"], 0.5 * error.mean().detach().reshape(1), rtol=1e-4, atol=1e-3
    )


def test_prior_reconstruction_trains_the_latent_action_model_and_is_off_by_default():
    assert "loss_prior_reco" not in tiny_loss()(make_clip_batch())[0].keys()
    loss = tiny_loss(lambda_prior_reco=1.0)
    losses, _ = loss(make_clip_batch())
    losses["loss_prior_reco"].backward()
    assert sum(g.abs().sum() for g in grads(loss.world_model.action_model)) > 0


def test_straight_through_sample_is_one_hot_with_gradients_to_the_logits():
    from torchrl_prelar.modules.latent_action import straight_through_sample

    logits = torch.randn(3, 4, 5, requires_grad=True)
    sample = straight_through_sample(logits)
    assert sample.shape == (3, 20)
    assert torch.equal(sample.detach().unflatten(-1, (4, 5)).sum(-1), torch.ones(3, 4))
    (sample * torch.randn(3, 20)).sum().backward()
    assert logits.grad.abs().sum() > 0


def test_forward_reconstruction_matches_independent_computation():
    loss = tiny_loss(lambda_forward_reco=0.5)
    losses, model_td = loss(make_clip_batch(2, 5))
    next_embedding = model_td["next", "encoded_latents"]
    # o_t's embedding is o_{t-1}'s next embedding; step 0 (a clip start) is left out.
    state, belief = loss.forward_model(next_embedding[:, :-1], model_td["latent_action"][:, 1:])
    decoded = loss.world_model.decoder.module(state, belief)
    error = (decoded - model_td["next", "pixels"][:, 1:]).pow(2).sum((-3, -2, -1))
    torch.testing.assert_close(
        losses["loss_forward_reco"], 0.5 * error.mean().detach().reshape(1), rtol=1e-4, atol=1e-3
    )


def test_forward_reconstruction_trains_latent_action_model_encoder_and_decoder():
    assert tiny_loss().forward_model is None
    loss = tiny_loss(lambda_forward_reco=1.0)
    losses, _ = loss(make_clip_batch())
    losses["loss_forward_reco"].backward()
    model = loss.world_model
    for part in (model.action_model, model.encoder, model.decoder, loss.forward_model):
        assert sum(g.abs().sum() for g in grads(part)) > 0
    assert all(g.abs().sum() == 0 for g in grads(model.rssm))


def test_residual_forward_reconstruction_adds_the_current_frame():
    loss = tiny_loss(lambda_forward_reco=1.0, forward_residual=True)
    losses, model_td = loss(make_clip_batch(2, 5))
    next_embedding = model_td["next", "encoded_latents"]
    state, belief = loss.forward_model(next_embedding[:, :-1], model_td["latent_action"][:, 1:])
    change = loss.world_model.decoder.module(state, belief)
    # the scored target is centred in the loss's output; o_t is left as given (uint8)
    target_change = model_td["next", "pixels"][:, 1:] - centred_pixels(model_td["pixels"][:, 1:])
    error = (change - target_change).pow(2).sum((-3, -2, -1))
    torch.testing.assert_close(
        losses["loss_forward_reco"], error.mean().detach().reshape(1), rtol=1e-4, atol=1e-3
    )


def test_action_kl_warmup_ramps_the_weight_and_resumes_from_the_state_dict():
    loss = tiny_loss(beta_action=2.0, action_kl_warmup=4)
    weights = []
    for _ in range(5):
        losses, _ = loss(make_clip_batch())
        weights.append(float(losses["loss_action_kl"] / losses["action_kl"]))
    assert weights == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.0], rel=1e-5)
    resumed = tiny_loss(beta_action=2.0, action_kl_warmup=4)
    resumed.load_state_dict(tiny_loss(beta_action=2.0, action_kl_warmup=4).state_dict())
    assert int(resumed.training_forwards) == 0
    resumed.load_state_dict(loss.state_dict())
    assert int(resumed.training_forwards) == 5
    loss.eval()
    losses, _ = loss(make_clip_batch())
    assert float(losses["loss_action_kl"] / losses["action_kl"]) == pytest.approx(2.0)
    assert "training_forwards" not in tiny_loss().state_dict()
