"""How much of the true action a latent action recovers, on toys: a held-out linear-probe R^2.

The probe, the state KL and the shuffling are those of
:mod:`torchrl_prelar.evaluation.latent_actions`; this module adds the toys' second target
(the square's next position) and their split (first half of the steps, pooled R^2).
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase

from torchrl_prelar.evaluation.latent_actions import (
    linear_probe_r2,
    posterior_rollout,
    shuffle_index,
    state_kl,
)


def halves_probe_r2(features: torch.Tensor, targets: torch.Tensor) -> float:
    """R^2 of a least-squares probe fitted on the first half of the rows, pooled over dims.

    Scored on the second half (:func:`~torchrl_prelar.evaluation.linear_probe_r2` with
    ``ridge=0`` and ``multioutput="variance_weighted"``: 1 - SSE / SST over all target dims).

    Args:
        features (torch.Tensor): ``[N, F]`` probe inputs.
        targets (torch.Tensor): ``[N, D]`` probe targets.

    Examples:
        >>> x = torch.randn(200, 3)
        >>> round(halves_probe_r2(x, x @ torch.randn(3, 2)), 3)
        1.0
    """
    half = features.shape[0] // 2
    r2 = linear_probe_r2(
        features[:half],
        targets[:half],
        features[half:],
        targets[half:],
        ridge=0.0,
        multioutput="variance_weighted",
    )
    return float(r2)


def on_circle(positions: torch.Tensor, size: int) -> torch.Tensor:
    """Maps torus coordinates to (sin, cos) pairs, so that a linear probe can read them.

    Args:
        positions (torch.Tensor): ``[..., K]`` coordinates, in pixels.
        size (int): the torus' side, in pixels.

    Returns:
        ``[..., 2 * K]``: the sines, then the cosines.

    Examples:
        >>> on_circle(torch.tensor([[0.0, 16.0]]), 64).round().abs()
        tensor([[0., 1., 1., 0.]])
    """
    angles = 2 * torch.pi * positions / size
    return torch.cat([angles.sin(), angles.cos()], -1)


@torch.no_grad()
def latent_action_probe(world_model, clips: TensorDictBase, seed: int = 0) -> dict[str, float]:
    """Measures what a latent action knows about held-out ``clips``, and how the RSSM uses it.

    The first step of every clip (a sequence start, where the RSSM zeroes the action) is
    left out. The model's training mode and the global random state are left as they were.

    Args:
        world_model (PreLARWorldModel): a world model with a latent action model.
        clips (TensorDictBase): a ``[B, T]`` batch with ``"true_action"`` and
            ``"true_next_position"`` (e.g. from
            :func:`~torchrl_prelar.data.synthetic.grid_square_batch`).
        seed (int, optional): seed of the shuffle and the RSSM's state samples. Defaults to
            ``0``.

    Returns:
        a dict of floats: ``"action_r2"``, ``"position_r2"``: linear-probe R^2
        (:func:`halves_probe_r2`) of the latent action's mode against the hidden action and
        against the square's position in o_{t+1} (as :func:`on_circle` pairs, the frames
        being a torus); ``"state_kl"``, ``"shuffled_state_kl"``: KL(posterior || prior) of
        the RSSM, in nats per step, with the clips' own latent actions and with each clip
        given another clip's (modes, eval mode). A large gap means the prior relies on the
        latent action.

    Examples:
        >>> from torchrl_prelar import make_world_model
        >>> from torchrl_prelar.data.synthetic import grid_square_batch
        >>> model = make_world_model(image_size=16, encoder={"mults": [1, 2]},
        ...                          decoder={"mults": [1, 2]},
        ...                          latent_action={"trunk": {"mults": [1, 2]}})
        >>> sorted(latent_action_probe(model, grid_square_batch(8, 4)))
        ['action_r2', 'position_r2', 'shuffled_state_kl', 'state_kl']
    """
    used = ~clips["is_init"].squeeze(-1)
    position = on_circle(clips["true_next_position"], clips["pixels"].shape[-1])
    own = posterior_rollout(world_model, clips, seed=seed)
    latent = own["latent_action"]
    shuffled = posterior_rollout(
        world_model,
        clips,
        latent_action=latent[shuffle_index(latent.shape[0], seed=seed)],
        seed=seed,
    )
    return {
        "action_r2": halves_probe_r2(latent[used], clips["true_action"][used]),
        "position_r2": halves_probe_r2(latent[used], position[used]),
        "state_kl": state_kl(own, used),
        "shuffled_state_kl": state_kl(shuffled, used),
    }
