"""The settings that define a run, recorded in its folder: a call with other ones is refused.

A checkpoint holds the state of the modules its settings built. Resumed under another objective
or world model it fails deep in ``load_state_dict`` or, worse, resumes as if it had been made
with the new settings. :func:`check_run_settings` records, per stage, the settings of
:data:`RUN_DEFINING_KEYS` in ``<run_dir>/run_settings.json`` and refuses a later call that asks
for other ones, before any file of the run folder is touched. Counts (updates, env steps,
``max_seconds``, threads) are not recorded: a run is extended or resumed by changing them.
The world model is recorded as its resolved arguments; a record in the preset format, which
names it by a preset (``{"preset", "overrides"}``), is resolved as preset-format checkpoints
are (:func:`~torchrl_prelar.legacy.legacy_world_model_kwargs`). A world-model setting added to
the library after a run was recorded is not in its record: the run was made with that
setting's default, so a call that keeps the default resumes it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torchrl_prelar.io import atomic_write_text
from torchrl_prelar.legacy import legacy_world_model_kwargs
from torchrl_prelar.modules.world_model import resolve_world_model_kwargs

__all__ = ["RUN_DEFINING_KEYS", "RUN_SETTINGS_FILE", "check_run_settings"]

#: The record, in the run folder.
RUN_SETTINGS_FILE = "run_settings.json"
#: Per stage, the configuration entries (dotted keys of ``examples/config/config.yaml``) that
#: change what the stage's checkpoint holds or what it optimises. ``finetune.init`` is one of
#: pre-training's too: ``apv`` and ``contextwm`` pre-train an action-free world model.
RUN_DEFINING_KEYS: dict[str, tuple[str, ...]] = {
    "pretrain": ("world_model", "loss", "finetune.init"),
    "finetune": (
        "world_model",
        "loss",
        "finetune.arm",
        "finetune.init",
        "finetune.task",
        "finetune.actor",
        "finetune.critic",
        "finetune.intrinsic",
        "finetune.reward_loss",
    ),
}
_NOT_SET = "(not set)"


def check_run_settings(
    run_dir: str | Path,
    stage: str,
    config: Mapping[str, Any],
    *,
    checkpoint: str | Path,
    keys: Sequence[str] | None = None,
) -> None:
    """Refuse a call of ``stage`` whose run-defining settings differ from the run's.

    While the stage's ``checkpoint`` does not exist, nothing was run to conflict with: the
    stage's settings of ``config`` are recorded (rewritten if they changed) in
    ``<run_dir>/run_settings.json``. Once it exists, they are compared with the record and a
    difference raises before anything is written. A run folder with a checkpoint but no
    record for the stage is accepted and the record is written.

    Args:
        run_dir (str or Path): the run folder.
        stage (str): the stage called, e.g. ``"pretrain"``; each stage has its own record.
        config (Mapping[str, Any]): the call's configuration (nested mappings, read by
            dotted key).

    Keyword Args:
        checkpoint (str or Path): the stage's checkpoint file or folder (a folder counts
            once it holds something).
        keys (sequence of str, optional): the dotted keys compared. Keys absent from the
            record are not compared. Defaults to ``None`` (``RUN_DEFINING_KEYS[stage]``).

    Raises:
        ValueError: naming every differing setting with the run's value and the call's, and
            the fix (another ``run_dir``, or the run's settings); or if the record cannot be
            read.

    Examples:
        >>> import tempfile
        >>> run_dir = Path(tempfile.mkdtemp())
        >>> prelar = {"world_model": {"rssm": {"deter": 64}}, "loss": {"beta_action": 0.1}}
        >>> check_run_settings(run_dir, "pretrain", prelar, checkpoint=run_dir / "last.pt")
        >>> _ = (run_dir / "last.pt").write_bytes(b"")  # the stage has run
        >>> paper = {"world_model": {"rssm": {"deter": 64}}, "loss": {"beta_action": 1.0}}
        >>> check_run_settings(run_dir, "pretrain", paper, checkpoint=run_dir / "last.pt")
        Traceback (most recent call last):
        ...
        ValueError: ... loss.beta_action: 0.1 in the run, 1.0 in this call...
    """
    run_dir, checkpoint = Path(run_dir), Path(checkpoint)
    keys = RUN_DEFINING_KEYS[stage] if keys is None else keys
    path = run_dir / RUN_SETTINGS_FILE
    record = _read_record(path)
    current = json.loads(json.dumps({key: _lookup(config, key) for key in keys}))
    recorded = _resolve_legacy_world_model(record.get(stage))
    if _has_run(checkpoint) and recorded is not None:
        defaults = _leaves(resolve_world_model_kwargs(), "world_model")
        differences = [
            line
            for key in keys
            if key in recorded
            for line in _differences(recorded[key], current[key], key, defaults)
        ]
        if differences:
            raise ValueError(
                f"run_dir {run_dir} holds a {stage} run made with other settings than this "
                "call's:\n  " + "\n  ".join(differences) + "\nUse another run_dir, or call "
                f"with the settings the run was made with (recorded in {path})."
            )
        return
    if recorded != current:
        atomic_write_text(path, json.dumps({**record, stage: current}, indent=2))


def _read_record(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{path} cannot be read as JSON ({type(err).__name__}: {err}); expected the "
            "settings each stage of the run was made with. Delete it: the next call records "
            "its own settings."
        ) from err
    if not isinstance(record, dict):
        raise ValueError(
            f"{path} holds a {type(record).__name__}, expected an object of settings per stage. "
            "Delete it: the next call records its own settings."
        )
    return record


def _resolve_legacy_world_model(recorded: dict[str, Any] | None) -> dict[str, Any] | None:
    """``recorded`` with a preset-format ``world_model`` (preset and overrides) resolved."""

    world_model = (recorded or {}).get("world_model")
    if not isinstance(world_model, Mapping) or "preset" not in world_model:
        return recorded
    contextwm = recorded.get("finetune.init") == "contextwm"
    resolved = legacy_world_model_kwargs(world_model, contextwm=contextwm)
    return {**recorded, "world_model": json.loads(json.dumps(resolved))}


def _lookup(config: Mapping[str, Any], key: str) -> Any:
    """``config``'s value at the dotted ``key`` (``None`` where a part is missing)."""
    value: Any = config
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _has_run(checkpoint: Path) -> bool:
    return checkpoint.is_file() or (checkpoint.is_dir() and any(checkpoint.iterdir()))


def _leaves(value: Any, prefix: str) -> dict[str, Any]:
    """``value`` flattened to dotted keys under ``prefix`` (empty mappings hold no leaf)."""
    if not isinstance(value, Mapping):
        return {prefix: value}
    leaves: dict[str, Any] = {}
    for name, item in value.items():
        leaves.update(_leaves(item, f"{prefix}.{name}"))
    return leaves


def _differences(recorded: Any, current: Any, key: str, defaults: Mapping[str, Any]) -> list[str]:
    """``"<key>: <run's> in the run, <call's> in this call"`` for each differing leaf; a leaf
    the record lacks counts as its value in ``defaults`` (dotted keys), where it has one."""
    before, after = _leaves(recorded, key), _leaves(current, key)
    lines = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name, defaults.get(name, _NOT_SET)), after.get(name, _NOT_SET)
        if json.dumps(old) != json.dumps(new):
            lines.append(f"{name}: {_show(old)} in the run, {_show(new)} in this call")
    return lines


def _show(value: Any) -> str:
    return value if value == _NOT_SET else json.dumps(value)
