"""From sampled frames to the ``[B, T]`` transitions a world model trains on."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from tensordict import NestedKey, TensorDict, TensorDictBase
from torchrl.envs.transforms import Transform

from torchrl_prelar.data.episodes import EPISODE_KEY, INIT_KEY, PIXELS_KEY

__all__ = ["VideoClipTransform", "transitions_from_frames"]


def transitions_from_frames(
    frames: torch.Tensor, *, device: torch.device | None = None, **extra: torch.Tensor
) -> TensorDict:
    """Turns ``B`` clips of ``T + 1`` frames into a ``[B, T]`` TensorDict of transitions.

    ``"pixels"`` is o_t and ``("next", "pixels")`` o_{t+1} (two views of ``frames``);
    ``"is_init"`` (``[B, T, 1]``) is True at t = 0 of every clip. ``extra`` entries
    (``[B, T, ...]``) are added as they are.

    Args:
        frames (torch.Tensor): the clips, ``[B, T + 1, C, H, W]``.

    Keyword Args:
        device (torch.device, optional): the device of the returned TensorDict. Defaults to
            ``None``.
        **extra (torch.Tensor): further ``[B, T, ...]`` entries, stored under their names.

    Returns:
        a :class:`~tensordict.TensorDict` of batch size ``[B, T]``.

    Examples:
        >>> td = transitions_from_frames(torch.zeros(2, 4, 3, 8, 8), step=torch.zeros(2, 3))
        >>> td.batch_size, td["is_init"][0, :, 0].tolist()
        (torch.Size([2, 3]), [True, False, False])
    """
    batch_size, steps = frames.shape[0], frames.shape[1] - 1
    is_init = torch.zeros(batch_size, steps, 1, dtype=torch.bool)
    is_init[:, 0] = True
    return TensorDict(
        {
            PIXELS_KEY: frames[:, :-1],
            ("next", PIXELS_KEY): frames[:, 1:],
            INIT_KEY: is_init,
            **extra,
        },
        batch_size=[batch_size, steps],
        device=device,
    )


class VideoClipTransform(Transform):
    """Turns a flat batch of ``B * (T + 1)`` stored frames into ``[B, T]`` transitions.

    Replay-buffer transform (pass it as ``transform=`` or inside a
    :class:`~torchrl.envs.transforms.Compose`); it is stateless, so it is safe with ``prefetch``.
    The sample is reshaped to ``[B, T + 1]`` clips and every entry is kept for steps
    ``0 .. T - 1``; the transform adds to it rather than rebuilding it:

    * each ``in_keys`` entry (uint8 frames ``[3, H, W]``, optionally resized, still uint8: the
      networks and the loss centre frames themselves, :func:`~torchrl_prelar.modules.pixels.
      centred_pixels`) is o_t, and the matching ``out_keys`` entry holds o_{t+1}; the two are
      views of one ``[B, T + 1]`` tensor;
    * ``init_key`` (``[B, T, 1]``) is True at t = 0 of every clip.

    Other per-frame entries (e.g. ``"true_action"``, the action taken at o_t, or the episode id)
    are those of o_t. A clip whose ``episode_key`` changes along it is an error.

    Args:
        num_transitions (int): T, the number of transitions per clip (clips hold ``T + 1``
            frames).

    Keyword Args:
        resize (tuple of int, optional): ``(H, W)`` to resize frames to (antialiased bilinear,
            rounded back to uint8). Defaults to ``None`` (frames as stored).
        in_keys (list of NestedKey, optional): frame keys. Defaults to ``["pixels"]``.
        out_keys (list of NestedKey, optional): where o_{t+1} of each ``in_keys`` entry goes.
            Defaults to ``[("next", key) for key in in_keys]``.
        episode_key (NestedKey, optional): episode id of each frame, checked when present.
            Defaults to ``"episode"``.
        init_key (NestedKey, optional): the first-step flag written. Defaults to
            ``"is_init"``.

    Raises:
        ValueError: if ``num_transitions`` is below 1, if ``out_keys`` and ``in_keys`` differ
            in length, or (when called) if the sample is not a flat batch of ``B * (T + 1)``
            frames, a clip crosses an episode boundary, or frames are not uint8
            ``[N, 3, H, W]``.
        KeyError: (when called) if the sample lacks an ``in_keys`` entry.

    Examples:
        >>> t = VideoClipTransform(num_transitions=2)
        >>> flat = TensorDict(
        ...     pixels=torch.zeros(6, 3, 8, 8, dtype=torch.uint8),
        ...     episode=torch.tensor([0, 0, 0, 1, 1, 1]),
        ...     batch_size=[6],
        ... )
        >>> out = t(flat)
        >>> out.batch_size, out["is_init"][:, :, 0].tolist(), out["episode"].tolist()
        (torch.Size([2, 2]), [[True, False], [True, False]], [[0, 0], [1, 1]])
    """

    def __init__(
        self,
        num_transitions: int,
        *,
        resize: tuple[int, int] | None = None,
        in_keys: Sequence[NestedKey] | None = None,
        out_keys: Sequence[NestedKey] | None = None,
        episode_key: NestedKey = EPISODE_KEY,
        init_key: NestedKey = INIT_KEY,
    ) -> None:
        if num_transitions < 1:
            raise ValueError(f"num_transitions must be >= 1, got {num_transitions}")
        in_keys = [PIXELS_KEY] if in_keys is None else list(in_keys)
        if out_keys is None:
            out_keys = [("next", *_as_tuple(key)) for key in in_keys]
        if len(out_keys) != len(in_keys):
            raise ValueError(
                f"out_keys must name one key per in_keys entry, got in_keys={in_keys} and "
                f"out_keys={list(out_keys)}"
            )
        super().__init__(in_keys=in_keys, out_keys=list(out_keys))
        self.num_transitions = num_transitions
        self.resize = tuple(resize) if resize is not None else None
        self.episode_key = episode_key
        self.init_key = init_key

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        clip_len = self.num_transitions + 1
        if tensordict.ndim != 1 or tensordict.shape[0] % clip_len:
            raise ValueError(
                f"VideoClipTransform expects a flat batch of B * (T + 1) = B * {clip_len} frames, "
                f"got batch size {tuple(tensordict.shape)}"
            )
        clips = tensordict.reshape(-1, clip_len)
        episode = clips.get(self.episode_key, None)
        if episode is not None and (episode != episode[:, :1]).any():
            raise ValueError(
                f"a sampled clip crosses an episode boundary: sample with a SliceSampler using "
                f"traj_key={self.episode_key!r}, slice_len={clip_len}, strict_length=True"
            )
        frames = {key: self._frames(clips, key) for key in self.in_keys}
        out = clips[:, :-1].exclude(*self.in_keys)
        for in_key, out_key in zip(self.in_keys, self.out_keys, strict=True):
            out.set(in_key, frames[in_key][:, :-1])
            out.set(out_key, frames[in_key][:, 1:])
        is_init = torch.zeros(*out.shape, 1, dtype=torch.bool, device=out.device)
        is_init[:, 0] = True
        return out.set(self.init_key, is_init)

    def _frames(self, clips: TensorDictBase, key: NestedKey) -> torch.Tensor:
        pixels = clips.get(key, None)
        if pixels is None:
            raise KeyError(f"VideoClipTransform: the sample has no {key!r} (its in_keys)")
        if pixels.dtype != torch.uint8 or pixels.ndim != 5 or pixels.shape[2] != 3:
            raise ValueError(
                f"{key!r} must be uint8 [N, 3, H, W] in storage, got {pixels.dtype} "
                f"{tuple(pixels.flatten(0, 1).shape)}"
            )
        if self.resize is None or tuple(pixels.shape[-2:]) == self.resize:
            return pixels
        resized = F.interpolate(
            pixels.flatten(0, 1).float(), size=self.resize, mode="bilinear", antialias=True
        )
        return resized.round_().clamp_(0, 255).to(torch.uint8).unflatten(0, pixels.shape[:2])

    def _call(self, tensordict: TensorDictBase) -> TensorDictBase:
        raise RuntimeError("VideoClipTransform is a replay-buffer transform, not an env transform")


def _as_tuple(key: NestedKey) -> tuple[str, ...]:
    return (key,) if isinstance(key, str) else tuple(key)
