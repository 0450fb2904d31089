"""Model-gap benchmark: held-out open-loop prediction from real actions after fine-tuning.

    MUJOCO_GL=egl python experiments/model_gap.py --out runs/model_gap

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
4. Writes the table into its own marked section of ``<docs>/results.md`` and the plot to
   ``<docs>/results/model_gap.png``.

Arguments after the options are Hydra ``key=value`` overrides of the pre-training (e.g.
``data.batch_size=8``).
"""

from __future__ import annotations

import argparse
import datetime
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
PLOT_FILE = "model_gap.png"
SECTION = "model_gap"
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
COLOURS = {
    "prelar": "tab:blue",
    "prelar_no_action_learning": "tab:purple",
    "apv": "tab:green",
    "dreamer": "tab:orange",
    "contextwm": "tab:red",
}

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
    add("--docs", type=Path, default=Path("docs"), help="where results.md and results/ are")
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
        "seed=0",
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


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """What every run of one results file shares (a mismatch on resume is an error)."""
    return {
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
    differing = sorted(k for k in current if results["settings"].get(k) != current[k])
    if differing:
        raise ValueError(
            f"{path} holds results with other settings ({', '.join(differing)}); use another "
            "--out or delete that file."
        )
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


# ----------------------------------------------------------------------------- report


def _mean_std(values: Sequence[float], digits: int = 2) -> str:
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return f"{values.mean():.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def arm_runs(results: Mapping[str, Any], arms: Sequence[str], seeds: Sequence[int]):
    """``{arm: [run, ...]}`` for the requested arms and seeds present in ``results``."""
    runs = {}
    for arm in arms:
        found = [results["runs"].get(arm, {}).get(str(seed)) for seed in seeds]
        runs[arm] = [run for run in found if run is not None]
    return runs


def table(runs: Mapping[str, list], baseline: Mapping[str, list], horizon: int) -> list[str]:
    """Markdown rows: held-out PSNR at the horizons, mean over steps, final loss, time."""
    horizons = [h for h in HORIZONS if h <= horizon]
    header = ["arm", "seeds", *(f"PSNR @ {h}" for h in horizons), f"PSNR, mean 1-{horizon}"]
    header += ["MSE, mean", f"final loss (mean of last {FINAL_LOSS_UPDATES})", "s / run"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm, arm_results in runs.items():
        if not arm_results:
            continue
        psnr = np.array([run["psnr"] for run in arm_results])
        row = [arm, str(len(arm_results))]
        row += [_mean_std(psnr[:, h - 1]) for h in horizons]
        row += [_mean_std(psnr.mean(1))]
        row += [_mean_std([np.mean(run["mse"]) for run in arm_results], 4)]
        row += [_mean_std([np.mean(run["loss"][-FINAL_LOSS_UPDATES:]) for run in arm_results], 1)]
        row += [f"{np.mean([run['seconds'] for run in arm_results]):.0f}"]
        lines.append("| " + " | ".join(row) + " |")
    row = ["last observed frame (no model)", "-"]
    row += [f"{baseline['psnr'][h - 1]:.2f}" for h in horizons]
    row += [f"{np.mean(baseline['psnr']):.2f}", f"{np.mean(baseline['mse']):.4f}", "-", "-"]
    lines.append("| " + " | ".join(row) + " |")
    return lines


def describe(runs: Mapping[str, list]) -> str:
    """Factual sentences: ranking by mean PSNR, and the two comparisons of the claim."""
    means = {arm: np.array([np.mean(run["psnr"]) for run in r]) for arm, r in runs.items() if r}
    ranking = sorted(means, key=lambda arm: -means[arm].mean())
    parts = [
        "Ranking by held-out PSNR averaged over the imagined steps: "
        + " > ".join(f"{arm} ({means[arm].mean():.2f} dB)" for arm in ranking)
        + "."
    ]
    for other in ("apv", "prelar_no_action_learning", "dreamer"):
        if "prelar" not in means or other not in means:
            continue
        p, o = means["prelar"], means[other]
        if min(len(p), len(o)) < 2:
            spread = "one seed, no spread to compare with."
        elif p.min() <= o.max() and o.min() <= p.max():
            spread = "the seed ranges overlap."
        else:
            spread = "the seed ranges do not overlap."
        parts.append(f"prelar - {other}: {p.mean() - o.mean():+.2f} dB; {spread}")
    return " ".join(parts)


def plot(runs: Mapping[str, list], baseline: Mapping[str, list], freeze: int, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for arm, arm_results in runs.items():
        if not arm_results:
            continue
        colour = COLOURS.get(arm)
        psnr = np.array([run["psnr"] for run in arm_results])
        steps = np.arange(1, psnr.shape[1] + 1)
        left.plot(steps, psnr.mean(0), color=colour, marker="o", markersize=3, label=arm)
        left.fill_between(steps, psnr.min(0), psnr.max(0), color=colour, alpha=0.2, linewidth=0)
        loss = np.array([run["loss"] for run in arm_results])
        updates = np.arange(1, loss.shape[1] + 1)
        right.plot(updates, loss.mean(0), color=colour, label=arm)
        right.fill_between(updates, loss.min(0), loss.max(0), color=colour, alpha=0.2, lw=0)
    steps = np.arange(1, len(baseline["psnr"]) + 1)
    left.plot(steps, baseline["psnr"], color="grey", linestyle="--", label="last observed frame")
    left.set_xlabel("imagined step")
    left.set_ylabel("held-out PSNR (dB)")
    left.set_title("open loop from real actions (band: min-max over seeds)", fontsize=9)
    left.xaxis.get_major_locator().set_params(integer=True)
    right.axvline(
        freeze + 0.5, color="grey", linestyle=":", label=f"encoder + RSSM frozen to {freeze}"
    )
    right.set_yscale("log")
    right.set_xlabel("fine-tuning update")
    right.set_ylabel("world-model loss (train batches)")
    right.set_title("fine-tuning loss (band: min-max over seeds)", fontsize=9)
    for axis in (left, right):
        axis.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def section(
    args: argparse.Namespace,
    results: Mapping[str, Any],
    runs: Mapping[str, list],
    baseline: Mapping[str, list],
    image: Path,
    command: str,
) -> str:
    """The markdown of this benchmark's section of results.md."""
    from results_report import machine_description

    from torchrl_prelar.envs.metaworld import METAWORLD_EVAL_TASKS

    s = results["settings"]
    pretrain = results["pretrain"]
    pretrained = ", ".join(
        f"{arm}: `{info['path']}` ({info['updates']} updates)" for arm, info in pretrain.items()
    )
    seconds = sum(run["seconds"] for arm_results in runs.values() for run in arm_results)
    evaluation_only = set(s["tasks"]) <= set(METAWORLD_EVAL_TASKS)
    unseen = "; evaluation tasks, not in the default pre-training videos" if evaluation_only else ""
    lines = [
        "## Model gap: held-out open-loop prediction from real actions after fine-tuning",
        "",
        f"Generated by `experiments/model_gap.py` on {datetime.date.today().isoformat()}:",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Machine: {machine_description(args.threads)}.",
        "",
        f"Each arm's world model (no reward heads, new action encoder) is fine-tuned alone for "
        f"K = {s['updates']} updates on real-action episodes of {', '.join(s['tasks'])} "
        f"(scripted experts, action noise {s['noise']}; {s['train_episodes']} train episode(s) "
        f"per task of {s['episode_length']} steps{unseen}): "
        f"batch {s['batch_size']} x {s['batch_length']}, lr {s['lr']}, encoder + pre-trained "
        f"RSSM at lr 0 for the first {s['freeze_updates']} updates (SPEC section 3), "
        "reconstruction + balanced state KL. Then, on "
        f"{results['heldout_clips']} held-out clips ({s['heldout_episodes']} episode(s) per task "
        "with other seeds, cut into consecutive clips), "
        f"{s['context']} frames are "
        f"observed and {s['horizon']} imagined from the encoded real actions alone; PSNR per "
        "clip and step, averaged over clips, then mean ± sample std over fine-tuning seeds. "
        "Pre-training (one per arm, same videos and budget, `examples/dreamer_prelar.py "
        f"stage=pretrain preset={args.preset}`): {pretrained or 'none'}. `dreamer` starts "
        "from random weights with the same schedule.",
        "",
        f"Wall time: {seconds / 60:.1f} min of fine-tuning and scoring in all; pre-training "
        "(the first one also renders the pre-training videos) "
        + ", ".join(f"{arm} {info['seconds'] / 60:.1f} min" for arm, info in pretrain.items())
        + " (summed over the invocations that ran them; 0 for a given run dir).",
        "",
        *table(runs, baseline, s["horizon"]),
        "",
        describe(runs),
        "",
        f"![model gap]({image.relative_to(args.docs).as_posix()})",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> Path:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    import torch
    from results_report import command_line, write_section

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
    runs = arm_runs(results, args.arms, args.seeds)
    image = plot(runs, baseline, args.freeze_updates, args.docs / "results" / PLOT_FILE)
    text = section(args, results, runs, baseline, image, command_line(__file__, argv))
    report = write_section(
        args.docs / "results.md", SECTION, text, generator="experiments/model_gap.py"
    )
    log.info("wrote %s, %s and %s", path, report, image)
    return report


if __name__ == "__main__":
    main()
