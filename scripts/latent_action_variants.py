"""Compare pre-training objectives on what their latent action learns, on Meta-world video.

Pre-trains one variant (a world model and ``PreLARLoss`` settings) on scripted
Meta-world videos of the 44 pre-training tasks and, every ``--probe-every`` updates,
evaluates it with :func:`~torchrl_prelar.evaluation.latent_actions.evaluate_latent_actions` on
two held-out sets with true actions: new episodes of every pre-training task (``seen``) and
episodes of the six evaluation tasks (``unseen``). Every variant reads the same three video
folders (rendered on the first call, about 4 min on 2 cores), so rows of
``docs/latent_actions.md`` compare objectives on the same data with the same probe.

    python scripts/latent_action_variants.py paper --loss '{}' --updates 300
    python scripts/latent_action_variants.py forward \\
        --loss '{lambda_forward_reco: 0.5, beta_action: 0.1}' --updates 300

``--supervised`` trains the latent action model alone, as a supervised inverse dynamics model
(a linear read-out of its deterministic code regressed on the true actions of the training
videos, which pre-training never sees): a reference for how much of the action this trunk can
read from two frames of this data at all. Its state KL and PSNR figures are those of an
untrained RSSM.

    python scripts/latent_action_variants.py supervised --supervised --updates 300

``--videos``, ``--seen`` and ``--unseen`` read existing folders of episodes with true actions
instead of rendering that set, e.g. the default job's training videos and held-out sets, to
put a supervised reference beside the job's own figures:

    python scripts/latent_action_variants.py supervised_embedding --supervised \
        --model '{latent_action: {input_mode: embedding}}' --updates 1000 \
        --videos RUN_DIR/videos --seen RUN_DIR/heldout/seen --unseen RUN_DIR/heldout/unseen

``--loss`` and ``--model`` are YAML mappings of :class:`~torchrl_prelar.PreLARLoss` keyword
arguments and of changes to the arguments of the example's ``--world-model``
(``examples/config/world_model/<name>.yaml``). Figures go to ``<out>/<name>/log.json`` (one
record per evaluation) and are printed as they come.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import yaml
from tensordict import TensorDictBase

from torchrl_prelar import PreLARLoss, make_world_model
from torchrl_prelar.data.dataset import VideoExperienceReplay
from torchrl_prelar.data.sources.metaworld_scripted import (
    ScriptedVideoConfig,
    generate_scripted_videos,
)
from torchrl_prelar.data.sources.rlbench import RLBenchSource
from torchrl_prelar.envs.metaworld import METAWORLD_EVAL_TASKS
from torchrl_prelar.evaluation.latent_actions import (
    episodes_to_clips,
    evaluate_latent_actions,
    load_episodes,
)
from torchrl_prelar.training.pretrain import PreLARPretrainer, make_optimizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))  # its world models

#: (folder, tasks (None: the pre-training tasks), episodes per task, seed) of each video set.
VIDEO_SETS = {
    "train": ("videos_train", None, 1, 0),
    "seen": ("videos_heldout_seen", None, 1, 1),
    "unseen": ("videos_unseen", tuple(METAWORLD_EVAL_TASKS), 4, 2),
}
#: The option that gives an existing folder for each set instead of rendering it.
FOLDER_OPTIONS = {"train": "--videos", "seen": "--seen", "unseen": "--unseen"}
SUMMARY_KEYS = ("probe_r2", "state_kl", "shuffled_state_kl", "psnr_own", "delta_psnr")
#: Printed too when the held-out episodes carry the true state.
STATE_KEYS = ("probe_r2_state_only", "probe_r2_with_state")


def render_video_sets(
    data_dir: Path, episode_length: int, given: dict[str, Path | None]
) -> dict[str, Path]:
    """Render (or complete) the video sets under ``data_dir``, but those ``given`` a folder."""
    folders = {}
    for name, (folder, tasks, episodes, seed) in VIDEO_SETS.items():
        if given.get(name) is not None:
            if not given[name].is_dir():
                option = FOLDER_OPTIONS[name]
                raise SystemExit(f"{option}: {given[name]} is not a folder of episodes.")
            folders[name] = given[name]
            continue
        settings = {"tasks": tasks} if tasks else {}
        config = ScriptedVideoConfig(
            noise_std=0.1, episode_length=episode_length, seed=seed, **settings
        )
        folders[name] = data_dir / folder
        print(f"{name}: {generate_scripted_videos(folders[name], config, episodes)}")
    return folders


class SupervisedActionLoss(torch.nn.Module):
    """MSE of a linear read-out of the latent action model's code against the true action."""

    def __init__(self, world_model: torch.nn.Module, action_dim: int):
        super().__init__()
        self.world_model = world_model
        self.readout = torch.nn.Linear(world_model.action_model.action_dim, action_dim)

    def forward(self, batch: TensorDictBase) -> torch.Tensor:
        used = ~batch["is_init"].squeeze(-1)
        code = self.world_model.infer_latent_action(batch.clone())["latent_action"]
        return (self.readout(code) - batch["true_action"]).pow(2)[used].mean()


