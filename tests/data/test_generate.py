"""Tests of the scripted Meta-world video source and its resumable CLI."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from torchrl_prelar.data.generate import main
from torchrl_prelar.data.sources.metaworld_scripted import (
    IncompatibleOutputError,
    ScriptedVideoConfig,
    default_pretrain_tasks,
    episode_id,
    episode_seed,
    generate_scripted_videos,
    parse_episode_filename,
)
from torchrl_prelar.envs.metaworld import METAWORLD_EVAL_TASKS, make_metaworld_env

TASK = "pick-place-v3"
LENGTH = 8
CONFIG = ScriptedVideoConfig(tasks=(TASK,), episode_length=LENGTH, noise_std=0.1, seed=3)


def _episodes(folder: Path) -> dict[str, Path]:
    found = {}
    for path in folder.glob("*.npz"):
        parts = parse_episode_filename(path.name)
        assert parts is not None, f"unexpected file name {path.name}"
        found[parts[1]] = path
    return found


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return dict(data)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("videos")
    summary = generate_scripted_videos(out, CONFIG, episodes_per_task=2)
    assert (summary.written, summary.skipped, summary.frames) == (2, 0, 2 * (LENGTH + 1))
    return out


def test_files_shapes_dtypes_and_naming(generated):
    episodes = _episodes(generated)
    assert sorted(episodes) == [episode_id(TASK, 0), episode_id(TASK, 1)]
    for path in episodes.values():
        assert parse_episode_filename(path.name)[2] == LENGTH
        data = _load(path)
        assert data["image"].shape == (LENGTH + 1, 64, 64, 3)
        assert data["image"].dtype == np.uint8
        assert data["action"].shape == (LENGTH + 1, 4)
        assert data["action"].dtype == np.float32
        np.testing.assert_array_equal(data["action"][0], 0)
        assert np.abs(data["action"][1:]).max() <= 1
        assert np.abs(data["action"][1:]).sum() > 0
        assert data["reward"].shape == (LENGTH + 1,)
        assert data["success"].shape == (LENGTH + 1,)
        assert data["success"].dtype == bool
        # The hand position and gripper opening at every frame.
        assert data["state"].shape == (LENGTH + 1, 4) and data["state"].dtype == np.float32
        assert np.abs(np.diff(data["state"][:, :3], axis=0)).sum() > 0  # the hand moves
        assert ((data["state"][:, 3] >= 0) & (data["state"][:, 3] <= 1)).all()
    assert not list(generated.glob(".*"))


def test_metadata_records_settings(generated):
    metadata = json.loads((generated / "metadata.json").read_text())
    assert metadata["tasks"] == [TASK]
    assert metadata["noise_std"] == 0.1
    assert metadata["seed"] == 3
    assert metadata["episode_length"] == LENGTH
    assert metadata["episodes_per_task"] == 2
    assert metadata["image_size"] == 64
    assert metadata["camera"] == "corner"
    assert metadata["render_quality"] == "fast"
    assert metadata["render_settings"] == {"shadowsize": 0, "offsamples": 0}


def test_frames_follow_the_apv_action_convention(generated):
    """Frame 0 is the reset frame, and frame t follows from action[t] applied to frame t-1."""
    data = _load(_episodes(generated)[episode_id(TASK, 1)])
    env = make_metaworld_env(TASK, max_episode_steps=LENGTH, seed=CONFIG.seed)
    try:
        env.set_seed(episode_seed(CONFIG.seed, TASK, 1))
        actions = iter(torch.from_numpy(data["action"][1:]))
        td = env.rollout(LENGTH, policy=lambda td: td.set("action", next(actions)))
    finally:
        env.close()
    np.testing.assert_array_equal(td["pixels"][0].permute(1, 2, 0).numpy(), data["image"][0])
    replayed = td["next", "pixels"].permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(replayed, data["image"][1:])


def test_same_seed_same_episodes(generated, tmp_path):
    summary = generate_scripted_videos(tmp_path, CONFIG, episodes_per_task=1)
    assert summary.written == 1
    first = _load(_episodes(generated)[episode_id(TASK, 0)])
    again = _load(_episodes(tmp_path)[episode_id(TASK, 0)])
    for key in ("image", "action", "reward", "success"):
        np.testing.assert_array_equal(first[key], again[key])
    other = _load(_episodes(generated)[episode_id(TASK, 1)])
    assert not np.array_equal(first["image"], other["image"])


def test_existing_episodes_are_skipped(generated):
    before = sorted(p.name for p in generated.glob("*.npz"))
    summary = generate_scripted_videos(generated, CONFIG, episodes_per_task=2)
    assert (summary.written, summary.skipped) == (0, 2)
    assert sorted(p.name for p in generated.glob("*.npz")) == before


def test_complete_folder_is_not_written(generated):
    """Runs sharing a complete folder only check it: no file of it is written or removed,
    not even another writer's temporary file (removing it made that writer fail)."""
    in_flight = generated / ".metadata.json.4242.1.tmp"
    in_flight.write_text("another process is writing this")
    metadata = generated / "metadata.json"
    stamp = metadata.stat().st_mtime_ns
    try:
        summary = generate_scripted_videos(generated, CONFIG, episodes_per_task=2)
        assert (summary.written, summary.skipped) == (0, 2)
        assert in_flight.exists() and metadata.stat().st_mtime_ns == stamp
    finally:
        in_flight.unlink()


