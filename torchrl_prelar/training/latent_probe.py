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
