"""Evaluation of pre-trained world models: open-loop prediction, latent-action probes."""

from torchrl_prelar.evaluation.open_loop import open_loop_rollout, psnr

__all__ = ["open_loop_rollout", "psnr"]
