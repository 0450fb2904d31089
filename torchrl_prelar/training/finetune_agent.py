"""The fine-tuning agent: a PreLAR world model with real actions, on TorchRL's Dreamer stack.

What is TorchRL's, used as it is:

- :class:`~torchrl.objectives.DreamerV3Loss` composing :class:`~torchrl.objectives.
  DreamerV3ActorLoss` (imagination in a :class:`~torchrl.envs.model_based.dreamer.DreamerEnv`,
  lambda returns, dynamics back-propagation, entropy bonus) and :class:`~torchrl.objectives.
  DreamerV3ValueLoss` (critic with a target copy, :class:`~torchrl.objectives.HardUpdate`);
- :class:`~torchrl.trainers.algorithms.DreamerV3OptimizationStepper` (forward, backward,
  optimiser step, target update) with a plain :class:`torch.optim.Adam`;
- :class:`~torchrl.modules.RSSMStateEstimatorV3` for the acting policy, and TorchRL's
  :class:`~torchrl.modules.models.model_based.DreamerActor` with a ``TanhNormal`` head.

What PreLAR adds: the :class:`~torchrl_prelar.modules.ActionEncoder` in front of the prior
(in the world model, in the imagination env and in the acting policy), the pre-trained
encoder / RSSM / decoder, and a world-model loss with the video intrinsic bonus and an
auxiliary reward head (:class:`FinetuneModelLoss`, the one wrapper, see its docstring).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import (
    InteractionType,
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
    TensorDictModuleBase,
    TensorDictSequential,
)
from tensordict.utils import NestedKey
from torch import nn
from torchrl.data import Bounded, Composite, Unbounded
from torchrl.envs.model_based.dreamer import DreamerEnv
from torchrl.modules import (
    MLP,
    RSSMStateEstimatorV3,
    TanhNormal,
    TruncatedNormal,
    WorldModelWrapper,
)
from torchrl.modules.models.model_based import DreamerActor
from torchrl.objectives import (
    DreamerV3ActorLoss,
    DreamerV3Loss,
    DreamerV3ValueLoss,
    HardUpdate,
    LossModule,
)
from torchrl.objectives.utils import ValueEstimators
from torchrl.trainers import OptimizationStepper
from torchrl.trainers.algorithms import DreamerV3OptimizationStepper

from torchrl_prelar.baselines.apv import APVWorldModel, NoAction
from torchrl_prelar.baselines.contextwm import STACKED_BASELINES, ContextWMWorldModel
from torchrl_prelar.legacy import load_world_model_checkpoint
from torchrl_prelar.modules import ActionEncoder, PreLARWorldModel, make_world_model
from torchrl_prelar.modules.actor import TruncatedNormalActor
from torchrl_prelar.modules.intrinsic import VideoIntrinsicBonus
from torchrl_prelar.objectives import PreLARLoss
from torchrl_prelar.objectives.finetune import FinetuneModelLoss
from torchrl_prelar.training.precision import resolve_precision

REWARD_KEY: NestedKey = ("next", "reward")
AUX_REWARD_KEY: NestedKey = ("next", "aux_reward")
#: Parameter-group names of the one Adam (see :func:`make_finetune_optimizer`).
GROUPS = ("representation", "model", "actor", "critic")
#: Actor distributions: TorchRL's DreamerActor + TanhNormal, DreamerV2's truncated normal.
ACTOR_DISTRIBUTIONS = ("tanh_normal", "trunc_normal")
#: What the lambda returns bootstrap from: the trained critic (TorchRL), its slow copy (DreamerV2).
CRITIC_TARGETS = ("online", "slow")
#: ``finetune.init`` values: PreLAR-initialised, from scratch, the APV and ContextWM baselines.
INITS = ("prelar", "dreamer", "apv", "contextwm")
FinetuneWorldModel = PreLARWorldModel | APVWorldModel


def _pretraining_kind(state: Mapping[str, Any]) -> str:
    """Which pre-training a world-model state dict is, from its parameter names."""
    if any(name.startswith("action_model.") for name in state):
        return "PreLAR (with a latent action model)"
    if any(name.startswith("context_encoder.") for name in state):
        return "ContextWM (action-free, with a context encoder)"
    return "APV (action-free)"


def load_pretrained_world_model(
    world_model: PreLARWorldModel,
    path: str | Path,
    configured: Mapping[str, Any] | None = None,
) -> list[str]:
    """Load encoder, RSSM and decoder of a pre-trained model file into ``world_model``.

    Every entry of the file is checked, shape by shape, against ``world_model``; the reward
    heads are new and stay as they are, and so does an :class:`ActionEncoder` (a fine-tuning
    world model's): the file's latent action model is then left out. A preset-format file
    (world model named by a preset) is read through
    :func:`~torchrl_prelar.legacy.upgrade_checkpoint`.

    Args:
        world_model (PreLARWorldModel): the model loaded into, in place.
        path (str or Path): the pre-trained model file.
        configured (Mapping[str, Any], optional): the world-model arguments of
            ``world_model``, named in the error message. Defaults to ``None``.

    Returns:
        the names of the loaded entries.

    Raises:
        ValueError: naming every parameter whose shape differs, or that is missing / extra,
            with the world-model arguments the file was pre-trained with (its
            ``"world_model_kwargs"``) and ``configured``, those of ``world_model``.

    Examples:
        >>> import tempfile
        >>> from torchrl_prelar.io import save_checkpoint
        >>> from torchrl_prelar.modules import make_world_model
        >>> path = Path(tempfile.mkdtemp()) / "pretrained_world_model.pt"
        >>> state = make_world_model().state_dict()
        >>> _ = save_checkpoint(path, {"world_model": state, "world_model_kwargs": {}})
        >>> len(load_pretrained_world_model(make_world_model(), path)) == len(state)
        True
    """
    checkpoint = load_world_model_checkpoint(path)
    state = checkpoint["world_model"]
    target = world_model.state_dict()
    new = ("reward_heads.",)
    if isinstance(getattr(world_model, "action_model", None), ActionEncoder):
        new += ("action_model.",)
        state = {name: value for name, value in state.items() if not name.startswith(new)}
    problems = []
    for name, value in state.items():
        if name not in target:
            problems.append(f"  {name}: in the checkpoint, not in the configured model")
        elif tuple(value.shape) != tuple(target[name].shape):
            problems.append(
                f"  {name}: pre-trained shape {tuple(value.shape)}, configured model expects "
                f"{tuple(target[name].shape)}"
            )
    for name in target:
        if name not in state and not name.startswith(new):
            problems.append(f"  {name}: missing from the checkpoint")
    if problems:
        if _pretraining_kind(checkpoint["world_model"]) != _pretraining_kind(target):
            problems.append(
                f"  the checkpoint is a {_pretraining_kind(checkpoint['world_model'])} "
                f"pre-training, the configured model a {_pretraining_kind(target)} one: "
                "pre-train with the same finetune.init (prelar, apv or contextwm) as the "
                "fine-tuning run."
            )
        raise ValueError(
            f"The pre-trained world model {path} does not match the configured world model "
            f"(pre-trained with {checkpoint.get('world_model_kwargs', '?')}, configured "
            f"{dict(configured) if configured is not None else '?'}):\n"
            + "\n".join(problems)
            + "\nSet the world_model arguments to the pre-training's (its world_model_kwargs)."
        )
    world_model.load_state_dict(state, strict=False)
    return list(state)


class _Float32(nn.Module):
    """Return the inputs in fp32. Ends the networks whose outputs parameterise the policy's
    distribution, the imagined rewards and the critic's values: under bf16 autocast the
    networks compute in bf16, and the distributions and lambda returns in fp32 (in bf16 a
    truncated normal's sample and entropy turn NaN, and returns of hundreds lose their units).
    """

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        out = tuple(tensor.float() for tensor in tensors)
        return out[0] if len(out) == 1 else out


class _RewardInFloat32(TensorDictModule):
    """A reward head's :class:`TensorDictModule` writing its prediction in fp32 (see
    :class:`_Float32`); its parameter names are those of a plain ``TensorDictModule``."""

    def forward(self, tensordict: TensorDictBase, *args: Any, **kwargs: Any) -> TensorDictBase:
        tensordict = super().forward(tensordict, *args, **kwargs)
        key = self.out_keys[0]
        return tensordict.set(key, tensordict.get(key).float())


class _Carry(nn.Module):
    """Copy the posterior states and the action to ``"next"`` for the following step."""

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(tensor.clone() for tensor in tensors)


@dataclass
class FinetuneAgent:
    """Everything fine-tuning trains or acts with (see :func:`make_finetune_agent`).

    Args:
        world_model (PreLARWorldModel or APVWorldModel): the fine-tuned world model.
        loss (DreamerV3Loss): TorchRL's loss of world model, actor and critic.
        policy (TensorDictSequential): the acting policy, from frames to ``"action"``.
        actor (ProbabilisticTensorDictSequential): the policy head on the model state.
        value (TensorDictModule): the critic.
        optimizer (torch.optim.Adam): the one optimiser, a parameter group per
            :data:`GROUPS` entry.
        stepper (CPUAutocastStepper): TorchRL's optimisation stepper of :meth:`update`.
        groups (dict): the parameters of each group.
        carried (dict): recurrent entries the policy carries from step to step, with their
            sizes (the environment primes them with zeros).
        actor_critic_dtype (torch.dtype, optional): autocast dtype of the actor-critic half of
            :meth:`update` on a CPU. Defaults to ``None`` (fp32).
        target_critic (TargetCritic, optional): DreamerV2's slow critic that imagination
            bootstraps from (``critic_target="slow"``). Defaults to ``None``.
    """

    world_model: FinetuneWorldModel
    loss: DreamerV3Loss
    policy: TensorDictSequential
    actor: ProbabilisticTensorDictSequential
    value: TensorDictModule
    optimizer: torch.optim.Adam
    stepper: CPUAutocastStepper
    groups: dict[str, list[nn.Parameter]]
    #: Recurrent entries the policy carries from step to step, with their sizes (the
    #: environment primes them with zeros).
    carried: dict[str, int]
    #: Autocast dtype of the actor-critic half of :meth:`update` on a CPU (``None``: fp32).
    actor_critic_dtype: torch.dtype | None = None
    #: DreamerV2's slow critic that imagination bootstraps from (``critic_target="slow"``).
    target_critic: TargetCritic | None = None

    def update(self, batch: TensorDictBase) -> TensorDictBase:
        """One optimisation step (world model, actor, critic) on a replay ``batch``, then one
        step of DreamerV2's :class:`TargetCritic` where the agent has one.

        The precision of each half is set where the agent is built: the world-model loss
        autocasts itself (:class:`~torchrl_prelar.objectives.finetune.FinetuneModelLoss`),
        the :attr:`stepper` autocasts the actor-critic half with :attr:`actor_critic_dtype`
        (:class:`CPUAutocastStepper`).

        Args:
            batch (TensorDictBase): ``[B, T]`` replay transitions.

        Returns:
            the stepper's detached losses and metrics.
        """
        metrics = self.stepper.step(None, batch)
        if self.target_critic is not None:
            self.target_critic.step()
        return metrics


class CPUAutocastStepper(DreamerV3OptimizationStepper):
    """TorchRL's :class:`~torchrl.trainers.algorithms.DreamerV3OptimizationStepper`, with
    the losses computed under CPU autocast in ``cpu_autocast_dtype``.

    TorchRL's stepper autocasts on CUDA only (``mixed_precision``) and switches autocast off
    elsewhere, so an autocast entered around :meth:`step` does not reach the losses. Here
    the forward pass of the losses runs under :func:`torch.autocast` on the CPU with
    ``cpu_autocast_dtype`` (``None``: off, exactly TorchRL's step); the loss values are
    summed in fp32 and the backward pass is TorchRL's. Used for imagination, actor and
    critic in bf16 on CPUs with native bf16 (the world model sets its own precision).

    Args:
        *args: the positional arguments of
            :class:`~torchrl.trainers.algorithms.DreamerV3OptimizationStepper`.

    Keyword Args:
        cpu_autocast_dtype (torch.dtype, optional): autocast dtype of the losses' forward
            pass on a CPU. Defaults to ``None`` (off).
        **kwargs: the keyword arguments of
            :class:`~torchrl.trainers.algorithms.DreamerV3OptimizationStepper`.

    Examples:
        >>> from tensordict import TensorDict
        >>> from torchrl.objectives import LossModule
        >>> class Square(LossModule):
        ...     in_keys = ["x"]
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.weight = nn.Parameter(torch.ones(3, 3))
        ...     def forward(self, td):
        ...         out = td["x"] @ self.weight
        ...         return TensorDict({"loss_square": out.square().mean(), "dtype": out.dtype})
        >>> loss = Square()
        >>> stepper = CPUAutocastStepper(loss, torch.optim.SGD(loss.parameters(), 0.1),
        ...                              cpu_autocast_dtype=torch.bfloat16)
        >>> stepper._forward_backward(TensorDict({"x": torch.ones(2, 3)}, [2]))["dtype"]
        torch.bfloat16
    """

    def __init__(self, *args: Any, cpu_autocast_dtype: torch.dtype | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.cpu_autocast_dtype = cpu_autocast_dtype

    def _forward_backward(self, sample: TensorDictBase) -> TensorDictBase:
        dtype = self.cpu_autocast_dtype
        reference = sample.get(self.loss_module.in_keys[0])
        if dtype is None or reference.device.type != "cpu":
            return super()._forward_backward(sample)
        with torch.autocast("cpu", dtype=dtype):
            losses = self.loss_module(sample)
        self.optimizer.zero_grad(set_to_none=False)
        _loss_total(losses).backward()
        return losses.detach()


def _loss_total(losses: TensorDictBase) -> torch.Tensor:
    """The sum of the ``loss_*`` entries of ``losses``, in fp32."""
    return sum(
        value.float().sum()
        for key, value in losses.items()
        if isinstance(key, str) and key.startswith("loss_")
    )


def _critic_mlp(in_features: int, hidden: int, depth: int) -> MLP:
    """An ELU MLP to one value, in fp32 (see :class:`_Float32`; parameter names as MLP's)."""
    network = MLP(
        in_features=in_features, out_features=1, num_cells=[hidden] * depth, activation_class=nn.ELU
    )
    network.append(_Float32())
    return network


def build_finetune_world_model(
    action_dim: int,
    *,
    init: str,
    pretrained: str | Path | None,
    reward_keys: list[NestedKey] | None = None,
    **world_model_kwargs: Any,
) -> FinetuneWorldModel:
    """The fine-tuning world model of ``world_model_kwargs``, initialised as ``init`` says.

    ``"prelar"``: :func:`~torchrl_prelar.modules.make_world_model` with a new
    :class:`ActionEncoder` for ``action_dim`` actions, encoder, RSSM and decoder loaded from
    ``pretrained``; ``"dreamer"``: the same model freshly initialised (the DreamerV2 baseline
    with the same action-encoder structure, or with ``action_encoder={"identity": True}``
    DreamerV2's, the RSSM reading the real action; ``pretrained`` is not read); ``"apv"`` loads an
    action-free pre-training (encoder, action-free RSSM, decoder) and stacks a new
    action-conditional RSSM on it (:class:`~torchrl_prelar.baselines.apv.APVWorldModel`);
    ``"contextwm"`` likewise from a ContextWM pre-training
    (:class:`~torchrl_prelar.baselines.contextwm.ContextWMWorldModel`, with its context
    encoder and contextual decoder). One reward head per entry of ``reward_keys`` (none by
    default).

    Args:
        action_dim (int): real action size.

    Keyword Args:
        init (str): ``"prelar"``, ``"dreamer"``, ``"apv"`` or ``"contextwm"``.
        pretrained (str or Path, optional): the pre-trained model file; ``None`` for
            ``"dreamer"``.
        reward_keys (list of NestedKey, optional): one reward head per key. Defaults to
            ``None``.
        **world_model_kwargs: the arguments of
            :func:`~torchrl_prelar.modules.make_world_model` (and ``context`` for
            ``"contextwm"``), those of the pre-training.

    Raises:
        ValueError: if ``init`` is unknown, ``pretrained`` is missing, ``init="prelar"``
            asks for an identity action encoder, or the pre-trained file does not match the
            world model (:func:`load_pretrained_world_model`).

    Examples:
        >>> model = build_finetune_world_model(4, init="dreamer", pretrained=None)
        >>> model.action_model.in_keys, len(model.reward_heads)
        (['action'], 0)
    """
    if init not in INITS:
        raise ValueError(f"finetune.init must be one of {INITS}, got {init!r}.")
    if init != "dreamer" and pretrained is None:
        raise ValueError(f"init={init!r} needs a pre-trained checkpoint, got pretrained=None.")
    if init == "prelar" and (world_model_kwargs.get("action_encoder") or {}).get("identity"):
        raise ValueError(
            "action_encoder identity=True feeds the real action to a new RSSM (DreamerV2's "
            "action path); init='prelar' loads an RSSM that reads the pre-trained latent "
            "action. Use identity=True with init='dreamer', or identity=False."
        )
    if init in STACKED_BASELINES:
        make_pretrained, make_stacked = STACKED_BASELINES[init]
        action_free = make_pretrained(**world_model_kwargs)
        load_pretrained_world_model(action_free, pretrained, world_model_kwargs)
        return make_stacked(
            action_dim, action_free=action_free, reward_keys=reward_keys, **world_model_kwargs
        )
    world_model = make_world_model(
        **world_model_kwargs, action_dim=action_dim, reward_keys=reward_keys
    )
    if init == "prelar":
        load_pretrained_world_model(world_model, pretrained, world_model_kwargs)
    return world_model


def make_finetune_optimizer(
    groups: Mapping[str, list[nn.Parameter]],
    *,
    model_lr: float = 3e-4,
    actor_lr: float = 8e-5,
    critic_lr: float = 8e-5,
    eps: float = 1e-5,
    weight_decay: float = 1e-6,
    grad_clip: float = 100.0,
) -> torch.optim.Adam:
    """One Adam with a parameter group per reference optimiser, each clipped on its own.

    ``representation`` (encoder + RSSM) and ``model`` (action encoder, decoder, heads) are the
    reference's two world-model optimisers (learning rate ``model_lr``), ``actor`` and
    ``critic`` its actor-critic ones. Adam is per-parameter, so groups behave as separate
    optimisers; a step pre-hook clips the gradient norm of each group to ``grad_clip`` (the
    reference clips each optimiser). The ``representation`` learning rate is set by
    :func:`set_representation_frozen`.

    Args:
        groups (Mapping[str, list of nn.Parameter]): the parameters of each of
            :data:`GROUPS`.

    Keyword Args:
        model_lr (float, optional): learning rate of ``representation`` and ``model``.
            Defaults to ``3e-4``.
        actor_lr (float, optional): learning rate of ``actor``. Defaults to ``8e-5``.
        critic_lr (float, optional): learning rate of ``critic``. Defaults to ``8e-5``.
        eps (float, optional): Adam's epsilon. Defaults to ``1e-5``.
        weight_decay (float, optional): L2 weight decay. Defaults to ``1e-6``.
        grad_clip (float, optional): largest gradient norm of each group. Defaults to
            ``100.0``.

    Raises:
        ValueError: if a group of :data:`GROUPS` is missing.

    Examples:
        >>> weight = nn.Parameter(torch.zeros(2))
        >>> groups = {"representation": [weight], "model": [], "actor": [], "critic": []}
        >>> optimizer = make_finetune_optimizer(groups, model_lr=1e-3)
        >>> [(group["name"], group["lr"]) for group in optimizer.param_groups][:2]
        [('representation', 0.001), ('model', 0.001)]
    """
    missing = [name for name in GROUPS if name not in groups]
    if missing:
        raise ValueError(f"groups lacks the parameter group(s) {missing}: expected {GROUPS}.")
    lrs = {"representation": model_lr, "model": model_lr, "actor": actor_lr, "critic": critic_lr}
    optimizer = torch.optim.Adam(
        [{"params": groups[name], "lr": lrs[name], "name": name} for name in GROUPS],
        eps=eps,
        weight_decay=weight_decay,
    )

    def clip_each_group(optimizer, args, kwargs):
        for group in optimizer.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            # a tensor: read on the host only when metrics are logged
            group["grad_norm"] = (
                nn.utils.clip_grad_norm_(params, grad_clip).detach() if params else 0.0
            )

    optimizer.register_step_pre_hook(clip_each_group)
    return optimizer


def representation_parameters(world_model: FinetuneWorldModel) -> list[nn.Parameter]:
    """Encoder + the pre-trained RSSM (the action-free one for APV), and ContextWM's context
    encoder (part of its encoder there): frozen at first.

    Args:
        world_model (PreLARWorldModel or APVWorldModel): the fine-tuning world model.

    Examples:
        >>> model = build_finetune_world_model(4, init="dreamer", pretrained=None)
        >>> n = len(representation_parameters(model))
        >>> n == len([*model.encoder.parameters(), *model.rssm.parameters()])
        True
    """
    pretrained_rssm = (
        world_model.action_free if isinstance(world_model, APVWorldModel) else world_model.rssm
    )
    parameters = [*world_model.encoder.parameters(), *pretrained_rssm.parameters()]
    if isinstance(world_model, ContextWMWorldModel):
        parameters += world_model.context_encoder.parameters()
    return parameters


def set_representation_frozen(optimizer: torch.optim.Optimizer, frozen: bool, lr: float) -> None:
    """Learning rate 0 (frozen) or ``lr`` for the ``representation`` group (encoder + RSSM).

    With lr 0, Adam leaves these parameters exactly unchanged (its moments still accumulate,
    as in the reference, which sets the learning rate of that optimiser to 0).

    Args:
        optimizer (torch.optim.Optimizer): an optimiser of :func:`make_finetune_optimizer`.
        frozen (bool): freeze the group (learning rate 0).
        lr (float): the group's learning rate when not frozen.
    """
    for group in optimizer.param_groups:
        if group["name"] == "representation":
            group["lr"] = 0.0 if frozen else lr


class WorldModelStepper(OptimizationStepper):
    """The world-model half of :meth:`FinetuneAgent.update` alone: one optimisation step of a
    world-model loss, without actor and critic.

    The ``loss_*`` entries of ``loss_module`` are summed, back-propagated once, and
    ``optimizer`` steps, as the agent's stepper does for its world-model terms. Build it with
    :func:`make_world_model_stepper` for the agent's parameter groups and optimiser; as for
    the agent, :func:`set_representation_frozen` sets the ``representation`` learning rate
    before a step.

    Args:
        loss_module (LossModule): a world-model loss returning ``(losses, model_td)``, such as
            :class:`~torchrl_prelar.objectives.PreLARLoss` or
            :class:`~torchrl_prelar.objectives.finetune.FinetuneModelLoss`.
        optimizer (torch.optim.Optimizer): the optimiser of the loss's parameters.

    Examples:
        >>> from torchrl_prelar.data.synthetic import moving_square_batch
        >>> model = build_finetune_world_model(2, init="dreamer", pretrained=None,
        ...                                    rssm={"deter": 32})
        >>> stepper = make_world_model_stepper(model)
        >>> batch = moving_square_batch(2, 4, generator=torch.Generator().manual_seed(0))
        >>> losses = stepper.step(None, batch.rename_key_("true_action", "action"))
        >>> "loss_model_reco" in losses.keys(), losses["loss_model_reco"].requires_grad
        (True, False)
    """

    def __init__(self, loss_module: LossModule, optimizer: torch.optim.Optimizer):
        self.loss_module = loss_module
        self.optimizer = optimizer

    def step(self, trainer: Any, sub_batch: TensorDictBase) -> TensorDictBase:
        """One update on ``sub_batch``; returns the detached losses and metrics of the loss.

        Args:
            trainer (Trainer or None): the owning :class:`~torchrl.trainers.Trainer`, or
                ``None`` for a plain loop (not read).
            sub_batch (TensorDictBase): ``[B, T]`` transitions the loss reads.
        """
        losses, _ = self.loss_module(sub_batch)
        self.optimizer.zero_grad(set_to_none=False)
        _loss_total(losses).backward()
        self.optimizer.step()
        return losses.detach()

    def state_dict(self) -> dict[str, Any]:
        """The optimiser's state dict, under ``"optimizer"``."""
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a :meth:`state_dict` into the optimiser."""
        self.optimizer.load_state_dict(state_dict["optimizer"])


def make_world_model_stepper(
    world_model: FinetuneWorldModel,
    *,
    kl_balance: float | None = None,
    free_nats: float | None = None,
    lambda_reco: float | None = None,
    reward_loss: str | None = None,
    optimizer_factory: Callable[
        [dict[str, list[nn.Parameter]]], torch.optim.Optimizer
    ] = make_finetune_optimizer,
) -> WorldModelStepper:
    """A :class:`WorldModelStepper` fine-tuning ``world_model`` with the agent's world-model
    loss, without the video bonus, and the agent's optimiser.

    The loss is :class:`~torchrl_prelar.objectives.PreLARLoss` (reconstruction and balanced
    state KL, and the first reward head's term against ``("next", "reward")`` where the world
    model has reward heads: the loss :func:`make_finetune_agent` wraps); with ``reward_loss``
    it is the agent's :class:`~torchrl_prelar.objectives.finetune.FinetuneModelLoss` around it
    (both reward heads, ``REWARD_KEY`` and ``AUX_REWARD_KEY``, scored with ``reward_loss``
    against the batch's ``("next", "reward")``); the parameters are
    grouped as the agent groups them (encoder + pre-trained RSSM in ``representation``, the
    rest of the world model in ``model``, no ``actor`` or ``critic``) and handed to
    ``optimizer_factory``.

    Args:
        world_model (PreLARWorldModel or APVWorldModel): the world model to fine-tune, from
            :func:`build_finetune_world_model` (without ``reward_keys`` for the world
            model alone).

    Keyword Args:
        kl_balance (float, optional): the state KL balance. Defaults to ``None``
            (:class:`~torchrl_prelar.objectives.PreLARLoss`'s, the reference 0.8).
        free_nats (float, optional): the state KL free nats. Defaults to ``None``
            (``PreLARLoss``'s, 0).
        lambda_reco (float, optional): the reconstruction weight. Defaults to ``None``
            (``PreLARLoss``'s, 0.5).
        reward_loss (str, optional): ``"symlog_mse"`` or ``"gaussian"`` (``finetune.reward_loss``)
            for a world model with the agent's two reward heads. Defaults to ``None``: the
            world model alone, or one reward head scored by ``PreLARLoss``.
        optimizer_factory (callable, optional): builds the optimiser from the parameter
            groups (e.g. ``functools.partial(make_finetune_optimizer, model_lr=1e-3)``).
            Defaults to :func:`make_finetune_optimizer`.

    Examples:
        >>> model = build_finetune_world_model(4, init="dreamer", pretrained=None)
        >>> stepper = make_world_model_stepper(model)
        >>> [len(group["params"]) > 0 for group in stepper.optimizer.param_groups]
        [True, True, False, False]
    """
    loss = PreLARLoss(
        world_model, kl_balance=kl_balance, free_nats=free_nats, lambda_reco=lambda_reco
    )
    if reward_loss is not None:
        loss = FinetuneModelLoss(loss, reward_loss=reward_loss)
    representation = {id(p) for p in representation_parameters(world_model)}
    groups: dict[str, list[nn.Parameter]] = {name: [] for name in GROUPS}
    for parameter in loss.parameters():
        if parameter.requires_grad:
            name = "representation" if id(parameter) in representation else "model"
            groups[name].append(parameter)
    return WorldModelStepper(loss, optimizer_factory(groups))


def make_actor(
    action_dim: int,
    *,
    depth: int = 4,
    hidden: int = 400,
    distribution: str = "tanh_normal",
    min_std: float = 1e-4,
) -> ProbabilisticTensorDictSequential:
    """The policy head on ``("state", "belief")``, writing a sampled ``"action"``.

    ``"tanh_normal"``: TorchRL's :class:`~torchrl.modules.models.model_based.DreamerActor`
    with a :class:`~torchrl.modules.TanhNormal` (its scale floor is ``min_std``, TorchRL's
    default 1e-4). ``"trunc_normal"``: DreamerV2's head
    (:class:`~torchrl_prelar.modules.actor.TruncatedNormalActor`, scale floor ``min_std``,
    0.1 in DreamerV2) with a :class:`~torchrl.modules.TruncatedNormal` on [-1, 1]. The
    distribution's parameters are fp32 under autocast too.

    Args:
        action_dim (int): size of the action.

    Keyword Args:
        depth (int, optional): hidden layers. Defaults to ``4``.
        hidden (int, optional): units per hidden layer. Defaults to ``400``.
        distribution (str, optional): ``"tanh_normal"`` or ``"trunc_normal"``. Defaults to
            ``"tanh_normal"``.
        min_std (float, optional): the scale floor. Defaults to ``1e-4``.

    Raises:
        ValueError: if ``distribution`` is not one of :data:`ACTOR_DISTRIBUTIONS`.

    Examples:
        >>> actor = make_actor(4, depth=2, hidden=16, distribution="trunc_normal", min_std=0.1)
        >>> from tensordict import TensorDict
        >>> start = TensorDict(state=torch.zeros(3, 8), belief=torch.zeros(3, 5), batch_size=[3])
        >>> out = actor(start)
        >>> out["action"].shape, bool(out["action"].abs().max() <= 1)
        (torch.Size([3, 4]), True)
    """
    if distribution not in ACTOR_DISTRIBUTIONS:
        raise ValueError(
            f"finetune.actor.distribution must be one of {ACTOR_DISTRIBUTIONS}, "
            f"got {distribution!r}."
        )
    if distribution == "tanh_normal":
        net: nn.Module = DreamerActor(
            action_dim, depth=depth, num_cells=hidden, std_min_val=min_std
        )
        distribution_class, distribution_kwargs = TanhNormal, {}
    else:
        net = TruncatedNormalActor(action_dim, depth=depth, hidden=hidden, min_std=min_std)
        distribution_class, distribution_kwargs = TruncatedNormal, {"low": -1.0, "high": 1.0}
    return ProbabilisticTensorDictSequential(
        TensorDictModule(net, in_keys=["state", "belief"], out_keys=["loc", "scale"]),
        TensorDictModule(_Float32(), in_keys=["loc", "scale"], out_keys=["loc", "scale"]),
        ProbabilisticTensorDictModule(
            in_keys=["loc", "scale"],
            out_keys=["action"],
            distribution_class=distribution_class,
            distribution_kwargs=distribution_kwargs,
            default_interaction_type=InteractionType.RANDOM,
        ),
    )


class TargetCritic(TensorDictModuleBase):
    """DreamerV2's slow critic: a frozen copy of ``critic`` that the lambda returns bootstrap
    from, copied from ``critic`` every ``every`` calls of :meth:`step` (and at construction).

    The online critic keeps regressing those returns; only the bootstrap values come from
    the copy, which changes every ``every`` updates instead of every update. ``updates`` is a
    buffer, so a checkpoint of a module holding this one resumes the schedule.

    Args:
        critic (TensorDictModule): the online critic (read, never trained, by this module).
        every (int): updates between two copies (DreamerV2: 100).

    Raises:
        ValueError: if ``every < 1``.


    Examples:
        >>> critic = TensorDictModule(nn.Linear(3, 1), in_keys=["x"], out_keys=["state_value"])
        >>> target = TargetCritic(critic, every=2)
        >>> _ = critic.module.weight.data.add_(1.0)
        >>> target.step(); bool(torch.equal(target.module.module.weight, critic.module.weight))
        False
        >>> target.step(); bool(torch.equal(target.module.module.weight, critic.module.weight))
        True
    """

    def __init__(self, critic: TensorDictModule, every: int):
        super().__init__()
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}.")
        self.module = copy.deepcopy(critic).requires_grad_(False)
        self.in_keys, self.out_keys = list(critic.in_keys), list(critic.out_keys)
        self.__dict__["critic"] = critic  # read only: not a submodule
        self.every = every
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        return self.module(tensordict)

    @torch.no_grad()
    def step(self) -> None:
        """Count one update; copy the online critic every ``every`` of them."""
        self.updates += 1
        if int(self.updates) % self.every == 0:
            for target, online in zip(
                self.module.parameters(), self.critic.parameters(), strict=True
            ):
                target.copy_(online)


def _imagination_transition(world_model: FinetuneWorldModel) -> TensorDictSequential:
    """One imagined step: real action (-> action encoder for PreLAR) -> prior."""
    modules: list[TensorDictModuleBase] = []
    if isinstance(world_model, PreLARWorldModel):
        encoder_net = world_model.action_model.module
        modules.append(
            TensorDictModule(encoder_net, in_keys=["action"], out_keys=["latent_action"])
        )
    modules.append(
        TensorDictModule(
            world_model.rssm_prior,
            in_keys=["state", "belief", world_model.rssm.action_key],
            out_keys=["_", "state", "belief"],
        )
    )
    return TensorDictSequential(*modules)


def _acting_state_estimator(
    world_model: FinetuneWorldModel,
) -> tuple[list[TensorDictModuleBase], dict[str, int]]:
    """Modules updating the policy's posterior state from the current frame (TorchRL's
    :class:`~torchrl.modules.RSSMStateEstimatorV3`, twice for APV's stacked RSSMs), and the
    recurrent entries they read, with their sizes."""
    prior = world_model.rssm_prior
    posterior = world_model.rssm.rssm_posterior.module
    encoder = world_model.encoder.module  # reads the env's uint8 frames as they are
    carried = {"state": prior.num_categoricals * prior.num_classes, "belief": prior.rnn_hidden_dim}
    state_keys = ["state", "belief"]
    if isinstance(world_model, APVWorldModel):
        action_free = world_model.action_free
        modules: list[TensorDictModuleBase] = [
            TensorDictModule(encoder, in_keys=["pixels"], out_keys=["pixel_embedding"]),
            NoAction(out_key="af_action"),
            RSSMStateEstimatorV3(
                action_free.prior,
                action_free.posterior,
                in_keys=["af_state", "af_belief", "af_action", "pixel_embedding", "is_init"],
                out_keys=["af_state", "af_belief"],
            ),
            TensorDictModule(
                world_model.features.module,
                in_keys=["af_state", "af_belief"],
                out_keys=["encoded_latents"],
            ),
            RSSMStateEstimatorV3(
                prior,
                posterior,
                in_keys=[*state_keys, "previous_action", "encoded_latents", "is_init"],
            ),
        ]
        carried.update(af_state=action_free.stoch_dim, af_belief=action_free.prior.rnn_hidden_dim)
        return modules, carried
    modules = [
        TensorDictModule(encoder, in_keys=["pixels"], out_keys=["encoded_latents"]),
        TensorDictModule(
            world_model.action_model.module,
            in_keys=["previous_action"],
            out_keys=["previous_latent_action"],
        ),
        RSSMStateEstimatorV3(
            prior,
            posterior,
            in_keys=[*state_keys, "previous_latent_action", "encoded_latents", "is_init"],
        ),
    ]
    return modules, carried


def make_finetune_agent(
    world_model: FinetuneWorldModel,
    action_dim: int,
    *,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    seed: int = 0,
    actor_hidden: int = 400,
    actor_depth: int = 4,
    actor_distribution: str = "tanh_normal",
    actor_min_std: float = 1e-4,
    critic_hidden: int = 400,
    critic_depth: int = 4,
    imagination_horizon: int = 15,
    gamma: float = 0.99,
    lmbda: float = 0.95,
    entropy: float = 1e-4,
    return_normalization: bool = False,
    slow_critic: float = 1.0,
    target_update_every: int = 100,
    critic_target: str = "online",
    lambda_aux_reward: float = 1.0,
    reward_loss: str = "symlog_mse",
    kl_balance: float | None = None,
    free_nats: float | None = None,
    lambda_reco: float | None = None,
    intrinsic: bool = True,
    intrinsic_beta: float = 1.0,
    intrinsic_window: int = 5,
    intrinsic_proj_dim: int = 128,
    intrinsic_queue_size: int = 4096,
    intrinsic_k: int = 16,
    optimizer_factory: Callable[
        [dict[str, list[nn.Parameter]]], torch.optim.Optimizer
    ] = make_finetune_optimizer,
    compile_train_step: bool = False,
    cudagraph: bool = False,
    compile_networks: bool = False,
    channels_last: bool = False,
    actor_critic_precision: str = "fp32",
) -> FinetuneAgent:
    """Losses, policy, optimiser and TorchRL stepper around a fine-tuning ``world_model``.

    ``world_model`` comes from :func:`build_finetune_world_model` with the reward heads
    ``[REWARD_KEY, AUX_REWARD_KEY]`` (the first is the one imagination uses); it is moved to
    ``device`` (and stored channels-last with ``channels_last``).

    Differences from the DreamerV2 reference that come from using TorchRL's losses as they
    are: the critic regresses symlog values (``DreamerV3ValueLoss``); by default the lambda
    returns bootstrap from the online critic (``critic_target="online"``; DreamerV2's
    ``"slow"`` bootstraps from a :class:`TargetCritic` copied every ``target_update_every``
    updates), and a target critic (``slow_critic > 0``, copied every ``target_update_every``
    updates by ``HardUpdate``) enters as DreamerV3's slow-critic regulariser.
    ``replay_value_loss_weight`` is 0 (DreamerV2 has no replay value term).

    Args:
        world_model (PreLARWorldModel or APVWorldModel): the world model to fine-tune, with
            its two reward heads.
        action_dim (int): size of the environment's action.

    Keyword Args:
        device (str or torch.device, optional): where the agent lives. Defaults to
            ``"cpu"``.
        precision (str, optional): see
            :func:`~torchrl_prelar.training.precision.resolve_precision`. On a CPU the
            world-model loss runs under bf16 autocast where the CPU has native bf16, the
            actor-critic update in fp32; on CUDA TorchRL's stepper autocasts the step.
            Defaults to ``"fp32"``.
        seed (int, optional): seed of the intrinsic bonus's random projection. Defaults to
            ``0``.
        actor_hidden (int, optional): units per hidden layer of the actor. Defaults to
            ``400``.
        actor_depth (int, optional): hidden layers of the actor. Defaults to ``4``.
        actor_distribution (str, optional): the policy's distribution (see
            :func:`make_actor`). Defaults to ``"tanh_normal"``.
        actor_min_std (float, optional): the policy's scale floor. Defaults to ``1e-4``.
        critic_hidden (int, optional): units per hidden layer of the critic. Defaults to
            ``400``.
        critic_depth (int, optional): hidden layers of the critic. Defaults to ``4``.
        imagination_horizon (int, optional): imagined steps of the actor loss
            (:class:`~torchrl.objectives.DreamerV3ActorLoss`). Defaults to ``15``.
        gamma (float, optional): discount of the TD(lambda) returns. Defaults to ``0.99``.
        lmbda (float, optional): lambda of the TD(lambda) returns. Defaults to ``0.95``.
        entropy (float, optional): entropy bonus of the actor loss. Defaults to ``1e-4``.
        return_normalization (bool, optional): normalise the returns in the actor loss.
            Defaults to ``False``.
        slow_critic (float, optional): weight of the target-critic regulariser; ``0`` builds
            no target critic. Defaults to ``1.0``.
        target_update_every (int, optional): updates between two hard copies of the target
            critic. Defaults to ``100``.
        critic_target (str, optional): what imagination's lambda returns bootstrap from:
            ``"online"`` (the critic being trained, TorchRL's DreamerV3) or ``"slow"``
            (DreamerV2's target critic, :class:`TargetCritic`, stepped by
            :meth:`FinetuneAgent.update`). Defaults to ``"online"``.
        lambda_aux_reward (float, optional): weight of the auxiliary reward head's loss.
            Defaults to ``1.0``.
        reward_loss (str, optional): loss of both reward heads, ``"symlog_mse"`` (TorchRL's
            DreamerV3) or ``"gaussian"`` (DreamerV2's unit-variance log-likelihood, see
            :class:`~torchrl_prelar.objectives.finetune.FinetuneModelLoss`). Defaults to
            ``"symlog_mse"``.
        kl_balance (float, optional): the state KL balance of the world model's
            :class:`~torchrl_prelar.objectives.PreLARLoss`. Defaults to ``None``
            (``PreLARLoss``'s, the reference 0.8).
        free_nats (float, optional): its state KL free nats. Defaults to ``None``
            (``PreLARLoss``'s, 0).
        lambda_reco (float, optional): its reconstruction weight. Defaults to ``None``
            (``PreLARLoss``'s, 0.5).
        intrinsic (bool, optional): add the video intrinsic bonus
            (:class:`~torchrl_prelar.modules.intrinsic.VideoIntrinsicBonus`). Defaults to
            ``True``.
        intrinsic_beta (float, optional): weight of the bonus. Defaults to ``1.0``.
        intrinsic_window (int, optional): the bonus's moving-average window. Defaults to
            ``5``.
        intrinsic_proj_dim (int, optional): the bonus's projection size. Defaults to
            ``128``.
        intrinsic_queue_size (int, optional): the bonus's queue capacity. Defaults to
            ``4096``.
        intrinsic_k (int, optional): the bonus's nearest neighbours. Defaults to ``16``.
        optimizer_factory (Callable, optional): builds the optimiser from the parameter
            groups ``representation``, ``model``, ``actor`` and ``critic`` (e.g.
            ``functools.partial(make_finetune_optimizer, model_lr=1e-4)``). Defaults to
            :func:`make_finetune_optimizer`.
        compile_train_step (bool, optional): passed to TorchRL's
            :class:`~torchrl.trainers.algorithms.DreamerV3OptimizationStepper`. Defaults to
            ``False``.
        cudagraph (bool, optional): passed to the same stepper. Defaults to ``False``.
        compile_networks (bool, optional): ``torch.compile`` the world model's networks in
            place (:meth:`~torchrl_prelar.modules.PreLARWorldModel.compile_networks`;
            parameter names do not change, so checkpoints are the same). On a CPU this fuses
            the channel RMS norms of the convolutional encoder and decoder; the first updates
            pay the compilation time. Defaults to ``False``.
        channels_last (bool, optional): store the convolution weights (hence activations)
            channels-last. Defaults to ``False``.
        actor_critic_precision (str, optional): precision of imagination, actor and critic on
            a CPU (see :func:`~torchrl_prelar.training.precision.resolve_precision`; applied
            by :class:`CPUAutocastStepper`). ``"auto"`` is bf16 where the CPU has native bf16;
            actor and critic gradients keep the direction of fp32
            (``tests/test_finetune_speed.py``). Ignored on CUDA, where ``precision`` covers
            the whole step. Defaults to ``"fp32"``.

    Raises:
        ValueError: if ``world_model`` has no reward head, or ``critic_target`` is unknown.

    Examples:
        >>> model = build_finetune_world_model(
        ...     4, init="dreamer", pretrained=None, reward_keys=[REWARD_KEY, AUX_REWARD_KEY])
        >>> agent = make_finetune_agent(model, 4, actor_hidden=32, critic_hidden=32)
        >>> sorted(agent.carried), [group["name"] for group in agent.optimizer.param_groups]
        (['belief', 'previous_action', 'state'], ['representation', 'model', 'actor', 'critic'])
    """
    device = torch.device(device)
    if len(world_model.reward_heads) < 1:
        raise ValueError(
            "world_model has no reward head: build it with "
            "reward_keys=[REWARD_KEY, AUX_REWARD_KEY]."
        )
    world_model = world_model.to(device)
    if channels_last:
        world_model.to(memory_format=torch.channels_last)
    if compile_networks:
        world_model.compile_networks()
    prior = world_model.rssm_prior
    stoch, deter = prior.num_categoricals * prior.num_classes, prior.rnn_hidden_dim
    features = stoch + deter
    reward_net = world_model.reward_heads[0].module

    actor = make_actor(
        action_dim,
        depth=actor_depth,
        hidden=actor_hidden,
        distribution=actor_distribution,
        min_std=actor_min_std,
    ).to(device)
    value = TensorDictModule(
        _critic_mlp(features, critic_hidden, critic_depth),
        in_keys=["state", "belief"],
        out_keys=["state_value"],
    ).to(device)
    with torch.no_grad():  # initialise the actor's lazy layers
        actor(Composite(state=Unbounded(stoch), belief=Unbounded(deter)).zero().to(device))

    # Imagination: real action -> (ActionEncoder -> latent action ->) prior; reward head.
    transition = _imagination_transition(world_model)
    reward = _RewardInFloat32(reward_net, in_keys=["state", "belief"], out_keys=["reward"])
    imagination = DreamerEnv(
        WorldModelWrapper(transition, reward),
        prior_shape=torch.Size([stoch]),
        belief_shape=torch.Size([deter]),
        device=device,
    )
    imagination.observation_spec = Composite(
        state=Unbounded(stoch, device=device), belief=Unbounded(deter, device=device)
    )
    imagination.state_spec = imagination.observation_spec.clone()
    imagination.action_spec = Bounded(-1.0, 1.0, (action_dim,), device=device)
    imagination.reward_spec = Unbounded((1,), device=device)

    prelar_loss = PreLARLoss(
        world_model, kl_balance=kl_balance, free_nats=free_nats, lambda_reco=lambda_reco
    )
    bonus, bonus_features = None, None
    embed_dim = world_model.encoder.module.output_features
    if isinstance(world_model, APVWorldModel):  # APV: on the action-free model's features
        embed_dim = world_model.action_free.feature_dim
        bonus_features = world_model.action_free_features
    if intrinsic:
        bonus = VideoIntrinsicBonus(
            embed_dim,
            proj_dim=intrinsic_proj_dim,
            window=intrinsic_window,
            queue_size=intrinsic_queue_size,
            k=intrinsic_k,
            seed=seed,
        ).to(device)
    dtype = resolve_precision(precision, device)
    model_loss = FinetuneModelLoss(
        prelar_loss,
        bonus,
        features=bonus_features,
        beta=intrinsic_beta,
        lambda_aux_reward=lambda_aux_reward,
        reward_loss=reward_loss,
        # TorchRL's stepper autocasts on CUDA only: on a CPU the world model autocasts itself.
        autocast_dtype=dtype if device.type != "cuda" else None,
    )
    if critic_target not in CRITIC_TARGETS:
        raise ValueError(f"critic_target must be one of {CRITIC_TARGETS}, got {critic_target!r}.")
    target_critic = TargetCritic(value, target_update_every) if critic_target == "slow" else None
    actor_loss = DreamerV3ActorLoss(
        actor,
        value if target_critic is None else target_critic,
        imagination,
        imagination_horizon=imagination_horizon,
        entropy_bonus=entropy,
        use_reinforce=False,  # dynamics back-propagation
        return_normalization=return_normalization,
    )
    actor_loss.make_value_estimator(ValueEstimators.TDLambda, gamma=gamma, lmbda=lmbda)
    value_loss = DreamerV3ValueLoss(
        value, actor_loss=actor_loss, slow_critic_regularization=slow_critic
    )
    loss = DreamerV3Loss(model_loss, actor_loss, value_loss, replay_value_loss_weight=0.0)
    if target_critic is not None:
        loss.target_critic = target_critic  # in the loss's state dict: checkpointed
    target_updater = None
    if slow_critic:
        target_updater = HardUpdate(value_loss, value_network_update_interval=target_update_every)

    representation = {id(p) for p in representation_parameters(world_model)}
    model = {id(p) for p in world_model.parameters()} - representation
    actor_ids = {id(p) for p in actor.parameters()}
    groups: dict[str, list[nn.Parameter]] = {name: [] for name in GROUPS}
    for parameter in loss.parameters():  # de-duplicated; the critic's live in value_loss
        if not parameter.requires_grad:  # the target critic's copy
            continue
        key = id(parameter)
        name = (
            "representation"
            if key in representation
            else "model"
            if key in model
            else "actor"
            if key in actor_ids
            else "critic"
        )
        groups[name].append(parameter)
    optimizer = optimizer_factory(groups)

    actor_critic_dtype = (
        resolve_precision(actor_critic_precision, device) if device.type != "cuda" else None
    )
    stepper = CPUAutocastStepper(
        loss,
        optimizer,
        target_updater,
        compile_train_step=compile_train_step,
        cudagraph=cudagraph,
        mixed_precision=dtype is not None and device.type == "cuda",
        cpu_autocast_dtype=actor_critic_dtype,
    )

    estimator, carried = _acting_state_estimator(world_model)
    policy = TensorDictSequential(
        *estimator,
        actor,
        TensorDictModule(
            _Carry(),
            in_keys=[*carried, "action"],
            out_keys=[*(("next", key) for key in carried), ("next", "previous_action")],
        ),
    )
    carried["previous_action"] = action_dim
    return FinetuneAgent(
        world_model,
        loss,
        policy,
        actor,
        value,
        optimizer,
        stepper,
        groups,
        carried,
        actor_critic_dtype,
        target_critic,
    )
