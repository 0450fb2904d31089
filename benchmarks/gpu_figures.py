"""The GPU figures of ``docs/performance.md``, in one script for a short GPU lease.

Two parts, each in its own processes, every figure written as soon as it exists:

1. **Pre-training update, ours beside the reference, same card.** The paper-size update
   (batch 16 x 25 transitions, consistency term ``sign`` as the reference's README command)
   timed by ``benchmarks/pretrain_step.py`` in fp32 and bf16 (latent action from ``concat``,
   the paper's, and from ``embedding``, the quick preset's), and the reference's update
   timed by ``benchmarks/reference_update.py`` in fp32 (``--precision 32``) and in its own
   mixed precision (``--precision 16``: float16 autocast with a GradScaler).
2. **Paper-preset fine-tuning on a Meta-world task, PreLAR vs Dreamer from scratch.** A
   paper-size PreLAR model is pre-trained for ``--pretrain-seconds`` (update count from
   part 1's timing) on scripted Meta-world videos generated on the spot; then
   ``examples/dreamer_prelar.py stage=finetune preset=paper`` runs ``arm=prelar``
   and ``arm=dreamer`` side by side on the one card, each stopped by
   ``finetune.max_seconds``. Their env steps, updates, seconds per update and per env step,
   evaluations and curves are gathered.

    python benchmarks/gpu_figures.py --reference /path/to/PreLAR --out gpu_figures
    # a smoke run of the same script on a CPU, small sizes:
    python benchmarks/gpu_figures.py --device cpu --model-preset tiny --example-preset test \\
        --timing-iters 1 --pretrain-updates 3 --finetune-seconds 20 --out /tmp/gpu_smoke

``--out`` receives ``gpu_figures.json`` (every figure), ``gpu_figures.md`` (the tables) and
the fine-tuning curves (``finetune_arms.png``: both arms; ``finetune_curves_<arm>.png``);
``--work`` holds the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from torchrl_prelar.media import read_csv_scalars

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
EXAMPLE = REPO / "examples" / "dreamer_prelar.py"

# (label, pretrain_step.py arguments) of part 1.
OUR_UPDATES = {
    "ours fp32, concat": ["--precision", "fp32", "--latent-action-input", "concat"],
    "ours bf16, concat": ["--precision", "bf16", "--latent-action-input", "concat"],
    "ours bf16, embedding": ["--precision", "bf16", "--latent-action-input", "embedding"],
}
REFERENCE_UPDATES = {"reference fp32": 32, "reference fp16 AMP": 16}
PRETRAIN_TASKS = (
    "assembly-v3",
    "basketball-v3",
    "bin-picking-v3",
    "box-close-v3",
    "coffee-push-v3",
    "door-open-v3",
    "drawer-close-v3",
    "faucet-open-v3",
    "hammer-v3",
    "push-v3",
    "window-open-v3",
    "plate-slide-v3",
)


class Report:
    """The figures gathered so far, rewritten to ``out/gpu_figures.json`` on every change."""

    def __init__(self, out: Path, header: dict) -> None:
        self.out = out
        self.data = {"machine": header, "updates": {}, "finetune": {}, "errors": []}
        self.save()

    def save(self) -> None:
        (self.out / "gpu_figures.json").write_text(json.dumps(self.data, indent=2))
        (self.out / "gpu_figures.md").write_text(markdown(self.data))


def run_logged(command: list[str], log: Path, timeout: float, env: dict | None = None) -> int:
    """Run ``command`` with its output in ``log``; return its exit code (124 on timeout)."""
    print(f"$ {' '.join(map(str, command))}", flush=True)
    started = time.time()
    with open(log, "w") as file:
        try:
            code = subprocess.run(
                command,
                stdout=file,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                env={**os.environ, **(env or {})},
                cwd=REPO,
            ).returncode
        except subprocess.TimeoutExpired:
            code = 124
    print(f"  exit {code} after {time.time() - started:.0f} s", flush=True)
    if code:
        print(log.read_text()[-2500:], flush=True)
    return code


def time_updates(args: argparse.Namespace, report: Report, work: Path) -> None:
    """Part 1: our update and the reference's, one configuration per process."""
    common = [
        "--preset",
        args.model_preset,
        "--device",
        args.device,
        "--consistency",
        "sign",
        "--warmup",
        str(args.timing_warmup),
        "--iters",
        str(args.timing_iters),
    ]
    for label, extra in OUR_UPDATES.items():
        path = work / f"{label.replace(' ', '_').replace(',', '')}.json"
        command = [sys.executable, str(HERE / "pretrain_step.py"), *common, *extra]
        time_one(label, command, path, report, args.step_timeout)
    if args.reference is None:
        report.data["errors"].append("reference not timed: no --reference checkout given")
        report.save()
        return
    for label, precision in REFERENCE_UPDATES.items():
        if precision == 16 and args.device != "cuda":
            continue
        path = work / f"reference_{precision}.json"
        command = [
            sys.executable,
            str(HERE / "reference_update.py"),
            str(args.reference),
            "--device",
            args.device,
            "--precision",
            str(precision),
            "--warmup",
            str(args.timing_warmup),
            "--iters",
            str(args.timing_iters),
        ]
        time_one(label, command, path, report, args.step_timeout)


