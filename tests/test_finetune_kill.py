"""Fine-tuning killed with SIGKILL mid-run resumes from its last checkpoint."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from dreamer_prelar import run_finetune
from dreamer_prelar_utils import FINETUNE_CHECKPOINT as CHECKPOINT_NAME
from dreamer_prelar_utils import make_finetune_buffer, read_finetune_checkpoint
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from torchrl_prelar.io import load_checkpoint
from torchrl_prelar.training.checkpoint import (
    latest_checkpoint,
    read_torchrl_checkpoint,
    remove_interrupted_saves,
)
from torchrl_prelar.training.run_lock import run_lock

REPO = Path(__file__).resolve().parents[1]
TOTAL = 200
# From scratch (no pre-training needed): prefill 50, one update per 5 env steps from step 50,
# a checkpoint every 50 env steps; the run is killed once the first one is on disk.
OVERRIDES = [
    "preset=test",
    "arm=dreamer",
    f"finetune.env_steps={TOTAL}",
    "finetune.checkpoint_every=50",
    "finetune.eval_every=1000",
    "threads=1",
]
RUN = """
import sys
from pathlib import Path
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(sys.argv[1]).parent))  # examples/
from dreamer_prelar import run_finetune

with initialize_config_dir(sys.argv[1], version_base=None):
    config = compose("config", overrides=sys.argv[2:])
run_finetune(OmegaConf.to_container(config, resolve=True))
"""
SAVER = """
import sys, torch
from torchrl_prelar.io import save_checkpoint

step = 0
while True:
    step += 1
    save_checkpoint(sys.argv[1], {"step": step, "weights": torch.full((8_000_000,), float(step))})
"""

ROTATING_SAVER = """
import sys, torch
from torchrl.checkpoint import Checkpoint, CheckpointRotation, JSONCheckpointAdapter

rotation = CheckpointRotation(sys.argv[1], keep_last=1)
weights = torch.nn.Module()
weights.register_buffer("value", torch.zeros(8_000_000))
step = 0
while True:
    step += 1
    weights.value.fill_(float(step))
    checkpoint = Checkpoint(weights=weights)
    checkpoint.register("step", {"step": step}, adapter=JSONCheckpointAdapter())
    rotation.save(checkpoint, step=step)
"""


def config(run_dir):
    with initialize_config_dir(str(REPO / "examples" / "config"), version_base=None):
        composed = compose("config", overrides=[*OVERRIDES, f"run_dir={run_dir}"])
    return OmegaConf.to_container(composed, resolve=True)


def wait_for(condition, process, timeout=120.0):
    deadline = time.time() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"exited early: {process.communicate()[1][-3000:]}")
        if time.time() > deadline:
            process.kill()
            raise AssertionError("timed out")
        time.sleep(0.02)


def adam_steps(state):
    return {float(entry["step"]) for entry in state["stepper"]["optimizer"]["state"].values()}


def test_sigkill_mid_run_resumes_from_the_last_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    checkpoint = run_dir / CHECKPOINT_NAME
    env = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1"}
    args = [str(REPO / "examples" / "config"), *OVERRIDES, f"run_dir={run_dir}"]
    process = subprocess.Popen(
        [sys.executable, "-c", RUN, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: any(checkpoint.glob("checkpoint-*")), process)
    assert process.poll() is None  # still running: killed mid-run
    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    killed = read_finetune_checkpoint(run_dir)  # the latest checkpoint is complete
    steps, updates = killed["progress"]["env_steps"], killed["progress"]["updates"]
    assert 50 <= steps < TOTAL and updates == (steps - 50) // 5 + 1
    assert adam_steps(killed) == {float(updates)}
    stored = make_finetune_buffer(config(run_dir)["finetune"])
    stored.loads(run_dir / killed["replay"])
    assert len(stored) == steps
    before = stored[:steps]

    summary = run_finetune(config(run_dir))
    final = read_finetune_checkpoint(run_dir)
    # Counters continue from the checkpoint: one update per 5 new env steps, no re-fill.
    assert summary["env_steps"] == final["progress"]["env_steps"] == TOTAL
    assert final["progress"]["updates"] == updates + (TOTAL - steps) // 5
    # Adam continued from its saved moments (it counts every update of both runs).
    assert adam_steps(final) == {float(final["progress"]["updates"])}
    # The replay was restored as it was, then extended; trajectory ids are never reused.
    replay = make_finetune_buffer(config(run_dir)["finetune"])
    replay.loads(run_dir / final["replay"])
    assert len(replay) == TOTAL
    after = replay[:TOTAL]
    for key in [("next", "pixels"), "action", "traj_id"]:
        assert torch.equal(after[:steps].get(key), before.get(key)), key
    assert after["traj_id"][steps:].min() > before["traj_id"].max()
    assert list(checkpoint.iterdir()) == [final["path"]]  # the older one was deleted


def test_checkpoint_killed_mid_write_stays_readable(tmp_path):
    """SIGKILL while ``save_checkpoint`` writes: the latest checkpoint is the last complete one."""
    path = tmp_path / "last.pt"
    process = subprocess.Popen(
        [sys.executable, "-c", SAVER, str(path)], stderr=subprocess.PIPE, text=True
    )
    wait_for(lambda: path.exists() and any(tmp_path.glob(f".{path.name}.*.tmp")), process)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    state = load_checkpoint(path)
    assert state["step"] >= 1 and bool((state["weights"] == state["step"]).all())


def test_rotating_torchrl_checkpoint_killed_mid_write_stays_readable(tmp_path):
    """SIGKILL while a ``CheckpointRotation`` saves (as fine-tuning does): the latest
    ``checkpoint-<step>`` is complete, and the killed save's leftovers are removed."""
    directory = tmp_path / "checkpoints"
    process = subprocess.Popen(
        [sys.executable, "-c", ROTATING_SAVER, str(directory)], stderr=subprocess.PIPE, text=True
    )
    wait_for(
        lambda: any(directory.glob("checkpoint-*")) and any(directory.glob(".checkpoint-*")),
        process,
    )
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    remove_interrupted_saves(directory)  # what the save under way when killed left
    assert not any(directory.glob(".*"))
    state = read_torchrl_checkpoint(latest_checkpoint(directory))
    step = state["step"]["step"]
    assert step >= 1 and bool((state["weights"]["value"] == step).all())


