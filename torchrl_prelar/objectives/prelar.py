"""PreLAR world-model loss: TorchRL's Dreamer world-model loss plus the latent-action KL."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import InteractionType, TensorDictModuleBase
from tensordict.utils import NestedKey, unravel_key
from torch import nn
from torchrl.modules import MLP, RSSMRolloutV3
from torchrl.objectives import DreamerV3ModelLoss, LossModule

from torchrl_prelar.modules.latent_action import (
    LatentActionModel,
    OutputType,
    straight_through_sample,
)
from torchrl_prelar.modules.pixels import centred_pixels

ConsistencyMode = Literal["off", "sign", "soft"]

_MODEL_LOSS_KEYS = ("pixels", "reco_pixels", "prior_logits", "posterior_logits", "reward")
_LATENT_ACTION_TYPES = ("gaussian", "deterministic", "discrete")
_LATENT_ACTION_PARAMETERS = {
    "latent_action_loc": "the Gaussian latent action's mean, [..., action_dim]",
    "latent_action_scale": "the Gaussian latent action's std, [..., action_dim]",
    "latent_action_logits": "the discrete latent action's logits, [..., categoricals, classes]",
}
# PreLARLoss's arguments that configure the DreamerV3ModelLoss it builds: their defaults, and
# the DreamerV3ModelLoss keyword arguments each one sets.
_MODEL_LOSS_SETTINGS = {
    "lambda_kl": (1.0, ("lambda_kl",)),
    "kl_balance": (0.8, ("lambda_dynamic", "lambda_representation")),
    "free_nats": (0.0, ("free_bits",)),
    "lambda_reco": (0.5, ("lambda_reco",)),
    "lambda_reward": (1.0, ("lambda_reward",)),
}


def gaussian_kl_to_prior(
    loc: torch.Tensor, scale: torch.Tensor, prior_std: float = 1.0
) -> torch.Tensor:
    """KL(N(loc, scale^2) || N(0, prior_std^2)) of a diagonal Gaussian, summed over the last dim.

    Args:
        loc (torch.Tensor): the Gaussian's mean, ``[..., D]``.
        scale (torch.Tensor): the Gaussian's std, ``[..., D]``.
        prior_std (float, optional): std of the zero-mean prior. Defaults to ``1.0``.

    Returns:
        the KL in nats, ``[...]``.

    Examples:
        >>> gaussian_kl_to_prior(torch.zeros(2, 3), torch.ones(2, 3))
        tensor([0., 0.])
    """
    variance_ratio = (scale / prior_std).pow(2)
    return 0.5 * (variance_ratio + (loc / prior_std).pow(2) - 1 - variance_ratio.log()).sum(-1)


def categorical_kl_to_uniform(logits: torch.Tensor) -> torch.Tensor:
    """KL(Cat(logits) || Uniform) summed over ``[..., categoricals, classes]`` -> ``[...]``.

    Args:
        logits (torch.Tensor): categorical logits, ``[..., categoricals, classes]``.

    Returns:
        the KL in nats, ``[...]``.

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
        embed_dim (int): width of the encoder embedding.
        action_dim (int): width of the latent action.

    Keyword Args:
        state_dim (int): size of the RSSM state the decoder reads.
        belief_dim (int): size of the RSSM belief the decoder reads.
        hidden_dim (int): width of the two hidden layers.

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


