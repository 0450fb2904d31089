"""The fine-tuning update's faster path computes what the plain one computes.

- :meth:`FinetuneAgent.update` in fp32 is the TorchRL stepper's step;
- the actor-critic half under bf16 autocast against fp32: gradients of the same direction,
  and the update really runs it in bf16;
- the compiled networks compute the eager losses.
"""

import pytest
import torch
from conftest import tiny_finetune_agent
from tensordict import TensorDict
from torch import nn


def tiny_agent(actor_critic_precision: str = "fp32"):
    return tiny_finetune_agent(
        actor_hidden=32,
        critic_hidden=32,
        imagination_horizon=5,
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


def dtypes_seen_in_update(agent) -> dict[str, set]:
    """Output dtypes of the actor's and critic's first layers during one ``update``."""
    seen: dict[str, set] = {"actor": set(), "critic": set()}
    layers = {
        "actor": next(m for m in agent.actor.modules() if isinstance(m, nn.Linear)),
        "critic": next(m for m in agent.value.modules() if isinstance(m, nn.Linear)),
    }
    handles = [
        layer.register_forward_hook(lambda _m, _i, out, name=name: seen[name].add(out.dtype))
        for name, layer in layers.items()
    ]
    agent.update(replay_batch())
    for handle in handles:
        handle.remove()
    return seen


def test_update_runs_actor_and_critic_in_the_actor_critic_dtype():
    """The autocast reaches the losses inside TorchRL's stepper (which switches an outer
    CPU autocast off), and only there: fp32 agents stay fp32."""
    assert dtypes_seen_in_update(tiny_agent("bf16")) == {
        "actor": {torch.bfloat16},
        "critic": {torch.bfloat16},
    }
    assert dtypes_seen_in_update(tiny_agent("fp32")) == {
        "actor": {torch.float32},
        "critic": {torch.float32},
    }


def test_compiled_networks_compute_the_same_losses():
    """``compile_networks`` (fused kernels) gives the eager world-model losses and gradients
    to float tolerance. (Imagination's categorical draws come from the compiled code's own
    random stream, so the actor and critic losses differ as under another seed.)"""
    eager = tiny_agent("fp32")
    compiled = tiny_finetune_agent(
        actor_hidden=32,
        critic_hidden=32,
        imagination_horizon=5,
        compile_networks=True,
    )
    compiled.loss.load_state_dict(eager.loss.state_dict())
    eager_losses, eager_gradients = losses_and_gradients(eager)
    compiled_losses, compiled_gradients = losses_and_gradients(compiled)
    model_losses = [name for name in eager_losses if name.startswith("loss_model")]
    assert len(model_losses) >= 3, model_losses
    for name in model_losses:
        value = eager_losses[name]
        torch.testing.assert_close(compiled_losses[name], value, rtol=1e-4, atol=1e-5, msg=name)
    for name in ("representation", "model"):
        torch.testing.assert_close(
            compiled_gradients[name], eager_gradients[name], rtol=1e-3, atol=1e-5, msg=name
        )


@pytest.mark.parametrize("distribution", ["tanh_normal", "trunc_normal"])
def test_bf16_actor_critic_keeps_distributions_rewards_and_values_in_fp32(distribution):
    """Under bf16 autocast the networks compute in bf16 but the policy's distribution, the
    imagined rewards and the critic's values are fp32 (in bf16 the truncated normal's samples
    and entropy turned NaN within about ten updates of the Meta-world protocol)."""
    agent = tiny_finetune_agent(
        actor_hidden=32,
        critic_hidden=32,
        imagination_horizon=5,
        actor_critic_precision="bf16",
        actor_distribution=distribution,
        actor_min_std=0.1,
    )
    prior = agent.world_model.rssm_prior
    start = TensorDict(
        {
            "state": torch.randn(6, prior.num_categoricals * prior.num_classes),
            "belief": torch.randn(6, prior.rnn_hidden_dim),
        },
        [6],
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        acted = agent.actor(start.clone())
        losses, imagined = agent.loss.actor_loss(start.clone())
        values = agent.value(start.clone())["state_value"]
    assert acted["loc"].dtype == acted["scale"].dtype == torch.float32
    assert imagined["next", "reward"].dtype == torch.float32
    assert values.dtype == torch.float32
    assert torch.isfinite(losses["loss_actor"]).all()
