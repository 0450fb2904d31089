"""Env steps per second of the whole fine-tuning loop, and where the time goes.

Runs the real ``run_finetune`` of ``examples/dreamer_prelar.py`` (collector, replay
buffer, Dreamer update, logging) on Meta-world for ``--steps`` env steps after ``prefill``,
once per ``--variant``, and times its parts from the inside by wrapping them:

- ``env``: the training env's step and reset (MuJoCo physics and the software render);
- ``policy``: the acting policy (encoder, posterior, actor) on every env step;
- ``replay``: writing the collected steps and sampling the update batch;
- ``world_model``: the world-model loss forward and its backward;
- ``actor_critic``: imagination and the actor loss, the critic loss, and their backward;
- ``optimizer``: gradient clipping and the Adam step (and the target-critic copy);
- ``other``: the rest (the collector's bookkeeping, episode statistics, logging).

The backward pass is one call over the summed losses; it is split at the moment the first
gradient reaches a world-model loss term. The actor-critic graph starts from detached
posterior states and is built after the world-model graph, and the autograd engine runs
nodes in reverse creation order, so the whole actor-critic backward comes first.

The window is the steady state: from the first update (``prefill`` random-action steps
collected) to the end of the loop; evaluation and periodic checkpoints are off (their cost
is set by ``eval_every`` / ``checkpoint_every`` and shows in a long run only). Each
``--variant`` is a whitespace-separated list of Hydra overrides on top of the base settings;
ratios are against the first variant, measured in the same run. Each variant runs in a
process of its own (``finetune.keep_freed_memory`` changes the whole process); with
``--repeats`` the variants run in turn that many times and each keeps its fastest run, so
that a load that changes during the run does not favour one of them.

    python benchmarks/finetune_loop.py --steps 300
    python benchmarks/finetune_loop.py --steps 60 --repeats 2 \
        --variant "finetune.update_every=5 precision=fp32 finetune.channels_last=false \
        finetune.keep_freed_memory=false" --variant "finetune.update_every=10" --variant ""
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402
from _machine import machine_info, print_table  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from torchrl_prelar.training.finetune_agent import FinetuneAgent  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CONFIG = EXAMPLES / "config"
sys.path.insert(0, str(EXAMPLES))  # the pipeline: examples/dreamer_prelar.py
import dreamer_prelar as pipeline  # noqa: E402

PARTS = ("env", "policy", "replay", "world_model", "actor_critic", "optimizer")


class LoopTimer:
    """Seconds spent in each part of the fine-tuning loop, counted once ``armed``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self.armed_at: float | None = None
        self.stopped_at: float | None = None
        self._backward_start: float | None = None
        self._backward_split: float | None = None

    def wrap(self, owner: Any, name: str, part: str, arm: bool = False) -> None:
        """Time every call of ``owner.name`` as ``part`` (``arm``: the first call, untimed,
        starts the window)."""
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            if self.armed_at is None:
                out = original(*args, **kwargs)
                if arm:  # the window starts after the first update
                    self.armed_at = time.perf_counter()
                return out
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[part] += time.perf_counter() - start
                self.counts[part] += 1

        setattr(owner, name, timed)

    def instrument_agent(self, agent: FinetuneAgent) -> None:
        """Wrap the policy, the three losses, the optimiser step and the update itself."""
        loss = agent.loss
        self.wrap(agent.policy, "forward", "policy")
        self.wrap(loss.actor_loss, "forward", "actor_critic")
        self.wrap(loss.value_loss, "forward", "actor_critic")
        self.wrap(agent.optimizer, "step", "optimizer")
        self.wrap(agent.stepper, "step", "update", arm=True)
        model_forward = loss.model_loss.forward

        def model_loss_forward(*args, **kwargs):
            start = time.perf_counter()
            losses, posterior = model_forward(*args, **kwargs)
            if self.armed_at is not None:
                self.seconds["world_model"] += time.perf_counter() - start
            for value in losses.values():
                if isinstance(value, torch.Tensor) and value.requires_grad:
                    value.register_hook(self._reached_world_model)
            return losses, posterior

        loss.model_loss.forward = model_loss_forward
        value_forward = loss.value_loss.forward

        def value_loss_forward(*args, **kwargs):
            out = value_forward(*args, **kwargs)
            self._backward_start = time.perf_counter()  # the losses are summed, then backward
            self._backward_split = None
            return out

        loss.value_loss.forward = value_loss_forward
        step = agent.optimizer.step

        def optimizer_step(*args, **kwargs):
            # DreamerV3OptimizationStepper: forward, zero_grad, backward, then this step.
            if self._backward_start is not None and self.armed_at is not None:
                end = time.perf_counter()
                split = self._backward_split or end
                self.seconds["actor_critic"] += split - self._backward_start
                self.seconds["world_model"] += end - split
            self._backward_start = None
            return step(*args, **kwargs)

        agent.optimizer.step = optimizer_step

    def _reached_world_model(self, grad: torch.Tensor) -> torch.Tensor:
        if self._backward_split is None:
            self._backward_split = time.perf_counter()
        return grad

    def stop(self) -> None:
        if self.stopped_at is None:
            self.stopped_at = time.perf_counter()


