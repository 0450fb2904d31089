"""PreLAR fine-tuning world-model loss: reward + video bonus, and an auxiliary plain-reward head."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.objectives import LossModule
from torchrl.objectives.dreamer_v3 import symlog

from torchrl_prelar.baselines.apv import APVWorldModel
from torchrl_prelar.modules import PreLARWorldModel
from torchrl_prelar.modules.intrinsic import VideoIntrinsicBonus
from torchrl_prelar.objectives.prelar import PreLARLoss

#: Posterior entries :class:`~torchrl.objectives.DreamerV3Loss` starts imagination from.
POSTERIOR_KEYS: tuple[NestedKey, ...] = (("next", "state"), ("next", "belief"))
#: Reward losses: TorchRL's DreamerV3 symlog-MSE, DreamerV2's unit-variance Gaussian.
REWARD_LOSSES = ("symlog_mse", "gaussian")


def reward_error(prediction: torch.Tensor, target: torch.Tensor, loss: str) -> torch.Tensor:
    """Mean reward loss: ``(symlog(p) - symlog(t))^2`` or ``0.5 * (p - t)^2``.

    ``"gaussian"`` is DreamerV2's negative log-likelihood of a unit-variance normal (less its
    constant): its gradient grows with the error, where symlog shrinks it for large rewards.

    Args:
        prediction (torch.Tensor): predicted rewards.
        target (torch.Tensor): target rewards, of the same shape.
        loss (str): ``"symlog_mse"`` or ``"gaussian"``.

    Returns:
        the mean loss, a scalar tensor.

    Examples:
        >>> reward_error(torch.tensor([3.0]), torch.tensor([1.0]), "gaussian")
        tensor(2.)
    """
    if loss == "gaussian":
        return 0.5 * (prediction - target).square().mean()
    return (symlog(prediction) - symlog(target)).square().mean()


class FinetuneModelLoss(LossModule):
    """PreLAR fine-tuning world-model loss, shaped for :class:`~torchrl.objectives.DreamerV3Loss`.

    This is the one place where a TorchRL piece cannot take a PreLAR part as it is.
    :class:`~torchrl.objectives.DreamerV3ModelLoss` (inside :class:`PreLARLoss`) scores one
    reward key against the reward of the batch. Fine-tuning needs two targets: the reward
    head learns ``reward + beta * bonus`` (the reward the actor maximises in imagination) and
    the auxiliary head the plain reward, and the bonus needs the encoder embedding of the
    batch *before* the loss. So this module:

    1. embeds ``("next", "pixels")`` with the world model's encoder (no gradient, eval mode
       so BatchNorm statistics are not updated twice), or with ``features`` if given, and
       computes the :class:`~torchrl_prelar.modules.intrinsic.VideoIntrinsicBonus`;
    2. runs :class:`PreLARLoss` with ``("next", "reward")`` replaced by reward + bonus
       (``loss_model_reward``, the world model's reward head);
    3. adds ``loss_model_aux_reward``, the same loss for the auxiliary head
       ``("next", "aux_reward")`` against the plain reward; with ``reward_loss="gaussian"``
       both reward terms are DreamerV2's ``0.5 * (prediction - target)^2`` instead of
       TorchRL's symlog-MSE (:func:`reward_error`).

    It exposes what :class:`~torchrl.objectives.DreamerV3Loss` reads from its model loss:
    ``world_model`` (with ``in_keys``), ``tensor_keys.pixels`` / ``tensor_keys.reward`` and
    ``detach_output`` (False: posterior states keep their graph; DreamerV3Loss detaches the
    imagination start states itself). Costs one extra encoder forward pass per update.

    Args:
        prelar_loss (PreLARLoss): the world-model loss; its world model holds the action
            encoder and the reward heads ``("next", "reward")`` and
            ``("next", "aux_reward")``.
        bonus (VideoIntrinsicBonus, optional): the intrinsic bonus; ``None`` switches it
            off. Defaults to ``None``.

    Keyword Args:
        features (Callable[[TensorDictBase], torch.Tensor], optional): maps the batch to the
            ``[B, T, E]`` features the bonus reads, without gradient (APV:
            :meth:`~torchrl_prelar.baselines.apv.APVWorldModel.action_free_features`).
            Defaults to ``None``: the encoder embedding of ``("next", pixels)``.
        beta (float, optional): bonus weight. Defaults to ``1.0`` (APV's and PreLAR's).
        lambda_aux_reward (float, optional): weight of the auxiliary reward term. Defaults
            to ``1.0``.
        reward_loss (str, optional): ``"symlog_mse"`` or ``"gaussian"`` (see
            :func:`reward_error`). Defaults to ``"symlog_mse"``.
        autocast_dtype (torch.dtype, optional): if given, the world model runs under
            :func:`torch.autocast` with this dtype (``torch.bfloat16`` on a CPU with native
            bf16, see :func:`~torchrl_prelar.training.precision.resolve_precision`). The
            bonus, the loss values and the posterior states handed to imagination
            (:data:`POSTERIOR_KEYS`) stay fp32, so the actor-critic update downstream runs in
            full precision. Defaults to ``None``.

    Returns:
        ``forward`` returns ``(loss_td, model_td)`` as :class:`PreLARLoss` does, with
        ``loss_model_aux_reward`` and the metrics ``env_reward`` and (with a bonus)
        ``intrinsic_bonus`` added to ``loss_td``.

    Raises:
        ValueError: if ``reward_loss`` is not one of :data:`REWARD_LOSSES`.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl_prelar import FinetuneModelLoss, PreLARLoss, make_world_model
        >>> model = make_world_model(action_dim=4,
        ...                          reward_keys=[("next", "reward"), ("next", "aux_reward")])
        >>> loss = FinetuneModelLoss(PreLARLoss(model))
        >>> td = TensorDict({"action": torch.zeros(2, 3, 4),
        ...                  "is_init": torch.arange(3).expand(2, 3)[..., None] == 0,
        ...                  "next": {"pixels": torch.zeros(2, 3, 3, 64, 64, dtype=torch.uint8),
        ...                           "reward": torch.ones(2, 3, 1)}}, [2, 3])
        >>> losses, _ = loss(td)
        >>> for key in sorted(k for k in losses.keys() if k.startswith("loss_")):
        ...     print(key)
        loss_action_kl
        loss_model_aux_reward
        loss_model_dynamic
        loss_model_reco
        loss_model_representation
        loss_model_reward
    """

    @dataclass
    class _AcceptedKeys:
        """Maintains default values for all configurable tensordict keys.

        This class defines which tensordict keys can be set using
        ``.set_keys(key_name=key_value)`` and their default values.

        Attributes:
            pixels (NestedKey): the frames the bonus embeds, read at ``("next", pixels)``.
                Defaults to ``"pixels"``.
            reward (NestedKey): the task reward, read at ``("next", reward)``. Defaults to
                ``"reward"``.
            aux_reward (NestedKey): the auxiliary head's plain-reward prediction, read at
                ``("next", aux_reward)``. Defaults to ``"aux_reward"``.
        """

        pixels: NestedKey = "pixels"
        reward: NestedKey = "reward"
        aux_reward: NestedKey = "aux_reward"

    tensor_keys: _AcceptedKeys
    default_keys = _AcceptedKeys
    detach_output = False

    def __init__(
        self,
        prelar_loss: PreLARLoss,
        bonus: VideoIntrinsicBonus | None = None,
        *,
        features: Callable[[TensorDictBase], torch.Tensor] | None = None,
        beta: float = 1.0,
        lambda_aux_reward: float = 1.0,
        reward_loss: str = "symlog_mse",
        autocast_dtype: torch.dtype | None = None,
    ):
        super().__init__()
        if reward_loss not in REWARD_LOSSES:
            raise ValueError(f"reward_loss must be one of {REWARD_LOSSES}, got {reward_loss!r}.")
        self.reward_loss = reward_loss
        self.prelar_loss = prelar_loss
        self.bonus = bonus
        self.features = features
        self.beta = beta
        self.lambda_aux_reward = lambda_aux_reward
        self.autocast_dtype = autocast_dtype

    @property
    def world_model(self) -> PreLARWorldModel | APVWorldModel:
        """The world model of ``prelar_loss``, as :class:`~torchrl.objectives.DreamerV3Loss`
        reads it."""
        return self.prelar_loss.world_model

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        pass

    @torch.compiler.disable  # a data-dependent queue: runs eagerly inside a compiled step
    @torch.no_grad()
    def _bonus(self, tensordict: TensorDictBase) -> torch.Tensor:
        if self.features is not None:
            return self.bonus.compute(self.features(tensordict))
        pixels = tensordict.get(("next", self.tensor_keys.pixels))
        encoder = self.world_model.encoder.module
        was_training = encoder.training
        encoder.eval()
        try:
            with self._autocast(pixels.device):
                embedding = encoder(pixels)
        finally:
            encoder.train(was_training)
        return self.bonus.compute(embedding.float())

    def _autocast(self, device: torch.device) -> torch.autocast:
        dtype = self.autocast_dtype
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

    def forward(self, tensordict: TensorDictBase) -> tuple[TensorDictBase, TensorDictBase]:
        keys = self.tensor_keys
        reward_key = ("next", keys.reward)
        tensordict = tensordict.select(*tensordict.keys(True, True))
        reward = tensordict.get(reward_key)
        bonus = None
        if self.bonus is not None and self.beta:
            bonus = self._bonus(tensordict)
            tensordict.set(reward_key, reward + self.beta * bonus)
        with self._autocast(reward.device):
            losses, model_td = self.prelar_loss(tensordict)
            aux = model_td.get(("next", keys.aux_reward))
            aux_loss = reward_error(aux, reward, self.reward_loss)
            if self.reward_loss != "symlog_mse":  # TorchRL's model loss scores symlog-MSE
                inner = self.prelar_loss.model_loss
                predicted = model_td.get(("next", inner.tensor_keys.reward))
                target = model_td.get(("next", inner.tensor_keys.true_reward))
                main_loss = reward_error(predicted, target, self.reward_loss)
                losses.set("loss_model_reward", inner.lambda_reward * main_loss.unsqueeze(-1))
        losses.set("loss_model_aux_reward", self.lambda_aux_reward * aux_loss.unsqueeze(-1))
        losses.set("env_reward", reward.mean().detach())
        if bonus is not None:
            losses.set("intrinsic_bonus", bonus.mean())
        if self.autocast_dtype is not None:
            losses = losses.apply(lambda value: value.float())
            for key in POSTERIOR_KEYS:
                model_td.set(key, model_td.get(key).float())
        return losses, model_td
