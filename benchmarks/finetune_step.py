"""Time one whole fine-tuning update (world model, imagination, actor, critic), and compare commits.

The update is what ``examples/dreamer_prelar.py stage=finetune`` does per training step: the
agent built by the example's ``make_agent`` from the example's Hydra config (``--preset``,
``finetune.init=dreamer``, batch ``--batch`` x ``--length``, plus ``--override``), stepped on a
replay batch of random frames. Prints, for each code tree:

- seconds per update and replayed frames per second (batch x length / seconds);
- each part's seconds and share: world-model loss forward and backward, imagination and actor
  loss forward, actor backward, critic forward and backward, optimiser step (timed in a second
  pass that calls the three losses one after the other, as ``DreamerV3Loss`` does);
- FLOPs per update (matmuls and convolutions, forward and backward) and the achieved fraction
  of the GEMM peak of the precision the world model runs in, measured in the same invocation.

``--baseline-commit C`` runs the same measurement on the code of commit ``C`` (extracted with
``git archive`` into a temporary folder and imported from there) beside the working tree, in
alternating subprocesses (``--repeats`` rounds, each tree keeping its fastest round), so that
the speed-up is a ratio measured in one run on one machine.

    python benchmarks/finetune_step.py --preset reach35k --batch 16 --length 50
    python benchmarks/finetune_step.py --baseline-commit 2275562 --repeats 3
    python benchmarks/finetune_step.py --preset paper --batch 50 --length 50 --iters 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PARTS = (
    "wm_forward",
    "wm_backward",
    "actor_forward",
    "actor_backward",
    "critic_forward",
    "critic_backward",
    "optimizer",
)


def child(args: argparse.Namespace) -> dict:
    """Measure the update of the code tree ``args.tree`` (run in a process of its own)."""
    tree = Path(args.tree).resolve()
    sys.path.insert(0, str(tree / "examples"))
    sys.path.insert(0, str(tree))
    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from tensordict import TensorDict

    import torchrl_prelar

    if not Path(torchrl_prelar.__file__).resolve().is_relative_to(tree):
        raise RuntimeError(f"imported {torchrl_prelar.__file__}, expected the tree {tree}")
    from dreamer_prelar_utils import make_agent

    from torchrl_prelar.training.allocator import keep_freed_memory

    keep_freed_memory()  # as run_finetune does on a CPU
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    overrides = [
        f"preset={args.preset}",
        "finetune.init=dreamer",
        f"precision={args.precision}",
        f"finetune.batch_size={args.batch}",
        f"finetune.batch_length={args.length}",
        *args.override,
    ]
    with initialize_config_dir(str(tree / "examples" / "config"), version_base=None):
        cfg = OmegaConf.to_container(compose("config", overrides=overrides), resolve=True)
    agent = make_agent(cfg, 4)
    agent.loss.train()
    generator = torch.Generator().manual_seed(0)
    is_init = torch.zeros(args.batch, args.length, 1, dtype=torch.bool)
    is_init[:, 0] = True
    flags = torch.zeros_like(is_init)
    batch = TensorDict(
        {
            "action": torch.rand(args.batch, args.length, 4, generator=generator) * 2 - 1,
            "is_init": is_init,
            "next": {
                "pixels": torch.randint(
                    0,
                    256,
                    (args.batch, args.length, 3, 64, 64),
                    generator=generator,
                    dtype=torch.uint8,
                ),
                "reward": torch.rand(args.batch, args.length, 1, generator=generator),
                "done": flags,
                "terminated": flags.clone(),
                "truncated": flags.clone(),
                "success": flags.clone(),
            },
        },
        [args.batch, args.length],
    )
    dtype = getattr(agent, "actor_critic_dtype", None)

    def update() -> None:
        if hasattr(agent, "update"):
            agent.update(batch.clone())
        else:
            agent.stepper.step(None, batch.clone())

    for _ in range(args.warmup):
        update()
    times = []
    for _ in range(args.iters):
        start = time.perf_counter()
        update()
        times.append(time.perf_counter() - start)

    parts = dict.fromkeys(PARTS, 0.0)
    loss = agent.loss

    def timed(name: str, fn: Callable):
        start = time.perf_counter()
        out = fn()
        parts[name] += time.perf_counter() - start
        return out

    def by_parts() -> None:
        model_losses, posterior = timed("wm_forward", lambda: loss.model_loss(batch.clone()))
        total = sum(v for k, v in model_losses.items() if k.startswith("loss_"))
        timed("wm_backward", lambda: total.sum().backward())
        state = posterior.get(("next", "state")).detach()
        belief = posterior.get(("next", "belief")).detach()
        start = TensorDict(
            {"state": state.flatten(0, 1), "belief": belief.flatten(0, 1)},
            [state.shape[0] * state.shape[1]],
        )
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            actor_losses, imagined = timed("actor_forward", lambda: loss.actor_loss(start))
        timed("actor_backward", lambda: actor_losses["loss_actor"].backward())
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            value_losses, _ = timed("critic_forward", lambda: loss.value_loss(imagined.detach()))
        timed("critic_backward", lambda: value_losses["loss_value"].backward())
        timed("optimizer", lambda: (agent.optimizer.step(), agent.optimizer.zero_grad()))

    by_parts()
    parts = dict.fromkeys(PARTS, 0.0)
    for _ in range(args.iters):
        by_parts()

    sys.path.insert(0, str(REPO / "benchmarks"))
    from _machine import FlopCount

    with FlopCount() as count:
        update()
    seconds = statistics.median(times)
    return {
        "tree": str(tree),
        "seconds_per_update": seconds,
        "update_times": times,
        "parts": {name: value / args.iters for name, value in parts.items()},
        "flop_per_update": count.total,
        "actor_critic_dtype": str(dtype).removeprefix("torch.") if dtype else "fp32",
    }


def working_tree_commit() -> str:
    """``HEAD``'s short hash, with ``+changes`` when the tracked files differ from it."""
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    changed = subprocess.run(
        ["git", "-C", str(REPO), "diff", "--quiet", "HEAD", "--"], check=False
    ).returncode
    return head + ("+changes" if changed else "")


