import numpy as np
import pytest
import torch
from tensordict import TensorDict

from torchrl_prelar.modules.intrinsic import VideoIntrinsicBonus, causal_moving_average


def reference_bonus(batches, projection, window, queue_size, k, momentum=0.99, eps=1e-8):
    """Loop-by-loop numpy version of the APV bonus, for a list of [B, T, E] batches."""
    queue, magnitude, outputs = [], 1.0, []
    for batch in batches:
        batch = batch.numpy().astype(np.float64)
        b, t, _ = batch.shape
        smoothed = np.zeros_like(batch)
        for i in range(b):
            for j in range(t):
                smoothed[i, j] = batch[i, max(0, j - window + 1) : j + 1].mean(0)
        points = (smoothed @ projection.numpy().astype(np.float64)).reshape(b * t, -1)
        raw = np.zeros(len(points))
        if queue:
            stored = np.array(queue)
            for n, point in enumerate(points):
                distances = np.sort(np.sqrt(((stored - point) ** 2).sum(-1)))
                raw[n] = distances[: min(k, len(stored))].mean()
        queue = (queue + list(points))[-queue_size:]
        magnitude = momentum * magnitude + (1 - momentum) * np.abs(raw).mean()
        outputs.append((raw / (magnitude + eps)).reshape(b, t, 1))
    return outputs


def test_matches_independent_computation():
    torch.manual_seed(0)
    bonus = VideoIntrinsicBonus(embed_dim=10, proj_dim=6, window=3, queue_size=20, k=4)
    batches = [torch.randn(2, 5, 10) for _ in range(5)]  # 10 points each: the queue wraps
    expected = reference_bonus(batches, bonus.projection, window=3, queue_size=20, k=4)
    for batch, reference in zip(batches, expected, strict=True):
        np.testing.assert_allclose(bonus.compute(batch).numpy(), reference, rtol=1e-4, atol=1e-5)
    assert int(bonus.queue_count) == 20


def test_fewer_entries_than_k_and_first_batch():
    bonus = VideoIntrinsicBonus(embed_dim=3, proj_dim=3, window=1, queue_size=8, k=16)
    assert torch.equal(bonus.compute(torch.zeros(1, 2, 3)), torch.zeros(1, 2, 1))
    second = bonus.compute(torch.ones(1, 1, 3))
    assert second.item() > 0 and torch.isfinite(second).all()


def test_moving_average_is_causal():
    x = torch.arange(6.0).reshape(1, 6, 1)
    expected = torch.tensor([0.0, 0.5, 1.0, 2.0, 3.0, 4.0]).reshape(1, 6, 1)
    torch.testing.assert_close(causal_moving_average(x, 3), expected)
    with pytest.raises(ValueError):
        causal_moving_average(x, 0)


def test_state_dict_round_trip_and_tensordict_interface():
    bonus = VideoIntrinsicBonus(embed_dim=4, proj_dim=2, queue_size=16, k=3, seed=1)
    bonus.compute(torch.randn(2, 4, 4))
    restored = VideoIntrinsicBonus(embed_dim=4, proj_dim=2, queue_size=16, k=3, seed=7)
    restored.load_state_dict(bonus.state_dict())
    batch = torch.randn(2, 4, 4)
    td = TensorDict({("next", "encoded_latents"): batch}, [2, 4])
    torch.testing.assert_close(restored(td)["next", "intrinsic_reward"], bonus.compute(batch))


def test_bf16_autocast_keeps_the_bonus_in_fp32():
    torch.manual_seed(0)
    plain = VideoIntrinsicBonus(embed_dim=8, proj_dim=4, queue_size=32, k=3, seed=2)
    mixed = VideoIntrinsicBonus(embed_dim=8, proj_dim=4, queue_size=32, k=3, seed=2)
    for _ in range(3):
        batch = torch.randn(2, 5, 8)
        expected = plain.compute(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            result = mixed.compute(batch.bfloat16())
        assert result.dtype == torch.float32
        torch.testing.assert_close(result, expected, rtol=0.05, atol=0.05)


def test_bad_embeddings_and_settings_are_refused_before_the_queue_changes():
    bonus = VideoIntrinsicBonus(embed_dim=6, proj_dim=4, queue_size=8, k=2)
    with pytest.raises(ValueError, match=r"has shape \(2, 3, 5\): expected \[\*batch, T, 6\]"):
        bonus.compute(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match=r"has shape \(6,\)"):
        bonus.compute(torch.randn(6))
    nan = torch.randn(2, 3, 6)
    nan[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="encoded_latents'\\) holds NaN"):
        bonus.compute(nan)
    assert int(bonus.queue_count) == 0 and bonus.magnitude.item() == 1.0
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\), got 1.5"):
        VideoIntrinsicBonus(embed_dim=6, momentum=1.5)
