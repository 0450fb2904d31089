"""Model-gap benchmark: held-out open-loop prediction from real actions after fine-tuning.

    MUJOCO_GL=egl python experiments/model_gap.py --out runs/model_gap
    python experiments/results_report.py --show runs/model_gap/model_gap.json \\
        --figure runs/model_gap/model_gap.png

1. Renders real-action episodes of the six Meta-world evaluation tasks (never pre-trained
   on) with the noisy scripted experts: ``<out>/data/train`` and ``<out>/data/heldout``
   (different seeds).
2. Pre-trains each arm's world model with ``examples/dreamer_prelar.py stage=pretrain`` on
   the same videos (``<out>/pretrain/videos``; its held-out latent-action sets in
   ``<out>/pretrain/heldout``) and budget, in ``<out>/pretrain/<arm>``,
   unless ``--pretrained ARM=RUN_DIR`` names an existing one; a finished pre-training is
   not run again.
3. For each arm and seed, fine-tunes the world model alone for ``--updates`` updates on the
   train split (encoder + pre-trained RSSM frozen for the first ``--freeze-updates``) and
   scores open-loop prediction on the held-out clips: ``--context`` frames observed, then
   ``--horizon`` frames imagined from the encoded real actions
   (:mod:`torchrl_prelar.training.model_gap`). Results go to ``<out>/model_gap.json``
   after each run; a run already there is skipped, so the same command resumes.
4. Summarises the runs in the same file: one row per arm (mean and sample std over the
   seeds) and the last observed frame, as variant ``--variant`` of the schema of
   ``docs/results/model_gap.json``. ``experiments/results_report.py`` renders the tables
   and the figure.

Arguments after the options are Hydra ``key=value`` overrides of the pre-training (e.g.
``data.batch_size=8``).

One ``--out`` holds one pre-training per arm, made with random seed ``--pretrain-seed``. To
tell a difference between arms from the draw of their pre-training, run the benchmark once
per pre-training seed, each into its own ``--out``, and combine the results files with
``experiments/results_report.py --pretrain-seeds``:

    for p in 0 1 2; do
        python experiments/model_gap.py --out runs/gap_p$p --pretrain-seed $p --preset long \
            --arms prelar prelar_no_action_learning
    done
    python experiments/results_report.py --pretrain-seeds runs/gap_p*/model_gap.json \
        --write runs/model_gap_pretrain_seeds.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from torchrl_prelar.io import PRETRAINED_MODEL, atomic_write_text

if TYPE_CHECKING:
    from tensordict import TensorDictBase

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "dreamer_prelar.py"
CONFIG_DIR = REPO / "examples" / "config"
RESULTS_FILE = "model_gap.json"
HORIZONS = (1, 5, 15)
FINAL_LOSS_UPDATES = 10
#: Set by this script for the pre-training; overriding them on the command line is an error.
OWN_KEYS = (
    "stage",
    "run_dir",
    "seed",
    "threads",
    "preset",
    "pretrain.updates",
    "arm",
    "finetune.init",
)
log = logging.getLogger("model_gap")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from torchrl_prelar.envs.metaworld import METAWORLD_EVAL_TASKS
    from torchrl_prelar.training.model_gap import available_arms

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--out", type=Path, required=True, help="folder of data, pre-trainings and results")
    add("--arms", nargs="+", choices=available_arms(), default=list(available_arms()))
    add("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fine-tuning seeds")
    add("--pretrain-seed", type=int, default=0, help="random seed of every arm's pre-training")
    add("--updates", type=int, default=300, help="K: world-model fine-tuning updates")
    add("--freeze-updates", type=int, default=100, help="N: encoder + RSSM at lr 0 first")
    add("--lr", type=float, default=3e-4, help="fine-tuning learning rate")
    add("--batch-size", type=int, default=16, help="fine-tuning clips per batch")
    add("--batch-length", type=int, default=24, help="fine-tuning transitions per clip")
    add("--context", type=int, default=5, help="observed frames of a held-out clip")
    add("--horizon", type=int, default=15, help="imagined frames of a held-out clip")
    add("--tasks", nargs="+", default=list(METAWORLD_EVAL_TASKS), help="Meta-world tasks")
    add("--train-episodes", type=int, default=4, help="train episodes per task")
    add("--heldout-episodes", type=int, default=2, help="held-out episodes per task")
    add("--episode-length", type=int, default=100, help="actions per episode")
    add("--noise", type=float, default=0.1, help="expert action-noise std")
    add("--preset", default="quick", help="examples/config preset of the pre-training")
    add("--pretrain-updates", type=int, help="pre-training updates (default: the preset's)")
    add(
        "--pretrained",
        nargs="+",
        default=[],
        metavar="ARM=RUN_DIR",
        help="existing pre-training of an arm (run dir or pretrained_world_model.pt)",
    )
    add(
        "--world-model",
        default="small",
        help="dreamer's world model if no arm is pre-trained (examples/config/world_model/)",
    )
    add("--threads", type=int, default=2, help="torch threads")
    add("--variant", default="default", help="name of these runs' summary in the results file")
    add("overrides", nargs="*", help="Hydra key=value overrides of the pre-training")
    args = parser.parse_args(argv)
    for override in args.overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if "=" not in override:
            parser.error(f"override {override!r} is not key=value")
        if key in OWN_KEYS:
            parser.error(f"{key} is set by this script (use its options instead)")
    args.pretrained = _parse_pretrained(parser, args.pretrained, args.arms)
    if not 0 <= args.freeze_updates <= args.updates:
        parser.error("--freeze-updates must be in [0, --updates]")
    return args


def _parse_pretrained(
    parser: argparse.ArgumentParser, items: Sequence[str], arms: Sequence[str]
) -> dict[str, Path]:
    from torchrl_prelar.training.model_gap import MODEL_GAP_ARMS

    paths = {}
    for item in items:
        arm, _, path = item.partition("=")
        if arm not in arms or not MODEL_GAP_ARMS[arm].pretrained or not path:
            parser.error(
                f"--pretrained {item!r}: expected ARM=RUN_DIR for a pre-trained arm of --arms"
            )
        path = Path(path)
        path = path if path.suffix == ".pt" else path / PRETRAINED_MODEL
        if not path.is_file():
            parser.error(f"--pretrained {item!r}: {path} does not exist")
        paths[arm] = path.resolve()
    return paths


# ----------------------------------------------------------------------------- data


def make_data(args: argparse.Namespace):
    """Render (or find) the two splits; return their folders."""
    from tqdm import tqdm

    from torchrl_prelar.training.model_gap import generate_model_gap_splits

    total = len(args.tasks) * (args.train_episodes + args.heldout_episodes)
    with tqdm(total=total, desc="rendering real-action episodes", unit="ep") as bar:
        return generate_model_gap_splits(
            args.out / "data",
            tasks=args.tasks,
            train_episodes=args.train_episodes,
            heldout_episodes=args.heldout_episodes,
            episode_length=args.episode_length,
            noise_std=args.noise,
            on_episode=bar.update,
        )


# ----------------------------------------------------------------------------- pre-training


def pretrain_overrides(args: argparse.Namespace, arm: str, run_dir: Path) -> list[str]:
    """Hydra overrides of ``examples/dreamer_prelar.py`` for the pre-training of ``arm``."""
    from torchrl_prelar.training.model_gap import MODEL_GAP_ARMS

    overrides = [
        "stage=pretrain",
        f"preset={args.preset}",
        f"run_dir={run_dir}",
        f"seed={args.pretrain_seed}",
        f"threads={args.threads}",
        f"data.video_dir={(args.out / 'pretrain' / 'videos').resolve()}",
        f"evaluation.dir={(args.out / 'pretrain' / 'heldout').resolve()}",
    ]
    if args.pretrain_updates is not None:
        overrides.append(f"pretrain.updates={args.pretrain_updates}")
    return [*overrides, *MODEL_GAP_ARMS[arm].pretrain_overrides, *args.overrides]


def composed_pretrain_updates(overrides: Sequence[str]) -> int:
    """``pretrain.updates`` of the example's configuration under ``overrides``."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        config = compose("config", overrides=list(overrides))
    return int(config.pretrain.updates)


