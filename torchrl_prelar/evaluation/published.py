"""Published Meta-world success curves that fine-tuning runs are compared against.

The curves are those of the APV paper (Seo et al., ICML 2022), DreamerV2 from scratch and APV,
as its public repository ships them (``data/metaworld_raw_data.pkl``), converted to
``docs/results/published/metaworld_success_apv_repo.json`` with their source (repository,
commit, evaluation protocol) in its ``source`` block: per algorithm and task, 8 seeds x 25
success rates at 5000, 15000, ..., 245000 env steps on Meta-world v2 tasks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "PUBLISHED_CURVES_FILE",
    "load_published_curves",
    "published_summary",
]

#: The committed file, relative to the repository root.
PUBLISHED_CURVES_FILE = Path("docs/results/published/metaworld_success_apv_repo.json")


def _default_path() -> Path:
    return Path(__file__).resolve().parents[2] / PUBLISHED_CURVES_FILE


def load_published_curves(path: str | Path | None = None) -> dict[str, Any]:
    """Reads the published Meta-world success curves.

    Args:
        path (str or Path, optional): the JSON file. Defaults to ``None``: the committed
            ``docs/results/published/metaworld_success_apv_repo.json`` of the repository this
            package is imported from. An installed package has no ``docs/`` folder: pass
            ``path`` there.

    Returns:
        the file's content: ``source`` (where the numbers come from), ``env_steps`` (the
        evaluation points) and ``curves`` (``{algorithm: {task: [seed][point]}}``).

    Raises:
        FileNotFoundError: if the file is missing (the message names the path looked at).
        ValueError: if the file lacks ``env_steps`` or ``curves``, or the curve of a seed does
            not have one value per env step.

    Examples:
        >>> import json, tempfile
        >>> from pathlib import Path
        >>> doc = {"source": {}, "env_steps": [5000, 15000],
        ...        "curves": {"APV": {"metaworld_reach": [[0.0, 0.5], [0.25, 1.0]]}}}
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     file = Path(folder) / "curves.json"
        ...     _ = file.write_text(json.dumps(doc))
        ...     loaded = load_published_curves(file)
        >>> sorted(loaded["curves"]["APV"])
        ['metaworld_reach']
    """
    file = _default_path() if path is None else Path(path)
    if not file.is_file():
        where = "the default location" if path is None else "path"
        raise FileNotFoundError(
            f"published curves not found at {where} {file}; the repository commits them as "
            f"{PUBLISHED_CURVES_FILE} (pass its location as path when the package is installed "
            "without docs/)"
        )
    document = json.loads(file.read_text())
    missing = [key for key in ("env_steps", "curves") if key not in document]
    if missing:
        raise ValueError(f"{file} lacks {', '.join(missing)}: not a published-curves file")
    points = len(document["env_steps"])
    for algorithm, tasks in document["curves"].items():
        for task, seeds in tasks.items():
            lengths = sorted({len(seed) for seed in seeds})
            if not seeds or lengths != [points]:
                raise ValueError(
                    f"{file}: curves[{algorithm!r}][{task!r}] has {len(seeds)} seed(s) of "
                    f"length(s) {lengths}, expected one value per env step ({points})"
                )
    return document


def published_summary(
    curves: Mapping[str, Any], algorithm: str, task: str
) -> dict[int, dict[str, float]]:
    """Summarises the success rate over seeds (mean, min and max) at each evaluation point.

    Args:
        curves (Mapping): the published curves, as :func:`load_published_curves` returns them.
        algorithm (str): an algorithm of ``curves["curves"]`` (``"DreamerV2"`` or ``"APV"`` in
            the committed file).
        task (str): a task of that algorithm, as the file names it (e.g.
            ``"metaworld_reach"``).

    Returns:
        ``{env_step: {"mean": ..., "min": ..., "max": ...}}`` in the order of
        ``curves["env_steps"]``.

    Raises:
        KeyError: if ``algorithm`` or ``task`` is unknown (the message lists the available
            ones).
        ValueError: if ``curves`` lacks ``env_steps`` or ``curves``.

    Examples:
        >>> doc = {"env_steps": [5000, 15000],
        ...        "curves": {"APV": {"metaworld_reach": [[0.0, 0.5], [0.25, 1.0]]}}}
        >>> published_summary(doc, "APV", "metaworld_reach")[15000]
        {'mean': 0.75, 'min': 0.5, 'max': 1.0}
        >>> published_summary(doc, "APV", "reach-v3")
        Traceback (most recent call last):
            ...
        KeyError: "unknown task 'reach-v3' for algorithm 'APV'; available: metaworld_reach"
    """
    missing = [key for key in ("env_steps", "curves") if key not in curves]
    if missing:
        raise ValueError(
            f"curves lacks {', '.join(missing)}: pass what load_published_curves returns"
        )
    algorithms = curves["curves"]
    if algorithm not in algorithms:
        raise KeyError(
            f"unknown algorithm {algorithm!r}; available: {', '.join(sorted(algorithms))}"
        )
    tasks = algorithms[algorithm]
    if task not in tasks:
        raise KeyError(
            f"unknown task {task!r} for algorithm {algorithm!r}; "
            f"available: {', '.join(sorted(tasks))}"
        )
    values = np.asarray(tasks[task], dtype=np.float64)
    return {
        int(step): {
            "mean": float(values[:, point].mean()),
            "min": float(values[:, point].min()),
            "max": float(values[:, point].max()),
        }
        for point, step in enumerate(curves["env_steps"])
    }
