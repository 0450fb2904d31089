"""The supervised reference of the latent action: its code regressed on a true target."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import InteractionType, TensorDictModuleBase, set_interaction_type
from tensordict.utils import NestedKey
from torch import nn
from torchrl.objectives import LossModule

from torchrl_prelar.modules.latent_action import LatentActionModel


class SupervisedLatentActionLoss(LossModule):
    """The latent action model trained as a supervised inverse dynamics model.

    A linear read-out (owned by the loss, like :class:`~torchrl_prelar.PreLARLoss`'s forward
    model) of the latent action's mode (the Gaussian's mean or the deterministic code: what
    :func:`~torchrl_prelar.evaluation.evaluate_latent_actions` probes) is regressed on a true
    target of the video, which PreLAR never reads:

    .. code-block:: text

        loss_supervised = mean over transitions t (not sequence starts) and target dims d of
                          (W a~_t + b - z_t)_d^2,   a~_t = mode of q(a~ | o_t, o_{t+1})
        z_t = (y_t - mean(y)) / std(y)   (per dim, over the batch's used transitions, detached)

    ``y`` is the entry ``target`` (``"true_action"`` by default), restricted to
    ``target_dims`` when given: ``set_keys(target="true_state_change")`` with
    ``target_dims=(0, 1, 2)`` regresses the hand displacement p_{t+1} - p_t of Meta-world's
    scripted videos (:class:`~torchrl_prelar.data.VideoExperienceReplay` stores the
    episodes' states). With the world model, the data and the number of updates of a PreLAR
    pre-training, it is the reference the unsupervised code is judged against: how much of
    the target this network reads from two frames when it is told the answer. Transitions
    whose target is not finite (episodes without that entry) are left out.

    With ``standardize`` (the default) the target is standardised per dim over the batch, so
    the loss is the fraction of the target's variance the read-out misses on that batch
    (1 - R^2), whatever the target's units. Hand displacements are millimetres in metres
    (a variance of about 1e-5): regressed raw, their gradients fall below Adam's ``eps``
    (1e-5 in :func:`~torchrl_prelar.training.pretrain.make_optimizer`) and the network
    hardly learns.

    Only the latent action model (and, in the ``"embedding"`` input mode, the encoder it
    reads) gets gradients; the RSSM and the decoder are not run.

    Args:
        world_model (TensorDictModuleBase): a world model with a
            :class:`~torchrl_prelar.LatentActionModel` as ``action_model`` and an
            ``infer_latent_action`` method (:class:`~torchrl_prelar.PreLARWorldModel`).

    Keyword Args:
        target_dim (int, optional): width of the target entry, when ``target_dims`` is not
            given. Defaults to ``None``.
        target_dims (sequence of int, optional): the dims of the target entry's last
            dimension that are regressed. Defaults to ``None`` (all ``target_dim`` of them).
        standardize (bool, optional): regress each target dim standardised over the batch's
            used transitions. Defaults to ``True``.

    Raises:
        ValueError: if the world model has no :class:`~torchrl_prelar.LatentActionModel`, or
            its output is discrete (the arg-max code has no gradient), or neither
            ``target_dim`` nor ``target_dims`` is given, or the two disagree.

    Examples:
        >>> from torchrl_prelar import make_world_model
        >>> from torchrl_prelar.data.synthetic import moving_square_batch
        >>> loss = SupervisedLatentActionLoss(make_world_model(), target_dim=2)
        >>> losses, _ = loss(moving_square_batch(2, 4))
        >>> losses["loss_supervised"].shape
        torch.Size([])
        >>> displacement = SupervisedLatentActionLoss(make_world_model(), target_dims=[0, 1])
        >>> displacement.set_keys(target="true_state_change")
        >>> bool(displacement(moving_square_batch(2, 4))[0]["loss_supervised"] > 0)
        True
    """

    @dataclass
    class _AcceptedKeys:
        """Keys read by the loss.

        Attributes:
            target (NestedKey): the regressed entry, ``[B, T, D]``. Defaults to
                ``"true_action"``; ``"true_state_change"`` for the hand displacement.
            latent_action (NestedKey): the latent action the action model writes. Defaults to
                ``"latent_action"``.
            is_init (NestedKey): the sequence-start flag, ``[B, T, 1]``; those transitions are
                left out. Defaults to ``"is_init"``.
        """

        target: NestedKey = "true_action"
        latent_action: NestedKey = "latent_action"
        is_init: NestedKey = "is_init"

    tensor_keys: _AcceptedKeys
    default_keys = _AcceptedKeys

    def __init__(
        self,
        world_model: TensorDictModuleBase,
        *,
        target_dim: int | None = None,
        target_dims: Sequence[int] | None = None,
        standardize: bool = True,
    ):
        action_model = getattr(world_model, "action_model", None)
        if not isinstance(action_model, LatentActionModel):
            raise ValueError(
                "SupervisedLatentActionLoss trains a latent action model: expected a world "
                f"model whose action_model is a LatentActionModel, got {type(action_model)}."
            )
        if action_model.output_type == "discrete":
            raise ValueError(
                "SupervisedLatentActionLoss regresses the latent action's mode: the discrete "
                "output's arg-max has no gradient; use output_type 'gaussian' or "
                "'deterministic'."
            )
        if target_dims is not None:
            target_dims = [int(dim) for dim in target_dims]
            if not target_dims:
                raise ValueError("target_dims must name at least one dim, got none.")
            if target_dim is not None and target_dim != len(target_dims):
                raise ValueError(
                    f"target_dim={target_dim} disagrees with target_dims={target_dims}: give "
                    "one of them."
                )
            target_dim = len(target_dims)
        if target_dim is None or target_dim < 1:
            raise ValueError(
                f"target_dim must be >= 1 (the width of the target), or target_dims given; "
                f"got target_dim={target_dim}."
            )
        super().__init__()
        self.world_model = world_model
        self.target_dims = target_dims
        self.standardize = standardize
        self.readout = nn.Linear(action_model.action_dim, target_dim)

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        """No value estimator: nothing to update."""

    def forward(self, tensordict: TensorDictBase) -> tuple[TensorDictBase, TensorDictBase]:
        """Return ``(losses, output)``: ``loss_supervised`` and the world model's output
        (the latent action written on a shallow copy of ``tensordict``, which is left as it
        is)."""
        keys = self.tensor_keys
        target = tensordict.get(keys.target, None)
        if target is None:
            raise KeyError(
                f"SupervisedLatentActionLoss: the batch has no {keys.target!r} entry (its "
                f"target key): expected [B, T, D] targets beside the frames, e.g. videos whose "
                "episodes carry actions ('true_action') or states ('true_state_change')."
            )
        with set_interaction_type(InteractionType.DETERMINISTIC):
            output = self.world_model.infer_latent_action(tensordict.copy())
        prediction = self.readout(output.get(keys.latent_action).float())
        target = target.float()
        if self.target_dims is not None:
            target = target[..., self.target_dims]
        if target.shape != prediction.shape:
            raise ValueError(
                f"SupervisedLatentActionLoss: {keys.target!r} is {tuple(target.shape)} (after "
                f"target_dims), expected {tuple(prediction.shape)}: [B, T, target_dim]."
            )
        used = ~output.get(keys.is_init).reshape(output.shape) & target.isfinite().all(-1)
        target = target.nan_to_num()
        if self.standardize:
            target = _standardized(target, used)
        error = (prediction - target).pow(2).mean(-1)
        value = (error * used).sum() / used.sum().clamp_min(1)
        return TensorDict({"loss_supervised": value}, batch_size=[]), output


def _standardized(target: torch.Tensor, used: torch.Tensor) -> torch.Tensor:
    """``target`` with each last-dim entry standardised over the ``used`` positions (detached
    mean and standard deviation; a constant dim is only centred)."""
    values = target[used].detach()
    if values.shape[0] < 2:
        return target
    mean, std = values.mean(0), values.std(0)
    return (target - mean) / torch.where(std > 0, std, torch.ones_like(std))
