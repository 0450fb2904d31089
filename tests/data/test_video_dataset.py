"""VideoExperienceReplay as a TorchRL dataset: preprocessed once, reopened as it is, checked on
reopening; VideoClipTransform's keys inside a TorchRL replay buffer."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, ReplayBuffer, SliceSampler
from torchrl.data.datasets import BaseDatasetExperienceReplay
from torchrl.envs.transforms import Compose, RenameTransform, Transform

from torchrl_prelar.data.clips import VideoClipTransform
from torchrl_prelar.data.dataset import VideoExperienceReplay
from torchrl_prelar.data.episodes import Episode, SkippedEpisode
from torchrl_prelar.data.sources.rlbench import RLBenchSource
from torchrl_prelar.data.sources.ssv2 import SSv2Source
from torchrl_prelar.data.sources.video_folder import VideoFolderSource
from torchrl_prelar.data.writer import _STATS_FIELDS, VideoDatasetError, VideoDatasetStats

iio = pytest.importorskip("imageio.v3")

T = 4
SIZE = 16


def frames_for(ep: int, num_frames: int, size: int = SIZE) -> np.ndarray:
    """Frames whose channel 0 is the episode id and channel 1 the frame index."""
    frames = np.random.default_rng(ep).integers(0, 256, (num_frames, size, size, 3), np.uint8)
    frames[..., 0] = ep
    frames[..., 1] = np.arange(num_frames, dtype=np.uint8)[:, None, None]
    return frames


def episodes_with_actions(num: int, num_frames: int = 10) -> list[Episode]:
    actions = np.ones((num_frames, 2), np.float32)
    return [Episode(frames_for(i, num_frames), actions, name=f"ep{i}") for i in range(num)]


def fingerprint(folder: Path) -> dict[str, tuple[int, str]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.md5(p.read_bytes()).hexdigest())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def stored(data: VideoExperienceReplay) -> TensorDict:
    return data.storage.get(torch.arange(len(data))).clone()


# Real loaders on small generated data; the method each decodes an episode with ----------------


def rlbench_source(folder: Path) -> RLBenchSource:
    folder.mkdir()
    for ep, num_frames in enumerate([8, 12, 9]):
        actions = np.zeros((num_frames, 3), np.float32)
        np.savez_compressed(
            folder / f"20240101T0000{ep:02d}-id{ep}-{num_frames - 1}.npz",
            image=frames_for(ep, num_frames),
            action=actions,
        )
    return RLBenchSource(folder, image_size=(SIZE, SIZE))


def ssv2_source(folder: Path) -> SSv2Source:
    frames = folder / "frames"
    for video_id, num_frames in [("101", 7), ("102", 9)]:
        (frames / video_id).mkdir(parents=True)
        for i, frame in enumerate(frames_for(int(video_id), num_frames), start=1):
            iio.imwrite(frames / video_id / f"{i:06d}.jpg", frame)
    (folder / "list.txt").write_text("101 7 3\n102 9 4\n")
    return SSv2Source(frames, folder / "list.txt", image_size=(SIZE, SIZE))


def video_folder_source(folder: Path) -> VideoFolderSource:
    for ep, num_frames in enumerate([8, 11]):
        sequence = folder / f"seq{ep}"
        sequence.mkdir(parents=True)
        for i, frame in enumerate(frames_for(ep, num_frames)):
            iio.imwrite(sequence / f"{i}.png", frame)
    return VideoFolderSource(folder, image_size=(SIZE, SIZE))


LOADERS = {
    "rlbench": (rlbench_source, RLBenchSource, "_load"),
    "ssv2": (ssv2_source, SSv2Source, "_load"),
    "video_folder": (video_folder_source, VideoFolderSource, "_decode"),
}


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_preprocessed_once_then_reopened_as_it_is(loader, tmp_path, monkeypatch):
    make_source, source_class, decode = LOADERS[loader]
    source = make_source(tmp_path / "raw")
    decoded = []
    original = getattr(source_class, decode)

    def counting(self, item):
        decoded.append(item)
        return original(self, item)

    monkeypatch.setattr(source_class, decode, counting)
    root = tmp_path / "dataset"
    data = VideoExperienceReplay([source], root=root, num_transitions=T, batch_size=3, capacity=60)
    assert decoded and VideoExperienceReplay.is_preprocessed(root)
    first = stored(data)
    torch.manual_seed(0)
    sample = data.sample()
    files = fingerprint(root)
    del data
    decoded.clear()

    reopened = VideoExperienceReplay(
        [source], root=root, num_transitions=T, batch_size=3, capacity=60
    )
    assert decoded == [], "episodes already written were decoded again"
    assert fingerprint(root) == files, "reopening rewrote files"
    assert torch.equal(stored(reopened)["pixels"], first["pixels"])
    assert (stored(reopened) == first).all()
    torch.manual_seed(0)
    assert (reopened.sample() == sample).all()
    assert reopened.stats.episodes == len(first["episode"].unique())
    assert fingerprint(root) == files, "sampling wrote files"


def test_a_torchrl_dataset(tmp_path):
    root = tmp_path / "dataset"
    data = VideoExperienceReplay(episodes_with_actions(3), root=root, num_transitions=T)
    assert isinstance(data, BaseDatasetExperienceReplay)
    assert data.root == data.data_path == data.data_path_root == root
    data.delete()
    assert not root.exists() and not VideoExperienceReplay.is_preprocessed(root)
    in_memory = VideoExperienceReplay(episodes_with_actions(3), num_transitions=T)
    with pytest.raises(ValueError, match="in-memory"):
        _ = in_memory.data_path


def test_inherited_preprocess_on_a_full_dataset(tmp_path):
    data = VideoExperienceReplay(episodes_with_actions(2), num_transitions=T)
    assert len(data) == data.storage.max_size  # capacity from the episodes: full

    def halve(frame):
        return frame.set("pixels", frame["pixels"][..., ::2, ::2].contiguous())

    storage = data.preprocess(halve, num_workers=1, mp_start_method="fork", dest=tmp_path / "half")
    assert storage[:]["pixels"].shape == (len(data), 3, SIZE // 2, SIZE // 2)
    assert torch.equal(storage[:]["pixels"], data.storage[:]["pixels"][..., ::2, ::2])


def test_sample_in_clips_info_not_written_into_it():
    data = VideoExperienceReplay(episodes_with_actions(4), num_transitions=T, batch_size=2)
    assert data.sample().batch_size == (2, T)
    with pytest.warns(UserWarning, match="conflicting batch_sizes"):
        assert data.sample(5).batch_size == (5, T)
    batch, info = data.sample(return_info=True)
    (index,) = info["index"]
    assert index.shape == (2 * (T + 1),) and "index" not in batch.keys()
    frames = data.storage.get(index)["pixels"].reshape(2, T + 1, 3, SIZE, SIZE)
    assert torch.equal(batch["pixels"], frames[:, :-1])
    assert next(iter(data)).batch_size == (2, T)


class _SeesClips(Transform):
    """Records the batch size it is applied to and adds a key."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, tensordict):
        self.seen.append(tensordict.batch_size)
        return tensordict.set("seen", torch.ones(tensordict.shape, dtype=torch.bool))


