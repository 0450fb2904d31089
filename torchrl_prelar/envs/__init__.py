"""Environments (need the ``envs`` extra: metaworld, mujoco)."""

from torchrl_prelar.envs.metaworld import make_metaworld_env

__all__ = ["make_metaworld_env"]
