"""Evaluation of a pre-trained world model: open-loop video prediction."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import set_interaction_type

from torchrl_prelar.modules import PreLARWorldModel
from torchrl_prelar.modules.pixels import centred_pixels
from torchrl_prelar.modules.world_model import decode_states


@torch.no_grad()
def open_loop_prediction(
    world_model: PreLARWorldModel, clip: TensorDictBase, context: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predict a clip from ``context`` observed frames, then imagine with the prior.

    The first ``context`` predictions are reconstructions from the posterior; afterwards the
    RSSM prior is rolled forward from the last posterior state, driven only by the clip's
    ``"latent_action"`` (inferred from the true frames by the action model, or encoded from
    real actions), without seeing any further frame.

    Args:
        world_model: the world model.
        clip: a ``[T]`` TensorDict of transitions (one clip).
        context: observed transitions, ``1 <= context < T``.

    Returns:
        ``(truth, prediction)``, each ``[T, C, H, W]`` floats in [-0.5, 0.5] (uint8 frames
        centred), for frames o_1..o_T.

    Examples:
        >>> from torchrl_prelar import make_world_model
        >>> from torchrl_prelar.data.synthetic import moving_square_batch
        >>> truth, prediction = open_loop_prediction(
        ...     make_world_model("tiny"), moving_square_batch(1, 6)[0], context=2)
        >>> truth.shape == prediction.shape == (6, 3, 64, 64)
        True
    """
    if clip.ndim != 1:
        raise ValueError(f"Expected one clip with batch size [T], got {tuple(clip.shape)}.")
    if not 1 <= context < clip.shape[0]:
        raise ValueError(f"context must be in [1, {clip.shape[0] - 1}], got {context}.")
    was_training = world_model.training
    world_model.eval()
    with set_interaction_type("mode"):
        out = world_model(clip.unsqueeze(0).clone())[0]
    prior, decoder = world_model.rssm_prior, world_model.decoder
    state, belief = out["next", "state"][context - 1], out["next", "belief"][context - 1]
    imagined = []
    for step in range(context, clip.shape[0]):
        _, state, belief = prior(state, belief, out["latent_action"][step])
        imagined.append(decode_states(decoder, out[step], state, belief))
    world_model.train(was_training)
    prediction = torch.cat([out["next", "reco_pixels"][:context], torch.stack(imagined)])
    return centred_pixels(out["next", "pixels"]), prediction.clamp(-0.5, 0.5)