def extract_commit(commit: str, into: Path) -> Path:
    """The files of ``commit`` of this repository, written under ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run_child(tree: Path, args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        __file__,
        "--tree",
        str(tree),
        "--preset",
        args.preset,
        "--batch",
        str(args.batch),
        "--length",
        str(args.length),
        "--precision",
        args.precision,
        "--threads",
        str(args.threads),
        "--warmup",
        str(args.warmup),
        "--iters",
        str(args.iters),
    ]
    for override in args.override:
        command += ["--override", override]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir()
    )
    if done.returncode != 0:
        raise RuntimeError(f"the measurement of {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="reach35k", help="the example's preset")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        help="a Hydra override applied in every tree (repeatable)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1, help="alternating rounds per tree")
    parser.add_argument("--baseline-commit", default=None)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--tree", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tree is not None:
        print(json.dumps(child(args)))
        return

    import torch
    from _machine import gemm_peak, machine_info

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        trees = {"working tree": REPO}
        if args.baseline_commit:
            trees = {
                args.baseline_commit: extract_commit(args.baseline_commit, Path(folder)),
                **trees,
            }
        best: dict[str, dict] = {}
        for _ in range(args.repeats):
            for label, tree in trees.items():
                result = run_child(tree, args)
                if (
                    label not in best
                    or result["seconds_per_update"] < best[label]["seconds_per_update"]
                ):
                    best[label] = result
    peaks = {
        name: gemm_peak(dtype, torch.device("cpu"))
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
    }
    from torchrl_prelar.training.precision import resolve_precision

    wm_precision = "bf16" if resolve_precision(args.precision, "cpu") else "fp32"
    frames = args.batch * args.length
    first = next(iter(best.values()))["seconds_per_update"]
    rows = {}
    for label, result in best.items():
        seconds = result["seconds_per_update"]
        total_parts = sum(result["parts"].values())
        rows[label] = {
            "seconds_per_update": round(seconds, 3),
            "frames_per_s": round(frames / seconds, 1),
            "speedup_vs_first": round(first / seconds, 2),
            "gflop_per_update": round(result["flop_per_update"] / 1e9, 1),
            "achieved_gflop_s": round(result["flop_per_update"] / seconds / 1e9, 1),
            "fraction_of_gemm_peak": round(
                result["flop_per_update"] / seconds / peaks[wm_precision], 3
            ),
            "actor_critic_precision": result["actor_critic_dtype"],
            "parts_s": {k: round(v, 3) for k, v in result["parts"].items()},
            "parts_share": {k: round(v / total_parts, 3) for k, v in result["parts"].items()},
            "update_times": [round(t, 3) for t in result["update_times"]],
        }
    report = {
        "command": " ".join(["python", "benchmarks/finetune_step.py", *sys.argv[1:]]),
        "working_tree_commit": working_tree_commit(),
        **machine_info(torch.device("cpu")),
        "preset": args.preset,
        "batch": args.batch,
        "length": args.length,
        "overrides": args.override,
        "world_model_precision": wm_precision,
        "gemm_peak_gflop_s": {k: round(v / 1e9, 1) for k, v in peaks.items()},
        "results": rows,
    }
    width = max(map(len, PARTS))
    for label, row in rows.items():
        print(
            f"== {label}: {row['seconds_per_update']} s/update, {row['frames_per_s']} frames/s,"
            f" x{row['speedup_vs_first']}, {row['gflop_per_update']} GFLOP,"
            f" {row['fraction_of_gemm_peak']:.1%} of the {wm_precision} GEMM peak"
        )
        for part in PARTS:
            print(
                f"   {part:<{width}}  {row['parts_s'][part]:.3f} s  {row['parts_share'][part]:.0%}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