class _ModelLossAdapter(TensorDictModuleBase):
    """Runs the world model for TorchRL's model loss: centred target, reward placeholder.

    The one place where :class:`PreLARLoss` adapts its world model to TorchRL's
    :class:`~torchrl.objectives.DreamerV3ModelLoss`, which calls it on its own shallow copy of
    the batch (the caller's TensorDict is never modified) and then reads the result:

    * the reconstruction target ``target_key``: TorchRL scales integer images to [0, 1], but
      the decoders predict centred frames, so uint8 targets are centred here with
      :func:`~torchrl_prelar.modules.pixels.centred_pixels` (floats are already centred);
    * a reward prediction: TorchRL always scores one, but action-free video has no reward and
      a pre-training world model may have no reward head. :class:`PreLARLoss` feeds it a zero
      reward and drops the (constant, gradient-free) reward term; the placeholder written here
      is shaped like the true reward, which the model loss moves to ``true_reward_key``.
    """

    def __init__(
        self,
        world_model: TensorDictModuleBase,
        reward_key: NestedKey = ("next", "reward"),
        true_reward_key: NestedKey = ("next", "true_reward"),
        target_key: NestedKey = ("next", "pixels"),
    ):
        super().__init__()
        self.world_model = world_model
        self.reward_key = reward_key
        self.true_reward_key = true_reward_key
        self.target_key = target_key

    @property
    def in_keys(self) -> list[NestedKey]:
        return self.world_model.in_keys

    @property
    def out_keys(self) -> list[NestedKey]:
        return self.world_model.out_keys

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        tensordict = self.world_model(tensordict)
        tensordict.set(self.target_key, centred_pixels(tensordict.get(self.target_key)))
        if tensordict.get(self.reward_key, None) is None:
            true_reward = tensordict.get(self.true_reward_key)
            tensordict.set(self.reward_key, torch.zeros_like(true_reward))
        return tensordict


def _make_forward_model(world_model: TensorDictModuleBase, hidden: int) -> LatentActionForwardModel:
    """A :class:`LatentActionForwardModel` of ``world_model``'s embedding and state sizes."""
    missing = [
        name for name in ("action_model", "encoder", "rssm_prior") if not hasattr(world_model, name)
    ]
    if missing:
        raise ValueError(
            "lambda_forward_reco sizes its forward model from a PreLARWorldModel-like world "
            f"model (action_model, encoder, rssm_prior); {type(world_model).__name__} has no "
            f"{', '.join(missing)}."
        )
    action_dim = getattr(world_model.action_model, "action_dim", None)
    if not action_dim:
        raise ValueError(
            "lambda_forward_reco needs a world model whose action model infers a latent action "
            "(a LatentActionModel with an action_dim), got "
            f"{type(world_model.action_model).__name__}."
        )
    prior = world_model.rssm_prior
    return LatentActionForwardModel(
        world_model.encoder.module.output_features,
        action_dim,
        state_dim=prior.num_categoricals * prior.num_classes,
        belief_dim=prior.rnn_hidden_dim,
        hidden_dim=hidden,
    )


def _check_weights(weights: Mapping[str, float], scales: Mapping[str, float]) -> None:
    """Reject a NaN, infinite or negative weight, and a scale that is not a finite number > 0
    (a NaN setting would train on NaN losses instead of failing)."""
    for name, value in weights.items():
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value}.")
    for name, value in scales.items():
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value}.")


def _find_rssm_prior(world_model: TensorDictModuleBase) -> TensorDictModuleBase:
    """The prior module of ``world_model``'s RSSM rollout (its ``rssm`` or its only one)."""
    rollout = getattr(world_model, "rssm", None)
    if not isinstance(rollout, RSSMRolloutV3):
        rollouts = [module for module in world_model.modules() if isinstance(module, RSSMRolloutV3)]
        if len(rollouts) != 1:
            raise ValueError(
                "The consistency term rolls the RSSM prior with shuffled latent actions: pass "
                "prior=<module reading the state, belief and latent action keys and writing "
                f"('next', prior_logits)>. The world model holds {len(rollouts)} "
                "RSSMRolloutV3 modules to take it from, expected exactly one."
            )
        rollout = rollouts[0]
    return rollout.rssm_prior