@pytest.mark.parametrize("prefetch", [None, 2])
def test_transform_applied_on_sample(tmp_path, prefetch):
    sees = _SeesClips()
    transform = Compose(RenameTransform(["true_action"], ["action"]), sees)
    root = tmp_path / "dataset"
    VideoExperienceReplay(episodes_with_actions(4), root=root, num_transitions=T)
    data = VideoExperienceReplay(
        root=root, num_transitions=T, batch_size=3, transform=transform, prefetch=prefetch
    )
    batch = data.sample()
    assert set(batch.keys(include_nested=True, leaves_only=True)) == {
        "pixels",
        ("next", "pixels"),
        "is_init",
        "episode",
        "action",
        "seen",
    }
    assert batch["action"].shape == (3, T, 2) and batch["seen"].all()
    assert sees.seen and set(sees.seen) == {torch.Size([3, T])}


def test_renamed_keys_through_a_replay_buffer_keep_every_other_entry():
    num_frames, clips = 12, 3
    storage = TensorDict(
        {
            "cam": torch.arange(2 * num_frames, dtype=torch.uint8)[:, None, None, None].expand(
                -1, 3, 2, 2
            ),
            "depth": torch.zeros(2 * num_frames, 3, 2, 2, dtype=torch.uint8),
            "clip": torch.arange(2 * num_frames) // num_frames,
            ("extra", "step"): torch.arange(2 * num_frames, dtype=torch.float32),
        },
        batch_size=[2 * num_frames],
    )
    rb = ReplayBuffer(
        storage=LazyTensorStorage(2 * num_frames),
        sampler=SliceSampler(slice_len=T + 1, traj_key="clip", strict_length=True),
        batch_size=clips * (T + 1),
        transform=VideoClipTransform(
            T,
            in_keys=["cam", "depth"],
            out_keys=[("succ", "cam"), "depth_next"],
            episode_key="clip",
            init_key="first",
        ),
    )
    rb.extend(storage)
    batch = rb.sample()
    assert batch.batch_size == (clips, T)
    assert set(batch.keys(include_nested=True, leaves_only=True)) == {
        "cam",
        ("succ", "cam"),
        "depth",
        "depth_next",
        "clip",
        ("extra", "step"),
        "first",
    }
    assert not any(key in batch.keys(True) for key in ("pixels", ("next", "pixels"), "is_init"))
    cam = batch["cam"].float()
    assert torch.equal(cam[..., 0, 0, 0], batch["extra", "step"])  # entries of o_t
    assert torch.equal(batch["succ", "cam"][:, :-1], batch["cam"][:, 1:])
    assert batch["first"][:, 0].all() and not batch["first"][:, 1:].any()


