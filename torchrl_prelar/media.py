"""Outputs a person looks at: loss curves (PNG) and video predictions (GIF)."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch


def read_csv_scalars(csv_dir: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read TorchRL ``CSVLogger`` scalars (``.../scalars/<name>.csv`` files of ``step,value``).

    Series are named as they were logged (the path below ``scalars/``, e.g.
    ``"pretrain/loss"``). Rows repeated for a step (a resumed run logs again the steps after
    its last checkpoint) keep the last value.

    Args:
        csv_dir (str or Path): the logger's folder, searched recursively.

    Returns:
        a dict from series name to ``(steps, values)`` arrays.

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
    names: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    title: str = "",
    xlabel: str = "step",
) -> Path:
    """Plot the named series into a PNG, one panel per name or per group of names.

    ``names`` is a list (a panel per series, titled by its name) or a mapping from a panel's
    title to the series drawn together in it, with a legend; names missing from ``series``
    are left out, and so is a panel left empty. A series of fewer than 30 points (e.g.
    evaluations) is drawn as markers.

    Args:
        series (dict): series name to ``(steps, values)`` arrays, as
            :func:`read_csv_scalars` returns them.
        path (str or Path): the PNG file written.
        names (sequence of str or Mapping[str, sequence of str], optional): the series
            drawn. Defaults to ``None`` (every series, one panel each).
        title (str, optional): the figure's title. Defaults to ``""`` (none).
        xlabel (str, optional): the label of every panel's x axis. Defaults to ``"step"``.

    Returns:
        ``path``, as a :class:`~pathlib.Path`.

    Examples:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "curves.png"
        >>> plot_curves({"loss": (np.arange(3), np.ones(3))}, path).exists()
        True
        >>> panels = {"probe": ["probe_seen", "probe_unseen"], "absent": ["x"]}
        >>> steps = np.arange(2)
        >>> series = {"probe_seen": (steps, np.ones(2)), "probe_unseen": (steps, np.zeros(2))}
        >>> plot_curves(series, path, panels).exists()
        True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if names is None or not isinstance(names, Mapping):
        names = {name: [name] for name in (names or sorted(series))}
    panels = {
        panel: [name for name in members if name in series] for panel, members in names.items()
    }
    panels = {panel: members for panel, members in panels.items() if members}
    columns = min(3, max(1, len(panels)))
    rows = max(1, -(-len(panels) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    for axis, (panel, members) in zip(axes.flat, panels.items(), strict=False):
        for name in members:
            steps, values = series[name]
            few = len(steps) < 30
            axis.plot(
                steps,
                values,
                marker="o" if few else None,
                markersize=4,
                linestyle=":" if few else "-",
                label=name.rsplit("/", 1)[-1],
            )
        axis.set_title(panel, fontsize=10)
        axis.set_xlabel(xlabel)
        if len(members) > 1:
            axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(panels) :]:
        axis.axis("off")
    if title:
        figure.suptitle(title)
    figure.tight_layout(rect=(0, 0, 1, 0.95) if title else None)
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

    Args:
        truth (torch.Tensor): the observed clip, ``[T, C, H, W]`` in [-0.5, 0.5].
        prediction (torch.Tensor): the predicted clip, of the same shape.
        context (int): number of context (observed) steps.
        path (str or Path): the GIF file written.
        fps (int, optional): frames per second. Defaults to ``4``.

    Returns:
        ``path``, as a :class:`~pathlib.Path`.

    Examples:
        >>> import tempfile
        >>> clip = torch.zeros(4, 3, 8, 8)
        >>> save_prediction_gif(clip, clip, 2, Path(tempfile.mkdtemp()) / "p.gif").exists()
        True
    """
    return save_video_panels(
        [truth, prediction], path, context=context, bars=[False, True], fps=fps
    )


def save_video_panels(
    panels: Sequence[torch.Tensor],
    path: str | Path,
    *,
    context: int,
    bars: Sequence[bool],
    labels: Sequence[str] | None = None,
    fps: int = 4,
) -> Path:
    """Write a GIF of ``[T, C, H, W]`` clips in [-0.5, 0.5] side by side, one frame per step.

    Panels are 2 pixels apart. Under each panel whose ``bars`` entry is True, a bar is green
    for the first ``context`` steps (observed) and red afterwards (imagined). ``labels`` are
    written in a strip above the panels.

    Args:
        panels (sequence of torch.Tensor): the clips, ``[T, C, H, W]`` in [-0.5, 0.5].
        path (str or Path): the GIF file written.

    Keyword Args:
        context (int): number of observed steps.
        bars (sequence of bool): whether each panel has a context bar.
        labels (sequence of str, optional): one label per panel. Defaults to ``None``.
        fps (int, optional): frames per second. Defaults to ``4``.

    Returns:
        ``path``, as a :class:`~pathlib.Path`.

    Raises:
        ValueError: if ``bars`` or ``labels`` does not have one entry per panel.

    Examples:

        >>> import tempfile
        >>> clip = torch.zeros(4, 3, 8, 8)
        >>> path = Path(tempfile.mkdtemp()) / "p.gif"
        >>> save_video_panels([clip] * 3, path, context=2, bars=[False, False, True],
        ...                   labels=["A", "B", "C"]).exists()
        True
    """
    import imageio.v3 as iio

    if len(bars) != len(panels) or (labels is not None and len(labels) != len(panels)):
        raise ValueError(
            f"Expected one bars (and labels) entry per panel: {len(panels)} panels, "
            f"{len(bars)} bars, {None if labels is None else len(labels)} labels."
        )
    frames = [_to_uint8(panel) for panel in panels]
    steps, height, width, _ = frames[0].shape
    bar = max(2, height // 16)
    top = 12 if labels else 0
    canvas = np.zeros((steps, top + height + bar, len(frames) * (width + 2) - 2, 3), np.uint8)
    for index, (clip, barred) in enumerate(zip(frames, bars, strict=True)):
        left = index * (width + 2)
        canvas[:, top : top + height, left : left + width] = clip
        for step in range(steps if barred else 0):
            colour = (0, 200, 0) if step < context else (220, 0, 0)
            canvas[step, top + height :, left : left + width] = colour
    if labels:
        canvas[:, :top] = _label_strip(labels, canvas.shape[2], width + 2, top)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, canvas, duration=1000 / fps, loop=0)
    return path


def _label_strip(labels: Sequence[str], total_width: int, stride: int, height: int) -> np.ndarray:
    """White text on black, one label at the left of each panel."""
    from PIL import Image, ImageDraw

    strip = Image.new("RGB", (total_width, height))
    draw = ImageDraw.Draw(strip)
    for index, label in enumerate(labels):
        draw.text((index * stride + 1, 0), label, fill=(255, 255, 255))
    return np.asarray(strip)
