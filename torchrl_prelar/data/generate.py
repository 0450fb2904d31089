"""Generate the action-free Meta-world pre-training videos from scripted experts (resumable).

Usage::

    python -m torchrl_prelar.data.generate --out DIR --episodes-per-task N \\
        [--tasks a-v3,b-v3] [--noise 0.1] [--episode-length 500] [--seed 0] [--render-quality fast]

Re-running the same command after an interruption writes only the missing episodes.

Examples:
    >>> from torchrl_prelar.data.generate import main
    >>> main(["--out", "/tmp/videos", "--episodes-per-task", "1",
    ...       "--tasks", "pick-place-v3", "--episode-length", "10"])  # doctest: +SKIP
    1 episodes written (11 frames), 0 already present, 2.4 s
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from torchrl_prelar.data.sources.metaworld_scripted import (
    GenerationSummary,
    IncompatibleOutputError,
    ScriptedVideoConfig,
    generate_scripted_videos,
)
from torchrl_prelar.envs.metaworld import RENDER_QUALITIES

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """Returns the command-line parser of the generator.

    Examples:
        >>> build_parser().parse_args(["--out", "videos", "--episodes-per-task", "2"]).noise
        0.1
    """
    parser = argparse.ArgumentParser(
        prog="python -m torchrl_prelar.data.generate",
        description="Render Meta-world scripted-expert episodes as APV-format .npz videos.",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--episodes-per-task", type=int, required=True, help="episodes per task")
    parser.add_argument(
        "--tasks",
        default=None,
        help="comma-separated Meta-world v3 tasks (default: all but the 6 evaluation tasks)",
    )
    parser.add_argument("--noise", type=float, default=0.1, help="action-noise std (0.1)")
    parser.add_argument("--episode-length", type=int, default=500, help="actions per episode")
    parser.add_argument("--seed", type=int, default=0, help="base seed (0)")
    parser.add_argument("--image-size", type=int, default=64, help="frame size (64)")
    parser.add_argument("--camera", default="corner", help="MuJoCo camera (corner)")
    parser.add_argument(
        "--render-quality",
        default="fast",
        choices=sorted(RENDER_QUALITIES),
        help="fast (no shadows, no MSAA), antialiased (4x MSAA) or metaworld (MSAA, shadows)",
    )
    return parser


def _config_from_args(args: argparse.Namespace) -> ScriptedVideoConfig:
    kwargs = {}
    if args.tasks is not None:
        kwargs["tasks"] = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    return ScriptedVideoConfig(
        noise_std=args.noise,
        episode_length=args.episode_length,
        image_size=args.image_size,
        camera=args.camera,
        render_quality=args.render_quality,
        seed=args.seed,
        **kwargs,
    )


def main(argv: Sequence[str] | None = None) -> GenerationSummary:
    """Runs the generator with command-line arguments ``argv`` and prints a summary.

    Args:
        argv (sequence of str, optional): the arguments. Defaults to ``None``
            (``sys.argv[1:]``).

    Returns:
        the :class:`~torchrl_prelar.data.sources.metaworld_scripted.GenerationSummary`.

    Raises:
        SystemExit: with a usage message if an argument is out of range, ``--out`` is a file,
            or ``--out`` holds episodes generated with other settings.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.episodes_per_task < 1:
        parser.error(f"--episodes-per-task must be positive, got {args.episodes_per_task}")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        parser.error(f"--out {args.out} is a file: give a folder (new, or of generated episodes)")
    try:
        config = _config_from_args(args)
    except ValueError as err:
        parser.error(str(err))
    total = len(config.tasks) * args.episodes_per_task
    try:
        with tqdm(total=total, unit="episode", desc="scripted videos") as progress:
            summary = generate_scripted_videos(
                args.out, config, args.episodes_per_task, on_episode=progress.update
            )
    except IncompatibleOutputError as err:
        parser.error(str(err))
    print(summary)
    return summary


if __name__ == "__main__":
    main()