# Bad input --------------------------------------------------------------------------------------


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _set_meta(key, field, value):
    return lambda root: _edit_json(
        root / "storage" / "meta.json", lambda meta: meta[key].__setitem__(field, value)
    )


CORRUPTIONS = {
    "truncated pixels": (
        lambda root: os.truncate(root / "storage" / "pixels.memmap", 100),
        r"pixels\.memmap: 100 bytes, expected \d+ \('pixels': torch.uint8",
    ),
    "missing actions file": (
        lambda root: (root / "storage" / "true_action.memmap").unlink(),
        r"true_action\.memmap: 0 bytes, expected",
    ),
    "pixels of another size": (
        _set_meta("pixels", "shape", [40, 3, 8, 8]),
        r"meta\.json: 'pixels' is \('torch.uint8', \[40, 3, 8, 8\]\), expected torch.uint8 "
        r"\[40, 3, 16, 16\]",
    ),
    "float pixels": (
        _set_meta("pixels", "dtype", "torch.float32"),
        r"'pixels' is \('torch.float32'.*expected torch.uint8",
    ),
    "actions of another width": (
        _set_meta("true_action", "shape", [40, 3]),
        r"'true_action' is .*expected torch.float32 \[40, 2\]",
    ),
    "unknown key": (
        lambda root: _edit_json(
            root / "storage" / "meta.json",
            lambda meta: meta.__setitem__("reward", dict(meta["episode"])),
        ),
        r"keys \['episode', 'pixels', 'reward', 'true_action'\], expected "
        r"\['episode', 'pixels', 'true_action'\]",
    ),
    "stats not JSON": (
        lambda root: (root / "video_dataset.json").write_text("{'episodes': 4"),
        r"video_dataset\.json: cannot be read as JSON .*expected the statistics",
    ),
    "stats field of the wrong type": (
        lambda root: _edit_json(
            root / "video_dataset.json", lambda stats: stats.__setitem__("frames", "40")
        ),
        r"video_dataset\.json: field 'frames' is '40', expected a count",
    ),
    "stats with an unknown field": (
        lambda root: _edit_json(
            root / "video_dataset.json", lambda stats: stats.__setitem__("hook", "os.system")
        ),
        r"unknown fields \['hook'\]",
    ),
    "length not the stats'": (
        lambda root: _edit_json(
            root / "storage" / "storage_metadata.json", lambda meta: meta.__setitem__("len", 30)
        ),
        r"storage_metadata\.json: len is 30, expected 40",
    ),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_dataset_refused_naming_file_and_expectation(tmp_path, corruption):
    corrupt, message = CORRUPTIONS[corruption]
    root = tmp_path / "dataset"
    VideoExperienceReplay(episodes_with_actions(4), root=root, num_transitions=T)
    corrupt(root)
    files = fingerprint(root)
    with pytest.raises(VideoDatasetError, match=message):
        VideoExperienceReplay(root=root, num_transitions=T)
    assert fingerprint(root) == files, "a refused dataset was modified (e.g. a file extended)"


class _CreatesMarker:
    """Unpickling it creates the file ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_npz_with_pickled_array_skipped_without_unpickling(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    marker = tmp_path / "marker"
    image = np.empty(1, dtype=object)
    image[0] = _CreatesMarker(marker)
    np.savez(folder / "20240101T000000-evil-8.npz", image=image)
    np.savez(folder / "20240101T000001-good-8.npz", image=frames_for(1, 9))
    data = VideoExperienceReplay(
        [RLBenchSource(folder, image_size=(SIZE, SIZE))], num_transitions=T
    )
    (skipped,) = data.stats.skipped
    assert skipped["name"] == "20240101T000000-evil-8.npz" and skipped["kind"] == "corrupt"
    assert "allow_pickle" in skipped["reason"] and str(folder) in skipped["reason"]
    assert not marker.exists() and data.stats.episodes == 1


def test_wrong_shaped_episode_skipped_naming_it():
    bad_actions = Episode(frames_for(0, 10), np.zeros((9, 2), np.float32), name="short-actions")
    gray = Episode(np.zeros((10, SIZE, SIZE), np.uint8), name="gray")
    data = VideoExperienceReplay(
        [[*episodes_with_actions(1), bad_actions, gray]], num_transitions=T, capacity=60
    )
    reasons = {skip["name"]: skip["reason"] for skip in data.stats.skipped}
    assert reasons["short-actions"] == (
        "short-actions: actions have shape (9, 2), expected [10, A] (one per frame, APV convention)"
    )
    assert reasons["gray"].startswith("gray: frames have dtype uint8 and shape (10, 16, 16)")
    assert "expected uint8 [N, H, W, 3]" in reasons["gray"]
    assert data.stats.episodes == 1


def test_stats_fields_all_checked():
    assert set(_STATS_FIELDS) == {field.name for field in dataclasses.fields(VideoDatasetStats)}
    skipped = [dataclasses.asdict(SkippedEpisode("a.npz", "rlbench", "a.npz: truncated"))]
    assert _STATS_FIELDS["skipped"][0](skipped)
