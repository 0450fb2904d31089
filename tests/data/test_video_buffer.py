"""Video replay buffer: exact round trip, episode boundaries, alignment, reopening, transform."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl import torchrl_logger
from torchrl.data import LazyTensorStorage, ReplayBuffer, SliceSampler
from torchrl.envs.transforms import Compose, Transform

from torchrl_prelar.data.clips import VideoClipTransform
from torchrl_prelar.data.dataset import VideoExperienceReplay
from torchrl_prelar.data.episodes import Episode, EpisodeSource, SkippedEpisode
from torchrl_prelar.data.writer import VideoDatasetStats, VideoEpisodeWriter

T = 5
B = 8
SIZE = 12


def make_episode(ep: int, num_frames: int, *, actions: bool = False, seed: int = 0) -> Episode:
    """Frames encode (episode, frame index) in channels 0 and 1; channel 2 is random."""
    rng = np.random.default_rng(seed + ep)
    frames = rng.integers(0, 256, size=(num_frames, SIZE, SIZE, 3), dtype=np.uint8)
    frames[..., 0] = ep
    frames[..., 1] = np.arange(num_frames, dtype=np.uint8)[:, None, None]
    acts = None
    if actions:
        # APV convention: acts[t] is the action taken just before frame t, acts[0] = 0.
        acts = np.stack([np.full(num_frames, ep), np.arange(num_frames)], -1).astype(np.float32)
        acts[0] = 0
    return Episode(frames, acts, name=f"ep{ep}", source="synthetic")


def stored_frames(rb) -> TensorDict:
    """The raw stored rows (the buffer's ``rb[:]`` would apply the clip transform)."""
    return rb.storage.get(torch.arange(len(rb)))


@pytest.fixture(params=["memmap", "memory"])
def root(request, tmp_path) -> Path | None:
    return tmp_path / "buffer" if request.param == "memmap" else None


def test_round_trip_contract_and_boundaries(root):
    lengths = [T + 1, 9, 14, 30, 7, 11]
    episodes = [make_episode(i, n) for i, n in enumerate(lengths)]
    rb = VideoExperienceReplay(episodes, num_transitions=T, batch_size=B, root=root)
    assert len(rb) == sum(lengths)
    for _ in range(20):
        batch = rb.sample()
        assert batch.batch_size == torch.Size([B, T])
        assert set(batch.keys(include_nested=True, leaves_only=True)) == {
            "pixels",
            ("next", "pixels"),
            "is_init",
            "episode",
        }
        assert (batch["episode"] == batch["episode"][:, :1]).all()
        pixels, next_pixels = batch["pixels"], batch["next", "pixels"]
        # uint8 as stored: the networks and the loss centre frames themselves
        assert pixels.shape == (B, T, 3, SIZE, SIZE) and pixels.dtype == torch.uint8
        assert next_pixels.shape == pixels.shape and next_pixels.dtype == torch.uint8
        # two views of one [B, T + 1] tensor
        assert pixels.untyped_storage().data_ptr() == next_pixels.untyped_storage().data_ptr()
        torch.testing.assert_close(pixels[:, 1:], next_pixels[:, :-1], rtol=0, atol=0)
        assert batch["is_init"].shape == (B, T, 1) and batch["is_init"].dtype == torch.bool
        assert batch["is_init"][:, 0].all() and not batch["is_init"][:, 1:].any()
        frames = torch.cat([pixels, next_pixels[:, -1:]], 1)
        for clip in frames:
            ep = int(clip[0, 0, 0, 0])
            start = int(clip[0, 1, 0, 0])
            assert (clip[:, 0] == ep).all(), "clip crosses an episode boundary"
            assert start + T < lengths[ep]
            expected = torch.from_numpy(episodes[ep].frames[start : start + T + 1])
            assert torch.equal(clip, expected.permute(0, 3, 1, 2)), "frames differ from input"


def test_true_action_alignment(root):
    episodes = [make_episode(i, 10 + i, actions=True) for i in range(4)]
    rb = VideoExperienceReplay(episodes, num_transitions=T, batch_size=B, root=root)
    batch = rb.sample()
    action = batch["true_action"]
    assert action.shape == (B, T, 2) and action.dtype == torch.float32
    frame_t = batch["pixels"][:, :, 1, 0, 0].float()
    next_t = batch["next", "pixels"][:, :, 1, 0, 0].float()
    episode = batch["pixels"][:, :, 0, 0, 0].float()
    # transition t (o_t -> o_t+1) carries the APV action stored at t + 1, i.e. [ep, t + 1]
    assert torch.equal(action[..., 1], frame_t + 1)
    assert torch.equal(action[..., 1], next_t)
    assert torch.equal(action[..., 0], episode)


def test_true_state_and_its_change_alignment(root):
    # States [ep, frame index squared]: the change from o_t to o_t+1 is [0, 2t + 1].
    episodes = []
    for ep in range(4):
        episode = make_episode(ep, 10 + ep, actions=True)
        index = np.arange(episode.num_frames, dtype=np.float32)
        episode.states = np.stack([np.full_like(index, ep), index**2], -1)
        episodes.append(episode)
    episodes.append(make_episode(4, 12))  # no states: NaN
    rb = VideoExperienceReplay(episodes, num_transitions=T, batch_size=32, root=root)
    if root is not None:  # the stored widths are checked on reopening
        rb = VideoExperienceReplay(root=root, num_transitions=T, batch_size=32)
    assert rb.stats.state_dim == 2
    batch = rb.sample()
    frame_t = batch["pixels"][:, :, 1, 0, 0].float()
    episode = batch["pixels"][:, :, 0, 0, 0].float()
    state, change = batch["true_state"], batch["true_state_change"]
    assert state.shape == change.shape == (32, T, 2) and change.dtype == torch.float32
    labelled = episode[:, 0] < 4
    assert labelled.any() and (~labelled).any()
    assert torch.equal(state[labelled][..., 1], frame_t[labelled] ** 2)
    assert torch.equal(change[labelled][..., 1], 2 * frame_t[labelled] + 1)
    assert torch.equal(change[labelled][..., 0], torch.zeros_like(frame_t[labelled]))
    assert state[~labelled].isnan().all() and change[~labelled].isnan().all()


def test_buffer_without_states_keeps_its_keys_and_drops_later_states(tmp_path):
    root = tmp_path / "buffer"
    VideoExperienceReplay(
        [make_episode(0, 12)], num_transitions=T, batch_size=2, root=root, capacity=30
    )
    later = make_episode(1, 12)
    later.states = np.zeros((12, 3), np.float32)
    rb = VideoExperienceReplay([later], num_transitions=T, batch_size=2, root=root)
    assert rb.stats.episodes == 2 and rb.stats.state_dim == 0
    assert "true_state" not in rb.sample().keys()
    # statistics written without the state_dim field read as a buffer without states
    stats = json.loads((root / "video_dataset.json").read_text())
    del stats["state_dim"]
    (root / "video_dataset.json").write_text(json.dumps(stats))
    third = make_episode(2, 6)
    third.states = np.zeros((6, 3), np.float32)
    rb = VideoExperienceReplay([third], num_transitions=T, batch_size=2, root=root)
    assert rb.stats.episodes == 3 and "true_state" not in rb.sample().keys()


def test_mixed_sources_actions_nan_where_unknown():
    episodes = [make_episode(0, 12, actions=True), make_episode(1, 12)]
    rb = VideoExperienceReplay(episodes, num_transitions=T, batch_size=32)
    batch = rb.sample()
    from_unlabelled = batch["pixels"][:, 0, 0, 0, 0] == 1
    assert batch["true_action"][from_unlabelled].isnan().all()
    assert not batch["true_action"][~from_unlabelled].isnan().any()


@pytest.fixture
def torchrl_log(caplog):
    torchrl_logger.addHandler(caplog.handler)
    yield caplog
    torchrl_logger.removeHandler(caplog.handler)


def test_short_episodes_skipped_and_counted(torchrl_log):
    episodes = [make_episode(0, T), make_episode(1, T + 1), make_episode(2, 2)]
    rb = VideoExperienceReplay(episodes, num_transitions=T, batch_size=2)
    assert len(rb) == T + 1
    assert "1 episodes, 6 frames" in torchrl_log.text
    assert "skipped 2 (2 too_short)" in torchrl_log.text


def test_stats_and_skips_reported():
    class Source(EpisodeSource):
        name = "fake"

        def episodes(self, exclude=frozenset(), min_frames=0):
            yield make_episode(0, 12)
            yield SkippedEpisode("bad.npz", self.name, "bad.npz: truncated npz", "corrupt")
            yield Episode(np.zeros((12, 2 * SIZE, SIZE, 3), np.uint8), name="big", source="fake")
            yield make_episode(1, 3)

    rb = VideoExperienceReplay(num_transitions=T, batch_size=2, capacity=100)
    stats = rb.write_episodes(Source())
    assert (stats.episodes, stats.frames) == (1, 12)
    kinds = {s["name"]: s["kind"] for s in stats.skipped}
    assert kinds == {"bad.npz": "corrupt", "big": "wrong_size", "ep1": "too_short"}
    big = next(s for s in stats.skipped if s["name"] == "big")
    assert "big" in big["reason"] and f"{SIZE}x{SIZE}" in big["reason"]
    summary = stats.summary()
    assert "source synthetic: 1 episodes, 12 frames" in summary
    assert "bad.npz: truncated npz" in summary


def _fingerprint(folder: Path) -> dict[str, tuple[int, str]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.md5(p.read_bytes()).hexdigest())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_reopen_gives_same_data_without_rewriting(tmp_path):
    root = tmp_path / "buffer"
    episodes = [make_episode(i, 8 + i) for i in range(5)]
    rb = VideoExperienceReplay(episodes, num_transitions=T, batch_size=B, root=root)
    stored = stored_frames(rb).clone()
    del rb
    before = _fingerprint(root)

    reopened = VideoExperienceReplay(episodes, num_transitions=T, batch_size=B, root=root)
    assert len(reopened) == len(stored)
    again = stored_frames(reopened)
    assert torch.equal(again["pixels"], stored["pixels"])
    assert torch.equal(again["episode"], stored["episode"])
    reopened.sample()
    assert _fingerprint(root) == before, "reopening rewrote files"
    # a longer clip length can reuse the same folder
    longer = VideoExperienceReplay(num_transitions=T + 3, batch_size=2, root=root)
    assert longer.sample()["pixels"].shape[1] == T + 3


def test_resume_appends_only_new_episodes(tmp_path):
    root = tmp_path / "buffer"
    episodes = [make_episode(i, 10) for i in range(5)]
    VideoExperienceReplay(episodes[:3], num_transitions=T, batch_size=2, root=root, capacity=80)
    rb = VideoExperienceReplay(episodes, num_transitions=T, batch_size=2, root=root)
    stats = VideoDatasetStats.from_json(root / "video_dataset.json")
    assert (stats.episodes, stats.frames, len(rb)) == (5, 50, 50)
    assert torch.equal(stored_frames(rb)["episode"].unique(), torch.arange(0, 50, 10))


def test_interrupted_write_keeps_written_episodes(tmp_path):
    root = tmp_path / "buffer"

    def crashing():
        yield make_episode(0, 10)
        yield make_episode(1, 10)
        raise RuntimeError("decoder crashed")

    rb = VideoExperienceReplay(num_transitions=T, batch_size=2, root=root, capacity=100)
    with pytest.raises(RuntimeError, match="decoder crashed"):
        rb.write_episodes(crashing())
    reopened = VideoExperienceReplay(num_transitions=T, batch_size=2, root=root)
    assert len(reopened) == 20
    assert VideoDatasetStats.from_json(root / "video_dataset.json").episodes == 2
    _check_contract(reopened.sample(), 2)


def test_resume_does_not_decode_written_episodes(tmp_path):
    class Counting(EpisodeSource):
        name = "synthetic"

        def __init__(self, num):
            self.num, self.decoded = num, []

        def episodes(self, exclude=frozenset(), min_frames=0):
            for ep in range(self.num):
                if f"ep{ep}" not in exclude:
                    self.decoded.append(ep)
                    yield make_episode(ep, 10)

    root = tmp_path / "buffer"
    VideoExperienceReplay([Counting(2)], num_transitions=T, root=root, capacity=60)
    source = Counting(4)
    rb = VideoExperienceReplay([source], num_transitions=T, root=root)
    assert source.decoded == [2, 3] and len(rb) == 40


def test_full_buffer_never_overwrites():
    episodes = [make_episode(i, 10) for i in range(4)]
    rb = VideoExperienceReplay(episodes, num_transitions=T, batch_size=2, capacity=25)
    assert len(rb) == 20
    stored = stored_frames(rb)["pixels"]
    assert torch.equal(stored[:10, 0], torch.zeros(10, SIZE, SIZE, dtype=torch.uint8))
    assert torch.equal(stored[10:20, 0], torch.ones(10, SIZE, SIZE, dtype=torch.uint8))


def test_capacity_required_without_hint():
    with pytest.raises(ValueError, match="capacity"):
        VideoExperienceReplay(num_transitions=T, batch_size=2)


class _AddKey(Transform):
    def forward(self, tensordict):
        tensordict.set("seen", torch.ones(tensordict.shape, dtype=torch.bool))
        return tensordict


def _check_contract(batch, batch_size, size=SIZE):
    assert batch.batch_size == torch.Size([batch_size, T])
    assert batch["pixels"].shape == (batch_size, T, 3, size, size)
    assert batch["next", "pixels"].shape == (batch_size, T, 3, size, size)
    assert batch["is_init"][:, 0].all() and not batch["is_init"][:, 1:].any()


def test_transform_inside_compose_with_prefetch(tmp_path):
    episodes = [make_episode(i, 20) for i in range(6)]
    rb = ReplayBuffer(
        storage=LazyTensorStorage(200),
        sampler=SliceSampler(slice_len=T + 1, traj_key="episode", strict_length=True),
        batch_size=B * (T + 1),
        transform=Compose(VideoClipTransform(T), _AddKey()),
        prefetch=3,
    )
    VideoEpisodeWriter(rb).write(episodes)
    for _ in range(10):
        batch = rb.sample()
        _check_contract(batch, B)
        assert batch["seen"].all()
        clip_frames = batch["pixels"][:, :, 0, 0, 0]
        assert (clip_frames == clip_frames[:, :1]).all()


def test_factory_prefetch_extra_transform_and_resize(tmp_path):
    episodes = [make_episode(i, 20) for i in range(6)]
    rb = VideoExperienceReplay(
        episodes,
        num_transitions=T,
        batch_size=B,
        root=tmp_path / "buffer",
        prefetch=2,
        transform=_AddKey(),
        resize=(4, 4),
    )
    for _ in range(5):
        batch = rb.sample()
        _check_contract(batch, B, size=4)
        assert batch["seen"].all()
        assert batch["pixels"].dtype == torch.uint8


def test_sampling_without_replacement():
    episodes = [make_episode(i, 2 * (T + 1)) for i in range(4)]
    rb = VideoExperienceReplay(episodes, num_transitions=T, batch_size=2, replacement=False)
    _check_contract(rb.sample(), 2)


def test_transform_rejects_clips_crossing_episodes():
    flat = TensorDict(
        pixels=torch.zeros(2 * (T + 1), 3, SIZE, SIZE, dtype=torch.uint8),
        episode=torch.arange(2 * (T + 1)) // (T + 2),
        batch_size=[2 * (T + 1)],
    )
    with pytest.raises(ValueError, match="crosses an episode boundary"):
        VideoClipTransform(T)(flat)
    with pytest.raises(ValueError, match="B \\* \\(T \\+ 1\\)"):
        VideoClipTransform(T + 1)(flat)


def test_transform_honours_its_keys_and_keeps_the_other_entries():
    frames = torch.arange(2 * (T + 1), dtype=torch.uint8).reshape(-1, 1, 1, 1).expand(-1, 3, 2, 2)
    flat = TensorDict(
        cam=frames.clone(),
        clip=torch.arange(2 * (T + 1)) // (T + 1),
        step=torch.arange(2 * (T + 1), dtype=torch.float32),
        batch_size=[2 * (T + 1)],
    )
    transform = VideoClipTransform(
        T, in_keys=["cam"], out_keys=[("succ", "cam")], episode_key="clip", init_key="first"
    )
    out = transform(flat)
    assert set(out.keys(include_nested=True, leaves_only=True)) == {
        "cam",
        ("succ", "cam"),
        "clip",
        "step",
        "first",
    }
    assert out["cam"][0, :, 0, 0, 0].tolist() == list(range(T))
    assert out["succ", "cam"][0, :-1].equal(out["cam"][0, 1:])
    assert out["step"][1].tolist() == [float(T + 1 + t) for t in range(T)]  # o_t's entries
    assert out["first"][:, 0].all() and not out["first"][:, 1:].any()
    assert flat["cam"].dtype == torch.uint8 and flat["cam"].equal(frames)  # input left alone
    flat["clip"][1] = 1
    with pytest.raises(ValueError, match="traj_key='clip'"):
        transform(flat)
    with pytest.raises(KeyError, match="no 'pixels'"):
        VideoClipTransform(T)(flat)
    with pytest.raises(ValueError, match="one key per in_keys entry"):
        VideoClipTransform(T, in_keys=["a", "b"], out_keys=[("next", "a")])


def test_clip_transform_resizes_and_keeps_uint8():
    value = torch.tensor([0, 100, 255], dtype=torch.uint8)[:, None, None]
    flat = TensorDict(pixels=value.expand(3, 8, 8).repeat(6, 1, 1, 1), batch_size=[6])
    out = VideoClipTransform(num_transitions=2, resize=(4, 4))(flat)
    assert out["pixels"].dtype == torch.uint8 and out["pixels"].shape == (2, 2, 3, 4, 4)
    assert out["pixels"][0, 0, :, 0, 0].tolist() == [0, 100, 255]  # flat frames stay exact
