"""PreLAR world-model loss: TorchRL's Dreamer world-model loss plus the latent-action KL."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import InteractionType, TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.modules import MLP
from torchrl.objectives import DreamerV3ModelLoss, LossModule

from torchrl_prelar.modules.latent_action import straight_through_sample

ConsistencyMode = Literal["off", "sign", "soft"]

_MODEL_LOSS_KEYS = ("pixels", "reco_pixels", "prior_logits", "posterior_logits", "reward")


def gaussian_kl_to_prior(
    loc: torch.Tensor, scale: torch.Tensor, prior_std: float = 1.0
) -> torch.Tensor:
    """KL(N(loc, scale^2) || N(0, prior_std^2)) of a diagonal Gaussian, summed over the last dim.

    Examples:
        >>> gaussian_kl_to_prior(torch.zeros(2, 3), torch.ones(2, 3))
        tensor([0., 0.])
    """
    variance_ratio = (scale / prior_std).pow(2)
    return 0.5 * (variance_ratio + (loc / prior_std).pow(2) - 1 - variance_ratio.log()).sum(-1)


def categorical_kl_to_uniform(logits: torch.Tensor) -> torch.Tensor:
    """KL(Cat(logits) || Uniform) summed over ``[..., categoricals, classes]`` -> ``[...]``.

    Examples:
        >>> categorical_kl_to_uniform(torch.zeros(2, 4, 8))
        tensor([0., 0.])
    """
    log_probs = logits.log_softmax(-1)
    return (log_probs.exp() * (log_probs + math.log(logits.shape[-1]))).sum((-1, -2))


def _pairwise_gaussian_kl(loc: torch.Tensor, scale: torch.Tensor, perm: torch.Tensor):
    """KL(q_i || q_perm(i)) for diagonal Gaussians with ``[N, D]`` parameters."""
    other_loc, other_scale = loc[perm], scale[perm]
    ratio = (scale / other_scale).pow(2)
    return 0.5 * (ratio + ((loc - other_loc) / other_scale).pow(2) - 1 - ratio.log()).sum(-1)


def _categorical_kl(logits: torch.Tensor, other_logits: torch.Tensor) -> torch.Tensor:
    """KL(Cat(logits) || Cat(other_logits)) summed over ``[..., categoricals, classes]``."""
    log_p, log_q = logits.log_softmax(-1), other_logits.log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum((-1, -2))


class LatentActionForwardModel(nn.Module):
    """Forward model of the latent action: RSSM-shaped features of o_{t+1} from e(o_t) and a~_t.

    An ELU MLP reads the encoder embedding of o_t and the latent action and writes a
    ``(state, belief)`` pair of the world model's sizes, which the world model's own decoder
    turns into a prediction of o_{t+1} (:class:`PreLARLoss`'s ``lambda_forward_reco`` term).
    Since o_t is given, the latent action only has to carry how o_{t+1} differs from it: the
    training signal of latent-action models such as Genie's and LAPA's, available from the
    first update, before the RSSM has learnt to use the latent action.

    Args:
        embed_dim: width of the encoder embedding.
        action_dim: latent action width.
        state_dim, belief_dim: sizes of the RSSM state and belief the decoder reads.
        hidden_dim: width of the two hidden layers.

    Examples:
        >>> model = LatentActionForwardModel(32, 4, state_dim=16, belief_dim=8, hidden_dim=20)
        >>> [x.shape for x in model(torch.zeros(3, 32), torch.zeros(3, 4))]
        [torch.Size([3, 16]), torch.Size([3, 8])]
    """

    def __init__(
        self, embed_dim: int, action_dim: int, *, state_dim: int, belief_dim: int, hidden_dim: int
    ):
        super().__init__()
        self.state_dim = state_dim
        self.network = MLP(
            in_features=embed_dim + action_dim,
            out_features=state_dim + belief_dim,
            num_cells=[hidden_dim, hidden_dim],
            activation_class=nn.ELU,
        )

    def forward(
        self, embedding: torch.Tensor, latent_action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.network(torch.cat([embedding, latent_action], -1))
        return features[..., : self.state_dim], features[..., self.state_dim :]


class _RewardOptional(TensorDictModuleBase):
    """Runs the world model and writes a zero reward prediction if it made none.

    TorchRL's :class:`~torchrl.objectives.DreamerV3ModelLoss` always scores a reward, but
    action-free video has no reward and the pre-training world model no reward head.
    :class:`PreLARLoss` feeds it a zero reward and drops the (constant, gradient-free)
    reward term: this wrapper is the one place that works around it.
    """

    def __init__(self, world_model: TensorDictModuleBase, reward_key: NestedKey):
        super().__init__()
        self.world_model = world_model
        self.reward_key = reward_key

    @property
    def in_keys(self) -> list[NestedKey]:
        return self.world_model.in_keys

    @property
    def out_keys(self) -> list[NestedKey]:
        return self.world_model.out_keys

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        tensordict = self.world_model(tensordict)
        if tensordict.get(self.reward_key, None) is None:
            state = tensordict.get(("next", "state"))
            tensordict.set(self.reward_key, state.new_zeros(*tensordict.shape, 1))
        return tensordict


def _make_forward_model(world_model: TensorDictModuleBase, hidden: int) -> LatentActionForwardModel:
    """A :class:`LatentActionForwardModel` of ``world_model``'s embedding and state sizes."""
    action_dim = getattr(world_model.action_model, "action_dim", None)
    if not action_dim:
        raise ValueError(
            "lambda_forward_reco needs a world model whose action model infers a latent action "
            f"(a LatentActionModel with an action_dim), got {type(world_model.action_model).__name__}."
        )
    prior = world_model.rssm_prior
    return LatentActionForwardModel(
        world_model.encoder.module.output_features,
        action_dim,
        state_dim=prior.num_categoricals * prior.num_classes,
        belief_dim=prior.rnn_hidden_dim,
        hidden_dim=hidden,
    )


class PreLARLoss(LossModule):
    """PreLAR world-model loss (Zhang et al., ECCV 2024).

    TorchRL's :class:`~torchrl.objectives.DreamerV3ModelLoss` configured as the reference
    DreamerV2 objective, plus the latent-action KL:

    .. code-block:: text

        loss_model_reco            lambda_reco * sum_{C,H,W} (o_{t+1} - o^_{t+1})^2
        loss_model_dynamic         lambda_kl * kl_balance * KL(sg(post) || prior)
        loss_model_representation  lambda_kl * (1 - kl_balance) * KL(post || sg(prior))
        loss_model_reward          lambda_reward * symlog-MSE(reward), if the batch has rewards
        loss_action_kl             beta_action * max(KL(q(a~_t | o_t, o_{t+1}) || N(0, std^2)),
                                             action_free_nats), std = action_prior_std
        loss_forward_reco          lambda_forward_reco * sum_{C,H,W} (o_{t+1} - dec(f(e(o_t), a~_t)))^2
                                   f = LatentActionForwardModel (optional)
        loss_prior_reco            lambda_prior_reco * sum_{C,H,W} (o_{t+1} - dec(z^_{t+1}, h_{t+1}))^2,
                                   z^_{t+1} ~ p(z | h_{t+1}), h_{t+1} = GRU(h_t, z_t, a~_t) (optional)
        loss_consistency           lambda_consistency * action-state consistency (optional)

    With the defaults (``lambda_reco=0.5`` on pixels in [-0.5, 0.5], ``kl_balance=0.8``,
    ``free_nats=0``) this is the unit-variance Gaussian likelihood and KL balancing of the
    reference. The state KL sums over the categoricals; every term averages over batch and
    time. The action KL averages over the transitions that are not sequence starts
    (``"is_init"``): the RSSM zeroes the action there, so that latent action is unused.

    Action free nats (``action_free_nats``, 0 by default as in the paper): the batch-mean
    action KL is not penalised below this many nats (its loss is then constant, without
    gradient), like DreamerV3's free bits on the state KL. The latent action may then carry
    that much information for free, which keeps a code the RSSM has not learnt to use yet
    from being squeezed to nothing (measured on a grid-world toy in ``docs/status.md``).

    Sampling the latent action (``sample_latent_action``, on by default, as in the paper):
    the RSSM receives a reparameterised sample of the Gaussian latent action (a
    straight-through sample of the discrete one), so the action KL is a real rate. Every
    TorchRL loss runs its forward under its ``deterministic_sampling_mode`` (``"deterministic"``
    by default); this loss sets it to ``"random"`` for that reason. ``False`` feeds the RSSM
    the mean (argmax): the action KL then only penalises the mean, as the scale never
    reaches the RSSM (the behaviour of this package before the option existed).

    Prior reconstruction (``lambda_prior_reco``, 0 by default = the paper): o_{t+1} is also
    decoded from a straight-through sample of the *prior* state, which sees the past and the
    latent action but not o_{t+1}. In the paper's objective the posterior state already
    carries o_{t+1} to the decoder, so information in the latent action only trades state KL
    for action KL at a rate of at most one nat for one nat (less with KL balancing) and the
    code collapses to its prior early in training (measured in ``docs/latent_actions.md``);
    this term makes the prediction of the next frame from the past depend on the latent
    action, as latent-action models (Genie, LAPA) train it. The sequence-start steps are left
    out (their prior has no history).

    Forward reconstruction (``lambda_forward_reco``, 0 by default = the paper): a
    :class:`LatentActionForwardModel` (owned by the loss, dropped after pre-training like the
    latent action model) predicts o_{t+1} through the world model's decoder from the encoder
    embedding of o_t and the latent action, so the latent action is trained to carry the
    change between the frames from the first update on. Sequence starts are left out.

    Action-state consistency (off by default, absent from the paper's objective): shuffle the
    latent actions across the batch, roll the prior one step with them, and ask that the order
    of ``KL(prior || shuffled prior)`` over pairs of samples matches the order of
    ``KL(q(a~) || q(shuffled a~))``. ``"sign"`` compares ``sign()`` of the pairwise
    differences with an MSE, as the reference code does: it has zero gradient, so it is only a
    logged metric. ``"soft"`` replaces the action-side ``sign`` by ``tanh(diff / tau)`` so it
    trains the latent action model. The state side is detached in both.

    Args:
        world_model: a :class:`~torchrl_prelar.modules.PreLARWorldModel` (or any module with
            the same keys and an ``rssm_prior`` attribute if consistency is on).
        beta_action: weight of the action KL (1 in the paper).
        action_prior_std: std of the Gaussian action prior; the reference code effectively
            uses 1.245 (its std activation applied to 1).
        action_free_nats: action KL (batch mean, nats) below which it is not penalised.
        sample_latent_action: feed the RSSM a sample of the latent action, not its mode.
        lambda_kl, kl_balance, free_nats: state KL weight, balance and free nats.
        lambda_reco: reconstruction weight (0.5 gives the Gaussian log-likelihood).
        lambda_reward: reward weight, used when rewards are present.
        consistency: ``"off"``, ``"sign"`` or ``"soft"``.
        lambda_consistency: weight of the consistency term.
        consistency_tau: temperature of the ``"soft"`` surrogate.
        lambda_prior_reco: weight of the prior reconstruction term (0: off, the paper).
        lambda_forward_reco: weight of the forward reconstruction term (0: off, the paper).
        forward_hidden: hidden width of the :class:`LatentActionForwardModel`.
        forward_residual: the forward reconstruction predicts o_{t+1} as o_t plus the
            decoding, so the decoder only has to draw the change and all of the error is
            motion.
        action_kl_warmup: the action KL's weight grows linearly from 0 to ``beta_action``
            over this many training forward passes (counted in a buffer, so it resumes with
            the loss's state dict); 0 (default, the paper): ``beta_action`` from the start.

    Returns (from ``forward``): a ``(loss_td, model_td)`` pair like
    :class:`~torchrl.objectives.DreamerV3ModelLoss`: ``loss_*`` entries to sum and
    detached metrics (``action_kl``, ``latent_action_std``, ``state_kl``, ``reco_mse``); and
    the world model's output (with gradients), e.g. posterior states to imagine from.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl_prelar import PreLARLoss, make_world_model
        >>> loss = PreLARLoss(make_world_model("tiny"))
        >>> frames = torch.randint(0, 256, (2, 5, 3, 64, 64), dtype=torch.uint8)
        >>> td = TensorDict({"pixels": frames[:, :-1], "next": {"pixels": frames[:, 1:]},
        ...                  "is_init": torch.arange(4).expand(2, 4)[..., None] == 0}, [2, 4])
        >>> losses, _ = loss(td)
        >>> sorted(k for k in losses.keys() if k.startswith("loss_"))
        ['loss_action_kl', 'loss_model_dynamic', 'loss_model_reco', 'loss_model_representation']
        >>> sum(v for k, v in losses.items() if k.startswith("loss_")).backward()
    """

    @dataclass
    class _AcceptedKeys:
        """Configurable tensordict keys.

        Attributes:
            pixels: observed frames (read at ``("next", pixels)`` as the target).
            reco_pixels: decoded frames.
            prior_logits, posterior_logits: RSSM categorical logits (under ``"next"``).
            reward: reward (under ``"next"``); its absence switches the reward term off.
            latent_action: the action the RSSM reads.
            latent_action_loc, latent_action_scale: Gaussian latent action parameters.
            latent_action_logits: discrete latent action logits.
            is_init: sequence-start flag.
            state, belief: RSSM inputs of each step (written back by the rollout).
        """

        pixels: NestedKey = "pixels"
        reco_pixels: NestedKey = "reco_pixels"
        prior_logits: NestedKey = "prior_logits"
        posterior_logits: NestedKey = "posterior_logits"
        reward: NestedKey = "reward"
        latent_action: NestedKey = "latent_action"
        latent_action_loc: NestedKey = "latent_action_loc"
        latent_action_scale: NestedKey = "latent_action_scale"
        latent_action_logits: NestedKey = "latent_action_logits"
        is_init: NestedKey = "is_init"
        state: NestedKey = "state"
        belief: NestedKey = "belief"

    tensor_keys: _AcceptedKeys
    default_keys = _AcceptedKeys

    def __init__(
        self,
        world_model: TensorDictModuleBase,
        *,
        beta_action: float = 1.0,
        action_prior_std: float = 1.0,
        action_free_nats: float = 0.0,
        sample_latent_action: bool = True,
        lambda_kl: float = 1.0,
        kl_balance: float = 0.8,
        free_nats: float = 0.0,
        lambda_reco: float = 0.5,
        lambda_reward: float = 1.0,
        consistency: ConsistencyMode = "off",
        lambda_consistency: float = 1.0,
        consistency_tau: float = 1.0,
        lambda_prior_reco: float = 0.0,
        lambda_forward_reco: float = 0.0,
        forward_hidden: int = 256,
        forward_residual: bool = False,
        action_kl_warmup: int = 0,
    ):
        if consistency not in ("off", "sign", "soft"):
            raise ValueError(f"consistency must be 'off', 'sign' or 'soft', got {consistency!r}.")
        if not 0.0 <= kl_balance <= 1.0:
            raise ValueError(f"kl_balance must be in [0, 1], got {kl_balance}.")
        if action_free_nats < 0:
            raise ValueError(f"action_free_nats must be >= 0, got {action_free_nats}.")
        super().__init__()
        self.model_loss = DreamerV3ModelLoss(
            _RewardOptional(world_model, ("next", "reward")),
            lambda_kl=lambda_kl,
            kl_mode="separate",
            lambda_dynamic=kl_balance,
            lambda_representation=1.0 - kl_balance,
            free_bits=free_nats,
            unimix=0.0,
            lambda_reco=lambda_reco,
            reco_symlog=False,
            reco_loss="l2",
            lambda_reward=lambda_reward,
            reward_two_hot=False,
            detach_output=False,
        )
        if sample_latent_action:
            self.model_loss.deterministic_sampling_mode = InteractionType.RANDOM
        self.sample_latent_action = sample_latent_action
        self.beta_action = beta_action
        self.action_prior_std = action_prior_std
        self.action_free_nats = action_free_nats
        self.consistency = consistency
        self.lambda_consistency = lambda_consistency
        self.consistency_tau = consistency_tau
        self.lambda_prior_reco = lambda_prior_reco
        self.lambda_forward_reco = lambda_forward_reco
        self.forward_residual = forward_residual
        if action_kl_warmup < 0:
            raise ValueError(f"action_kl_warmup must be >= 0, got {action_kl_warmup}.")
        self.action_kl_warmup = action_kl_warmup
        if action_kl_warmup:  # only then in the state dict: checkpoints without it still load
            self.register_buffer("training_forwards", torch.zeros((), dtype=torch.int64))
        self.forward_model = (
            _make_forward_model(world_model, forward_hidden) if lambda_forward_reco else None
        )

    @property
    def world_model(self) -> TensorDictModuleBase:
        return self.model_loss.world_model.world_model

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        keys = {key: getattr(self.tensor_keys, key) for key in _MODEL_LOSS_KEYS}
        self.model_loss.set_keys(**keys)
        self.model_loss.world_model.reward_key = ("next", self.tensor_keys.reward)

    def _action_kl_weight(self) -> float:
        """``beta_action``, ramped up over the first ``action_kl_warmup`` training forwards."""
        if not self.training or not self.action_kl_warmup:
            return self.beta_action
        self.training_forwards += 1
        ramp = min(1.0, float(self.training_forwards) / self.action_kl_warmup)
        return self.beta_action * ramp

    def _step_weights(self, model_td: TensorDictBase) -> torch.Tensor:
        """1 for transitions whose latent action the RSSM uses, 0 at sequence starts."""
        is_init = model_td.get(self.tensor_keys.is_init, None)
        if is_init is None:
            return torch.ones(model_td.shape, device=model_td.device)
        return (~is_init.reshape(model_td.shape)).float()

    def _action_kl(self, model_td: TensorDictBase) -> torch.Tensor | None:
        """Per-transition KL of the latent action to its prior, or None if deterministic."""
        keys = self.tensor_keys
        logits = model_td.get(keys.latent_action_logits, None)
        if logits is not None:
            return categorical_kl_to_uniform(logits)
        loc = model_td.get(keys.latent_action_loc, None)
        scale = model_td.get(keys.latent_action_scale, None)
        if loc is None or scale is None:
            return None
        return gaussian_kl_to_prior(loc, scale, self.action_prior_std)

    def _forward_reconstruction(
        self, model_td: TensorDictBase, weights: torch.Tensor, steps: torch.Tensor
    ) -> torch.Tensor:
        """Squared error of o_{t+1} decoded from e(o_t) and a~_t, summed over pixels."""
        keys = self.tensor_keys
        next_embedding = model_td.get(("next", "encoded_latents"))
        embedding = torch.cat(
            [torch.zeros_like(next_embedding[..., :1, :]), next_embedding[..., :-1, :]], -2
        )
        state, belief = self.forward_model(embedding, model_td.get(keys.latent_action))
        base = model_td.get(keys.pixels) if self.forward_residual else None
        return self._decoded_error(model_td, state, belief, weights, steps, base=base)

    def _decoded_error(
        self,
        model_td: TensorDictBase,
        state: torch.Tensor,
        belief: torch.Tensor,
        weights: torch.Tensor,
        steps: torch.Tensor,
        base: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Squared error of o_{t+1} against the decoding of ``(state, belief)`` (plus ``base``)."""
        keys = self.tensor_keys
        decoded = self.world_model.decoder(
            TensorDict(
                {("next", keys.state): state, ("next", keys.belief): belief},
                batch_size=model_td.batch_size,
            )
        )
        prediction = decoded.get(("next", keys.reco_pixels))
        if base is not None:
            prediction = prediction + base
        error = (prediction - model_td.get(("next", keys.pixels))).pow(2).sum((-1, -2, -3))
        return (error * weights).sum() / steps

    def _prior_reconstruction(
        self, model_td: TensorDictBase, weights: torch.Tensor, steps: torch.Tensor
    ) -> torch.Tensor:
        """Squared error of o_{t+1} decoded from a prior sample, summed over pixels."""
        keys = self.tensor_keys
        state = straight_through_sample(model_td.get(("next", keys.prior_logits)))
        belief = model_td.get(("next", keys.belief))
        return self._decoded_error(model_td, state, belief, weights, steps)

    def _consistency(self, model_td: TensorDictBase, weights: torch.Tensor) -> torch.Tensor:
        """Pairwise rank agreement between action distances and state-prediction distances."""
        keys = self.tensor_keys
        flat = model_td.reshape(-1)
        weights = weights.reshape(-1)
        latent_action = flat.get(keys.latent_action)
        perm = torch.randperm(latent_action.shape[0], device=latent_action.device)
        with torch.no_grad():
            prior_logits = flat.get(("next", keys.prior_logits))
            shuffled_logits, _ = self.world_model.rssm_prior._belief_and_logits(
                flat.get(keys.state), flat.get(keys.belief), latent_action[perm]
            )
            state_distance = _categorical_kl(prior_logits, shuffled_logits)
        logits = flat.get(keys.latent_action_logits, None)
        if logits is not None:
            action_distance = _categorical_kl(logits, logits[perm])
        elif flat.get(keys.latent_action_scale, None) is not None:
            action_distance = _pairwise_gaussian_kl(
                flat.get(keys.latent_action_loc), flat.get(keys.latent_action_scale), perm
            )
        else:
            action_distance = 0.5 * (latent_action - latent_action[perm]).pow(2).sum(-1)
        state_order = torch.sign(state_distance[:, None] - state_distance[None, :])
        action_difference = action_distance[:, None] - action_distance[None, :]
        if self.consistency == "sign":
            action_order = torch.sign(action_difference)
        else:
            action_order = torch.tanh(action_difference / self.consistency_tau)
        valid = weights * weights[perm]
        pair_weights = valid[:, None] * valid[None, :]
        error = (action_order - state_order).pow(2) * pair_weights
        return error.sum() / pair_weights.sum().clamp_min(1.0)

    def forward(self, tensordict: TensorDictBase) -> tuple[TensorDictBase, TensorDictBase]:
        keys = self.tensor_keys
        reward_key = ("next", keys.reward)
        has_reward = tensordict.get(reward_key, None) is not None
        if not has_reward:
            tensordict = tensordict.select(*tensordict.keys(True, True))
            tensordict.set(reward_key, torch.zeros(*tensordict.shape, 1, device=tensordict.device))
        loss_td, model_td = self.model_loss(tensordict)
        if not has_reward:
            loss_td = loss_td.exclude("loss_model_reward")
            placeholders = [reward_key, ("next", self.model_loss.tensor_keys.true_reward)]
            model_td = model_td.exclude(*placeholders)

        weights = self._step_weights(model_td)
        steps = weights.sum().clamp_min(1.0)
        action_kl = self._action_kl(model_td)
        if action_kl is None:
            action_kl = torch.zeros((), device=weights.device)
        else:
            action_kl = (action_kl * weights).sum() / steps
        penalised = (
            action_kl.clamp_min(self.action_free_nats) if self.action_free_nats else action_kl
        )
        loss_td.set("loss_action_kl", self._action_kl_weight() * penalised.unsqueeze(-1))
        if self.forward_model is not None:
            forward_reco = self._forward_reconstruction(model_td, weights, steps)
            loss_td.set(
                "loss_forward_reco", self.lambda_forward_reco * forward_reco.unsqueeze(-1)
            )
        if self.lambda_prior_reco:
            prior_reco = self._prior_reconstruction(model_td, weights, steps)
            loss_td.set("loss_prior_reco", self.lambda_prior_reco * prior_reco.unsqueeze(-1))
        if self.consistency != "off":
            consistency = self._consistency(model_td, weights)
            loss_td.set("loss_consistency", self.lambda_consistency * consistency.unsqueeze(-1))

        loss_td.update(self._metrics(model_td, action_kl, weights, steps))
        return loss_td, model_td

    @torch.no_grad()
    def _metrics(
        self,
        model_td: TensorDictBase,
        action_kl: torch.Tensor,
        weights: torch.Tensor,
        steps: torch.Tensor,
    ) -> TensorDict:
        keys = self.tensor_keys
        posterior = model_td.get(("next", keys.posterior_logits))
        prior = model_td.get(("next", keys.prior_logits))
        target = model_td.get(("next", keys.pixels))
        prediction = model_td.get(("next", keys.reco_pixels))
        metrics = TensorDict(
            action_kl=action_kl.detach(),
            state_kl=_categorical_kl(posterior, prior).mean(),
            reco_mse=(prediction - target).pow(2).mean(),
        )
        scale = model_td.get(keys.latent_action_scale, None)
        if scale is not None:
            metrics.set("latent_action_std", (scale.mean(-1) * weights).sum() / steps)
        return metrics