def pretrained_updates(model: Path) -> int | None:
    """Updates of the finished pre-training that wrote ``model`` (from its summary.json)."""
    summary = model.parent / "summary.json"
    if not (model.is_file() and summary.is_file()):
        return None
    return json.loads(summary.read_text()).get("pretrain", {}).get("updates")


def pretrain_arm(args: argparse.Namespace, arm: str) -> tuple[Path, float]:
    """Run (or resume, or skip) the pre-training of ``arm``; return its model and seconds."""
    run_dir = (args.out / "pretrain" / arm).resolve()
    overrides = pretrain_overrides(args, arm, run_dir)
    model = run_dir / PRETRAINED_MODEL
    if pretrained_updates(model) == composed_pretrain_updates(overrides):
        log.info("%s: pre-training finished before, skipped (%s)", arm, model)
        return model, 0.0
    command = [sys.executable, str(EXAMPLE), *overrides]
    log.info("%s: pre-training: %s", arm, shlex.join(command))
    started = time.time()
    subprocess.run(command, check=True, env={**os.environ, "MUJOCO_GL": "egl"})
    return model, time.time() - started


# ----------------------------------------------------------------------------- runs


#: Settings added after results files were written: the value those files were made with.
SETTINGS_ADDED = {"pretrain_seed": 0}


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """What every run of one results file shares (a mismatch on resume is an error)."""
    return {
        "pretrain_seed": args.pretrain_seed,
        "updates": args.updates,
        "freeze_updates": args.freeze_updates,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "batch_length": args.batch_length,
        "context": args.context,
        "horizon": args.horizon,
        "tasks": list(args.tasks),
        "train_episodes": args.train_episodes,
        "heldout_episodes": args.heldout_episodes,
        "episode_length": args.episode_length,
        "noise": args.noise,
    }