@contextlib.contextmanager
def instrumented(timer: LoopTimer) -> Iterator[None]:
    """Wrap the factories ``run_finetune`` calls so that every part reports to ``timer``."""
    saved = {
        name: getattr(pipeline, name)
        for name in ("make_agent", "make_collector_env", "make_finetune_buffer")
    }
    saved["sample_batch"] = pipeline.sample_batch
    saved["shutdown"] = pipeline.Collector.shutdown

    def make_agent(*args, **kwargs):
        agent = saved["make_agent"](*args, **kwargs)
        timer.instrument_agent(agent)
        return agent

    def make_env(*args, **kwargs):
        env = saved["make_collector_env"](*args, **kwargs)
        timer.wrap(env, "step", "env")
        timer.wrap(env, "reset", "env")
        return env

    def make_buffer(*args, **kwargs):
        buffer = saved["make_finetune_buffer"](*args, **kwargs)
        timer.wrap(buffer, "extend", "replay")
        return buffer

    def shutdown(collector, *args, **kwargs):
        timer.stop()
        return saved["shutdown"](collector, *args, **kwargs)

    pipeline.make_agent = make_agent
    pipeline.make_collector_env = make_env
    pipeline.make_finetune_buffer = make_buffer
    pipeline.Collector.shutdown = shutdown
    timer.wrap(pipeline, "sample_batch", "replay")
    try:
        yield
    finally:
        for name, value in saved.items():
            if name == "shutdown":
                pipeline.Collector.shutdown = value
            else:
                setattr(pipeline, name, value)


def loop_config(preset: str, overrides: list[str], run_dir: str, steps: int) -> dict:
    """The preset's settings with a fresh world model, CSV logging, no evaluation or
    intermediate checkpoints, and ``steps`` env steps after ``prefill``."""
    with initialize_config_dir(str(CONFIG), version_base=None):
        cfg = compose("config", overrides=[f"preset={preset}", f"run_dir={run_dir}", *overrides])
    cfg = OmegaConf.to_container(cfg, resolve=True)
    tune = cfg["finetune"]
    tune.update(init="dreamer", eval_every=10**9, checkpoint_every=10**9, save_replay=False)
    tune["env_steps"] = tune["prefill"] + steps
    cfg["logger"] = {"backends": ["csv"]}
    return cfg


