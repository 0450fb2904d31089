"""Open-loop prediction: observe a few frames, then imagine with the RSSM prior only."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import set_interaction_type

from torchrl_prelar.modules import PreLARWorldModel
from torchrl_prelar.modules.pixels import centred_pixels
from torchrl_prelar.modules.world_model import decode_states


def psnr(prediction: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of frames in [-0.5, 0.5] (peak-to-peak 1), per frame.

    Reduces the last three dims (``C, H, W``); an exact prediction gives ``inf``.

    Args:
        prediction (torch.Tensor): predicted frames ``[..., C, H, W]``.
        truth (torch.Tensor): true frames, of the same shape.

    Raises:
        ValueError: if the shapes differ or have fewer than three dims.

    Examples:
        >>> truth = torch.zeros(2, 3, 4, 4)
        >>> psnr(truth + 0.1, truth)
        tensor([20., 20.])
    """
    if prediction.shape != truth.shape or prediction.ndim < 3:
        raise ValueError(
            f"Expected prediction and truth of one shape [..., C, H, W], got "
            f"{tuple(prediction.shape)} and {tuple(truth.shape)}."
        )
    mse = (prediction.float() - truth.float()).pow(2).mean((-1, -2, -3))
    return -10 * torch.log10(mse)


@torch.no_grad()
def open_loop_rollout(
    world_model: PreLARWorldModel,
    clips: TensorDictBase,
    context: int,
    latent_action: torch.Tensor | None = None,
    seed: int | None = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicts clips from ``context`` observed frames, then imagines with the prior alone.

    The first ``context`` predictions are reconstructions from the posterior. From the last
    observed state the RSSM prior is rolled forward, driven only by latent actions: the ones
    the world model's action module writes for the clips (inferred from the true frames by a
    :class:`~torchrl_prelar.modules.LatentActionModel`, or encoded from real actions by an
    :class:`~torchrl_prelar.modules.ActionEncoder`), or ``latent_action`` when given (e.g.
    shuffled across clips, or inferred from other clips to transfer their motion). The
    action is read under the RSSM's ``action_key``, so an
    :class:`~torchrl_prelar.baselines.apv.APVWorldModel` (whose prior reads the real
    ``"action"``) is rolled out the same way, on its action-conditional RSSM.

    Runs in eval mode under the ``"mode"`` interaction type, so latent actions are modes.
    TorchRL's DreamerV3 RSSM always samples its categorical states; with ``seed`` set they are
    drawn from a stream of that seed (the same call gives the same prediction) and the global
    random state is left as it was. The model's training mode is restored.

    Args:
        world_model (PreLARWorldModel): the world model.
        clips (TensorDictBase): a ``[B, T]`` TensorDict of transitions (``"pixels"``,
            ``("next", "pixels")``, ``"is_init"``, and whatever the action module reads).
        context (int): observed transitions, ``1 <= context < T``.
        latent_action (torch.Tensor, optional): ``[B, T, D]`` latent actions used for the
            imagined steps ``context .. T - 1`` instead of the clips' own. Defaults to
            ``None``.
        seed (int, optional): seed of the RSSM's state samples; ``None`` draws from the global
            stream. Defaults to ``0``.

    Returns:
        ``(truth, prediction)``, each ``[B, T, C, H, W]`` floats in [-0.5, 0.5] (uint8
        frames centred), for frames o_1..o_T; ``prediction[:, context:]`` is imagined.

    Raises:
        ValueError: if ``clips`` is not ``[B, T]``, ``context`` is out of range, or
            ``latent_action`` has another shape than the clips' own actions.

    Examples:
        >>> from torchrl_prelar import make_world_model
        >>> from torchrl_prelar.data.synthetic import moving_square_batch
        >>> truth, prediction = open_loop_rollout(
        ...     make_world_model(), moving_square_batch(2, 6), context=2)
        >>> truth.shape == prediction.shape == (2, 6, 3, 64, 64)
        True
    """
    if clips.ndim != 2:
        raise ValueError(f"Expected clips with batch size [B, T], got {tuple(clips.shape)}.")
    steps = clips.shape[1]
    if not 1 <= context < steps:
        raise ValueError(f"context must be in [1, {steps - 1}], got {context}.")
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        return _rollout(world_model, clips, context, latent_action)


def _rollout(
    world_model: PreLARWorldModel,
    clips: TensorDictBase,
    context: int,
    latent_action: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    steps = clips.shape[1]
    was_training = world_model.training
    world_model.eval()
    try:
        with set_interaction_type("mode"):
            out = world_model(clips.clone())
    finally:
        world_model.train(was_training)
    own = out[world_model.rssm.action_key]  # "action" for APV's stacked RSSM
    actions = own if latent_action is None else latent_action
    if actions.shape[:2] != clips.shape or actions.shape[-1] != own.shape[-1]:
        raise ValueError(
            f"latent_action must have shape {tuple(own.shape)}, got {tuple(actions.shape)}."
        )
    prior, decoder = world_model.rssm_prior, world_model.decoder
    state = out["next", "state"][:, context - 1]
    belief = out["next", "belief"][:, context - 1]
    imagined = []
    for step in range(context, steps):
        _, state, belief = prior(state, belief, actions[:, step].to(state.dtype))
        imagined.append(decode_states(decoder, out[:, step], state, belief))
    prediction = torch.cat([out["next", "reco_pixels"][:, :context], torch.stack(imagined, 1)], 1)
    return centred_pixels(out["next", "pixels"]), prediction.clamp(-0.5, 0.5)
