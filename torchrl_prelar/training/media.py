"""Outputs a person looks at: loss curves (PNG) and video predictions (GIF)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


def read_csv_scalars(csv_dir: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read TorchRL ``CSVLogger`` scalars (``.../scalars/<name>.csv`` files of ``step,value``).

    Series are named as they were logged (the path below ``scalars/``, e.g.
    ``"pretrain/loss"``). Rows repeated for a step (a resumed run logs again the steps after
    its last checkpoint) keep the last value.

    Examples:
        >>> import tempfile
        >>> from torchrl.record.loggers.csv import CSVLogger
        >>> root = tempfile.mkdtemp()
        >>> CSVLogger("run", log_dir=root).log_scalar("pretrain/loss", 2.0, step=1)
        >>> read_csv_scalars(root)["pretrain/loss"]
        (array([1]), array([2.]))
    """
    series = {}
    for path in sorted(Path(csv_dir).rglob("*.csv")):
        if "scalars" not in path.parts[:-1]:
            continue
        below = path.parts[len(path.parts) - path.parts[::-1].index("scalars") :]
        rows: dict[int, float] = {}
        with open(path, newline="") as file:
            for step, value in csv.reader(file):
                rows[int(float(step))] = float(value)
        steps = np.array(sorted(rows))
        series[str(Path(*below).with_suffix(""))] = (steps, np.array([rows[s] for s in steps]))
    return series


def plot_curves(
    series: dict[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    names: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """Plot one panel per named series into a PNG.

    Examples:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "curves.png"
        >>> plot_curves({"loss": (np.arange(3), np.ones(3))}, path).exists()
        True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name in (names or sorted(series)) if name in series]
    columns = min(3, max(1, len(names)))
    rows = max(1, -(-len(names) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    for axis, name in zip(axes.flat, names, strict=False):
        steps, values = series[name]
        axis.plot(steps, values)
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("step")
    for axis in list(axes.flat)[len(names) :]:
        axis.axis("off")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _to_uint8(frames: torch.Tensor) -> np.ndarray:
    """``[T, C, H, W]`` floats in [-0.5, 0.5] to ``[T, H, W, C]`` uint8."""
    return ((frames.float() + 0.5).clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


def save_prediction_gif(
    truth: torch.Tensor, prediction: torch.Tensor, context: int, path: str | Path, fps: int = 4
) -> Path:
    """Write a GIF of truth (left) beside prediction (right), one frame per step.

    A bar under the prediction is green for context frames (reconstructed from observations)
    and red for imagined ones.

    Examples:
        >>> import tempfile
        >>> clip = torch.zeros(4, 3, 8, 8)
        >>> save_prediction_gif(clip, clip, 2, Path(tempfile.mkdtemp()) / "p.gif").exists()
        True
    """
    import imageio.v3 as iio

    left, right = _to_uint8(truth), _to_uint8(prediction)
    steps, height, width, _ = left.shape
    bar = max(2, height // 16)
    canvas = np.zeros((steps, height + bar, 2 * width + 2, 3), np.uint8)
    canvas[:, :height, :width] = left
    canvas[:, :height, width + 2 :] = right
    for step in range(steps):
        colour = (0, 200, 0) if step < context else (220, 0, 0)
        canvas[step, height:, width + 2 :] = colour
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, canvas, duration=1000 / fps, loop=0)
    return path