def test_checkpoint_every_seconds_adds_checkpoints_between_the_env_step_ones(tmp_path, monkeypatch):
    import dreamer_prelar

    saved = []
    save = dreamer_prelar.save_finetune_checkpoint

    def counting_save(run_dir, agent, ratio, buffer, progress, save_replay):
        saved.append((run_dir.name, progress.env_steps))
        save(run_dir, agent, ratio, buffer, progress, save_replay)

    monkeypatch.setattr(dreamer_prelar, "save_finetune_checkpoint", counting_save)
    for name, seconds in (("steps_only", None), ("every_batch", 0)):
        cfg = config(tmp_path / name)
        cfg["finetune"].update(
            env_steps=100, checkpoint_every=1000, checkpoint_every_seconds=seconds
        )
        summary = run_finetune(cfg)
        assert summary["env_steps"] == 100
    by_run = {name: [steps for run, steps in saved if run == name] for name, _ in saved}
    assert by_run["steps_only"] == [100]  # env steps never cross 1000: the final one only
    # update_every 5: a checkpoint after every collected batch of 5 env steps.
    assert by_run["every_batch"] == list(range(5, 101, 5))


def test_checkpoint_every_seconds_must_be_a_finite_non_negative_number(tmp_path):
    cfg = config(tmp_path / "run")
    cfg["finetune"]["checkpoint_every_seconds"] = -1
    with pytest.raises(ValueError, match="finetune.checkpoint_every_seconds must be a finite"):
        run_finetune(cfg)


def test_a_second_invocation_on_a_running_run_folder_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    with run_lock(run_dir, "finetune"):
        with pytest.raises(RuntimeError, match=f"already running in process {os.getpid()}"):
            run_finetune(config(run_dir))
        assert not (run_dir / CHECKPOINT_NAME).exists()  # refused before anything ran
    summary = run_finetune(
        {**config(run_dir), "finetune": {**config(run_dir)["finetune"], "env_steps": 60}}
    )
    assert summary["env_steps"] == 60  # the lock went with its holder


def test_the_lock_goes_with_a_killed_process(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from torchrl_prelar.training.run_lock import run_lock\n"
            "with run_lock(sys.argv[1], 'pretrain'):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(60)\n",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RuntimeError, match=f"process {holder.pid}"):
        with run_lock(tmp_path, "pretrain"):
            pass
    with run_lock(tmp_path, "finetune"):  # each stage has its own lock
        pass
    holder.kill()
    holder.wait()
    with run_lock(tmp_path, "pretrain") as lock:
        assert lock.read_text() == f"{os.getpid()}\n"
