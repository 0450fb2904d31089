"""Fine-tuning with two environment workers (TorchRL ParallelEnv): bookkeeping and resume."""

from pathlib import Path

import pytest
import torch
from dreamer_prelar import run_finetune
from dreamer_prelar_utils import make_finetune_buffer, read_finetune_checkpoint
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
# Two workers, 30-step episodes; batches of 2 x 5 steps; prefill 50, then two updates per
# batch (one per 5 env steps).
OVERRIDES = [
    "preset=test",
    "arm=dreamer",
    "finetune.env_workers=2",
    "finetune.max_episode_steps=30",
    "finetune.eval_every=1000",
    "threads=1",
]


def config(run_dir, *overrides):
    with initialize_config_dir(str(REPO / "examples" / "config"), version_base=None):
        composed = compose("config", overrides=[*OVERRIDES, f"run_dir={run_dir}", *overrides])
    return OmegaConf.to_container(composed, resolve=True)


def replay(run_dir):
    state = read_finetune_checkpoint(run_dir)
    buffer = make_finetune_buffer(config(run_dir)["finetune"])
    buffer.loads(run_dir / state["replay"])
    return state, buffer


def test_two_env_workers_keep_episodes_apart_and_resume(tmp_path):
    run_dir = tmp_path / "run"
    first = run_finetune(config(run_dir, "finetune.env_steps=80"))
    assert first["env_steps"] == 80 and first["updates"] == 8  # at 50, 60, 70, 80: two each
    assert first["episodes"] == 2  # one finished 30-step episode per worker (40 steps each)
    state, buffer = replay(run_dir)
    assert len(buffer) == 80
    ids = first_ids = buffer[:]["traj_id"]  # [worker, time]
    assert ids.shape == (2, 40)
    # Each worker's row holds its own episodes, contiguous; no id is shared by workers.
    assert set(ids[0].tolist()).isdisjoint(ids[1].tolist())
    for row in ids:
        assert (row[:30] == row[0]).all() and (row[30:] == row[30]).all() and row[30] != row[0]
    # Sampled slices never straddle two episodes.
    slices = buffer.sample().reshape(3, 10)["traj_id"]
    assert (slices == slices[:, :1]).all()

    with pytest.raises(ValueError, match="finetune.env_workers=2"):
        run_finetune(config(run_dir, "finetune.env_workers=1", "finetune.env_steps=120"))

    second = run_finetune(config(run_dir, "finetune.env_steps=120"))
    assert second["env_steps"] == 120 and second["updates"] == 16
    state, buffer = replay(run_dir)
    assert len(buffer) == 120
    ids = buffer[:]["traj_id"]
    assert torch.equal(ids[:, :40], first_ids)
    assert ids[:, 40:].min() > ids[:, :40].max()  # trajectories after the resume: new ids
    assert state["progress"]["next_traj_id"] == int(ids.max()) + 1
