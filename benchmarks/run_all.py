"""Run every benchmark and print one table of the performance targets, with a JSON copy.

Each benchmark runs in its own process (peak memory is per process) and writes JSON; this
script gathers them, compares them with the targets of the performance issue and writes
``--out`` (JSON) and ``--markdown`` (the table ``docs/performance.md`` shows).

    python benchmarks/run_all.py --reference /path/to/PreLAR            # everything, ~25 min
    python benchmarks/run_all.py --reference-seconds 12.98 5.74          # reference already timed
    python benchmarks/run_all.py --reference /path/to/PreLAR --emulate-avx2
    python benchmarks/run_all.py --quick                                  # smoke run, small sizes

The reference is the public PreLAR code timed by ``../shared/tools/ref_pretrain_bench.py``
(``--reference`` is its checkout). ``--emulate-avx2`` adds fp32 rows (ours and the
reference) with PyTorch and oneDNN held to AVX2 kernels (``ATEN_CPU_CAPABILITY=avx2``,
``ONEDNN_MAX_CPU_ISA=AVX2``): the instruction set of an AVX2-only CPU on this machine's
cores, not a measurement on such a CPU. Run it on an idle machine: concurrent jobs inflate
every time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _machine import machine_info  # noqa: E402

DEFAULT_TOOL = HERE.parents[1] / "shared" / "tools" / "ref_pretrain_bench.py"
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
REFERENCE_LINE = re.compile(r"ref_pretrain_update_s\s+(.*)")


def run(command: list[str], extra_env: dict | None = None) -> str:
    """Run ``command``; stream nothing, return its stdout, fail loudly with its stderr."""
    env = dict(os.environ, **(extra_env or {}))
    print(f"$ {' '.join(command)}", flush=True)
    started = time.time()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-3000:]}"
        )
    print(f"  done in {time.time() - started:.0f} s", flush=True)
    return result.stdout


def benchmark(script: str, args: list[str], folder: Path, extra_env: dict | None = None) -> dict:
    """Run ``benchmarks/<script>`` with ``--json`` and return what it wrote."""
    out = folder / f"{script}-{len(list(folder.iterdir()))}.json"
    run([sys.executable, str(HERE / script), *args, "--json", str(out)], extra_env)
    return json.loads(out.read_text())


def reference_seconds(tool: Path, checkout: Path, bf16: bool, extra_env=None) -> dict:
    """Median seconds per reference update, by precision, from the reference tool."""
    command = [sys.executable, str(tool), str(checkout)] + (["--bf16"] if bf16 else [])
    output = run(command, extra_env)
    match = None
    for line in output.splitlines():
        match = REFERENCE_LINE.search(line) or match
    if match is None:
        raise RuntimeError(f"no 'ref_pretrain_update_s' line in the reference output:\n{output}")
    return {
        key: float(value) for key, value in (item.split("=") for item in match.group(1).split())
    }


def row(name: str, measured: str, target: str, met: bool | None, note: str = "") -> dict:
    return {"figure": name, "measured": measured, "target": target, "met": met, "note": note}


def verdict(met: bool | None) -> str:
    return "-" if met is None else ("yes" if met else "NO")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, default=None, help="PreLAR reference checkout")
    parser.add_argument("--reference-tool", type=Path, default=DEFAULT_TOOL)
    parser.add_argument(
        "--reference-seconds",
        type=float,
        nargs=2,
        metavar=("FP32", "BF16"),
        default=None,
        help="reference update seconds measured earlier on this machine (instead of running it)",
    )
    parser.add_argument("--emulate-avx2", action="store_true")
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the script")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latest.json")
    parser.add_argument("--markdown", type=Path, default=HERE / "results" / "latest.md")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)

    device = torch.device(args.device)
    info = machine_info(device)
    native_bf16 = info["native_bf16"] or device.type == "cuda"
    started = time.time()
    preset = "small" if args.quick else "paper"
    pretrain_size = ["--batch", "4", "--steps", "5"] if args.quick else ["--batch", "16"]
    results: dict = {"machine": info, "quick": args.quick, "preset": preset}
    rows: list[dict] = []

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        reference = None
        if args.reference_seconds:
            reference = dict(zip(("fp32", "bf16"), args.reference_seconds, strict=True))
        elif args.reference is not None and not args.quick:
            reference = reference_seconds(args.reference_tool, args.reference, native_bf16)
        results["reference_seconds"] = reference

        pretrain = {}
        for precision in ("fp32", "bf16") if native_bf16 else ("fp32",):
            for mode in ("concat", "embedding"):
                pretrain[f"{precision}/{mode}"] = benchmark(
                    "pretrain_step.py",
                    ["--preset", preset, *pretrain_size, "--precision", precision]
                    + ["--latent-action-input", mode, "--device", args.device],
                    folder,
                )
        results["pretrain"] = pretrain
        best_precision = "bf16" if native_bf16 else "fp32"
        target = 3.5 if native_bf16 else 1.25
        for key, figures in pretrain.items():
            precision, mode = key.split("/")
            seconds = figures["seconds_per_update"]
            measured = f"{seconds:.2f} s, {figures['tflop_per_update']:.2f} TFLOP"
            if reference and precision in reference:
                ratio = reference[precision] / seconds
                is_target = precision == best_precision
                rows.append(
                    row(
                        f"pre-training update ({precision}, latent action from {mode})",
                        f"{measured}; {ratio:.2f}x the reference ({reference[precision]:.2f} s)",
                        f">= {target}x" if is_target else "(context)",
                        ratio >= target if is_target else None,
                    )
                )
            else:
                rows.append(row(f"pre-training update ({precision}, {mode})", measured, "", None))
            fraction = figures["fraction_of_gemm_peak"]
            rows.append(
                row(
                    f"  its fraction of the {precision} GEMM peak",
                    f"{fraction:.2f} of {figures['gemm_peak_gflop_s']:.0f} GFLOP/s",
                    ">= 0.75",
                    fraction >= 0.75,
                )
            )

        if args.emulate_avx2 and not args.quick:
            avx2 = {
                mode: benchmark(
                    "pretrain_step.py",
                    ["--preset", preset, *pretrain_size, "--precision", "fp32"]
                    + ["--latent-action-input", mode],
                    folder,
                    AVX2_ENV,
                )
                for mode in ("concat", "embedding")
            }
            results["avx2_emulated"] = avx2
            if args.reference is not None:
                avx2_reference = reference_seconds(
                    args.reference_tool, args.reference, False, AVX2_ENV
                )["fp32"]
                results["avx2_emulated_reference_seconds"] = avx2_reference
                for mode, figures in avx2.items():
                    ratio = avx2_reference / figures["seconds_per_update"]
                    rows.append(
                        row(
                            f"pre-training update, AVX2 kernels (fp32, {mode})",
                            f"{figures['seconds_per_update']:.2f} s; {ratio:.2f}x the "
                            f"reference ({avx2_reference:.2f} s); "
                            f"{figures['fraction_of_gemm_peak']:.2f} of GEMM peak",
                            ">= 1.25x",
                            ratio >= 1.25,
                        )
                    )

        numerics = benchmark(
            "precision_numerics.py",
            ["--updates", "40" if args.quick else "300"]
            + ["--png", str(args.out.parent / "precision_numerics.png")]
            + ["--device", args.device],
            folder,
        )
        results["precision_numerics"] = numerics
        rows.append(
            row(
                "bf16 vs fp32 loss, relative gap (last quarter / whole run)",
                f"{numerics['largest_gap_last_quarter']:.3f} / {numerics['largest_gap']:.3f}",
                f"<= {numerics['tolerance']}",
                numerics["within_tolerance"],
            )
        )

        finetune_size = ["--batch", "4", "--length", "10"] if args.quick else []
        stored = benchmark(
            "finetune_update.py",
            ["--preset", preset, *finetune_size, "--device", args.device],
            folder,
        )
        results["finetune_update_stored_activations"] = stored
        rows.append(
            row(
                f"fine-tuning world-model update {stored['batch']}x{stored['length']} "
                f"({stored['precision']}, activations stored): peak memory, time",
                f"{stored['peak_memory_gib']:.1f} GiB, {stored['seconds_per_update']:.1f} s, "
                f"{stored['fraction_of_gemm_peak']:.2f} of peak",
                "(context)",
                None,
            )
        )
        finetune = benchmark(
            "finetune_update.py",
            ["--preset", preset, *finetune_size, "--activation-checkpointing"]
            + ["--device", args.device],
            folder,
        )
        results["finetune_update"] = finetune
        rows.append(
            row(
                f"fine-tuning world-model update {finetune['batch']}x{finetune['length']} "
                f"({finetune['precision']}, activation checkpointing): peak memory",
                f"{finetune['peak_memory_gib']:.1f} GiB ({finetune['memory_kind']})",
                "<= 10 GB",
                finetune["peak_memory_gib"] * 2**30 / 1e9 <= 10,
            )
        )
        rows.append(
            row(
                "  its time and fraction of the GEMM peak",
                f"{finetune['seconds_per_update']:.1f} s, {finetune['tflop_per_update']:.2f} "
                f"TFLOP, {finetune['fraction_of_gemm_peak']:.2f} of peak",
                "(report)",
                None,
            )
        )

        starts = ["100", "400"] if args.quick else ["250", "1000", "2500"]
        imagination = benchmark(
            "imagination.py",
            ["--preset", preset, "--starts", *starts, "--device", args.device],
            folder,
        )
        results["imagination"] = imagination
        rows.append(
            row(
                f"imagination {imagination['starts'][-1]} starts x {imagination['horizon']}",
                f"{imagination['largest_seconds']:.2f} s, "
                f"{imagination['peak_memory_gib'][-1]:.1f} GiB; fit: "
                f"{imagination['fixed_seconds_fit']:.3f} s fixed + "
                f"{imagination['us_per_start_fit']:.0f} us per start",
                "(report; fixed cost does not grow with starts)",
                None,
            )
        )

        env = benchmark("env_steps.py", ["--steps", "50" if args.quick else "200"], folder)
        results["env_steps"] = env
        rows.append(
            row(
                "Meta-world pixel steps/s, one env, fast render",
                f"{env['fast_render_steps_per_s']:.0f} ({env['fast_over_default']:.1f}x "
                f"the default render)",
                "(report)",
                None,
            )
        )
        pipes, shared = env["parallel_pipes"], env["parallel_shared_buffers"]
        rows.append(
            row(
                "ParallelEnv 1 -> 2 workers, pipes (`use_buffers=False`, as fine-tuning uses it)",
                f"{pipes['scaling_1_to_2']:.2f}x ({pipes['2_workers_steps_per_s']:.0f} steps/s; "
                f"{pipes['2_workers_over_in_process_env']:.2f}x one in-process env)",
                ">= 1.6x",
                pipes["scaling_1_to_2"] >= 1.6,
            )
        )
        rows.append(
            row(
                "ParallelEnv 1 -> 2 workers, TorchRL's default shared buffers",
                f"{shared['scaling_1_to_2']:.2f}x ({shared['2_workers_steps_per_s']:.0f} steps/s;"
                f" main process busy {shared['main_cpu_share_2_workers']:.0%} spin-waiting)",
                "(context)",
                None,
            )
        )

        loop = benchmark(
            "finetune_loop.py",
            ["--preset", "reach35k"]
            + ["--steps", "20" if args.quick else "200", "--threads", str(info["threads"])],
            folder,
        )["variants"][0]
        results["finetune_loop"] = loop
        rate = loop["env_steps_per_s"]
        rows.append(
            row(
                f"fine-tuning loop, preset reach35k ({loop['batch']}, one update per "
                f"{loop['update_every']} env steps): env steps/s",
                f"{rate:.2f} ({35_000 / rate / 3600:.1f} h for 35k steps); updates "
                f"{loop['fraction']['world_model']:.0%} world model, "
                f"{loop['fraction']['actor_critic']:.0%} actor-critic; env "
                f"{loop['fraction']['env']:.0%}",
                ">= 4.9 (35k steps in 2 h)",
                rate >= 4.9,
            )
        )

        overhead_size = ["--batch", "4", "--steps", "5"] if args.quick else []
        overhead = benchmark(
            "loss_overhead.py",
            ["--preset", preset, *overhead_size, "--precision", best_precision]
            + ["--device", args.device],
            folder,
        )
        results["loss_overhead"] = overhead
        rows.append(
            row(
                "PreLARLoss / Dreamer world-model loss (same model and batch)",
                f"time {overhead['time_ratio']:.2f}x, FLOPs {overhead['flop_ratio']:.2f}x; "
                f"latent action model {overhead['latent_action_flop_share']:.0%} of FLOPs",
                "(report, explained by the FLOP share)",
                None,
            )
        )

        replay = benchmark("replay_sampling.py", ["--batches", "20"], folder)
        results["replay_sampling"] = replay
        rows.append(
            row(
                "replay sampling, clips/s",
                f"{replay['slowest_clips_per_s']:.0f}-{replay['fastest_clips_per_s']:.0f}",
                "(report)",
                None,
            )
        )

    results["rows"] = rows
    results["seconds"] = round(time.time() - started)
    header = (
        f"Machine: {info['cpu']} ({info['cpu_capability']}, native bf16: {info['native_bf16']}), "
        f"torch {info['torch']}, {info['threads']} threads, device {info['device']}; "
        f"`{' '.join(['python', 'benchmarks/run_all.py', *sys.argv[1:]])}`, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {results['seconds']} s."
    )
    lines = [header, "", "| figure | measured | target | met |", "|---|---|---|---|"]
    lines += [
        f"| {r['figure'].strip()} | {r['measured']} | {r['target']} | {verdict(r['met'])} |"
        for r in rows
    ]
    table = "\n".join(lines)
    print("\n" + table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(table + "\n")
    print(f"\nwritten: {args.out}, {args.markdown}")


if __name__ == "__main__":
    main()