def load_results(path: Path, current: Mapping[str, Any]) -> dict[str, Any]:
    """The results file, or a new one; raises if it was written with other settings."""
    if not path.exists():
        return {"settings": dict(current), "pretrain": {}, "runs": {}}
    results = json.loads(path.read_text())
    recorded = {**SETTINGS_ADDED, **results["settings"]}
    differing = sorted(k for k in current if recorded.get(k) != current[k])
    if differing:
        raise ValueError(
            f"{path} holds results with other settings ({', '.join(differing)}); use another "
            "--out or delete that file."
        )
    results["settings"] = {**recorded, **current}
    return results


def save_results(path: Path, results: Mapping[str, Any]) -> None:
    atomic_write_text(path, json.dumps(results, indent=1))


def pretrained_info(model: Path | None) -> dict[str, Any] | None:
    """What identifies a pre-trained model in a run record (None for ``dreamer``)."""
    if model is None:
        return None
    return {"path": str(model), "updates": pretrained_updates(model)}


def record_pretraining(results: dict[str, Any], arm: str, model: Path, seconds: float) -> None:
    """Note ``arm``'s pre-trained model; its pre-training time adds up over invocations."""
    info = pretrained_info(model)
    previous = results["pretrain"].get(arm, {})
    same = {k: previous.get(k) for k in info} == info
    total = previous.get("seconds", 0.0) + seconds if same else seconds
    results["pretrain"][arm] = {**info, "seconds": round(total, 1)}


