"""PreLARLoss on a world model assembled from TorchRL's own DreamerV3 pieces, keys renamed.

The world model is laid out as in TorchRL's sota DreamerV3 example: a
:class:`~torchrl.modules.WorldModelWrapper` of a transition model (a ``TensorDictSequential``
of encoder, RSSM rollout and decoder) and a reward model; here a latent action model written
with TorchRL's probabilistic modules sits in front of the RSSM. No key keeps its default name
except the RSSM's ``state`` / ``belief`` (:class:`~torchrl.modules.RSSMRolloutV3` fixes them).
"""

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import (
    InteractionType,
    ProbabilisticTensorDictModule,
    TensorDictModule,
    TensorDictSequential,
)
from torch import nn
from torch.distributions import Normal
from torchrl.modules import (
    MLP,
    DreamerV3ImageDecoder,
    DreamerV3ImageEncoder,
    NormalParamExtractor,
    RSSMPosteriorV3,
    RSSMPriorV3,
    RSSMRolloutV3,
    WorldModelWrapper,
)
from torchrl.objectives import DreamerV3ModelLoss

from torchrl_prelar import PreLARLoss
from torchrl_prelar.data.synthetic import moving_square_batch

SIZE, CATEGORICALS, CLASSES, DETER, ACTION_DIM = 16, 4, 4, 16, 4
STOCH = CATEGORICALS * CLASSES
MODEL_KEYS = {
    "pixels": "obs",
    "reco_pixels": "obs_reco",
    "prior_logits": "prior_lg",
    "posterior_logits": "post_lg",
    "reward": "rew",
}
LATENT_ACTION_KEYS = {
    "latent_action": "la",
    "latent_action_loc": "la_loc",
    "latent_action_scale": "la_scale",
    "is_init": "first",
}


class FramePairNet(nn.Module):
    """(o_t, o_{t+1}) -> ``2 * ACTION_DIM`` parameters of a Gaussian latent action."""

    def __init__(self):
        super().__init__()
        self.trunk = DreamerV3ImageEncoder(in_channels=6, depth=4, mults=(1, 2))
        self.head = MLP(
            in_features=self.trunk.output_features((6, SIZE, SIZE)),
            out_features=2 * ACTION_DIM,
            num_cells=[32],
        )

    def forward(self, frames: torch.Tensor, next_frames: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(torch.cat([frames, next_frames], -3)))


def make_world_model(seed: int = 0) -> tuple[WorldModelWrapper, dict[str, nn.Module]]:
    torch.manual_seed(seed)
    image_encoder = DreamerV3ImageEncoder(depth=4, mults=(1, 2))
    embed_dim = image_encoder.output_features((3, SIZE, SIZE))
    latent_action_model = TensorDictSequential(
        TensorDictModule(FramePairNet(), in_keys=["obs", ("next", "obs")], out_keys=["la_params"]),
        TensorDictModule(
            NormalParamExtractor(), in_keys=["la_params"], out_keys=["la_loc", "la_scale"]
        ),
        ProbabilisticTensorDictModule(
            in_keys={"loc": "la_loc", "scale": "la_scale"},
            out_keys=["la"],
            distribution_class=Normal,
            default_interaction_type=InteractionType.RANDOM,
        ),
    )
    rollout = RSSMRolloutV3(
        TensorDictModule(
            RSSMPriorV3(
                action_shape=(ACTION_DIM,),
                hidden_dim=32,
                rnn_hidden_dim=DETER,
                num_categoricals=CATEGORICALS,
                num_classes=CLASSES,
                action_dim=ACTION_DIM,
            ),
            in_keys=["state", "belief", "la"],
            out_keys=[("next", "prior_lg"), ("next", "state"), ("next", "belief")],
        ),
        TensorDictModule(
            RSSMPosteriorV3(
                hidden_dim=32,
                num_categoricals=CATEGORICALS,
                num_classes=CLASSES,
                rnn_hidden_dim=DETER,
                obs_embed_dim=embed_dim,
            ),
            in_keys=[("next", "belief"), ("next", "embedding")],
            out_keys=[("next", "post_lg"), ("next", "state")],
        ),
        reset_key="first",
        action_key="la",
    )
    decoder = TensorDictModule(
        DreamerV3ImageDecoder(
            STOCH + DETER, image_shape=(3, SIZE, SIZE), depth=4, mults=(1, 2), num_blocks=1
        ),
        in_keys=[("next", "state"), ("next", "belief")],
        out_keys=[("next", "obs_reco")],
    )
    reward_model = TensorDictModule(
        MLP(in_features=STOCH + DETER, out_features=1, num_cells=[32]),
        in_keys=[("next", "state"), ("next", "belief")],
        out_keys=[("next", "rew")],
    )
    transition_model = TensorDictSequential(
        TensorDictModule(
            image_encoder, in_keys=[("next", "obs")], out_keys=[("next", "embedding")]
        ),
        latent_action_model,
        rollout,
        decoder,
    )
    world_model = WorldModelWrapper(transition_model, reward_model)
    parts = {
        "latent_action_model": latent_action_model,
        "encoder": image_encoder,
        "rssm": rollout,
        "decoder": decoder,
        "reward_model": reward_model,
    }
    return world_model, parts


