"""Pre-training loop: PreLARLoss on clips sampled from an action-free video replay buffer.

One update is :meth:`PreLARPretrainer.update` (forward under optional autocast, backward,
gradient clipping, Adam step); :func:`pretrain` repeats it with logging, media and atomic,
resumable checkpoints. The loop holds no state that is not in the checkpoint: the step
counter, model, optimiser and the global RNG (which drives clip sampling and the latent
action noise) are saved together, so a resumed run continues exactly where it stopped.

Under torchrun the same loop runs data-parallel (see
:mod:`torchrl_prelar.training.distributed` and ``docs/distributed.md``): the trainer wraps
the loss in DistributedDataParallel, each rank keeps its own random stream (all of them are
checkpointed), metrics are averaged over the ranks before logging, and only rank 0 writes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from tqdm.auto import tqdm

from torchrl_prelar.objectives import PreLARLoss
from torchrl_prelar.training.checkpoint import load_checkpoint, save_checkpoint
from torchrl_prelar.training.distributed import DistributedContext
from torchrl_prelar.training.precision import autocast, resolve_precision

#: Resumable pre-training checkpoint in ``run_dir`` (see :func:`pretrain`).
CHECKPOINT_NAME = "pretrain_last.pt"
#: The pre-trained world model a run leaves in its ``run_dir``: ``{"world_model": state dict,
#: "config": world-model section, "evaluation": held-out evaluation settings}``, read by
#: fine-tuning and by ``python -m torchrl_prelar.evaluation``.
PRETRAINED_MODEL = "pretrained_world_model.pt"


def make_optimizer(
    parameters, lr: float = 3e-4, eps: float = 1e-5, weight_decay: float = 1e-6
) -> torch.optim.Optimizer:
    """The reference optimiser: one Adam over all world-model parameters.

    PyTorch's fused Adam kernel (one pass over each parameter instead of a chain of
    elementwise ops; measured 8x faster on 29M parameters on a 2-core CPU) with the same
    arithmetic.

    Examples:
        >>> make_optimizer([torch.nn.Parameter(torch.zeros(2))]).defaults["eps"]
        1e-05
    """
    return torch.optim.Adam(parameters, lr=lr, eps=eps, weight_decay=weight_decay, fused=True)


class PreLARPretrainer:
    """One pre-training update: loss, backward, gradient-norm clipping, optimiser step.

    Args:
        loss: the :class:`~torchrl_prelar.PreLARLoss` (owns the world model).
        optimizer: optimiser over ``loss.parameters()``.
        grad_clip: maximum global gradient norm (100 in the reference).
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``
            (see :func:`~torchrl_prelar.training.precision.resolve_precision`).
        device: where the model and batches live.
        channels_last: store convolution weights (hence activations) channels-last, the
            layout oneDNN and cuDNN convolve fastest; parameter values are unchanged.
        distributed: the data-parallel job this process belongs to; the loss then runs in
            DistributedDataParallel (gradients averaged over the ranks). ``None``: one process.
        compile_networks: ``torch.compile`` every network of the world model in place
            (:meth:`~torchrl_prelar.modules.PreLARWorldModel.compile_networks`); the loss and
            the RSSM's time loop stay eager. Meant for GPUs, where kernel launches dominate (not
            measured: no GPU here); no gain was measured on a 2-core CPU
            (``docs/performance.md``).

    Examples:
        >>> from torchrl_prelar import make_world_model
        >>> from torchrl_prelar.data.synthetic import moving_square_batch
        >>> loss = PreLARLoss(make_world_model("tiny"))
        >>> trainer = PreLARPretrainer(loss, make_optimizer(loss.parameters()), precision="fp32")
        >>> metrics = trainer.update(moving_square_batch(2, 4))
        >>> bool(metrics["loss"] > 0)
        True
    """

    def __init__(
        self,
        loss: PreLARLoss,
        optimizer: torch.optim.Optimizer,
        *,
        grad_clip: float = 100.0,
        precision: str = "auto",
        device: torch.device | str = "cpu",
        channels_last: bool = True,
        distributed: DistributedContext | None = None,
        compile_networks: bool = False,
    ):
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
        """Run one update on a ``[B, T]`` batch; return detached losses and metrics."""
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
        return {"model": self.loss.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loss.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


def pretrain(
    trainer: PreLARPretrainer,
    sample: Callable[[], TensorDictBase],
    *,
    num_updates: int,
    run_dir: str | Path,
    log: Callable[[dict[str, float], int], None] | None = None,
    log_every: int = 10,
    checkpoint_every: int = 100,
    on_checkpoint: Callable[[int], None] | None = None,
    on_step: Callable[[int], None] | None = None,
    progress: bool = True,
    distributed: DistributedContext | None = None,
) -> dict[str, float]:
    """Pre-train for ``num_updates`` updates, resuming from ``run_dir`` if it has a checkpoint.

    Args:
        trainer: the update to repeat.
        sample: returns the next ``[B, T]`` batch (e.g. ``replay_buffer.sample``).
        num_updates: total updates of the run (including those of a resumed run).
        run_dir: folder of the checkpoint ``pretrain_last.pt``.
        log: called with ``(metrics, step)`` every ``log_every`` updates.
        checkpoint_every: updates between two atomic checkpoints (one is also written at the end).
        on_checkpoint: called with the step after each checkpoint (e.g. to write media).
        on_step: called with the step after each update, after logging and before that
            step's checkpoint (e.g. to evaluate every so many updates).
        progress: show a tqdm progress bar.
        distributed: the data-parallel job (``None``: one process). Every rank calls
            :func:`pretrain`; metrics are averaged over the ranks at logging steps, and only
            rank 0 logs, writes checkpoints and calls ``on_checkpoint`` and ``on_step``.

    Returns:
        The metrics of the last update as floats (empty if nothing was left to do).

    Examples:
        >>> import tempfile
        >>> from torchrl_prelar import make_world_model
        >>> from torchrl_prelar.data.synthetic import moving_square_batch
        >>> loss = PreLARLoss(make_world_model("tiny"))
        >>> trainer = PreLARPretrainer(loss, make_optimizer(loss.parameters()), precision="fp32")
        >>> out = pretrain(trainer, lambda: moving_square_batch(2, 4), num_updates=2,
        ...                run_dir=tempfile.mkdtemp(), progress=False)
        >>> sorted(out)[:2]
        ['action_kl', 'grad_norm']
    """
    run_dir = Path(run_dir)
    context = distributed or DistributedContext()
    checkpoint_path = run_dir / CHECKPOINT_NAME
    step = 0
    if checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path, map_location=trainer.device)
        trainer.load_state_dict(state["trainer"])
        step = state["step"]
        context.restore_rng_states(state.get("rng_per_rank", [state["rng"]]), step)
    elif context.is_distributed:
        context.seed_rank(step)

    def checkpoint() -> None:
        states = context.gather_rng_states()
        if not context.is_main:
            return
        state = {"trainer": trainer.state_dict(), "rng": states[0], "step": step}
        if context.is_distributed:
            state["rng_per_rank"] = states
        save_checkpoint(checkpoint_path, state)
        if on_checkpoint is not None:
            on_checkpoint(step)

    last: dict[str, float] = {}
    show = progress and context.is_main
    bar = tqdm(total=num_updates, initial=step, desc="pretrain", disable=not show)
    while step < num_updates:
        metrics = trainer.update(sample())
        step += 1
        bar.update(1)
        if step % log_every == 0 or step == num_updates:
            last = {key: value.item() for key, value in context.mean(metrics).items()}
            bar.set_postfix(loss=f"{last['loss']:.2f}", action_kl=f"{last['action_kl']:.2f}")
            if log is not None and context.is_main:
                log(last, step)
        if on_step is not None and context.is_main:
            on_step(step)
        if step % checkpoint_every == 0 or step == num_updates:
            checkpoint()
    bar.close()
    return last