def dreamer_world_model(args: argparse.Namespace, models: Mapping[str, Path]) -> dict[str, Any]:
    """``dreamer``'s world-model arguments: a pre-trained arm's (``prelar`` first), else
    those of the example's ``--world-model``."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from torchrl_prelar.training.model_gap import checkpoint_world_model_kwargs

    for arm in ("prelar", *models):
        if arm in models:
            return checkpoint_world_model_kwargs(models[arm])
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        config = compose("config", overrides=[f"world_model={args.world_model}"])
    return OmegaConf.to_container(config.world_model)


def run_arms(
    args: argparse.Namespace,
    sample: Callable[[], TensorDictBase],
    clips: TensorDictBase,
    models: Mapping[str, Path],
    results: dict[str, Any],
) -> None:
    """Fine-tune and score every arm x seed not in ``results`` yet, saving after each."""
    from tqdm import tqdm

    from torchrl_prelar.training.model_gap import run_model_gap_arm

    path = args.out / RESULTS_FILE
    dreamer = dreamer_world_model(args, models)
    jobs = [(arm, seed) for seed in args.seeds for arm in args.arms]
    for arm, seed in tqdm(jobs, desc="arms x seeds", unit="run"):
        info = pretrained_info(models.get(arm))
        done = results["runs"].get(arm, {}).get(str(seed))
        if done is not None and done.get("pretrained") == info:
            continue
        result = run_model_gap_arm(
            arm,
            seed=seed,
            sample=sample,
            clips=clips,
            context=args.context,
            updates=args.updates,
            freeze_updates=args.freeze_updates,
            lr=args.lr,
            pretrained=models.get(arm),
            world_model_kwargs=dreamer,
            progress=True,
        )
        results["runs"].setdefault(arm, {})[str(seed)] = {**result, "pretrained": info}
        save_results(path, results)
        log.info(
            "%s seed %d: PSNR mean %.2f dB, final loss %.1f, %.0f s",
            arm,
            seed,
            np.mean(result["psnr"]),
            result["loss"][-1],
            result["seconds"],
        )


# ----------------------------------------------------------------------------- summary


def _mean_std(values: Sequence[float], digits: int) -> dict[str, float | None]:
    """Mean and sample std over seeds (``None`` for one seed), rounded to ``digits``."""
    values = np.asarray(values, dtype=float)
    std = round(float(values.std(ddof=1)), digits) if len(values) > 1 else None
    return {"mean": round(float(values.mean()), digits), "std": std}


def arm_runs(results: Mapping[str, Any], arms: Sequence[str], seeds: Sequence[int]):
    """``{arm: [run, ...]}`` for the requested arms and seeds present in ``results``."""
    runs = {}
    for arm in arms:
        found = [results["runs"].get(arm, {}).get(str(seed)) for seed in seeds]
        runs[arm] = [run for run in found if run is not None]
    return runs


def summary_rows(
    runs: Mapping[str, list], baseline: Mapping[str, list], horizon: int
) -> list[dict[str, Any]]:
    """One row per arm (``docs/results/model_gap.json``'s schema), then the last frame's."""
    horizons = [h for h in HORIZONS if h <= horizon]
    rows = []
    for arm, arm_results in runs.items():
        if not arm_results:
            continue
        psnr = np.array([run["psnr"] for run in arm_results])
        row: dict[str, Any] = {"arm": arm, "seeds": len(arm_results)}
        row.update({f"psnr_{h}": _mean_std(psnr[:, h - 1], 2) for h in horizons})
        row[f"psnr_mean_1_{horizon}"] = _mean_std(psnr.mean(1), 2)
        row["mse_mean"] = _mean_std([np.mean(run["mse"]) for run in arm_results], 4)
        row[f"final_loss_last{FINAL_LOSS_UPDATES}"] = _mean_std(
            [np.mean(run["loss"][-FINAL_LOSS_UPDATES:]) for run in arm_results], 1
        )
        row["s_per_run"] = round(float(np.mean([run["seconds"] for run in arm_results])))
        rows.append(row)
    floor: dict[str, Any] = {"arm": "last observed frame (no model)", "seeds": None}
    floor.update(
        {f"psnr_{h}": {"mean": round(baseline["psnr"][h - 1], 2), "std": None} for h in horizons}
    )
    floor[f"psnr_mean_1_{horizon}"] = {
        "mean": round(float(np.mean(baseline["psnr"])), 2),
        "std": None,
    }
    floor["mse_mean"] = {"mean": round(float(np.mean(baseline["mse"])), 4), "std": None}
    floor[f"final_loss_last{FINAL_LOSS_UPDATES}"] = None
    floor["s_per_run"] = None
    return [*rows, floor]


def describe(args: argparse.Namespace, results: Mapping[str, Any]) -> str:
    """What the runs of ``results`` are, in one paragraph (its ``what``)."""
    s = results["settings"]
    pretrained = ", ".join(
        f"{arm} {info['updates']} updates" for arm, info in results["pretrain"].items()
    )
    return (
        f"Held-out open-loop prediction from real actions after fine-tuning each arm's world "
        f"model alone for {s['updates']} updates on real-action episodes of "
        f"{', '.join(s['tasks'])} (scripted experts, action noise {s['noise']}, "
        f"{s['train_episodes']} train episodes of {s['episode_length']} steps per task, batch "
        f"{s['batch_size']} x {s['batch_length']}, lr {s['lr']}, encoder and pre-trained RSSM "
        f"at lr 0 for the first {s['freeze_updates']} updates). Scored on "
        f"{results['heldout_clips']} held-out clips: {s['context']} frames observed, "
        f"{s['horizon']} imagined from the encoded real actions. PSNR in dB per imagined "
        "step, averaged over clips; mean and sample std over the fine-tuning seeds. "
        f"Pre-training (examples/dreamer_prelar.py stage=pretrain preset={args.preset} "
        f"seed={s['pretrain_seed']}): {pretrained or 'none'}."
    )


def main(argv: Sequence[str] | None = None) -> Path:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    import torch
    from results_report import command_line, machine_description

    from torchrl_prelar.training.model_gap import (
        MODEL_GAP_ARMS,
        heldout_clips,
        last_frame_scores,
        make_transition_buffer,
    )

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / RESULTS_FILE
    results = load_results(path, settings(args))
    splits = make_data(args)
    models = dict(args.pretrained)
    for arm in args.arms:
        if MODEL_GAP_ARMS[arm].pretrained:
            seconds = 0.0
            if arm not in models:
                models[arm], seconds = pretrain_arm(args, arm)
            record_pretraining(results, arm, models[arm], seconds)
    save_results(path, results)
    buffer = make_transition_buffer(
        splits.train, num_transitions=args.batch_length, batch_size=args.batch_size
    )
    clips = heldout_clips(splits.heldout, num_transitions=args.context + args.horizon)
    results["heldout_clips"] = clips.shape[0]
    run_arms(args, buffer.sample, clips, models, results)
    baseline = last_frame_scores(clips, context=args.context)
    results["last_frame"] = baseline
    runs = arm_runs(results, args.arms, args.seeds)
    results["what"] = describe(args, results)
    results["machine"] = machine_description(args.threads)
    results["tasks"] = list(args.tasks)
    results.setdefault("variants", {})[args.variant] = {
        "commands": [command_line(__file__, argv)],
        "rows": summary_rows(runs, baseline, args.horizon),
    }
    save_results(path, results)
    log.info("wrote %s", path)
    return path


if __name__ == "__main__":
    main()