def video_batch(seed: int = 0, batch: int = 4, steps: int = 5) -> TensorDict:
    """Moving squares under the renamed keys, with rewards and a zero initial RSSM state."""
    generator = torch.Generator().manual_seed(seed)
    clips = moving_square_batch(batch, steps, image_size=SIZE, square=5, generator=generator)
    return TensorDict(
        {
            "obs": clips["pixels"],
            ("next", "obs"): clips["next", "pixels"],
            "first": clips["is_init"],
            "state": torch.zeros(batch, steps, STOCH),
            "belief": torch.zeros(batch, steps, DETER),
            ("next", "rew"): torch.randn(batch, steps, 1, generator=generator),
        },
        [batch, steps],
    )


def prelar_loss(construction: str, world_model, parts, **kwargs) -> PreLARLoss:
    """A PreLARLoss from a user's DreamerV3ModelLoss, or built from keyword arguments."""
    if construction == "model_loss":
        model_loss = DreamerV3ModelLoss(
            world_model,
            lambda_reco=0.5,
            kl_mode="separate",
            lambda_dynamic=0.8,
            lambda_representation=0.2,
            free_bits=0.0,
            reco_symlog=False,
            reward_two_hot=False,
        )
        model_loss.set_keys(**MODEL_KEYS)
        loss = PreLARLoss(
            model_loss=model_loss,
            prior=parts["rssm"].rssm_prior,
            latent_action_type="gaussian",
            **kwargs,
        )
        loss.set_keys(**LATENT_ACTION_KEYS)
    else:
        loss = PreLARLoss(
            world_model,
            latent_action_type="gaussian",
            model_loss_kwargs={"unimix": 0.01},
            **kwargs,
        )
        loss.set_keys(**MODEL_KEYS, **LATENT_ACTION_KEYS)
    return loss


def total(losses: TensorDict) -> torch.Tensor:
    return sum(value.sum() for key, value in losses.items() if key.startswith("loss_"))