def time_one(label: str, command: list[str], path: Path, report: Report, timeout: float) -> None:
    """Run one timing script with ``--json path``; file its figures (or the error) under
    ``label``."""
    if run_logged([*command, "--json", str(path)], path.with_suffix(".log"), timeout) == 0:
        report.data["updates"][label] = json.loads(path.read_text())
    else:
        report.data["errors"].append(f"{label}: see {path.with_suffix('.log')}")
    report.save()


def pretrain_updates(args: argparse.Namespace, report: Report) -> int:
    """Updates that fit ``--pretrain-seconds`` at the measured bf16 concat update time."""
    if args.pretrain_updates is not None:
        return args.pretrain_updates
    timed = report.data["updates"].get("ours bf16, concat") or report.data["updates"].get(
        "ours fp32, concat"
    )
    seconds = timed["seconds_per_update"] if timed else 1.0
    return max(20, min(5000, int(args.pretrain_seconds / seconds)))


def finetune(args: argparse.Namespace, report: Report, work: Path) -> None:
    """Part 2: pre-train a PreLAR model, then fine-tune it and Dreamer side by side."""
    runs = work / "runs"
    updates = pretrain_updates(args, report)
    base = [
        f"preset={args.example_preset}",
        f"device={args.device}",
        "logger.backends=[csv]",
        f"threads={args.threads}",
    ]
    pretrain = [
        sys.executable,
        str(EXAMPLE),
        *base,
        "stage=pretrain",
        f"run_dir={runs / 'prelar'}",
        "data.source=metaworld",
        f"data.tasks=[{','.join(args.pretrain_tasks)}]",
        "data.episodes=2",
        "data.episode_length=100",
        "data.num_transitions=25",
        "evaluation.enabled=false",
        f"pretrain.updates={updates}",
        f"pretrain.checkpoint_every={updates}",
        "pretrain.log_every=10",
    ]
    started = time.time()
    code = run_logged(pretrain, work / "pretrain.log", args.pretrain_seconds * 3 + 300)
    pretrain_summary = read_summary(runs / "prelar", "pretrain")
    report.data["finetune"]["pretrain"] = {
        "exit_code": code,
        "updates": updates,
        "wall_seconds": round(time.time() - started, 1),
        "seconds_in_loop": pretrain_summary.get("seconds_this_run"),
        "last_metrics": pretrain_summary.get("last_metrics"),
    }
    report.save()
    if code:
        report.data["errors"].append("pre-training failed: see pretrain.log")
        report.save()
        return
    tune = [
        *base,
        "stage=finetune",
        f"finetune.task={args.task}",
        f"finetune.max_seconds={args.finetune_seconds}",
        f"finetune.prefill={args.prefill}",
        f"finetune.eval_every={args.eval_every}",
        "finetune.eval_episodes=2",
        "finetune.save_replay=false",
        "finetune.checkpoint_every=1000000",
    ]
    processes = {}
    for init in ("prelar", "dreamer"):
        command = [
            sys.executable,
            str(EXAMPLE),
            *tune,
            f"arm={init}",
            f"run_dir={runs / init}",
        ]
        print(f"$ {' '.join(command)}", flush=True)
        log = open(work / f"finetune_{init}.log", "w")
        processes[init] = (
            subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO),
            log,
            time.time(),
        )
    for init, (process, log, begun) in processes.items():
        try:
            code = process.wait(timeout=args.finetune_seconds + 600)
        except subprocess.TimeoutExpired:
            process.kill()
            code = 124
        log.close()
        summary = read_summary(runs / init, "finetune")
        report.data["finetune"][init] = {
            "exit_code": code,
            "wall_seconds": round(time.time() - begun, 1),
            **summary,
        }
        curves = runs / init / "finetune_curves.png"
        if curves.exists():
            shutil.copy(curves, args.out / f"finetune_curves_{init}.png")
        if code:
            report.data["errors"].append(f"fine-tuning {init} exited {code}: see its log")
            print((work / f"finetune_{init}.log").read_text()[-2500:], flush=True)
        report.save()
    plot_arms(runs, list(processes), args.out / "finetune_arms.png")


