"""Reading checkpoints of the preset format (the format of 2026-11-27).

A preset-format checkpoint names its world model by a preset of the library and overrides
of it, ``{"preset": "small", "overrides": {...}}`` (the ``"config"`` entry of a pre-trained
model file, the ``"world_model_config"`` entry of a pre-training checkpoint). Checkpoints of
the library hold the resolved arguments of the world model, ``"world_model_kwargs"``, which
rebuild the same model whatever the presets say. :func:`upgrade_checkpoint` resolves a
preset-format entry with the presets and defaults of that format (:data:`PRESETS_2275562`,
:data:`DEFAULTS_2275562`, :data:`CONTEXT_DEFAULTS_2275562`), frozen here; the loaders of the
library call it on every file they read, and the command writes a converted copy::

    python -m torchrl_prelar.legacy convert runs/old/pretrained_world_model.pt new.pt

Examples:
    >>> kwargs = legacy_world_model_kwargs({"preset": "tiny", "overrides": {"rssm": {"deter": 32}}})
    >>> kwargs["rssm"], kwargs["encoder"]["depth"]
    ({'deter': 32, 'hidden': 64, 'categoricals': 8, 'classes': 8}, 8)
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from torchrl_prelar.baselines.contextwm import resolve_contextwm_kwargs
from torchrl_prelar.io import load_checkpoint, save_checkpoint
from torchrl_prelar.modules.world_model import resolve_world_model_kwargs

__all__ = [
    "CONTEXT_DEFAULTS_2275562",
    "DEFAULTS_2275562",
    "PRESETS_2275562",
    "legacy_world_model_kwargs",
    "load_world_model_checkpoint",
    "main",
    "upgrade_checkpoint",
]

#: The world-model presets of the preset format (its
#: ``torchrl_prelar/configs/world_model/<preset>.yaml`` files).
PRESETS_2275562: dict[str, dict[str, Any]] = {
    "paper": {
        "image_size": 64,
        "channels": 3,
        "encoder": {"type": "resnet", "widths": [48, 96, 192], "blocks_per_stage": 2},
        "decoder": {"type": "resnet", "widths": [192, 96, 48, 24]},
        "rssm": {"deter": 1024, "hidden": 1024, "categoricals": 32, "classes": 32},
        "latent_action": {
            "dim": 64,
            "hidden": 1024,
            "output_type": "gaussian",
            "input_mode": "concat",
            "window": 2,
            "shift": 0,
            "num_categoricals": 8,
            "trunk": {
                "type": "resnet",
                "widths": [48, 96, 192],
                "blocks_per_stage": 2,
                "padding": "zeros",
            },
        },
        "action_encoder": {"hidden": 1024, "depth": 1},
        "reward_head": {"hidden": 400, "depth": 4},
        "activation_checkpointing": False,
    },
    "small": {
        "image_size": 64,
        "channels": 3,
        "encoder": {"type": "conv", "depth": 16, "mults": [1, 2, 4, 8]},
        "decoder": {"type": "conv", "depth": 16, "mults": [1, 2, 4, 8]},
        "rssm": {"deter": 256, "hidden": 256, "categoricals": 16, "classes": 16},
        "latent_action": {
            "dim": 16,
            "hidden": 256,
            "output_type": "gaussian",
            "input_mode": "concat",
            "window": 2,
            "shift": 0,
            "num_categoricals": 4,
            "trunk": {"type": "conv", "depth": 16, "mults": [1, 2, 4, 8], "padding": "zeros"},
        },
        "action_encoder": {"hidden": 256, "depth": 1},
        "reward_head": {"hidden": 128, "depth": 2},
        "activation_checkpointing": False,
    },
    "tiny": {
        "image_size": 64,
        "channels": 3,
        "encoder": {"type": "conv", "depth": 8, "mults": [1, 2, 4, 4]},
        "decoder": {"type": "conv", "depth": 8, "mults": [1, 2, 4, 4]},
        "rssm": {"deter": 64, "hidden": 64, "categoricals": 8, "classes": 8},
        "latent_action": {
            "dim": 8,
            "hidden": 64,
            "output_type": "gaussian",
            "input_mode": "concat",
            "window": 2,
            "shift": 0,
            "num_categoricals": 4,
            "trunk": {"type": "conv", "depth": 8, "mults": [1, 2, 4, 4], "padding": "zeros"},
        },
        "action_encoder": {"hidden": 64, "depth": 1},
        "reward_head": {"hidden": 64, "depth": 2},
        "activation_checkpointing": False,
    },
}
#: The preset format's defaults where a preset is silent: pixel encoders flatten their last
#: map and pad with zeros, no frame shift, no activation checkpointing.
DEFAULTS_2275562: dict[str, Any] = {
    "encoder": {"pool": "flatten", "padding": "zeros"},
    "latent_action": {"shift": 0, "trunk": {"pool": "flatten", "padding": "zeros"}},
    "activation_checkpointing": False,
}
#: ContextWM's ``context`` settings where a preset-format configuration is silent.
CONTEXT_DEFAULTS_2275562: dict[str, Any] = {
    "resolutions": [16, 8],
    "heads": 4,
    "mask_ratio": 0.75,
    "dropout": 0.1,
    "frame": "random",
    "shift": 0,
}
_OLD_ENTRIES = {"config": "world_model", "world_model_config": "trainer"}


def _merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` over ``base``, nested mappings key by key (the preset format's merge)."""
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def legacy_world_model_kwargs(
    config: Mapping[str, Any], *, contextwm: bool = False
) -> dict[str, Any]:
    """The resolved world-model arguments of a preset-format ``{"preset", "overrides"}`` entry.

    Args:
        config (Mapping[str, Any]): the ``{"preset", "overrides"}`` entry.

    Keyword Args:
        contextwm (bool, optional): the checkpoint holds a ContextWM model, whose
            ``context`` settings are resolved too (other models ignore them). Defaults to
            ``False``.

    Returns:
        the resolved arguments, as :func:`~torchrl_prelar.modules.resolve_world_model_kwargs`
        (or :func:`~torchrl_prelar.baselines.resolve_contextwm_kwargs`) returns them.

    Raises:
        ValueError: if ``config`` names no preset of :data:`PRESETS_2275562`.
    """
    preset = config.get("preset")
    if preset not in PRESETS_2275562:
        raise ValueError(
            f"World-model entry {dict(config)} names no preset of 2026-11-27 (expected "
            f"'preset' to be one of {sorted(PRESETS_2275562)}): it cannot be resolved."
        )
    settings = _merge(DEFAULTS_2275562, PRESETS_2275562[preset])
    settings = _merge(settings, config.get("overrides") or {})
    context = settings.pop("context", None) or {}
    if contextwm:
        return resolve_contextwm_kwargs(**settings, context={**CONTEXT_DEFAULTS_2275562, **context})
    return resolve_world_model_kwargs(**settings)