def gradient_norm(module: nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


@pytest.mark.parametrize("construction", ["model_loss", "keyword_arguments"])
@pytest.mark.parametrize("consistency", ["off", "sign", "soft"])
def test_prelar_loss_trains_a_sota_style_torchrl_world_model(consistency, construction):
    world_model, parts = make_world_model()
    loss = prelar_loss(construction, world_model, parts, consistency=consistency)
    assert loss.world_model is world_model
    assert loss.tensor_keys.pixels == "obs" and loss.tensor_keys.latent_action == "la"
    batch = video_batch()
    before = [p.detach().clone() for p in world_model.parameters()]
    optimizer = torch.optim.Adam(loss.parameters(), lr=3e-3)
    totals = []
    for step in range(8):
        losses, model_td = loss(batch.clone())
        expected = {
            "loss_model_reco",
            "loss_model_dynamic",
            "loss_model_representation",
            "loss_model_reward",
            "loss_action_kl",
        } | ({"loss_consistency"} if consistency != "off" else set())
        assert {key for key in losses.keys() if key.startswith("loss_")} == expected
        assert all(torch.isfinite(value).all() for value in losses.values())
        assert losses["action_kl"] > 0 and "latent_action_std" in losses.keys()
        if step == 0:
            latent_action_params = list(parts["latent_action_model"].parameters())
            # The RSSM reads the sampled latent action: the state KL trains its model.
            dynamic_grads = torch.autograd.grad(
                losses["loss_model_dynamic"].sum(), latent_action_params, retain_graph=True
            )
            assert sum(float(g.abs().sum()) for g in dynamic_grads) > 0
            if consistency != "off":
                consistency_grads = torch.autograd.grad(
                    losses["loss_consistency"].sum(),
                    latent_action_params,
                    retain_graph=True,
                    allow_unused=True,
                )
                size = sum(float(g.abs().sum()) for g in consistency_grads if g is not None)
                assert (size > 0) == (consistency == "soft")
        optimizer.zero_grad()
        loss_value = total(losses)
        loss_value.backward()
        if step == 0:
            for name, part in parts.items():
                assert gradient_norm(part) > 0, f"no gradient reaches the {name}"
        optimizer.step()
        totals.append(loss_value.item())
    print(f"\n{construction}, consistency={consistency}: total {totals[0]:.1f} -> {totals[-1]:.1f}")
    # A DreamerV3ModelLoss detaches its output by default: PreLARLoss detaches its own instead.
    assert model_td["next", "obs_reco"].requires_grad == (construction != "model_loss")
    assert all(not torch.equal(a, b) for a, b in zip(before, world_model.parameters(), strict=True))
    assert sum(totals[-2:]) < sum(totals[:2])


def test_model_loss_keys_are_the_prelar_keys_and_set_keys_sets_both():
    world_model, parts = make_world_model()
    loss = prelar_loss("model_loss", world_model, parts)
    for name, key in MODEL_KEYS.items():
        assert getattr(loss.tensor_keys, name) == key
    loss.set_keys(pixels="frames")
    assert loss.model_loss.tensor_keys.pixels == "frames"
    assert loss.model_loss.tensor_keys.reward == "rew"


def test_batch_without_rewards_drops_the_reward_term():
    world_model, parts = make_world_model()
    loss = prelar_loss("model_loss", world_model, parts)
    losses, _ = loss(video_batch().exclude(("next", "rew")))
    assert "loss_model_reward" not in losses.keys()


def test_missing_latent_action_parameter_is_reported_by_key():
    world_model, parts = make_world_model()
    loss = prelar_loss("keyword_arguments", world_model, parts)
    loss.set_keys(latent_action_scale="la_std")
    with pytest.raises(KeyError, match="la_std.*latent_action_type='gaussian'"):
        loss(video_batch())


def test_consistency_prior_reading_other_keys_is_reported():
    world_model, parts = make_world_model()
    network = parts["rssm"].rssm_prior.module
    prior = TensorDictModule(
        network, in_keys=["state", "belief", "action"], out_keys=[("next", "prior_lg")]
    )
    loss = prelar_loss("keyword_arguments", world_model, parts, consistency="soft", prior=prior)
    with pytest.raises(KeyError, match=r"\['action'\]"):
        loss(video_batch())


def test_model_loss_settings_are_given_once():
    world_model, parts = make_world_model()
    model_loss = DreamerV3ModelLoss(world_model)
    with pytest.raises(ValueError, match="kl_balance"):
        PreLARLoss(model_loss=model_loss, kl_balance=0.5)
    with pytest.raises(ValueError, match="not both"):
        PreLARLoss(world_model, model_loss=model_loss)
    with pytest.raises(ValueError, match="kl_balance \\(sets lambda_dynamic\\)"):
        PreLARLoss(world_model, kl_balance=0.5, model_loss_kwargs={"lambda_dynamic": 0.3})
    with pytest.raises(TypeError, match="world_model or a model_loss"):
        PreLARLoss()


def test_consistency_without_a_prior_to_find_asks_for_one():
    world_model, parts = make_world_model()
    twice = TensorDictSequential(world_model, make_world_model(1)[0])
    with pytest.raises(ValueError, match="pass prior="):
        PreLARLoss(twice, consistency="sign")