def _model_loss_kwargs(
    settings: Mapping[str, float], model_loss_kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """Keyword arguments of the DreamerV3ModelLoss that :class:`PreLARLoss` builds."""
    conflicts = sorted(
        f"{name} (sets {key})"
        for name in settings
        for key in _MODEL_LOSS_SETTINGS[name][1]
        if key in model_loss_kwargs
    )
    if conflicts:
        raise ValueError(
            f"model_loss_kwargs sets what {', '.join(conflicts)} already sets: pass one of them."
        )
    values = {name: default for name, (default, _) in _MODEL_LOSS_SETTINGS.items()}
    values.update(settings)
    if not 0.0 <= values["kl_balance"] <= 1.0:
        raise ValueError(f"kl_balance must be in [0, 1], got {values['kl_balance']}.")
    return {
        "lambda_kl": values["lambda_kl"],
        "kl_mode": "separate",
        "lambda_dynamic": values["kl_balance"],
        "lambda_representation": 1.0 - values["kl_balance"],
        "free_bits": values["free_nats"],
        "unimix": 0.0,
        "lambda_reco": values["lambda_reco"],
        "reco_symlog": False,
        "reco_loss": "l2",
        "lambda_reward": values["lambda_reward"],
        "reward_two_hot": False,
        "detach_output": False,
        **model_loss_kwargs,
    }


class PreLARLoss(LossModule):
    """PreLAR world-model loss (Zhang et al., ECCV 2024).

    TorchRL's :class:`~torchrl.objectives.DreamerV3ModelLoss` (by default configured as the
    reference DreamerV2 objective), plus the latent-action KL:

    .. code-block:: text

        loss_model_reco            lambda_reco * sum_{C,H,W} (o_{t+1} - o^_{t+1})^2
        loss_model_dynamic         lambda_kl * kl_balance * KL(sg(post) || prior)
        loss_model_representation  lambda_kl * (1 - kl_balance) * KL(post || sg(prior))
        loss_model_reward          lambda_reward * symlog-MSE(reward), if the batch has rewards
        loss_action_kl             beta_action * max(KL(q(a~_t | o_t, o_{t+1}) || N(0, std^2)),
                                             action_free_nats), std = action_prior_std
        loss_forward_reco          lambda_forward_reco * sum_{C,H,W} (o_{t+1} - dec(x))^2,
                                   x = f(e(o_t), a~_t), f = LatentActionForwardModel (optional)
        loss_prior_reco            lambda_prior_reco * sum_{C,H,W} (o_{t+1} - dec(y))^2,
                                   y = (z^_{t+1}, h_{t+1}), z^_{t+1} ~ p(z | h_{t+1}),
                                   h_{t+1} = GRU(h_t, z_t, a~_t) (optional)
        loss_consistency           lambda_consistency * action-state consistency (optional)

    With the defaults (``lambda_reco=0.5`` on pixels in [-0.5, 0.5], ``kl_balance=0.8``,
    ``free_nats=0``) this is the unit-variance Gaussian likelihood and KL balancing of the
    reference. The state KL sums over the categoricals; every term averages over batch and
    time. The action KL averages over the transitions that are not sequence starts
    (``"is_init"``): the RSSM zeroes the action there, so that latent action is unused.

    Frames: uint8 (as stored) or floats in [-0.5, 0.5]; the loss is the same for both, to
    float rounding. The batch is not modified: the networks centre uint8 frames on the way
    in, and the loss centres the frames it scores predictions against
    (:func:`~torchrl_prelar.modules.pixels.centred_pixels`) in its own copy; in the returned
    world-model output the target ``("next", pixels)`` is that centred copy.

    Action free nats (``action_free_nats``, 0 by default as in the paper): the batch-mean
    action KL is not penalised below this many nats (its loss is then constant, without
    gradient), like DreamerV3's free bits on the state KL. The latent action may then carry
    that much information for free, which keeps a code the RSSM has not learnt to use yet
    from being squeezed to nothing (see the grid-world toy in ``docs/latent_actions.md``,
    "Toys with a known action").

    Sampling the latent action (``sample_latent_action``, on by default, as in the paper):
    the RSSM receives a reparameterised sample of the Gaussian latent action (a
    straight-through sample of the discrete one), so the action KL is a real rate. Every
    TorchRL loss runs its forward under its ``deterministic_sampling_mode`` (``"deterministic"``
    by default); this loss sets it to ``"random"`` for that reason. ``False`` feeds the RSSM
    the mean (argmax): the action KL then only penalises the mean, as the scale never
    reaches the RSSM.

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
    trains the latent action model. The state side is detached in both. The shuffled prior is
    ``prior`` run on the ``state``, ``belief`` and shuffled ``latent_action`` entries.

    Any TorchRL world model (e.g. a :class:`~tensordict.nn.TensorDictSequential` of an encoder,
    a latent action model, an :class:`~torchrl.modules.RSSMRolloutV3` and a decoder, keys
    renamed at will) trains with this loss: pass it, or a
    :class:`~torchrl.objectives.DreamerV3ModelLoss` of it, and name its keys with
    :meth:`set_keys`. The world model writes the latent action and, for the action KL, the
    parameters of its distribution (``latent_action_type``). The forward and prior
    reconstructions decode through a :class:`~torchrl_prelar.modules.PreLARWorldModel`'s
    ``decoder`` (and the forward model is sized from its parts).

    Args:
        world_model (TensorDictModuleBase, optional): the world model. It reads the batch and
            writes the reconstruction, the RSSM logits and the latent action (a
            :class:`~torchrl_prelar.modules.PreLARWorldModel` or any TorchRL world model).
            Leave it out when ``model_loss`` is given. Defaults to ``None``.

    Keyword Args:
        model_loss (DreamerV3ModelLoss, optional): a
            :class:`~torchrl.objectives.DreamerV3ModelLoss` of the world model, with its own
            settings and keys. PreLARLoss's ``pixels``, ``reco_pixels``, ``prior_logits``,
            ``posterior_logits`` and ``reward`` keys start as its keys and :meth:`set_keys`
            sets both. PreLARLoss takes it over: it wraps its world model so that a batch
            without rewards works and uint8 targets are scored centred, runs it under
            ``sample_latent_action``'s sampling mode and moves its ``detach_output`` to
            PreLARLoss's own output (the latent-action terms need the world model's output
            with gradients). Defaults to ``None``: one is built from ``model_loss_kwargs``
            and the five model-loss settings below.
        model_loss_kwargs (dict, optional): keyword arguments of the DreamerV3ModelLoss built
            when ``model_loss`` is not given. They override the reference objective's
            (``kl_mode="separate"``, ``unimix=0``, ``reco_symlog=False``, ``reco_loss="l2"``,
            ``reward_two_hot=False``, ``detach_output=False``); what ``lambda_kl``,
            ``kl_balance``, ``free_nats``, ``lambda_reco`` and ``lambda_reward`` set may not
            be given here too. Defaults to ``None``.
        prior (TensorDictModuleBase, optional): the RSSM prior of the consistency term: a
            module reading the ``state``, ``belief`` and ``latent_action`` keys of one step
            and writing ``("next", prior_logits)``, ``[..., categoricals, classes]`` (the
            ``rssm_prior`` of an :class:`~torchrl.modules.RSSMRolloutV3`). Defaults to
            ``None``: the prior of the world model's ``rssm``, or of its one RSSMRolloutV3.
        latent_action_type (str, optional): the latent action's distribution, as
            :class:`~torchrl_prelar.modules.LatentActionModel`'s ``output_type``:
            ``"gaussian"`` (action KL to ``N(0, action_prior_std^2)`` from the
            ``latent_action_loc`` and ``latent_action_scale`` entries), ``"discrete"`` (KL to
            uniform from ``latent_action_logits``) or ``"deterministic"`` (no action KL).
            Defaults to ``None``: the ``output_type`` of the world model's LatentActionModel,
            or ``"deterministic"`` for a world model without one (e.g. one whose action model
            is an :class:`~torchrl_prelar.modules.ActionEncoder`). A latent action model of
            another class must be declared here.
        beta_action (float, optional): weight of the action KL. Defaults to ``1.0`` (the
            paper's).
        action_prior_std (float, optional): std of the Gaussian action prior. The reference
            code effectively uses 1.245 (its std activation applied to 1). Defaults to
            ``1.0``.
        action_free_nats (float, optional): batch-mean action KL, in nats, below which it is
            not penalised. Defaults to ``0.0``.
        sample_latent_action (bool, optional): if ``True``, the RSSM receives a sample of the
            latent action; if ``False``, its mean (argmax). Defaults to ``True``.
        lambda_kl (float, optional): state KL weight of the built model loss. Defaults to
            ``None`` (``1.0``).
        kl_balance (float, optional): share of the state KL that trains the prior, in
            ``[0, 1]``. Defaults to ``None`` (``0.8``).
        free_nats (float, optional): free nats of the state KL. Defaults to ``None``
            (``0.0``).
        lambda_reco (float, optional): reconstruction weight; ``0.5`` gives the unit-variance
            Gaussian log-likelihood. Defaults to ``None`` (``0.5``).
        lambda_reward (float, optional): reward weight, used when the batch has rewards.
            Defaults to ``None`` (``1.0``).
        consistency (str, optional): the action-state consistency term, ``"off"``,
            ``"sign"`` or ``"soft"``. Defaults to ``"off"``.
        lambda_consistency (float, optional): weight of the consistency term. Defaults to
            ``1.0``.
        consistency_tau (float, optional): temperature of the ``"soft"`` surrogate. Defaults
            to ``1.0``.
        lambda_prior_reco (float, optional): weight of the prior reconstruction term; ``0``
            switches it off, as in the paper. Defaults to ``0.0``.
        lambda_forward_reco (float, optional): weight of the forward reconstruction term;
            ``0`` switches it off, as in the paper. Defaults to ``0.0``.
        forward_hidden (int, optional): hidden width of the
            :class:`LatentActionForwardModel`. Defaults to ``256``.
        forward_residual (bool, optional): if ``True``, the forward reconstruction predicts
            o_{t+1} as o_t plus the decoding, so the decoder only draws the change and all of
            the error is motion. Defaults to ``False``.
        action_kl_warmup (int, optional): the action KL's weight grows linearly from 0 to
            ``beta_action`` over this many training forward passes (counted in a buffer, so
            it resumes with the loss's state dict); ``0`` applies ``beta_action`` from the
            start, as in the paper. Defaults to ``0``.

    Returns:
        ``forward`` returns a ``(loss_td, model_td)`` pair like
        :class:`~torchrl.objectives.DreamerV3ModelLoss`: ``loss_td`` holds the ``loss_*``
        entries to sum and detached metrics (``action_kl``, ``latent_action_std``,
        ``state_kl``, ``reco_mse``); ``model_td`` is the world model's output (with gradients
        unless the given ``model_loss`` detaches its output), e.g. posterior states to
        imagine from.

    Raises:
        ValueError: if a weight (``beta_action``, the ``lambda_*`` ones, ``free_nats``) is NaN,
            infinite or negative, or ``action_prior_std`` or ``consistency_tau`` is not a
            finite number > 0, naming the setting; if both or neither of ``world_model`` and
            ``model_loss`` are given (``TypeError`` for neither).

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl_prelar import PreLARLoss, make_world_model
        >>> loss = PreLARLoss(make_world_model())
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
        """Maintains default values for all configurable tensordict keys.

        This class defines which tensordict keys can be set using
        ``.set_keys(key_name=key_value)`` and their default values.

        Attributes:
            pixels (NestedKey): the observed frames; the target is read at
                ``("next", pixels)``. Defaults to ``"pixels"``.
            reco_pixels (NestedKey): the decoded frames, read at ``("next", reco_pixels)``.
                Defaults to ``"reco_pixels"``.
            prior_logits (NestedKey): the RSSM prior's categorical logits, read at
                ``("next", prior_logits)``. Defaults to ``"prior_logits"``.
            posterior_logits (NestedKey): the RSSM posterior's categorical logits, read at
                ``("next", posterior_logits)``. Defaults to ``"posterior_logits"``.
            reward (NestedKey): the reward, read at ``("next", reward)``; a batch without it
                has no reward term. Defaults to ``"reward"``.
            latent_action (NestedKey): the action the RSSM reads. Defaults to
                ``"latent_action"``.
            latent_action_loc (NestedKey): the Gaussian latent action's mean. Defaults to
                ``"latent_action_loc"``.
            latent_action_scale (NestedKey): the Gaussian latent action's std. Defaults to
                ``"latent_action_scale"``.
            latent_action_logits (NestedKey): the discrete latent action's logits. Defaults
                to ``"latent_action_logits"``.
            is_init (NestedKey): the sequence-start flag. Defaults to ``"is_init"``.
            state (NestedKey): the RSSM state input of each step (written back by the
                rollout), read by the consistency term's ``prior``. Defaults to ``"state"``.
            belief (NestedKey): the RSSM belief input of each step, read by the consistency
                term's ``prior``. Defaults to ``"belief"``.
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
        world_model: TensorDictModuleBase | None = None,
        *,
        model_loss: DreamerV3ModelLoss | None = None,
        model_loss_kwargs: Mapping[str, Any] | None = None,
        prior: TensorDictModuleBase | None = None,
        latent_action_type: OutputType | None = None,
        beta_action: float = 1.0,
        action_prior_std: float = 1.0,
        action_free_nats: float = 0.0,
        sample_latent_action: bool = True,
        lambda_kl: float | None = None,
        kl_balance: float | None = None,
        free_nats: float | None = None,
        lambda_reco: float | None = None,
        lambda_reward: float | None = None,
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
        if latent_action_type is not None and latent_action_type not in _LATENT_ACTION_TYPES:
            raise ValueError(
                "latent_action_type must be 'gaussian', 'deterministic', 'discrete' or None, "
                f"got {latent_action_type!r}."
            )
        if action_free_nats < 0:
            raise ValueError(f"action_free_nats must be >= 0, got {action_free_nats}.")
        if action_kl_warmup < 0:
            raise ValueError(f"action_kl_warmup must be >= 0, got {action_kl_warmup}.")
        settings = {
            "lambda_kl": lambda_kl,
            "kl_balance": kl_balance,
            "free_nats": free_nats,
            "lambda_reco": lambda_reco,
            "lambda_reward": lambda_reward,
        }
        settings = {name: value for name, value in settings.items() if value is not None}
        weights = {
            "beta_action": beta_action,
            "lambda_consistency": lambda_consistency,
            "lambda_prior_reco": lambda_prior_reco,
            "lambda_forward_reco": lambda_forward_reco,
            **settings,
        }
        _check_weights(
            weights, {"action_prior_std": action_prior_std, "consistency_tau": consistency_tau}
        )
        if model_loss is None:
            if world_model is None:
                raise TypeError("PreLARLoss needs a world_model or a model_loss.")
            model_loss = DreamerV3ModelLoss(
                world_model, **_model_loss_kwargs(settings, model_loss_kwargs or {})
            )
        else:
            if world_model is not None:
                raise ValueError(
                    "Pass the world model or a model_loss of it, not both: the model loss "
                    "already holds its world model."
                )
            given = sorted(settings) + (["model_loss_kwargs"] if model_loss_kwargs else [])
            if given:
                raise ValueError(
                    f"{', '.join(given)} configure the DreamerV3ModelLoss that PreLARLoss "
                    "builds; with model_loss given, configure that loss instead."
                )
        for name in ("pixels", "reco_pixels"):
            if isinstance(getattr(model_loss.tensor_keys, name), list):
                raise ValueError(
                    f"PreLARLoss reads one observation: the model loss's {name} key must be a "
                    f"single key, got {getattr(model_loss.tensor_keys, name)}."
                )
        super().__init__()
        self.detach_output = model_loss.detach_output
        model_loss.detach_output = False
        if not isinstance(model_loss.world_model, _ModelLossAdapter):
            model_loss.world_model = _ModelLossAdapter(model_loss.world_model)
        model_loss.deterministic_sampling_mode = (
            InteractionType.RANDOM if sample_latent_action else InteractionType.DETERMINISTIC
        )
        self.model_loss = model_loss
        self.set_keys(**{key: getattr(model_loss.tensor_keys, key) for key in _MODEL_LOSS_KEYS})
        world_model = self.world_model
        if consistency != "off" and prior is None:
            _find_rssm_prior(world_model)  # fail at construction, not at the first batch
        if lambda_prior_reco and not hasattr(world_model, "decoder"):
            raise ValueError(
                "lambda_prior_reco decodes through the world model's decoder: "
                f"{type(world_model).__name__} has no decoder attribute."
            )
        self.prior = prior
        self.latent_action_type = latent_action_type
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
        self.action_kl_warmup = action_kl_warmup
        if action_kl_warmup:  # only then in the state dict: checkpoints without it still load
            self.register_buffer("training_forwards", torch.zeros((), dtype=torch.int64))
        self.forward_model = (
            _make_forward_model(world_model, forward_hidden) if lambda_forward_reco else None
        )

    @property
    def world_model(self) -> TensorDictModuleBase:
        """The world model trained by this loss (inside the model loss's wrapper)."""
        return self.model_loss.world_model.world_model

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        keys = {key: getattr(self.tensor_keys, key) for key in _MODEL_LOSS_KEYS}
        self.model_loss.set_keys(**keys)
        wrapper = self.model_loss.world_model
        wrapper.reward_key = unravel_key(("next", self.tensor_keys.reward))
        wrapper.true_reward_key = unravel_key(("next", self.model_loss.tensor_keys.true_reward))
        wrapper.target_key = unravel_key(("next", self.tensor_keys.pixels))

    def _latent_action_type(self) -> OutputType:
        """``latent_action_type``, or the output type of the world model's LatentActionModel."""
        if self.latent_action_type is not None:
            return self.latent_action_type
        models = [m for m in self.world_model.modules() if isinstance(m, LatentActionModel)]
        if len(models) > 1:
            raise ValueError(
                f"The world model holds {len(models)} LatentActionModels: pass "
                "latent_action_type to say which distribution the latent action has."
            )
        return models[0].output_type if models else "deterministic"

    def _latent_action_parameter(self, model_td: TensorDictBase, name: str) -> torch.Tensor:
        """The latent action distribution's parameter ``name`` (a tensor key), or a KeyError."""
        key = getattr(self.tensor_keys, name)
        value = model_td.get(key, None)
        if value is None:
            raise KeyError(
                f"PreLARLoss expected {_LATENT_ACTION_PARAMETERS[name]}, at {key!r} in the "
                f"world model's output (latent_action_type={self._latent_action_type()!r}); "
                f"it is not there. Point set_keys({name}=...) at the entry the latent action "
                "model writes, or pass the latent_action_type it has."
            )
        return value

    def _action_kl_weight(self) -> float | torch.Tensor:
        """``beta_action``, ramped up over the first ``action_kl_warmup`` training forwards.

        With a warm-up, each call in training mode counts one training forward (the
        ``training_forwards`` buffer, saved in the state dict like BatchNorm's
        ``num_batches_tracked``); the weight stays a tensor on the buffer's device, so the
        ramp never waits for the device.
        """
        if not self.training or not self.action_kl_warmup:
            return self.beta_action
        self.training_forwards += 1
        ramp = (self.training_forwards / self.action_kl_warmup).clamp(max=1.0)
        return self.beta_action * ramp

    def _step_weights(self, model_td: TensorDictBase) -> torch.Tensor:
        """1 for transitions whose latent action the RSSM uses, 0 at sequence starts."""
        is_init = model_td.get(self.tensor_keys.is_init, None)
        if is_init is None:
            return torch.ones(model_td.shape, device=model_td.device)
        return (~is_init.reshape(model_td.shape)).float()

    def _action_kl(self, model_td: TensorDictBase) -> torch.Tensor | None:
        """Per-transition KL of the latent action to its prior, or None if deterministic."""
        kind = self._latent_action_type()
        if kind == "discrete":
            return categorical_kl_to_uniform(
                self._latent_action_parameter(model_td, "latent_action_logits")
            )
        if kind == "gaussian":
            loc = self._latent_action_parameter(model_td, "latent_action_loc")
            scale = self._latent_action_parameter(model_td, "latent_action_scale")
            return gaussian_kl_to_prior(loc, scale, self.action_prior_std)
        return None

    def _frames(self, model_td: TensorDictBase, key: NestedKey) -> torch.Tensor:
        """Frames at ``key`` as centred floats, the decoder's space (uint8 frames converted)."""
        return centred_pixels(model_td.get(key))

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
        base = self._frames(model_td, keys.pixels) if self.forward_residual else None
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
        target = self._frames(model_td, ("next", keys.pixels))
        error = (prediction - target).pow(2).sum((-1, -2, -3))
        return (error * weights).sum() / steps

    def _prior_reconstruction(
        self, model_td: TensorDictBase, weights: torch.Tensor, steps: torch.Tensor
    ) -> torch.Tensor:
        """Squared error of o_{t+1} decoded from a prior sample, summed over pixels."""
        keys = self.tensor_keys
        state = straight_through_sample(model_td.get(("next", keys.prior_logits)))
        belief = model_td.get(("next", keys.belief))
        return self._decoded_error(model_td, state, belief, weights, steps)

    def _shuffled_prior_logits(
        self, flat: TensorDictBase, shuffled_action: torch.Tensor
    ) -> torch.Tensor:
        """Prior logits of one step from each sample's state and belief and another's action."""
        keys = self.tensor_keys
        prior = self.prior if self.prior is not None else _find_rssm_prior(self.world_model)
        inputs = {
            unravel_key(keys.state): flat.get(keys.state),
            unravel_key(keys.belief): flat.get(keys.belief),
            unravel_key(keys.latent_action): shuffled_action,
        }
        missing = [key for key in prior.in_keys if unravel_key(key) not in inputs]
        if missing:
            raise KeyError(
                f"The consistency prior reads {list(prior.in_keys)}; PreLARLoss gives it the "
                f"state, belief and latent_action keys {list(inputs)}, not {missing}. "
                "Set the loss's keys to the prior's with set_keys(state=..., belief=..., "
                "latent_action=...)."
            )
        step = prior(TensorDict(inputs, batch_size=flat.batch_size))
        logits_key = unravel_key(("next", keys.prior_logits))
        logits = step.get(logits_key, None)
        if logits is None:
            raise KeyError(
                f"The consistency prior writes {list(prior.out_keys)}; PreLARLoss expected "
                f"prior logits [..., categoricals, classes] at {logits_key!r} "
                "(set_keys(prior_logits=...))."
            )
        return logits

    def _consistency(self, model_td: TensorDictBase, weights: torch.Tensor) -> torch.Tensor:
        """Pairwise rank agreement between action distances and state-prediction distances."""
        keys = self.tensor_keys
        flat = model_td.reshape(-1)
        weights = weights.reshape(-1)
        latent_action = flat.get(keys.latent_action)
        perm = torch.randperm(latent_action.shape[0], device=latent_action.device)
        with torch.no_grad():
            prior_logits = flat.get(("next", keys.prior_logits))
            shuffled_logits = self._shuffled_prior_logits(flat, latent_action[perm])
            state_distance = _categorical_kl(prior_logits, shuffled_logits)
        kind = self._latent_action_type()
        if kind == "discrete":
            logits = self._latent_action_parameter(flat, "latent_action_logits")
            action_distance = _categorical_kl(logits, logits[perm])
        elif kind == "gaussian":
            action_distance = _pairwise_gaussian_kl(
                self._latent_action_parameter(flat, "latent_action_loc"),
                self._latent_action_parameter(flat, "latent_action_scale"),
                perm,
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
            loss_td.set("loss_forward_reco", self.lambda_forward_reco * forward_reco.unsqueeze(-1))
        if self.lambda_prior_reco:
            prior_reco = self._prior_reconstruction(model_td, weights, steps)
            loss_td.set("loss_prior_reco", self.lambda_prior_reco * prior_reco.unsqueeze(-1))
        if self.consistency != "off":
            consistency = self._consistency(model_td, weights)
            loss_td.set("loss_consistency", self.lambda_consistency * consistency.unsqueeze(-1))

        loss_td.update(self._metrics(model_td, action_kl, weights, steps))
        return loss_td, model_td.data if self.detach_output else model_td

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
        target = self._frames(model_td, ("next", keys.pixels))
        prediction = model_td.get(("next", keys.reco_pixels))
        metrics = TensorDict(
            action_kl=action_kl.detach(),
            state_kl=_categorical_kl(posterior, prior).mean(),
            reco_mse=(prediction - target).pow(2).mean(),
        )
        if self._latent_action_type() == "gaussian":
            scale = self._latent_action_parameter(model_td, "latent_action_scale")
            metrics.set("latent_action_std", (scale.mean(-1) * weights).sum() / steps)
        return metrics