class SupervisedTrainer:
    """One Adam step of :class:`SupervisedActionLoss`; returns its value as a metric."""

    def __init__(self, loss: SupervisedActionLoss, optimizer: torch.optim.Optimizer):
        self.loss, self.optimizer = loss, optimizer

    def update(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        value = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        value.backward()
        self.optimizer.step()
        return {"loss": value.detach()}


def main() -> None:
    from dreamer_prelar_utils import example_world_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="variant name (output sub-folder)")
    parser.add_argument("--loss", default="{}", help="YAML mapping of PreLARLoss arguments")
    parser.add_argument("--model", default="{}", help="YAML mapping of world-model changes")
    parser.add_argument("--world-model", default="small", choices=["paper", "small", "tiny"])
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--probe-every", type=int, default=100)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--num-transitions", type=int, default=24)
    parser.add_argument("--episode-length", type=int, default=100)
    parser.add_argument("--context", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--supervised", action="store_true", help="inverse dynamics reference")
    parser.add_argument("--data", type=Path, default=Path("runs/latent_action_variants/data"))
    parser.add_argument("--out", type=Path, default=Path("runs/latent_action_variants"))
    for name, option in FOLDER_OPTIONS.items():
        parser.add_argument(option, dest=name, type=Path, help=f"existing {name} episodes")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    given = {name: getattr(args, name) for name in FOLDER_OPTIONS}
    folders = render_video_sets(args.data, args.episode_length, given)
    held_out = {
        name: episodes_to_clips(load_episodes(folders[name]), num_transitions=args.num_transitions)
        for name in ("seen", "unseen")
    }
    buffer = VideoExperienceReplay(
        [RLBenchSource(folders["train"], name="metaworld")],
        num_transitions=args.num_transitions,
        batch_size=args.batch,
        root=(args.data if args.train is None else args.out / "buffers" / args.name)
        / f"buffer_T{args.num_transitions}",
    )
    torch.manual_seed(args.seed)
    model_overrides = yaml.safe_load(args.model)
    if args.supervised:
        model_overrides.setdefault("latent_action", {})["output_type"] = "deterministic"
    world_model = make_world_model(**example_world_model(args.world_model, model_overrides))
    if args.supervised:
        loss = SupervisedActionLoss(world_model, held_out["seen"]["true_action"].shape[-1])
        trainer = SupervisedTrainer(loss, make_optimizer(loss.parameters(), lr=args.lr))
    else:
        loss = PreLARLoss(world_model, **yaml.safe_load(args.loss))
        trainer = PreLARPretrainer(loss, make_optimizer(loss.parameters(), lr=args.lr))
    out = args.out / args.name
    out.mkdir(parents=True, exist_ok=True)
    records, seconds = [], 0.0

    def evaluate(step: int, metrics: dict[str, float]) -> None:
        record = {"step": step, "seconds_per_update": seconds / max(step, 1), **metrics}
        for name, clips in held_out.items():
            figures = evaluate_latent_actions(
                loss.world_model, clips, context=args.context, seed=args.seed
            )
            record[name] = figures
            shown = [key for key in (*SUMMARY_KEYS, *STATE_KEYS) if key in figures]
            print(step, name, {key: round(figures[key], 3) for key in shown}, flush=True)
        records.append(record)
        (out / "log.json").write_text(json.dumps({"args": vars(args), "log": records}, default=str))

    evaluate(0, {})
    for step in range(1, args.updates + 1):
        tick = time.perf_counter()
        metrics = trainer.update(buffer.sample())
        seconds += time.perf_counter() - tick
        if step % args.probe_every == 0 or step == args.updates:
            evaluate(step, {key: float(value) for key, value in metrics.items()})
    torch.save(loss.state_dict(), out / "loss.pt")


if __name__ == "__main__":
    main()
