"""How much of the true action a latent action recovers: a held-out linear-probe R^2."""

from __future__ import annotations

import torch


def linear_probe_r2(
    features: torch.Tensor, targets: torch.Tensor, train_fraction: float = 0.5
) -> float:
    """Fit ``targets ~ features @ W + b`` on the first part, return R^2 on the rest.

    R^2 is ``1 - SSE / SST`` pooled over target dimensions (1 is perfect, 0 is no better
    than predicting the held-out mean, negative is worse).

    Examples:
        >>> x = torch.randn(200, 3)
        >>> round(linear_probe_r2(x, x @ torch.randn(3, 2)), 3)
        1.0
    """
    if features.ndim != 2 or targets.ndim != 2 or features.shape[0] != targets.shape[0]:
        raise ValueError(
            f"Expected features [N, F] and targets [N, A] with the same N, got "
            f"{tuple(features.shape)} and {tuple(targets.shape)}."
        )
    split = int(features.shape[0] * train_fraction)
    if not 0 < split < features.shape[0]:
        raise ValueError(f"train_fraction={train_fraction} leaves an empty train or test set.")
    design = torch.cat(
        [features.double(), torch.ones(features.shape[0], 1, dtype=torch.float64)], 1
    )
    solution = torch.linalg.lstsq(design[:split], targets[:split].double()).solution
    residual = targets[split:].double() - design[split:] @ solution
    centred = targets[split:].double() - targets[split:].double().mean(0)
    return float(1 - residual.pow(2).sum() / centred.pow(2).sum())


def on_circle(positions: torch.Tensor, size: int) -> torch.Tensor:
    """Torus coordinates as (sin, cos) pairs, so that a linear probe can read them.

    Examples:
        >>> on_circle(torch.tensor([[0.0, 16.0]]), 64).round().abs()
        tensor([[0., 1., 1., 0.]])
    """
    angles = 2 * torch.pi * positions / size
    return torch.cat([angles.sin(), angles.cos()], -1)


@torch.no_grad()
def moving_square_probe(world_model, squares: dict, seed: int = 1) -> tuple[float, float]:
    """R^2 of the latent action (its mode) on held-out moving-square clips.

    Returns ``(displacement R^2, next-position R^2)``: against the hidden action and against
    the first square's position in o_{t+1}. ``squares`` goes to
    :func:`~torchrl_prelar.data.synthetic.moving_square_batch`.
    """
    from torchrl_prelar.data.synthetic import moving_square_batch

    clips = moving_square_batch(64, 8, generator=torch.Generator().manual_seed(seed), **squares)
    was_training = world_model.training
    world_model.eval()
    out = world_model(clips.clone())
    world_model.train(was_training)
    used = ~out["is_init"].squeeze(-1)
    latent = out["latent_action"][used]
    position = on_circle(clips["true_next_position"], clips["pixels"].shape[-1])
    return (
        linear_probe_r2(latent, clips["true_action"][used]),
        linear_probe_r2(latent, position[used]),
    )