def measure(cfg: dict) -> dict:
    """Run the loop of ``cfg`` once and return its rate and breakdown."""
    timer = LoopTimer()
    with instrumented(timer):
        summary = pipeline.run_finetune(cfg)
    wall = timer.stopped_at - timer.armed_at
    tune = cfg["finetune"]
    batch = tune["update_every"] * tune.get("env_workers", 1)  # env steps per collector batch
    steps = summary["env_steps"] - -(-tune["prefill"] // batch) * batch  # after the 1st update
    update = timer.seconds.pop("update")
    parts = {part: timer.seconds[part] for part in PARTS}
    parts["update_other"] = update - sum(parts[p] for p in PARTS[3:])
    parts["other"] = wall - sum(parts.values())
    return {
        "precision": cfg["precision"],
        "threads": torch.get_num_threads(),
        "batch": f"{tune['batch_size']}x{tune['batch_length']}",
        "update_every": tune["update_every"],
        "env_workers": tune.get("env_workers", 1),
        "env_steps": steps,
        "updates": timer.counts["update"],
        "seconds": round(wall, 2),
        "env_steps_per_s": round(steps / wall, 3),
        "seconds_per_update": round(update / max(1, timer.counts["update"]), 3),
        "ms_per_env_step": {
            part: round(1e3 * seconds / steps, 2) for part, seconds in parts.items()
        },
        "fraction": {part: round(seconds / wall, 3) for part, seconds in parts.items()},
    }


def print_comparison(labels: list[str], results: list[dict]) -> None:
    """One column per variant: rate, time per update, ms per env step of each part."""
    rows: list[tuple[str, Callable[[dict], str]]] = [
        ("env steps/s (whole loop)", lambda r: f"{r['env_steps_per_s']:.2f}"),
        ("s per update", lambda r: f"{r['seconds_per_update']:.2f}"),
        ("updates / env steps", lambda r: f"{r['updates']} / {r['env_steps']}"),
        ("hours for 35k env steps", lambda r: f"{35_000 / r['env_steps_per_s'] / 3600:.2f}"),
    ]
    for part in results[0]["fraction"]:
        rows.append(
            (
                f"  {part} ms/step (share)",
                lambda r, p=part: f"{r['ms_per_env_step'][p]:.1f} ({r['fraction'][p]:.0%})",
            )
        )
    print()
    for index, (label, result) in enumerate(zip(labels, results, strict=True)):
        every = result.get("env_steps_per_s_all_repeats", [])
        print(f"#{index}: {label}" + (f"  (env steps/s of each repeat: {every})" if every else ""))
    print(" " * 30 + "".join(f"{f'#{index}':>14}" for index in range(len(results))))
    for name, cell in rows:
        print(f"{name:<30}" + "".join(f"{cell(r):>14}" for r in results))
    base = results[0]["env_steps_per_s"]
    for index, result in enumerate(results[1:], 1):
        print(f"#{index}: {result['env_steps_per_s'] / base:.2f}x the env steps/s of #0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="reach35k", help="examples/config/preset/<name>")
    parser.add_argument(
        "--base",
        default="finetune.prefill=60",
        help="Hydra overrides for every variant (a prefill that is a multiple of update_every)",
    )
    parser.add_argument("--variant", action="append", default=None, help="Hydra overrides")
    parser.add_argument("--steps", type=int, default=150, help="env steps after the first update")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run the variants in turn this often, keep the fastest",
    )
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child is not None:  # one variant, in its own process
        overrides = [*args.base.split(), *args.child.split(), f"threads={args.threads}"]
        with tempfile.TemporaryDirectory() as run_dir:
            result = measure(loop_config(args.preset, overrides, run_dir, args.steps))
        Path(args.json).write_text(json.dumps(result))
        return
    variants = args.variant or [""]
    runs: list[list[dict]] = [[] for _ in variants]
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):  # variants in turn: a drifting load hits all alike
            for index, variant in enumerate(variants):
                out = Path(folder) / f"{repeat}-{index}.json"
                command = [sys.executable, __file__, "--preset", args.preset]
                command += ["--base", args.base, "--steps", str(args.steps)]
                command += ["--threads", str(args.threads), "--child", variant]
                subprocess.run([*command, "--json", str(out)], check=True)
                result = {"variant": variant or "(base)", **json.loads(out.read_text())}
                print(f"\n== {args.preset} {args.base} {variant} (repeat {repeat})")
                print_table({k: v for k, v in result.items() if not isinstance(v, dict)})
                runs[index].append(result)
    results = [max(done, key=lambda r: r["env_steps_per_s"]) for done in runs]
    for result, done in zip(results, runs, strict=True):
        result["env_steps_per_s_all_repeats"] = [r["env_steps_per_s"] for r in done]
    print_comparison([r["variant"] for r in results], results)
    if args.json:
        info = machine_info(torch.device("cpu"))
        Path(args.json).write_text(json.dumps({"machine": info, "variants": results}, indent=2))


if __name__ == "__main__":
    main()
