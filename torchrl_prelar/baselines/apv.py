"""APV baseline (Seo et al., ICML 2022): an action-free RSSM, and an action-conditional one on top.

Pre-training (:func:`make_action_free_world_model`): the world model of PreLAR with its
action input removed. TorchRL's :class:`~torchrl.modules.RSSMPriorV3` is built with a
zero-width action (``action_dim=0``), and :class:`NoAction` writes that empty action, so the
prior is exactly p(z_t | h_t) with h_t = GRU(h_{t-1}, z_{t-1}): no action, no extra weight,
no placeholder input. Trained with :class:`~torchrl_prelar.objectives.PreLARLoss`, whose
action KL is then identically 0: reconstruction + balanced KL, APV's video objective.

Fine-tuning (:class:`APVWorldModel`): the pre-trained encoder and action-free RSSM
(:class:`ActionFreeRSSM`) filter the frames; the features ``[z_t, h_t]`` of the action-free
posterior are the "observation embedding" of a new action-conditional TorchRL RSSM that reads
the real action; the decoder (pre-trained) and the reward heads read the action-conditional
state; the video intrinsic bonus reads the action-free features
(:meth:`APVWorldModel.action_free_features`).
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.modules import RSSMPosteriorV3, RSSMPriorV3, RSSMRolloutV3

from torchrl_prelar.modules.pixels import check_pixels
from torchrl_prelar.modules.world_model import (
    PreLARWorldModel,
    chain_in_keys,
    make_reward_head,
    make_rssm_rollout,
    make_world_model,
    model_state_size,
    resolve_world_model_kwargs,
    set_zero_initial_state,
)

#: Keys :class:`ActionFreeRSSM` writes by default (the action-free model's own namespace).
ACTION_FREE_KEYS: list[NestedKey] = [
    ("next", "af_prior_logits"),
    ("next", "af_posterior_logits"),
    ("next", "af_state"),
    ("next", "af_belief"),
]
_ROLLOUT_KEYS: list[NestedKey] = [
    ("next", "prior_logits"),
    ("next", "posterior_logits"),
    ("next", "state"),
    ("next", "belief"),
]


class NoAction(TensorDictModuleBase):
    """Write a zero-width action ``[*batch, 0]``: the input of an action-free RSSM prior.

    Args:
        in_key (NestedKey, optional): a key of the batch whose device the action takes.
            Defaults to ``"is_init"``.
        out_key (NestedKey, optional): where the empty action is written. Defaults to
            ``"latent_action"``.

    Examples:
        >>> td = TensorDict({"is_init": torch.ones(2, 3, 1, dtype=torch.bool)}, [2, 3])
        >>> NoAction()(td)["latent_action"].shape
        torch.Size([2, 3, 0])
    """

    def __init__(self, in_key: NestedKey = "is_init", out_key: NestedKey = "latent_action"):
        super().__init__()
        self.in_keys = [in_key]
        self.out_keys = [out_key]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        reference = tensordict.get(self.in_keys[0])
        empty = torch.zeros(*tensordict.batch_size, 0, device=reference.device)
        tensordict.set(self.out_keys[0], empty)
        return tensordict


class _Concat(nn.Module):
    """Concatenate tensors on the last dimension."""

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return torch.cat(tensors, -1)


def make_action_free_world_model(**world_model_kwargs: Any) -> PreLARWorldModel:
    """APV's pre-training model: encoder, action-free RSSM (zero-width action) and decoder.

    A :class:`~torchrl_prelar.modules.PreLARWorldModel` whose action model is
    :class:`NoAction` and whose RSSM prior has ``action_dim=0``; its state dict therefore has
    the same ``encoder.`` / ``rssm.`` / ``decoder.`` entries as PreLAR's, without
    ``action_model.`` ones.

    Keyword Args:
        **world_model_kwargs: the arguments of
            :func:`~torchrl_prelar.modules.make_world_model`; its ``latent_action`` settings
            are not used, as there is no latent action.

    Examples:
        >>> from torchrl_prelar.data.synthetic import moving_square_batch
        >>> model = make_action_free_world_model(rssm={"deter": 64})
        >>> model(moving_square_batch(2, 4))["next", "reco_pixels"].shape
        torch.Size([2, 4, 3, 64, 64])
        >>> any(name.startswith("action_model.") for name in model.state_dict())
        False
    """
    latent_action = {**(world_model_kwargs.pop("latent_action", None) or {}), "dim": 0}
    return make_world_model(
        **world_model_kwargs, latent_action=latent_action, action_model=NoAction()
    )


class ActionFreeRSSM(TensorDictModuleBase):
    """An action-free TorchRL RSSM rolled out over time on its own keys.

    TorchRL's :class:`~torchrl.modules.RSSMRolloutV3` reads and writes fixed keys
    (``"state"``, ``"belief"``, ``("next", "state")``, ...), so two RSSMs cannot share a
    TensorDict. This module runs the action-free rollout (from
    :func:`make_action_free_world_model`) on a TensorDict of its own, starting every
    sequence from a zero state (batches always start with ``is_init``), and writes its
    outputs under ``out_keys``.

    Args:
        rollout (RSSMRolloutV3): the rollout with a zero-width-action prior.

    Keyword Args:
        embedding_key (NestedKey, optional): the encoder embedding of o_{t+1}. Defaults to
            ``("next", "pixel_embedding")``.
        reset_key (NestedKey, optional): the sequence-start flag. Defaults to
            ``"is_init"``.
        out_keys (list of NestedKey, optional): prior logits, posterior logits, posterior
            state and belief. Defaults to :data:`ACTION_FREE_KEYS`.

    Raises:
        ValueError: if ``out_keys`` does not hold four keys or the prior reads an action.

    Examples:
        >>> rssm = ActionFreeRSSM(make_action_free_world_model().rssm)
        >>> td = TensorDict({("next", "pixel_embedding"): torch.randn(2, 5, 2048),
        ...                  "is_init": torch.zeros(2, 5, 1, dtype=torch.bool)}, [2, 5])
        >>> rssm(td)["next", "af_state"].shape
        torch.Size([2, 5, 256])
    """

    def __init__(
        self,
        rollout: RSSMRolloutV3,
        *,
        embedding_key: NestedKey = ("next", "pixel_embedding"),
        reset_key: NestedKey = "is_init",
        out_keys: list[NestedKey] | None = None,
    ):
        super().__init__()
        self.rssm = rollout
        self.in_keys = [embedding_key, reset_key]
        self.out_keys = list(ACTION_FREE_KEYS if out_keys is None else out_keys)
        if len(self.out_keys) != 4:
            raise ValueError(
                f"ActionFreeRSSM needs four out_keys (prior logits, posterior logits, state, "
                f"belief), got {self.out_keys}."
            )
        if self.prior.action_state_projector[0].in_features != self.stoch_dim:
            raise ValueError("ActionFreeRSSM needs a prior built with action_dim=0.")

    @property
    def prior(self) -> RSSMPriorV3:
        """The action-free prior network."""
        return self.rssm.rssm_prior.module

    @property
    def posterior(self) -> RSSMPosteriorV3:
        """The posterior network."""
        return self.rssm.rssm_posterior.module

    @property
    def stoch_dim(self) -> int:
        """Size of the stochastic state, ``categoricals * classes``."""
        return self.prior.num_categoricals * self.prior.num_classes

    @property
    def feature_dim(self) -> int:
        """Size of the features ``[state, belief]`` the stacked RSSM observes."""
        return self.stoch_dim + self.prior.rnn_hidden_dim

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        embedding_key, reset_key = self.in_keys
        embedding = tensordict.get(embedding_key)
        batch = tensordict.batch_size
        zeros = embedding.new_zeros(())
        inner = TensorDict(
            {
                "state": zeros.expand(*batch, self.stoch_dim),
                "belief": zeros.expand(*batch, self.prior.rnn_hidden_dim),
                self.rssm.action_key: embedding.new_zeros(*batch, 0),
                self.rssm.reset_key: tensordict.get(reset_key),
                ("next", "encoded_latents"): embedding,
            },
            batch,
        )
        inner = self.rssm(inner)
        for source, target in zip(_ROLLOUT_KEYS, self.out_keys, strict=True):
            tensordict.set(target, inner.get(source))
        return tensordict


class APVWorldModel(TensorDictModuleBase):
    """APV fine-tuning world model: an action-conditional RSSM stacked on an action-free one.

    On a ``[*batch, T]`` TensorDict of transitions:

    1. ``encoder``: ``("next", "pixels")`` -> ``("next", "pixel_embedding")``;
    2. ``action_free`` (:class:`ActionFreeRSSM`, pre-trained): -> ``("next", "af_state")``,
       ``("next", "af_belief")`` and its logits;
    3. ``features``: ``[af_state, af_belief]`` -> ``("next", "encoded_latents")``, the
       observation embedding of
    4. ``rssm``: a new action-conditional :class:`~torchrl.modules.RSSMRolloutV3` reading
       ``"action"``, writing the standard ``("next", "state")``, ``("next", "belief")``,
       ``("next", "prior_logits")``, ``("next", "posterior_logits")``;
    5. ``decoder`` (pre-trained) and ``reward_heads`` read the action-conditional state.

    Gradients of the action-conditional losses reach the action-free RSSM and the encoder
    through the features (APV trains them with those losses only; its action-free KL has
    weight 0 at fine-tuning).

    Args:
        encoder (nn.Module): the pre-trained pixel encoder.
        action_free (ActionFreeRSSM): the pre-trained action-free RSSM.
        rssm (RSSMRolloutV3): the action-conditional rollout, reading ``"action"``.
        decoder (TensorDictModule): the pre-trained decoder.
        reward_heads (list of TensorDictModule, optional): reward predictors from the
            action-conditional state. Defaults to ``None`` (no reward head).

    Keyword Args:
        image_shape (tuple of int, optional): ``(channels, height, width)`` of a frame.
            Defaults to ``(3, 64, 64)``.
        validate_inputs (bool, optional): check the frames of every batch. Defaults to
            ``True``.

    Examples:
        >>> model = make_apv_world_model(action_dim=4)
        >>> td = TensorDict({"action": torch.zeros(2, 3, 4),
        ...                  "is_init": torch.ones(2, 3, 1, dtype=torch.bool),
        ...                  ("next", "pixels"): torch.zeros(2, 3, 3, 64, 64, dtype=torch.uint8)},
        ...                 [2, 3])
        >>> out = model(td)
        >>> out["next", "reco_pixels"].shape, out["next", "encoded_latents"].shape
        (torch.Size([2, 3, 3, 64, 64]), torch.Size([2, 3, 512]))
    """

    def __init__(
        self,
        encoder: nn.Module,
        action_free: ActionFreeRSSM,
        rssm: RSSMRolloutV3,
        decoder: TensorDictModule,
        reward_heads: list[TensorDictModule] | None = None,
        *,
        image_shape: tuple[int, int, int] = (3, 64, 64),
        validate_inputs: bool = True,
    ):
        super().__init__()
        embedding_key = action_free.in_keys[0]
        self.encoder = TensorDictModule(
            encoder, in_keys=[("next", "pixels")], out_keys=[embedding_key]
        )
        self.action_free = action_free
        self.features = TensorDictModule(
            _Concat(),
            in_keys=action_free.out_keys[2:],
            out_keys=[("next", "encoded_latents")],
        )
        self.rssm = rssm
        self.decoder = decoder
        self.reward_heads = nn.ModuleList(reward_heads or [])
        self.image_shape = tuple(image_shape)
        self.pixel_keys = [("next", "pixels")]
        self.validate_inputs = validate_inputs

    @property
    def _parts(self) -> list[TensorDictModuleBase]:
        return [
            self.encoder,
            self.action_free,
            self.features,
            self.rssm,
            self.decoder,
            *self.reward_heads,
        ]

    @property
    def in_keys(self) -> list[NestedKey]:
        """The keys the model reads: those of its parts that no earlier part writes."""
        return chain_in_keys(self._parts)

    @property
    def out_keys(self) -> list[NestedKey]:
        """The keys the model writes, part by part."""
        return [key for part in self._parts for key in part.out_keys]

    @property
    def rssm_prior(self) -> RSSMPriorV3:
        """The action-conditional prior (imagination runs on it)."""
        return self.rssm.rssm_prior.module

    def _prepare(self, tensordict: TensorDictBase) -> None:
        key = self.pixel_keys[0]
        if self.validate_inputs:
            check_pixels(tensordict, key, self.image_shape)
        set_zero_initial_state(tensordict, self.rssm_prior, tensordict.get(key).device)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        self._prepare(tensordict)
        for part in self._parts:
            tensordict = part(tensordict)
        return tensordict

    @torch.no_grad()
    def action_free_features(self, tensordict: TensorDictBase) -> torch.Tensor:
        """``[af_state, af_belief]`` of ``("next", "pixels")``, for the intrinsic bonus.

        Runs the encoder and the action-free RSSM without gradient and in eval mode (no
        BatchNorm statistics update), on a TensorDict of its own holding the frames (as they
        are given) and the reset flags.

        Args:
            tensordict (TensorDictBase): a batch with ``("next", "pixels")`` and the reset
                flags; it is not modified.

        Returns:
            the features, ``[*batch, T, state + belief]``.
        """
        reset_key = self.action_free.in_keys[1]
        pixels = tensordict.get(self.pixel_keys[0])
        modules = (self.encoder, self.action_free)
        modes = [module.training for module in modules]
        for module in modules:
            module.eval()
        try:
            td = TensorDict(
                {self.pixel_keys[0]: pixels, reset_key: tensordict.get(reset_key)},
                tensordict.batch_size,
            )
            td = self.features(self.action_free(self.encoder(td)))
        finally:
            for module, mode in zip(modules, modes, strict=True):
                module.train(mode)
        return td.get(self.features.out_keys[0])


def make_apv_world_model(
    action_dim: int = 4,
    *,
    action_free: PreLARWorldModel | None = None,
    reward_keys: list[NestedKey] | None = None,
    **world_model_kwargs: Any,
) -> APVWorldModel:
    """Stack a new action-conditional RSSM on an action-free world model.

    Args:
        action_dim (int, optional): real action size; the new prior reads ``"action"``
            directly. Defaults to ``4``.

    Keyword Args:
        action_free (PreLARWorldModel, optional): the (pre-trained) model of
            :func:`make_action_free_world_model`; its encoder, RSSM and decoder are taken
            over. Defaults to ``None``: a fresh one of ``world_model_kwargs``.
        reward_keys (list of NestedKey, optional): one reward head per key. Defaults to
            ``None`` (no reward head).
        **world_model_kwargs: the arguments of

            :func:`~torchrl_prelar.modules.make_world_model`; the new RSSM has the sizes of
            its ``rssm`` settings (those of the action-free one, so the pre-trained decoder
            fits), the reward heads its ``reward_head`` settings.

    Examples:
        >>> model = make_apv_world_model(action_dim=4, reward_keys=[("next", "reward")],
        ...                              rssm={"categoricals": 8, "classes": 8})
        >>> model.rssm_prior.action_state_projector[0].in_features  # 64 stoch + 4 action
        68
    """
    settings = resolve_world_model_kwargs(**world_model_kwargs)
    if action_free is None:
        action_free = make_action_free_world_model(**world_model_kwargs)
    stacked = ActionFreeRSSM(action_free.rssm)
    rssm = settings["rssm"]
    rollout = make_rssm_rollout(
        **rssm, action_dim=action_dim, obs_embed_dim=stacked.feature_dim, action_key="action"
    )
    features = model_state_size(rssm)
    heads = [
        make_reward_head(**settings["reward_head"], in_features=features, out_key=key)
        for key in reward_keys or []
    ]
    return APVWorldModel(
        action_free.encoder.module,
        stacked,
        rollout,
        action_free.decoder,
        heads,
        image_shape=action_free.image_shape,
        validate_inputs=action_free.validate_inputs,
    )
