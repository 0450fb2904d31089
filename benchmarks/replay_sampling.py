"""Clip-sampling throughput of the video dataset (``VideoExperienceReplay``), transform included.

Fills a buffer with a few hundred synthetic 64x64 episodes, then times ``rb.sample()`` (slice
sampling of ``B`` clips of ``T + 1`` frames + :class:`VideoClipTransform`) for on-disk
(``LazyMemmapStorage``) and in-memory (``LazyTensorStorage``) storage, with and without
prefetching. Compare against one ``paper`` pre-training update (``--reference-update-seconds``,
measured with ``../shared/tools/ref_pretrain_bench.py`` on the same machine): sampling must be at
least 20x faster so it never limits training.

Example:
    python benchmarks/replay_sampling.py --reference-update-seconds 10.5
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensordict
import torch
import torchrl
from _machine import cpu_model

from torchrl_prelar.data.dataset import VideoExperienceReplay
from torchrl_prelar.data.episodes import Episode

TARGET_RATIO = 20.0


def synthetic_episodes(num: int, length: int, size: int, seed: int = 0) -> Iterator[Episode]:
    rng = np.random.default_rng(seed)
    for ep in range(num):
        frames = rng.integers(0, 256, size=(length, size, size, 3), dtype=np.uint8)
        yield Episode(frames, name=f"synthetic-{ep}", source="synthetic")


def time_sampling(rb, batches: int, warmup: int = 3) -> float:
    """Seconds per batch over ``batches`` calls to ``rb.sample()``."""
    for _ in range(warmup):
        rb.sample()
    start = time.perf_counter()
    for _ in range(batches):
        rb.sample()
    return (time.perf_counter() - start) / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--episode-frames", type=int, default=60)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--num-transitions", "-T", type=int, default=24)
    parser.add_argument("--batch-size", "-B", type=int, default=16)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--prefetch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--root", type=Path, default=None, help="memmap folder (default: tmp)")
    parser.add_argument("--reference-update-seconds", type=float, default=None)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    print(f"cpu: {cpu_model()} | logical cpus: {torch.multiprocessing.cpu_count()}")
    print(
        f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), "
        f"torch threads {torch.get_num_threads()}, torchrl {torchrl.__version__}, "
        f"tensordict {tensordict.__version__}"
    )
    clip_frames = args.num_transitions + 1
    capacity = args.episodes * args.episode_frames
    print(
        f"buffer: {args.episodes} episodes x {args.episode_frames} frames of "
        f"{args.image_size}x{args.image_size} ({capacity * 3 * args.image_size**2 / 2**20:.0f} "
        f"MiB uint8); batch {args.batch_size} clips x {clip_frames} frames "
        f"(T={args.num_transitions})"
    )
    with tempfile.TemporaryDirectory() as tmp:
        roots = {"memmap": args.root or Path(tmp) / "buffer", "memory": None}
        results = []
        for kind, root in roots.items():
            for prefetch in [None] + ([args.prefetch] if args.prefetch else []):
                rb = VideoExperienceReplay(
                    num_transitions=args.num_transitions,
                    batch_size=args.batch_size,
                    root=root,
                    capacity=capacity,
                    prefetch=prefetch,
                )
                if len(rb) == 0:
                    episodes = synthetic_episodes(
                        args.episodes, args.episode_frames, args.image_size
                    )
                    start = time.perf_counter()
                    rb.write_episodes(episodes)
                    print(f"{kind}: wrote {len(rb)} frames in {time.perf_counter() - start:.1f} s")
                seconds = time_sampling(rb, args.batches)
                results.append((kind, prefetch or 0, seconds))

    print(
        f"\n{'storage':<8} {'prefetch':>8} {'ms/batch':>9} {'batches/s':>10} {'clips/s':>9}", end=""
    )
    ratio_header = args.reference_update_seconds is not None
    print(f" {'x faster than update':>21}" if ratio_header else "")
    worst_ratio = None
    for kind, prefetch, seconds in results:
        line = (
            f"{kind:<8} {prefetch:>8} {seconds * 1e3:>9.2f} {1 / seconds:>10.1f} "
            f"{args.batch_size / seconds:>9.0f}"
        )
        if ratio_header:
            ratio = args.reference_update_seconds / seconds
            worst_ratio = ratio if worst_ratio is None else min(worst_ratio, ratio)
            line += f" {ratio:>21.0f}"
        print(line)
    if worst_ratio is not None:
        verdict = "OK" if worst_ratio >= TARGET_RATIO else "TOO SLOW"
        print(
            f"\nslowest configuration samples {worst_ratio:.0f}x faster than one reference update "
            f"of {args.reference_update_seconds:.2f} s (target >= {TARGET_RATIO:.0f}x): {verdict}"
        )
    if args.json:
        rates = [args.batch_size / seconds for _, _, seconds in results]
        result = {
            "batch": args.batch_size,
            "transitions": args.num_transitions,
            "configurations": [
                {"storage": kind, "prefetch": prefetch, "clips_per_s": round(rate, 1)}
                for (kind, prefetch, _), rate in zip(results, rates, strict=True)
            ],
            "slowest_clips_per_s": round(min(rates), 1),
            "fastest_clips_per_s": round(max(rates), 1),
        }
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
