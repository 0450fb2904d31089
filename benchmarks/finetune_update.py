"""Time one fine-tuning world-model update and measure its peak memory.

The update is what fine-tuning does to the world model at every training step: the
:class:`~torchrl_prelar.objectives.FinetuneModelLoss` (reconstruction, balanced KL, reward and
auxiliary reward heads, video intrinsic bonus) on a ``[batch, length]`` replay batch, backward,
gradient clipping and an Adam step over the world-model parameters. The world model is built
by the same ``make_agent`` (``examples/dreamer_prelar_utils.py``) as
``examples/dreamer_prelar.py stage=finetune`` (``finetune.init=dreamer``, nothing loaded).

Prints seconds per update, frames per second, FLOPs per update (``torch.utils.flop_counter``),
the fraction of the GEMM peak measured in the same run, and the process's peak memory (peak
RSS on the CPU, the allocator's peak on a GPU). Run one configuration per process.

    python benchmarks/finetune_update.py --preset paper --batch 50 --length 50
    python benchmarks/finetune_update.py --preset paper --precision fp32 --activation-checkpointing
    python benchmarks/finetune_update.py --preset small --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from _machine import (
    FlopCount,
    gemm_peak,
    machine_info,
    peak_memory_gib,
    print_table,
    reset_peak_memory,
    synchronize,
)
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tensordict import TensorDict

from torchrl_prelar.training.precision import autocast, resolve_precision
from torchrl_prelar.training.pretrain import make_optimizer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))  # the example's builders
from dreamer_prelar_utils import example_world_model, make_agent  # noqa: E402


def finetune_config(preset: str, world_model: str, device: str, changes: dict) -> dict:
    """The fine-tuning settings of an example preset, with a fresh (``dreamer``) world model:
    the example's ``world_model`` with ``changes``."""
    with initialize_config_dir(str(EXAMPLES / "config"), version_base=None):
        example = compose("config", overrides=[f"preset={preset}"])
    tune = dict(OmegaConf.to_container(example, resolve=True)["finetune"], init="dreamer")
    return {
        "finetune": tune,
        "world_model": example_world_model(world_model, changes),
        "device": device,
        "precision": "fp32",
        "seed": 0,
        "run_dir": "/nonexistent",
        "loss": {},
    }


def replay_batch(batch: int, length: int, action_dim: int, device: torch.device) -> TensorDict:
    """A fine-tuning replay batch of random frames, actions and rewards."""
    generator = torch.Generator().manual_seed(0)
    is_init = torch.zeros(batch, length, 1, dtype=torch.bool)
    is_init[:, 0] = True
    flags = torch.zeros(batch, length, 1, dtype=torch.bool)
    pixels = torch.randint(0, 256, (batch, length, 3, 64, 64), generator=generator)
    return TensorDict(
        {
            "action": torch.rand(batch, length, action_dim, generator=generator) * 2 - 1,
            "is_init": is_init,
            "next": {
                "pixels": pixels.to(torch.uint8),
                "reward": torch.rand(batch, length, 1, generator=generator),
                "done": flags,
                "terminated": flags,
                "truncated": flags.clone(),
                "success": flags.clone(),
            },
        },
        [batch, length],
    ).to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset", default="paper", choices=["paper", "small", "tiny"], help="world model"
    )
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    changes = {"activation_checkpointing": args.activation_checkpointing}
    example = "paper" if args.preset == "paper" else "quick"
    cfg = finetune_config(example, args.preset, args.device, changes)
    action_dim = 4  # Meta-world
    agent = make_agent(cfg, action_dim)
    model_loss = agent.loss.model_loss
    model_loss.world_model.validate_inputs = False
    if not args.no_channels_last:
        model_loss.to(memory_format=torch.channels_last)
    parameters = list(agent.world_model.parameters())
    optimizer = make_optimizer(parameters)
    dtype = resolve_precision(args.precision, device)
    batch = replay_batch(args.batch, args.length, action_dim, device)

    def update() -> None:
        with autocast(device, dtype):
            losses, _ = model_loss(batch)
        total = sum(value for key, value in losses.items() if key.startswith("loss_"))
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 100.0)
        optimizer.step()

    counter = FlopCount()
    with counter:
        with autocast(device, dtype):
            losses, _ = model_loss(batch)
        sum(value for key, value in losses.items() if key.startswith("loss_")).backward()
    optimizer.zero_grad(set_to_none=True)
    flops = counter.total
    del losses

    reset_peak_memory(device)
    times = []
    for index in range(args.warmup + args.iters):
        synchronize(device)
        start = time.perf_counter()
        update()
        synchronize(device)
        if index >= args.warmup:
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    memory = peak_memory_gib(device)
    peak = gemm_peak(dtype or torch.float32, device)

    result = {
        "preset": args.preset,
        "batch": args.batch,
        "length": args.length,
        "precision": "fp32" if dtype is None else str(dtype).removeprefix("torch."),
        "activation_checkpointing": args.activation_checkpointing,
        "channels_last": not args.no_channels_last,
        **machine_info(device),
        "world_model_parameters_m": round(sum(p.numel() for p in parameters) / 1e6, 2),
        "seconds_per_update": round(seconds, 3),
        "update_times": [round(t, 3) for t in times],
        "frames_per_s": round(args.batch * args.length / seconds, 1),
        "tflop_per_update": round(flops / 1e12, 3),
        "achieved_gflop_s": round(flops / seconds / 1e9, 1),
        "gemm_peak_gflop_s": round(peak / 1e9, 1),
        "fraction_of_gemm_peak": round(flops / seconds / peak, 3),
        "peak_memory_gib": round(memory, 2),
        "memory_kind": "allocator peak" if device.type == "cuda" else "process peak RSS",
    }
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