def test_other_settings_in_same_folder_are_refused(generated):
    other = ScriptedVideoConfig(tasks=(TASK,), episode_length=LENGTH, noise_std=0.3, seed=3)
    with pytest.raises(IncompatibleOutputError, match="noise_std"):
        generate_scripted_videos(generated, other, episodes_per_task=2)


def test_folder_written_before_named_render_qualities_is_read_as_fast(tmp_path):
    """``metadata.json`` of older folders holds ``fast_render``: still the same settings."""
    out = tmp_path / "videos"
    generate_scripted_videos(out, CONFIG, episodes_per_task=1)
    metadata = json.loads((out / "metadata.json").read_text())
    metadata["render_quality"] = metadata.pop("render_settings")
    metadata["fast_render"] = True
    (out / "metadata.json").write_text(json.dumps(metadata))
    assert generate_scripted_videos(out, CONFIG, episodes_per_task=1).written == 0
    antialiased = ScriptedVideoConfig(
        tasks=(TASK,), episode_length=LENGTH, noise_std=0.1, seed=3, render_quality="antialiased"
    )
    with pytest.raises(IncompatibleOutputError, match="render_quality"):
        generate_scripted_videos(out, antialiased, episodes_per_task=1)


def test_default_tasks_exclude_evaluation_tasks():
    tasks = default_pretrain_tasks()
    assert len(tasks) == 44
    assert not set(tasks) & set(METAWORLD_EVAL_TASKS)
    assert ScriptedVideoConfig().tasks == tasks


def test_unknown_task_gives_clear_error(tmp_path, capsys):
    with pytest.raises(ValueError, match="Unknown Meta-world task 'foo-v3'.*reach-v3"):
        ScriptedVideoConfig(tasks=("foo-v3",))
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path), "--episodes-per-task", "1", "--tasks", "push-v3,foo-v3"])
    assert exit_info.value.code == 2
    assert "Unknown Meta-world task 'foo-v3'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def _cli(out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torchrl_prelar.data.generate",
        "--out",
        str(out),
        "--episodes-per-task",
        "2",
        "--tasks",
        "push-v3,pick-place-v3",
        "--episode-length",
        "40",
    ]


def test_cli_resumes_after_kill(tmp_path):
    out = tmp_path / "videos"
    env = {**os.environ, "MUJOCO_GL": "egl"}
    process = subprocess.Popen(
        _cli(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while not list(out.glob("*.npz")) and process.poll() is None:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    first_run = sorted(p.name for p in out.glob("*.npz"))
    assert 1 <= len(first_run) < 4, "the first run should be killed part-way"
    (out / f".{first_run[0]}.999.tmp").write_bytes(b"half-written")

    result = subprocess.run(_cli(out), env=env, capture_output=True, text=True, check=True)

    expected = {episode_id(t, i) for t in ("push-v3", "pick-place-v3") for i in range(2)}
    episodes = _episodes(out)
    assert set(episodes) == expected
    assert len(list(out.glob("*.npz"))) == len(expected)
    assert set(first_run) <= {p.name for p in episodes.values()}
    for path in episodes.values():
        assert _load(path)["image"].shape == (41, 64, 64, 3)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert f"{len(first_run)} already present" in result.stdout