def upgrade_checkpoint(content: Mapping[str, Any]) -> dict[str, Any]:
    """``content`` with its preset-format world-model entry replaced by ``"world_model_kwargs"``.

    A pre-trained model file's ``"config"`` and a pre-training checkpoint's
    ``"world_model_config"`` are resolved by :func:`legacy_world_model_kwargs` (a ContextWM
    model is told by its ``context_encoder.`` weights); a checkpoint without either is
    returned as it is.

    Args:
        content (Mapping[str, Any]): a loaded checkpoint.

    Examples:
        >>> old = {"world_model": {}, "config": {"preset": "small", "overrides": {}}}
        >>> sorted(upgrade_checkpoint(old))
        ['world_model', 'world_model_kwargs']
    """
    content = dict(content)
    for entry, weights in _OLD_ENTRIES.items():
        if entry in content and weights in content and "world_model_kwargs" not in content:
            names = content[weights]
            names = names.get("model", names) if weights == "trainer" else names
            content["world_model_kwargs"] = legacy_world_model_kwargs(
                content.pop(entry), contextwm=_has_context_encoder(names)
            )
    return content


def _has_context_encoder(names: Iterable[str]) -> bool:
    return any("context_encoder." in name for name in names)


def load_world_model_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """:func:`~torchrl_prelar.io.load_checkpoint`, a preset-format file upgraded on the way.

    Args:
        path (str or Path): the checkpoint file.
        map_location (str or torch.device, optional): where tensors are loaded. Defaults to
            ``"cpu"``.

    Returns:
        the checkpoint's content, passed through :func:`upgrade_checkpoint`.
    """
    return upgrade_checkpoint(load_checkpoint(path, map_location))


def convert_checkpoint(old: str | Path, new: str | Path) -> Path:
    """Write ``new``: the checkpoint ``old`` with ``"world_model_kwargs"``.

    Args:
        old (str or Path): the preset-format checkpoint.
        new (str or Path): where the converted copy (:func:`upgrade_checkpoint`) is written.

    Returns:
        ``new``, as a :class:`~pathlib.Path`.

    Raises:
        ValueError: if ``old`` holds no world-model entry to convert.
    """
    content = load_world_model_checkpoint(old)
    if "world_model_kwargs" not in content:
        raise ValueError(
            f"{old} holds {sorted(content)}: no world-model entry ('config' beside "
            "'world_model', or 'world_model_config' beside 'trainer') to convert."
        )
    return save_checkpoint(new, content)


def main(argv: Sequence[str] | None = None) -> Path:
    """``python -m torchrl_prelar.legacy convert OLD NEW``.

    Args:
        argv (sequence of str, optional): the command-line arguments. Defaults to ``None``
            (``sys.argv``).

    Returns:
        the path of the converted checkpoint.
    """

    parser = argparse.ArgumentParser(
        prog="python -m torchrl_prelar.legacy",
        description="Convert a checkpoint of 2026-11-27 (world model named by a preset) to "
        "one holding the resolved world-model arguments.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert", help="write a converted copy of a checkpoint")
    convert.add_argument("old", type=Path, help="pretrained_world_model.pt or pretrain_last.pt")
    convert.add_argument("new", type=Path, help="where the converted checkpoint goes")
    args = parser.parse_args(argv)
    path = convert_checkpoint(args.old, args.new)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
