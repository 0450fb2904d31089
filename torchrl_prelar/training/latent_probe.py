"""How much of the true action a latent action recovers: a held-out linear-probe R^2."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase


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


class _GivenLatentActions(TensorDictModuleBase):
    """Stands in for the action model: writes latent actions computed beforehand."""

    def __init__(self, latent_action: torch.Tensor, in_keys: list, out_keys: list):
        super().__init__()
        self.latent_action = latent_action
        self.in_keys = in_keys
        self.out_keys = out_keys

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        tensordict.set("latent_action", self.latent_action)
        return tensordict


@torch.no_grad()
def latent_action_probe(world_model, clips: TensorDictBase, seed: int = 0) -> dict[str, float]:
    """What the latent action of ``world_model`` knows about held-out ``clips``, and its use.

    ``clips`` is a ``[B, T]`` batch with ``"true_action"`` and ``"true_next_position"``
    (e.g. from :func:`~torchrl_prelar.data.synthetic.grid_square_batch`). Returns:

    * ``"action_r2"``, ``"position_r2"``: linear-probe R^2 of the latent action's mode
      against the hidden action and against the square's position in o_{t+1} (as
      :func:`on_circle` pairs, the frames being a torus);
    * ``"state_kl"``, ``"shuffled_state_kl"``: KL(posterior || prior) of the RSSM, in nats
      per step, with the clips' own latent actions and with latent actions shuffled across
      clips (modes, eval mode). A large gap means the prior relies on the latent action.

    The first step of every clip (a sequence start, where the RSSM zeroes the action) is
    left out. The model's training mode and the global random state are left as they were.

    Examples:
        >>> from torchrl_prelar import make_world_model
        >>> from torchrl_prelar.data.synthetic import grid_square_batch
        >>> model = make_world_model("tiny", image_size=16, encoder={"mults": [1, 2]},
        ...                          decoder={"mults": [1, 2]},
        ...                          latent_action={"trunk": {"mults": [1, 2]}})
        >>> sorted(latent_action_probe(model, grid_square_batch(8, 4)))
        ['action_r2', 'position_r2', 'shuffled_state_kl', 'state_kl']
    """
    was_training = world_model.training
    used = ~clips["is_init"].squeeze(-1)
    position = on_circle(clips["true_next_position"], clips["pixels"].shape[-1])
    action_model = world_model.action_model
    world_model.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = world_model(clips.clone())
            latent = out["latent_action"]
            world_model.action_model = _GivenLatentActions(
                latent[torch.randperm(latent.shape[0])], action_model.in_keys, action_model.out_keys
            )
            torch.manual_seed(seed)
            shuffled = world_model(clips.clone())
    finally:
        world_model.action_model = action_model
        world_model.train(was_training)
    return {
        "action_r2": linear_probe_r2(latent[used], clips["true_action"][used]),
        "position_r2": linear_probe_r2(latent[used], position[used]),
        "state_kl": _state_kl(out, used),
        "shuffled_state_kl": _state_kl(shuffled, used),
    }


def _state_kl(out: TensorDictBase, used: torch.Tensor) -> float:
    posterior = out["next", "posterior_logits"].log_softmax(-1)
    prior = out["next", "prior_logits"].log_softmax(-1)
    kl = (posterior.exp() * (posterior - prior)).sum((-1, -2))
    return float(kl[used].mean())
