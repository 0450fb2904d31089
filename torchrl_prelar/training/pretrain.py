"""Pre-training update: PreLARLoss on clips sampled from an action-free video replay buffer.

One update is :meth:`PreLARPretrainer.update` (forward under optional autocast, backward,
gradient clipping, Adam step); the resumable loop around it, with logging, media and atomic
checkpoints, is ``pretrain()`` in ``examples/dreamer_prelar.py``.

Under torchrun the trainer runs data-parallel (see :mod:`torchrl_prelar.training.distributed`
and ``docs/distributed.md``): it wraps the loss in DistributedDataParallel, so gradients are
averaged over the ranks.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.objectives import LossModule

from torchrl_prelar.training.distributed import DistributedContext
from torchrl_prelar.training.precision import autocast, resolve_precision


def make_optimizer(
    parameters, lr: float = 3e-4, eps: float = 1e-5, weight_decay: float = 1e-6
) -> torch.optim.Optimizer:
    """The reference optimiser: one Adam over all world-model parameters.

    Uses PyTorch's fused Adam kernel (one pass over each parameter instead of a chain of
    elementwise ops), with the same arithmetic as the unfused one.

    Args:
        parameters (iterable of torch.nn.Parameter): the parameters to optimise.
        lr (float, optional): learning rate. Defaults to ``3e-4``.
        eps (float, optional): Adam's epsilon. Defaults to ``1e-5``.
        weight_decay (float, optional): L2 weight decay. Defaults to ``1e-6``.

    Returns:
        a :class:`torch.optim.Adam`.

    Examples:
        >>> make_optimizer([torch.nn.Parameter(torch.zeros(2))]).defaults["eps"]
        1e-05
    """
    return torch.optim.Adam(parameters, lr=lr, eps=eps, weight_decay=weight_decay, fused=True)


class PreLARPretrainer:
    """One pre-training update: loss, backward, gradient-norm clipping, optimiser step.

    The loss is moved to ``device`` (every module of it, not only the world model) and, with
    ``channels_last``, to the channels-last memory format.

    Args:
        loss (LossModule): a loss that owns the world model as ``loss.world_model`` and
            returns ``(losses, output)``, its terms named ``loss_*``:
            :class:`~torchrl_prelar.PreLARLoss`, or
            :class:`~torchrl_prelar.objectives.SupervisedLatentActionLoss` for the supervised
            reference.
        optimizer (torch.optim.Optimizer): optimiser over ``loss.parameters()``.

    Keyword Args:
        grad_clip (float, optional): maximum global gradient norm; ``inf`` does not clip.
            Defaults to ``100.0`` (the reference's).
        precision (str, optional): ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"`` (see
            :func:`~torchrl_prelar.training.precision.resolve_precision`). Defaults to
            ``"auto"``.
        device (torch.device or str, optional): where the model and batches live. Defaults
            to ``"cpu"``.
        channels_last (bool, optional): store convolution weights (hence activations)
            channels-last, the layout oneDNN and cuDNN convolve fastest; parameter values are
            unchanged. Defaults to ``True``.
        distributed (DistributedContext, optional): the data-parallel job this process
            belongs to; the loss then runs in DistributedDataParallel (gradients averaged
            over the ranks). Defaults to ``None`` (one process).
        compile_networks (bool, optional): ``torch.compile`` every network of the world
            model in place (:meth:`~torchrl_prelar.modules.PreLARWorldModel.compile_networks`);
            the loss and the RSSM's time loop stay eager. Meant for GPUs, where kernel
            launches dominate; on a 2-core CPU it gives no gain (``docs/performance.md``).
            Defaults to ``False``.

    Raises:
        ValueError: if ``grad_clip`` is not a number > 0 (NaN included).

    Examples:
        >>> from torchrl_prelar import PreLARLoss, make_world_model
        >>> from torchrl_prelar.data.synthetic import moving_square_batch
        >>> loss = PreLARLoss(make_world_model())
        >>> trainer = PreLARPretrainer(loss, make_optimizer(loss.parameters()), precision="fp32")
        >>> metrics = trainer.update(moving_square_batch(2, 4))
        >>> bool(metrics["loss"] > 0)
        True
    """

    def __init__(
        self,
        loss: LossModule,
        optimizer: torch.optim.Optimizer,
        *,
        grad_clip: float = 100.0,
        precision: str = "auto",
        device: torch.device | str = "cpu",
        channels_last: bool = True,
        distributed: DistributedContext | None = None,
        compile_networks: bool = False,
    ):
        if not grad_clip > 0:  # NaN too: clipping to NaN turns every parameter into NaN
            raise ValueError(
                f"grad_clip must be a number > 0 (the largest gradient norm; inf: no clipping), "
                f"got {grad_clip}."
            )
        loss.to(device)  # every module of the loss, not only the world model
        if channels_last:
            loss.to(memory_format=torch.channels_last)
        if compile_networks:
            loss.world_model.compile_networks()
        self.loss = loss
        self.model = (distributed or DistributedContext()).wrap(loss)
        self.optimizer = optimizer
        self.grad_clip = grad_clip
        self.device = torch.device(device)
        self.autocast_dtype = resolve_precision(precision, self.device)

    def update(self, batch: TensorDictBase) -> TensorDict:
        """Run one update on a ``[B, T]`` batch.

        Args:
            batch (TensorDictBase): a ``[B, T]`` batch of clips, moved to the trainer's
                device.

        Returns:
            the detached ``loss_*`` entries and metrics of the loss (each averaged to a
            scalar), ``"loss"`` (their sum) and ``"grad_norm"`` (before clipping).
        """
        batch = batch.to(self.device, non_blocking=True)
        self.loss.train()
        with autocast(self.device, self.autocast_dtype):
            losses, _ = self.model(batch)
        total = sum(value for key, value in losses.items() if key.startswith("loss_"))
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.loss.parameters(), self.grad_clip)
        self.optimizer.step()
        metrics = losses.detach().apply(lambda value: value.float().mean())
        metrics.set("loss", total.detach().float().mean())
        metrics.set("grad_norm", grad_norm.detach())
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """The loss's (``"model"``) and the optimiser's (``"optimizer"``) state dicts."""
        return {"model": self.loss.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load a :meth:`state_dict` into the loss and the optimiser."""

        self.loss.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
