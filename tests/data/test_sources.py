"""Episode sources: APV/RLBench npz, Something-Something-V2 frames, folders of videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from torchrl_prelar.data.dataset import VideoExperienceReplay
from torchrl_prelar.data.episodes import Episode, SkippedEpisode
from torchrl_prelar.data.sources.rlbench import RLBenchSource
from torchrl_prelar.data.sources.ssv2 import SSv2Source
from torchrl_prelar.data.sources.video_folder import VideoFolderSource, read_image
from torchrl_prelar.data.writer import VideoDatasetStats

iio = pytest.importorskip("imageio.v3")

T = 4


def frames_for(ep: int, num_frames: int, size: int = 64) -> np.ndarray:
    """Frames whose channel 0 is the episode id and channel 1 the frame index."""
    rng = np.random.default_rng(ep)
    frames = rng.integers(0, 256, size=(num_frames, size, size, 3), dtype=np.uint8)
    frames[..., 0] = ep
    frames[..., 1] = np.arange(num_frames, dtype=np.uint8)[:, None, None]
    return frames


def write_npz(folder: Path, ep: int, num_frames: int, *, size: int = 64, action: bool = True):
    path = folder / f"20240101T0000{ep:02d}-id{ep}-{num_frames - 1}.npz"
    data = {"image": frames_for(ep, num_frames, size), "reward": np.zeros(num_frames)}
    if action:
        acts = np.stack([np.full(num_frames, ep), np.arange(num_frames)], -1).astype(np.float32)
        acts[0] = 0  # APV: action[t] leads into frame t
        data["action"] = acts
    np.savez_compressed(path, **data)
    return path


def skipped_by_name(source) -> dict[str, SkippedEpisode]:
    return {item.name: item for item in source if isinstance(item, SkippedEpisode)}


# RLBench / APV npz ---------------------------------------------------------------------------


@pytest.fixture
def npz_folder(tmp_path) -> Path:
    folder = tmp_path / "rlbench"
    folder.mkdir()
    for ep, length in enumerate([8, 12, 3]):
        write_npz(folder, ep, length)
    good = write_npz(folder, 3, 9)
    (folder / "20240101T000004-corrupt-9.npz").write_bytes(b"not a zip file at all")
    (folder / "20240101T000005-truncated-9.npz").write_bytes(good.read_bytes()[:400])
    np.savez_compressed(folder / "20240101T000006-noimage-9.npz", action=np.zeros((10, 2)))
    write_npz(folder, 7, 10, size=32)
    return folder


def test_rlbench_bad_files_skipped_rest_loads(npz_folder):
    source = RLBenchSource(npz_folder, name="metaworld")
    assert len(source) == 8
    skipped = skipped_by_name(source.episodes(min_frames=T + 1))
    assert set(skipped) == {
        "20240101T000002-id2-2.npz",
        "20240101T000004-corrupt-9.npz",
        "20240101T000005-truncated-9.npz",
        "20240101T000006-noimage-9.npz",
        "20240101T000007-id7-9.npz",
    }
    assert skipped["20240101T000002-id2-2.npz"].kind == "too_short"
    for name in ("corrupt", "truncated"):
        item = skipped[f"20240101T00000{4 if name == 'corrupt' else 5}-{name}-9.npz"]
        assert item.kind == "corrupt" and "corrupt or truncated npz" in item.reason
        assert str(npz_folder) in item.reason
    assert "no 'image' key" in skipped["20240101T000006-noimage-9.npz"].reason
    wrong = skipped["20240101T000007-id7-9.npz"]
    assert wrong.kind == "wrong_size" and "32x32, expected 64x64" in wrong.reason

    rb = VideoExperienceReplay([source], num_transitions=T, batch_size=8, capacity=200)
    assert len(rb) == 8 + 12 + 9
    batch = rb.sample()
    assert batch["pixels"].shape == (8, T, 3, 64, 64)
    # true action of transition t is the APV action stored at t + 1: [episode, t + 1]
    frames = batch["pixels"]
    assert torch.equal(batch["true_action"][..., 1], frames[:, :, 1, 0, 0].float() + 1)
    assert torch.equal(batch["true_action"][..., 0], frames[:, :, 0, 0, 0].float())


def test_rlbench_keeps_a_state_per_frame_and_refuses_a_misshapen_one(tmp_path):
    frames = frames_for(0, 9)
    states = np.arange(18, dtype=np.float32).reshape(9, 2)
    np.savez_compressed(tmp_path / "20240101T000000-good-8.npz", image=frames, state=states)
    np.savez_compressed(tmp_path / "20240101T000001-bad-8.npz", image=frames, state=states[:5])
    np.savez_compressed(tmp_path / "20240101T000002-none-8.npz", image=frames)
    items = {item.name: item for item in RLBenchSource(tmp_path).episodes(min_frames=T + 1)}
    np.testing.assert_array_equal(items["20240101T000000-good-8.npz"].states, states)
    assert items["20240101T000002-none-8.npz"].states is None
    bad = items["20240101T000001-bad-8.npz"]
    assert isinstance(bad, SkippedEpisode) and "'state' has shape (5, 2), expected (9, S)" in (
        bad.reason
    )


def test_rlbench_resize_and_hint(npz_folder):
    source = RLBenchSource(npz_folder, resize=True)
    assert source.num_frames_hint() == 8 + 12 + 3 + 9 + 10 * 4  # from the file names
    resized = [ep for ep in source if isinstance(ep, Episode) and ep.name.endswith("-id7-9.npz")]
    assert resized[0].frames.shape == (10, 64, 64, 3)


def test_rlbench_exact_frames_and_resume_keeps_data(npz_folder, tmp_path):
    root = tmp_path / "buffer"
    rb = VideoExperienceReplay([RLBenchSource(npz_folder)], num_transitions=T, root=root)
    stored = rb.storage.get(torch.arange(len(rb)))["pixels"]
    expected = np.concatenate([frames_for(0, 8), frames_for(1, 12), frames_for(3, 9)])
    assert torch.equal(stored, torch.from_numpy(expected).permute(0, 3, 1, 2))
    # a corrupt file that is fixed later is not retried, and nothing written is lost
    stats = VideoDatasetStats.from_json(root / "video_dataset.json")
    assert (stats.episodes, len(stats.skipped)) == (3, 5)
    again = VideoExperienceReplay([RLBenchSource(npz_folder)], num_transitions=T, root=root)
    assert torch.equal(again.storage.get(torch.arange(len(again)))["pixels"], stored)


def test_rlbench_empty_or_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no .npz episode found.*'image'"):
        RLBenchSource(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        RLBenchSource(tmp_path / "missing")


# Something-Something-V2 ----------------------------------------------------------------------


@pytest.fixture
def ssv2_root(tmp_path) -> Path:
    root = tmp_path / "ssv2"
    for video_id, num_frames in [("101", 7), ("102", 3), ("103", 6), ("105", 6)]:
        (root / video_id).mkdir(parents=True)
        for i, frame in enumerate(frames_for(int(video_id), num_frames), start=1):
            iio.imwrite(root / video_id / f"{i:06d}.jpg", frame)
    (root / "103" / "000004.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    (root / "105" / "000006.jpg").unlink()
    lines = ["101 7 12", "102 3 5", "103 6 1", "104 9 3", "105 6 2"]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return root


def test_ssv2_missing_corrupt_and_short_videos(ssv2_root):
    source = SSv2Source(ssv2_root, ssv2_root.parent / "list.txt")
    assert len(source) == 5 and source.num_frames_hint() == 7 + 3 + 6 + 9 + 6
    items = list(source.episodes(min_frames=T + 1))
    episodes = [item for item in items if isinstance(item, Episode)]
    skipped = {item.name: item for item in items if isinstance(item, SkippedEpisode)}
    assert [ep.name for ep in episodes] == ["101"]
    expected = np.stack([read_image(ssv2_root / "101" / f"{i:06d}.jpg") for i in range(1, 8)])
    np.testing.assert_array_equal(episodes[0].frames, expected)
    assert skipped["102"].kind == "too_short"
    assert skipped["103"].kind == "corrupt" and "000004.jpg" in skipped["103"].reason
    assert skipped["104"].kind == "missing" and "folder is missing" in skipped["104"].reason
    assert "list.txt" in skipped["104"].reason
    assert skipped["105"].kind == "missing" and "000006.jpg" in skipped["105"].reason


def test_ssv2_into_buffer_round_trip(ssv2_root):
    source = SSv2Source(ssv2_root, ssv2_root.parent / "list.txt")
    rb = VideoExperienceReplay([source], num_transitions=T, batch_size=4)
    assert len(rb) == 7
    expected = np.stack([read_image(ssv2_root / "101" / f"{i:06d}.jpg") for i in range(1, 8)])
    expected = torch.from_numpy(expected).permute(0, 3, 1, 2)
    batch = rb.sample()
    assert "true_action" not in batch.keys()
    frames = batch["pixels"]
    assert frames.shape == (4, T, 3, 64, 64)
    starts = range(7 - T)
    for clip in frames:  # every clip is an exact window of the decoded jpgs
        assert any(torch.equal(clip, expected[s : s + T]) for s in starts)


def test_ssv2_bad_list_file(tmp_path):
    (tmp_path / "frames").mkdir()
    (tmp_path / "list.txt").write_text("101 7 12\n102 seven 5\n")
    with pytest.raises(ValueError, match="list.txt:2"):
        SSv2Source(tmp_path / "frames", tmp_path / "list.txt")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="empty list file"):
        SSv2Source(tmp_path / "frames", tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError, match="list file not found"):
        SSv2Source(tmp_path / "frames", tmp_path / "missing.txt")


# Folder of videos ----------------------------------------------------------------------------


@pytest.fixture
def video_folder(tmp_path) -> Path:
    root = tmp_path / "videos"
    (root / "nested").mkdir(parents=True)
    iio.imwrite(root / "a.gif", frames_for(1, 8, size=96))
    iio.imwrite(root / "nested" / "b.mp4", frames_for(2, 10, size=80), fps=10)
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    sequence = root / "seq"
    sequence.mkdir()
    for i, frame in enumerate(frames_for(3, 11, size=48)):
        iio.imwrite(sequence / f"{i}.png", frame)
    return root


def test_video_folder_decodes_resizes_and_skips_corrupt(video_folder):
    source = VideoFolderSource(video_folder)
    assert len(source) == 4
    items = {item.name: item for item in source}
    assert isinstance(items["broken.mp4"], SkippedEpisode)
    assert "broken.mp4: cannot decode video" in items["broken.mp4"].reason
    assert items["a.gif"].frames.shape == (8, 64, 64, 3)
    assert items["nested/b.mp4"].frames.shape == (10, 64, 64, 3)
    sequence = items["seq"].frames
    assert sequence.shape == (11, 64, 64, 3)
    # natural order: 2.png before 10.png (channel 1 holds the frame index, resized)
    order = sequence[:, 32, 32, 1].astype(int)
    assert (np.diff(order) > 0).all()

    rb = VideoExperienceReplay([source], num_transitions=T, batch_size=4, capacity=100)
    assert len(rb) == 8 + 10 + 11
    assert rb.sample()["pixels"].shape == (4, T, 3, 64, 64)


def test_video_folder_native_size_mismatch_skipped(video_folder):
    source = VideoFolderSource(video_folder, image_size=None)
    rb = VideoExperienceReplay(num_transitions=T, batch_size=2, capacity=100)
    stats = rb.write_episodes(source)
    assert stats.episodes == 1
    kinds = sorted(skip["kind"] for skip in stats.skipped)
    assert kinds == ["corrupt", "wrong_size", "wrong_size"]


def test_video_folder_empty(tmp_path):
    (tmp_path / "notes.txt").write_text("no videos here")
    with pytest.raises(FileNotFoundError, match="no video"):
        VideoFolderSource(tmp_path)
