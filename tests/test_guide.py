"""The Python blocks of docs/guide.md run as written; its commands name files that exist.

A block runs in a fresh namespace, in an empty working folder. A block whose first line is
``# Reads: PATH ...`` gets a small generated file or folder at ``PATH`` first; one whose first
line is ``# Context: ...`` gets the objects it names from the test module named there.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, make_clip_batch

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "guide.md"
BLOCKS = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S)


def _write_videos(folder: Path) -> None:
    """Four APV-format episodes of 60 frames with actions and states."""
    folder.mkdir()
    generator = np.random.default_rng(0)
    for index in range(4):
        np.savez_compressed(
            folder / f"20240101T000000-ep{index}-59.npz",
            image=generator.integers(0, 256, (60, 64, 64, 3), dtype=np.uint8),
            action=generator.uniform(-1, 1, (60, 4)).astype(np.float32),
            state=generator.normal(size=(60, 4)).astype(np.float32),
        )


def _write_pretrained(path: Path) -> None:
    """A ``tiny`` pre-trained world model file, in the example's format."""
    from torchrl_prelar import make_world_model, resolve_world_model_kwargs
    from torchrl_prelar.io import save_checkpoint

    torch.manual_seed(0)
    path.parent.mkdir(parents=True)
    settings = resolve_world_model_kwargs(**TINY)
    save_checkpoint(
        path,
        {"world_model": make_world_model(**settings).state_dict(), "world_model_kwargs": settings},
    )


#: What a ``# Reads: PATH`` block gets at ``PATH`` before it runs.
READS: dict[str, Callable[[Path], None]] = {
    "videos/": _write_videos,
    "runs/prelar_quick/pretrained_world_model.pt": _write_pretrained,
}


def _torchrl_world_model() -> dict:
    from test_prelar_loss_torchrl_world_model import make_world_model

    world_model, parts = make_world_model()
    return {"world_model": world_model, "rollout": parts["rssm"]}


#: What a ``# Context: ... of MODULE`` block gets in its namespace.
CONTEXTS: dict[str, Callable[[], dict]] = {
    "tests/test_prelar_loss_torchrl_world_model.py": _torchrl_world_model,
}


def _first_line(block: str) -> str:
    return block.splitlines()[0]


def test_guide_has_its_blocks():
    assert len(BLOCKS) >= 7
    for block in BLOCKS:
        line = _first_line(block)
        if line.startswith("# Reads:"):
            assert line.split()[2] in READS, f"no generated data for {line!r}"
        if line.startswith("# Context:"):
            assert line.split(" of ")[-1] in CONTEXTS, f"no context for {line!r}"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_guide_block_runs(index, tmp_path, monkeypatch):
    block = BLOCKS[index]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    line = _first_line(block)
    if line.startswith("# Reads:"):
        READS[line.split()[2]](tmp_path / line.split()[2].rstrip("/"))
    if line.startswith("# Context:"):
        namespace.update(CONTEXTS[line.split(" of ")[-1]]())
    exec(compile(block, f"docs/guide.md block {index}", "exec"), namespace)
    _check(namespace)


def _check(namespace: dict) -> None:
    """What a block leaves behind, where a wrong result would not raise by itself."""
    from torchrl_prelar import ActionEncoder, PreLARLoss

    if "optim" in namespace:  # the world model, the latent action model and the loss
        encoder = namespace["world_model"].encoder
        assert all(parameter.grad is not None for parameter in encoder.parameters())
        assert {"loss_forward_reco", "loss_prior_reco"} <= set(namespace["losses"].keys())
    elif "make_action_encoder" in namespace:  # fine-tuning: the real action drives the RSSM
        world_model = namespace["world_model"]
        assert isinstance(world_model.action_model, ActionEncoder)
        batch = make_clip_batch()
        batch["action"] = torch.ones(*batch.shape, 4)
        assert world_model(batch)["latent_action"].shape == (*batch.shape, 16)
    elif "reference" in namespace:
        assert namespace["losses"]["loss_supervised"].item() > 0
    elif "figures" in namespace:
        figures = namespace["figures"]
        assert figures["state_kl_shuffled_ratio"] > 0 and "probe_r2_motion" in figures
    elif "data" in namespace:
        batch = namespace["batch"]
        assert batch["action"].shape == (16, 24, 4) and batch["true_state"].shape == (16, 24, 4)
    elif "agent" in namespace:
        assert namespace["agent"].loss is not None
    elif "UnsafeCheckpointError" in namespace:
        with pytest.raises(namespace["UnsafeCheckpointError"], match="unsafe.pt"):
            namespace["load_checkpoint"]("unsafe.pt")
    elif "loss" in namespace:  # the loss around a user's DreamerV3ModelLoss
        from test_prelar_loss_torchrl_world_model import video_batch

        assert isinstance(namespace["loss"], PreLARLoss)
        losses, _ = namespace["loss"](video_batch())
        assert {"loss_action_kl", "loss_consistency"} <= set(losses.keys())
    else:
        raise AssertionError("a guide block without a check: add one to _check")


def _commands() -> list[list[str]]:
    """The shell commands of the guide's bash blocks, continuation lines joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", GUIDE.read_text(), re.S):
        for command in block.replace("\\\n", " ").splitlines():
            words = shlex.split(command.split(" # ")[0])
            commands.append([word for word in words if "=" not in word or word.startswith("-")])
    return commands


def test_guide_commands_name_what_exists():
    commands = _commands()
    assert commands
    for words in commands:
        assert "python" in words, words
        program = words[words.index("python") + 1 :]
        if program[0] == "-m":
            assert importlib.util.find_spec(program[1]) is not None, program[1]
        else:
            assert (REPO / program[0]).is_file(), program[0]