def plot_arms(runs: Path, arms: list[str], path: Path) -> None:
    """World-model loss and training-episode return of each arm, one line per arm, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ("finetune/world_model_loss", "finetune/train_return")
    figure, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.2))
    for arm in arms:
        series = read_csv_scalars(runs / arm / "csv")
        for axis, name in zip(axes, names, strict=True):
            if name in series:
                axis.plot(*series[name], marker="o", markersize=3, label=arm)
    axes[0].set_yscale("log")
    for axis, name in zip(axes, names, strict=True):
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("env steps")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def read_summary(run_dir: Path, section: str) -> dict:
    """One section of a run's ``summary.json`` (empty if the run wrote none)."""
    path = run_dir / "summary.json"
    return json.loads(path.read_text()).get(section, {}) if path.exists() else {}


def markdown(data: dict) -> str:
    """The tables of ``docs/performance.md``'s GPU section."""
    machine = data["machine"]
    lines = [f"Device: {machine.get('gpu', machine['device'])}, torch {machine['torch']}.", ""]
    reference = data["updates"].get("reference fp32", {}).get("seconds_per_update")
    lines += [
        "| pre-training update (batch 16 x 25, paper size) | s per update | "
        "vs reference fp32 | TFLOP/s | peak GPU memory (GiB) |",
        "|---|---|---|---|---|",
    ]
    for label, figures in data["updates"].items():
        seconds = figures["seconds_per_update"]
        ratio = f"{reference / seconds:.2f}x" if reference else "-"
        rate = figures.get("achieved_gflop_s")
        tflops = f"{rate / 1000:.1f}" if rate else "-"
        memory = figures.get("peak_memory_gib", "-")
        lines.append(f"| {label} | {seconds:.3f} | {ratio} | {tflops} | {memory} |")
    tune = data["finetune"]
    if "pretrain" in tune:
        pre = tune["pretrain"]
        lines += [
            "",
            f"PreLAR pre-training for fine-tuning: {pre['updates']} updates, "
            f"{pre.get('seconds_in_loop')} s in the loop, {pre['wall_seconds']} s "
            "with video generation and start-up.",
        ]
    arms = [arm for arm in ("prelar", "dreamer") if arm in tune]
    if arms:
        lines += [
            "",
            "| fine-tuning arm | env steps | updates | s per update | "
            "s per env step (collection) | wall s | evaluations (env steps: success, "
            "return) |",
            "|---|---|---|---|---|---|---|",
        ]
        for arm in arms:
            run = tune[arm]
            evaluations = "; ".join(
                f"{e['env_steps']}: {e['eval_success_rate']:.1f}, {e['eval_return']:.0f}"
                for e in run.get("evaluations", [])
            )
            lines.append(
                f"| {arm} | {run.get('env_steps', '-')} | {run.get('updates', '-')} | "
                f"{run.get('seconds_per_update', float('nan')):.3f} | "
                f"{run.get('seconds_per_env_step', float('nan')):.4f} | "
                f"{run['wall_seconds']} | {evaluations or '-'} |"
            )
    if data["errors"]:
        lines += ["", "Errors: " + "; ".join(data["errors"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, default=None, help="PreLAR reference checkout")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu_figures_work"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model-preset", default="paper", help="world model of part 1")
    parser.add_argument("--example-preset", default="paper", help="example preset of part 2")
    parser.add_argument("--timing-warmup", type=int, default=3)
    parser.add_argument("--timing-iters", type=int, default=10)
    parser.add_argument("--step-timeout", type=float, default=180)
    parser.add_argument("--pretrain-seconds", type=float, default=60)
    parser.add_argument(
        "--pretrain-updates",
        type=int,
        default=None,
        help="fixed count instead of --pretrain-seconds / measured update time",
    )
    parser.add_argument("--pretrain-tasks", nargs="+", default=list(PRETRAIN_TASKS))
    parser.add_argument("--task", default="reach-v3")
    parser.add_argument("--finetune-seconds", type=float, default=210)
    parser.add_argument("--prefill", type=int, default=2500)
    parser.add_argument("--eval-every", type=int, default=2500)
    parser.add_argument("--threads", type=int, default=4, help="CPU threads per process")
    parser.add_argument("--skip", nargs="*", default=[], choices=["updates", "finetune"])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    header = {
        "device": str(device),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if device.type == "cuda":
        header["gpu"] = torch.cuda.get_device_name(device)
    report = Report(args.out, header)
    if "updates" not in args.skip:
        time_updates(args, report, args.work)
    if "finetune" not in args.skip:
        finetune(args, report, args.work)
    print(markdown(report.data), flush=True)


if __name__ == "__main__":
    main()
