"""The fine-tuning update's faster paths compute what the plain ones compute.

- :class:`ChannelRMSNorm` against TorchRL's DreamerV3 channel norm: outputs, input and weight
  gradients, on contiguous and channels-last maps, fp32 and bf16;
- :func:`use_channel_rms_norm` keeps parameters and state dicts;
- a whole fine-tuning update with the swapped norms against one with TorchRL's norms: the
  same losses and gradients;
- the actor-critic half under bf16 autocast against fp32: gradients of the same direction.
"""

import copy

import pytest
import torch
from tensordict import TensorDict
from torch import nn
from torchrl.modules import DreamerV3ImageDecoder, DreamerV3ImageEncoder
from torchrl.modules.models.model_based import _DreamerV3ChannelRMSNorm

from torchrl_prelar.modules import world_model_config
from torchrl_prelar.modules.channel_norm import ChannelRMSNorm, use_channel_rms_norm
from torchrl_prelar.training.finetune_agent import (
    AUX_REWARD_KEY,
    REWARD_KEY,
    build_finetune_world_model,
    make_finetune_agent,
)


def norm_pair(channels: int, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torchrl_norm = _DreamerV3ChannelRMSNorm(channels)
    with torch.no_grad():
        torchrl_norm.weight.copy_(
            torch.rand(channels, generator=torch.Generator().manual_seed(seed)) + 0.5
        )
    ours = ChannelRMSNorm(channels)
    ours.weight = nn.Parameter(torchrl_norm.weight.detach().clone())
    return torchrl_norm, ours


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_channel_rms_norm_matches_torchrl(dtype, channels_last):
    torchrl_norm, ours = norm_pair(6)
    generator = torch.Generator().manual_seed(1)
    value = (3 * torch.randn(5, 6, 7, 9, generator=generator)).to(dtype)
    if channels_last:
        value = value.contiguous(memory_format=torch.channels_last)
    grad = torch.randn(5, 6, 7, 9, generator=generator).to(dtype)
    inputs = [value.clone().requires_grad_(), value.clone().requires_grad_()]
    outputs = [torchrl_norm(inputs[0]), ours(inputs[1])]
    for output in outputs:
        output.backward(grad)
    assert outputs[1].dtype == dtype
    tolerance = (
        {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    )
    torch.testing.assert_close(outputs[1], outputs[0], **tolerance)
    torch.testing.assert_close(inputs[1].grad, inputs[0].grad, **tolerance)
    torch.testing.assert_close(ours.weight.grad, torchrl_norm.weight.grad, rtol=1e-4, atol=1e-4)


def test_channel_rms_norm_gradient_against_autograd_in_float64():
    _, ours = norm_pair(3)
    generator = torch.Generator().manual_seed(2)
    value = torch.randn(2, 3, 4, 5, generator=generator)
    grad = torch.randn(2, 3, 4, 5, generator=generator)
    x64 = value.double().requires_grad_()
    w64 = ours.weight.detach().double().requires_grad_()
    expected = x64 * torch.rsqrt(x64.square().mean(1, keepdim=True) + 1e-4) * w64[:, None, None]
    expected.backward(grad.double())
    x32 = value.clone().requires_grad_()
    ours(x32).backward(grad)
    torch.testing.assert_close(x32.grad.double(), x64.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.weight.grad.double(), w64.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("network", ["encoder", "decoder"])
def test_use_channel_rms_norm_keeps_parameters_and_outputs(network):
    torch.manual_seed(0)
    if network == "encoder":
        module = DreamerV3ImageEncoder(depth=4, mults=(1, 2, 4))
        inputs = (torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8),)
    else:
        module = DreamerV3ImageDecoder(
            12, image_shape=(3, 64, 64), depth=4, mults=(1, 2, 4), num_blocks=1
        )
        inputs = (torch.randn(3, 12),)
    swapped = copy.deepcopy(module)
    replaced = use_channel_rms_norm(swapped)
    assert replaced == sum(isinstance(m, _DreamerV3ChannelRMSNorm) for m in module.modules()) > 0
    assert not any(isinstance(m, _DreamerV3ChannelRMSNorm) for m in swapped.modules())
    assert list(swapped.state_dict()) == list(module.state_dict())
    swapped.load_state_dict(module.state_dict())
    torch.testing.assert_close(swapped(*inputs), module(*inputs), rtol=1e-5, atol=1e-5)


def tiny_agent(actor_critic_precision: str = "fp32", seed: int = 0):
    torch.manual_seed(seed)
    model = build_finetune_world_model(
        world_model_config("tiny"),
        4,
        init="dreamer",
        pretrained=None,
        reward_keys=[REWARD_KEY, AUX_REWARD_KEY],
    )
    return make_finetune_agent(
        model,
        4,
        actor_hidden=32,
        critic_hidden=32,
        imagination_horizon=5,
        intrinsic=False,
        actor_critic_precision=actor_critic_precision,
    )


def replay_batch(batch: int = 3, length: int = 6) -> TensorDict:
    generator = torch.Generator().manual_seed(0)
    is_init = torch.zeros(batch, length, 1, dtype=torch.bool)
    is_init[:, 0] = True
    flags = torch.zeros_like(is_init)
    return TensorDict(
        {
            "action": torch.rand(batch, length, 4, generator=generator) * 2 - 1,
            "is_init": is_init,
            "next": {
                "pixels": torch.randint(
                    0, 256, (batch, length, 3, 64, 64), generator=generator, dtype=torch.uint8
                ),
                "reward": 10 * torch.rand(batch, length, 1, generator=generator),
                "done": flags,
                "terminated": flags.clone(),
                "truncated": flags.clone(),
                "success": flags.clone(),
            },
        },
        [batch, length],
    )


def losses_and_gradients(agent, seed: int = 1):
    torch.manual_seed(seed)
    for parameter in agent.loss.parameters():
        parameter.grad = None
    dtype = agent.actor_critic_dtype
    with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        out = agent.loss(replay_batch())
    total = sum(v for k, v in out.items() if isinstance(k, str) and k.startswith("loss_"))
    total.backward()
    losses = {
        k: v.detach().float()
        for k, v in out.items()
        if isinstance(k, str) and k.startswith("loss_")
    }
    gradients = {
        name: torch.cat([p.grad.flatten() for p in params if p.grad is not None])
        for name, params in agent.groups.items()
        if any(p.grad is not None for p in params)
    }
    return losses, gradients


def test_update_with_swapped_norms_matches_torchrl_norms():
    agent, reference = tiny_agent(), tiny_agent()  # built alike from one seed
    restored = 0
    for parent in list(reference.world_model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ChannelRMSNorm):
                norm = _DreamerV3ChannelRMSNorm(child.weight.shape[0], child.eps)
                norm.weight = child.weight
                setattr(parent, name, norm)
                restored += 1
    assert restored > 0
    losses, gradients = losses_and_gradients(agent)
    reference_losses, reference_gradients = losses_and_gradients(reference)
    for key, value in reference_losses.items():
        torch.testing.assert_close(losses[key], value, rtol=1e-4, atol=1e-5, msg=key)
    for name, value in reference_gradients.items():
        torch.testing.assert_close(gradients[name], value, rtol=1e-3, atol=1e-5, msg=name)


def test_bf16_actor_critic_changes_gradients_less_than_the_imagination_noise():
    """bf16 moves the actor and critic gradients no further from fp32 than drawing other
    imagination noise in fp32 does (the world model's gradients do not change at all)."""
    fp32 = tiny_agent("fp32")
    bf16 = tiny_agent("bf16")
    bf16.loss.load_state_dict(fp32.loss.state_dict())
    assert fp32.actor_critic_dtype is None and bf16.actor_critic_dtype == torch.bfloat16
    _, reference = losses_and_gradients(fp32, seed=1)
    _, resampled = losses_and_gradients(fp32, seed=2)
    _, gradients = losses_and_gradients(bf16, seed=1)
    for name in ("actor", "critic"):
        cosine = nn.functional.cosine_similarity(gradients[name], reference[name], dim=0)
        noise = nn.functional.cosine_similarity(resampled[name], reference[name], dim=0)
        assert cosine > noise - 0.02, (name, cosine, noise)
        assert 0.85 < gradients[name].norm() / reference[name].norm() < 1.15, name
    for name in ("representation", "model"):  # the world model keeps its own precision
        torch.testing.assert_close(gradients[name], reference[name], rtol=1e-4, atol=1e-6)


def test_update_in_fp32_is_the_stepper_step():
    agent, twin = tiny_agent("fp32"), tiny_agent("fp32")  # built alike from one seed
    torch.manual_seed(3)
    agent.update(replay_batch())
    torch.manual_seed(3)
    twin.stepper.step(None, replay_batch())
    for (name, value), twin_value in zip(
        agent.loss.state_dict().items(), twin.loss.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(value, twin_value, msg=name)
