import pytest
import torch
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

from torchrl_prelar.data.episode_slices import EpisodeSliceSampler

SLICE = 3


def buffer_of(lengths, finished, **sampler_kwargs):
    """Episodes of ``lengths`` steps stored back to back; ``finished[i]``: done at its end."""
    traj = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)])
    done = torch.zeros(len(traj), 1, dtype=torch.bool)
    ends = torch.tensor(lengths).cumsum(0) - 1
    done[ends[torch.tensor(finished)]] = True
    steps = TensorDict({"traj_id": traj, "step": torch.arange(len(traj)), ("next", "done"): done})
    steps.batch_size = [len(traj)]
    buffer = TensorDictReplayBuffer(
        storage=LazyTensorStorage(len(traj)),
        sampler=EpisodeSliceSampler(SLICE, **sampler_kwargs),
        batch_size=SLICE * 4000,
    )
    buffer.extend(steps)
    return buffer, traj


def draw_frequencies(buffer, traj):
    """How often each slice (by its first step) is drawn; every slice checked whole."""
    sample = buffer.sample().reshape(-1, SLICE)
    steps = sample["step"]
    assert (steps[:, 1:] - steps[:, :-1] == 1).all()  # consecutive steps
    assert (sample["traj_id"] == sample["traj_id"][:, :1]).all()  # one episode per slice
    return torch.bincount(steps[:, 0], minlength=len(traj)).float() / len(steps)


def expected_frequencies(lengths, finished, ongoing, prioritize_ends):
    """DreamerV2's draw written out: episode uniform among the eligible, then the start."""
    expected = torch.zeros(sum(lengths))
    eligible = [i for i, n in enumerate(lengths) if n >= SLICE and (ongoing or finished[i])]
    first = 0
    for i, n in enumerate(lengths):
        if i in eligible:
            if prioritize_ends:  # randint(n + 1), moved back to n - SLICE
                for start in range(n + 1):
                    expected[first + min(start, n - SLICE)] += 1 / (n + 1) / len(eligible)
            else:
                expected[first : first + n - SLICE + 1] += 1 / (n - SLICE + 1) / len(eligible)
        first += n
    return expected


@pytest.mark.parametrize("ongoing", [True, False])
@pytest.mark.parametrize("prioritize_ends", [False, True])
def test_draws_follow_dreamerv2s_replay(ongoing, prioritize_ends):
    torch.manual_seed(0)
    lengths, finished = [6, 2, 9, 5], [True, True, True, False]  # the last one still running
    buffer, traj = buffer_of(lengths, finished, ongoing=ongoing, prioritize_ends=prioritize_ends)
    drawn = draw_frequencies(buffer, traj)
    expected = expected_frequencies(lengths, finished, ongoing, prioritize_ends)
    assert drawn[expected == 0].sum() == 0  # the 2-step episode, and the ongoing one if asked
    torch.testing.assert_close(drawn, expected, atol=0.015, rtol=0)


def test_ends_are_favoured_slice_len_plus_one_times():
    torch.manual_seed(1)
    buffer, traj = buffer_of([20], [True], prioritize_ends=True)
    drawn = draw_frequencies(buffer, traj)
    last, others = drawn[20 - SLICE], drawn[: 20 - SLICE].mean()
    assert last / others == pytest.approx(SLICE + 1, rel=0.2)
    assert drawn[20 - SLICE + 1 :].sum() == 0  # no slice runs past the end


def test_draws_repeat_under_a_seed_and_refuse_what_cannot_be_drawn():
    buffer, _ = buffer_of([6, 4], [True, False], ongoing=False, prioritize_ends=True)
    torch.manual_seed(3)
    first = buffer.sample()["step"]
    torch.manual_seed(3)
    assert torch.equal(buffer.sample()["step"], first)

    unfinished, _ = buffer_of([6], [False], ongoing=False)
    with pytest.raises(RuntimeError, match="No finished episode of at least 3 steps"):
        unfinished.sample()
    with pytest.raises(ValueError, match=r"batch_size \(4\) must be a multiple of slice_len"):
        buffer.sample(4)
    with pytest.raises(ValueError, match="slice_len must be an integer >= 1"):
        EpisodeSliceSampler(0)
    with pytest.raises(ValueError, match="one-dimensional storage"):
        EpisodeSliceSampler(2).sample(LazyTensorStorage(4, ndim=2), 4)


def test_the_example_draws_with_it_where_finetune_replay_asks_dreamerv2s_draw():
    from dreamer_prelar_utils import STORED_KEYS, make_finetune_buffer, sample_batch
    from torchrl.data import SliceSampler

    tune = {"buffer_size": 100, "batch_size": 4, "batch_length": SLICE}
    assert isinstance(make_finetune_buffer(tune).sampler, SliceSampler)  # TorchRL's draw
    tune["replay"] = {"ongoing": False, "prioritize_ends": True}
    buffer = make_finetune_buffer(tune)
    assert isinstance(buffer.sampler, EpisodeSliceSampler)
    assert (buffer.sampler.ongoing, buffer.sampler.prioritize_ends) == (False, True)
    steps = 12  # an episode of 8 steps, finished, then one of 4 under way
    done = torch.zeros(steps, 1, dtype=torch.bool)
    done[7] = True
    stored = TensorDict(
        {
            "action": torch.zeros(steps, 4),
            "is_init": torch.arange(steps)[:, None] % 8 == 0,
            "traj_id": (torch.arange(steps) >= 8).long(),
            "next": {
                "pixels": torch.arange(steps).reshape(-1, 1, 1, 1).expand(-1, 3, 2, 2).byte(),
                "reward": torch.zeros(steps, 1),
                "done": done,
                "terminated": torch.zeros(steps, 1, dtype=torch.bool),
                "truncated": done.clone(),
                "success": torch.zeros(steps, 1, dtype=torch.bool),
            },
        },
        [steps],
    )
    buffer.extend(stored.select(*STORED_KEYS))
    batch = sample_batch(buffer, tune, torch.device("cpu"))
    assert batch.shape == (4, SLICE) and batch["is_init"][:, 0].all()
    assert batch["next", "pixels"][..., 0, 0, 0].max() <= 7  # never the episode under way
