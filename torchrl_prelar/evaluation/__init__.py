"""Evaluation of pre-trained world models: open-loop prediction, latent-action probes."""

from torchrl_prelar.evaluation.latent_actions import (
    episodes_to_clips,
    evaluate_latent_actions,
    fit_linear_probe,
    linear_probe_r2,
    load_episodes,
    save_transfer_gif,
)
from torchrl_prelar.evaluation.open_loop import open_loop_rollout, psnr

__all__ = [
    "episodes_to_clips",
    "evaluate_latent_actions",
    "fit_linear_probe",
    "linear_probe_r2",
    "load_episodes",
    "open_loop_rollout",
    "psnr",
    "save_transfer_gif",
]
