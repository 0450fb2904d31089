"""Synthetic action-free videos whose motion is driven by a hidden action.

Bright squares move on a dark torus by a 2-d displacement drawn at every step. The
displacement is the hidden ("true") action: training never reads it, a linear probe of the
latent action against it measures how much of the action PreLAR recovered.

* :func:`moving_square_batch`: 64x64 frames, any integer displacement up to ``max_shift``
  pixels per axis.
* :func:`grid_square_batch`: a coarse grid world (by default 16x16 frames, a 4x4 grid of
  4-pixel cells) where the square moves by at most one cell per axis.

:func:`toy_batch` and :func:`toy_episodes` name the toy (:data:`TOYS`), as the example's
``data.synthetic`` block does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tensordict import TensorDict

from torchrl_prelar.data.clips import transitions_from_frames
from torchrl_prelar.data.episodes import Episode


def moving_square_batch(
    batch_size: int,
    steps: int,
    *,
    image_size: int = 64,
    square: int = 12,
    num_squares: int = 1,
    max_shift: int = 4,
    generator: torch.Generator | None = None,
) -> TensorDict:
    """Samples ``batch_size`` clips of ``steps`` transitions as a PreLAR training batch.

    Each clip shows ``num_squares`` squares of side ``square`` at random places and colours,
    all displaced by the same random shift at every step (wrapping around the borders).

    Args:
        batch_size (int): clips.
        steps (int): transitions per clip.

    Keyword Args:
        image_size (int, optional): frame side, in pixels. Defaults to ``64``.
        square (int, optional): square side, in pixels. Defaults to ``12``.
        num_squares (int, optional): squares per clip. Defaults to ``1``.
        max_shift (int, optional): largest shift per axis and step, in pixels. Defaults to
            ``4``.
        generator (torch.Generator, optional): random stream. Defaults to ``None`` (the
            global one).

    Returns:
        a ``[batch_size, steps]`` TensorDict with uint8 ``"pixels"`` and
        ``("next", "pixels")`` (``[3, image_size, image_size]``, channels first), ``"is_init"``
        (True at t = 0) and ``"true_action"``: the float displacement (dy, dx) from o_t to
        o_{t+1}, in pixels, and ``"true_next_position"``: the (row, column) of the first
        square's corner in o_{t+1}; ``"true_state"``: that corner in o_t, unwrapped (not taken
        modulo the frame), and ``"true_state_change"``: its change from o_t to o_{t+1}, the
        displacement in pixels (the keys
        :func:`~torchrl_prelar.evaluation.latent_actions.episodes_to_clips` writes from an
        episode's states).

    Examples:
        >>> td = moving_square_batch(2, 5, generator=torch.Generator().manual_seed(0))
        >>> td["pixels"].shape, td["true_action"].shape
        (torch.Size([2, 5, 3, 64, 64]), torch.Size([2, 5, 2]))
        >>> bool((td["next", "pixels"][:, :-1] == td["pixels"][:, 1:]).all())
        True
    """
    shifts = torch.randint(-max_shift, max_shift + 1, (batch_size, steps, 2), generator=generator)
    start = torch.randint(0, image_size, (batch_size, num_squares, 1, 2), generator=generator)
    colours = torch.randint(128, 256, (batch_size, num_squares, 1, 3), generator=generator)
    return _square_clips(start, shifts, colours, square, image_size)


def grid_square_batch(
    batch_size: int,
    steps: int,
    *,
    image_size: int = 16,
    cell: int = 4,
    square: int = 8,
    generator: torch.Generator | None = None,
) -> TensorDict:
    """Clips of a grid world: one square that moves by at most one cell per axis and step.

    The frame is a torus of ``image_size // cell`` cells per side; the square (side
    ``square`` pixels) starts on a random cell and moves by ``cell * (dy, dx)`` pixels with
    ``dy, dx`` drawn uniformly from {-1, 0, 1} at every step (9 hidden actions). With
    few cells the RSSM's categorical state can hold the square's cell exactly, and "cell +
    move" is a small table the prior can learn in a few hundred updates.

    Args:
        batch_size (int): clips.
        steps (int): transitions per clip.

    Keyword Args:
        image_size (int, optional): frame side, in pixels, a multiple of ``cell``. Defaults
            to ``16``.
        cell (int, optional): grid cell side, in pixels. Defaults to ``4``.
        square (int, optional): square side, in pixels. Defaults to ``8``.
        generator (torch.Generator, optional): random stream. Defaults to ``None`` (the
            global one).

    Returns:
        the keys of :func:`moving_square_batch`; ``"true_action"`` is ``(dy, dx)`` in cells,
        ``"true_next_position"``, ``"true_state"`` and ``"true_state_change"`` are in pixels.

    Raises:
        ValueError: if ``image_size`` is not a multiple of ``cell``.

    Examples:
        >>> td = grid_square_batch(2, 5, generator=torch.Generator().manual_seed(0))
        >>> td["pixels"].shape, td["true_action"].shape
        (torch.Size([2, 5, 3, 16, 16]), torch.Size([2, 5, 2]))
        >>> sorted(td["true_action"].unique().tolist())
        [-1.0, 0.0, 1.0]
        >>> bool((td["next", "pixels"][:, :-1] == td["pixels"][:, 1:]).all())
        True
    """
    if image_size % cell:
        raise ValueError(f"image_size={image_size} must be a multiple of cell={cell}.")
    moves = torch.randint(-1, 2, (batch_size, steps, 2), generator=generator)
    start = torch.randint(0, image_size // cell, (batch_size, 1, 1, 2), generator=generator)
    colours = torch.randint(128, 256, (batch_size, 1, 1, 3), generator=generator)
    clips = _square_clips(cell * start, cell * moves, colours, square, image_size)
    clips.set("true_action", moves.float())
    return clips


def _square_clips(
    start: torch.Tensor, shifts: torch.Tensor, colours: torch.Tensor, square: int, image_size: int
) -> TensorDict:
    """Renders squares at ``start`` ([B, N, 1, 2]) moved by ``shifts`` ([B, T, 2]) on a torus."""
    batch_size, steps = shifts.shape[:2]
    offsets = torch.cat([torch.zeros(batch_size, 1, 2, dtype=shifts.dtype), shifts.cumsum(1)], 1)
    positions = (start + offsets[:, None]) % image_size
    grid = torch.arange(image_size)
    rows = (grid - positions[..., :1]) % image_size < square
    cols = (grid - positions[..., 1:]) % image_size < square
    masks = rows[..., :, None] & cols[..., None, :]
    layers = masks[..., None, :, :] * colours[..., None, None]
    frames = layers.amax(1).to(torch.uint8)
    return transitions_from_frames(
        frames,
        true_action=shifts.float(),
        true_next_position=positions[:, 0, 1:].float(),
        true_state=(start[:, 0] + offsets[:, :-1]).float(),
        true_state_change=shifts.float(),
    )


def moving_square_episodes(
    num_episodes: int, length: int, *, seed: int = 0, **kwargs
) -> list[Episode]:
    """Moving-square videos as :class:`~torchrl_prelar.data.episodes.Episode` objects.

    Frames are ``[length + 1, H, W, 3]`` uint8 and actions ``[length + 1, 2]`` in the APV
    convention (``actions[0]`` is zero padding, ``actions[t]`` leads into frame t), so they go
    through the same writer as every other source; states ``[length + 1, 2]`` are the first
    square's unwrapped corner at every frame, so the change of the state from a frame to the
    next is the square's displacement.

    Args:
        num_episodes (int): episodes.
        length (int): transitions per episode (``length + 1`` frames).

    Keyword Args:
        seed (int, optional): seeds the episodes; their names are ``square-<seed>-<i>``.
            Defaults to ``0``.
        **kwargs: settings of :func:`moving_square_batch`.

    Examples:
        >>> episodes = moving_square_episodes(2, 10)
        >>> episodes[0].frames.shape, episodes[0].actions.shape, episodes[0].states.shape
        ((11, 64, 64, 3), (11, 2), (11, 2))
    """
    batch = moving_square_batch(
        num_episodes, length, generator=torch.Generator().manual_seed(seed), **kwargs
    )
    return _episodes(batch, f"square-{seed}")


def grid_square_episodes(
    num_episodes: int, length: int, *, seed: int = 0, **kwargs
) -> list[Episode]:
    """Grid-world videos (:func:`grid_square_batch`) as whole episodes.

    The actions (moves in cells) and states (the square's unwrapped corner, in pixels) follow
    :func:`moving_square_episodes`.

    Args:
        num_episodes (int): episodes.
        length (int): transitions per episode (``length + 1`` frames).

    Keyword Args:
        seed (int, optional): seeds the episodes; their names are ``grid-<seed>-<i>``.
            Defaults to ``0``.
        **kwargs: settings of :func:`grid_square_batch`.

    Examples:
        >>> episodes = grid_square_episodes(2, 10)
        >>> episodes[0].frames.shape, episodes[0].actions.shape, episodes[0].states.shape
        ((11, 16, 16, 3), (11, 2), (11, 2))
    """
    batch = grid_square_batch(
        num_episodes, length, generator=torch.Generator().manual_seed(seed), **kwargs
    )
    return _episodes(batch, f"grid-{seed}")


#: The toys by name: their batch of clips and their episodes.
TOYS: dict[str, tuple[Callable[..., TensorDict], Callable[..., list[Episode]]]] = {
    "square": (moving_square_batch, moving_square_episodes),
    "grid": (grid_square_batch, grid_square_episodes),
}


def _toy_settings(
    toy: str, image_size: int, square: int, num_squares: int, max_shift: int, cell: int
) -> dict[str, int]:
    """The settings ``toy`` takes, each checked.

    A square of 1 to ``image_size`` pixels, at least one square, shifts >= 0, cells of 1 to
    ``image_size`` pixels.
    """
    limits = {
        "image_size": (image_size, 1, None),
        "square": (square, 1, image_size),
        "num_squares": (num_squares, 1, None),
        "max_shift": (max_shift, 0, None),
        "cell": (cell, 1, image_size),
    }
    for name, (value, least, most) in limits.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < least
            or (most is not None and value > most)
        ):
            span = f">= {least}" if most is None else f"in [{least}, {most}]"
            raise ValueError(f"{name} must be an integer {span}, got {value!r}.")
    if toy == "square":
        return {
            "image_size": image_size,
            "square": square,
            "num_squares": num_squares,
            "max_shift": max_shift,
        }
    if toy == "grid":
        return {"image_size": image_size, "square": square, "cell": cell}
    raise ValueError(f"toy must be one of {sorted(TOYS)}, got {toy!r}.")


def toy_batch(
    batch_size: int,
    steps: int,
    *,
    toy: str = "square",
    image_size: int = 64,
    square: int = 12,
    num_squares: int = 1,
    max_shift: int = 4,
    cell: int = 4,
    generator: torch.Generator | None = None,
) -> TensorDict:
    """Samples clips of the toy named ``toy``, its settings checked first.

    ``"square"`` is :func:`moving_square_batch` and ``"grid"`` :func:`grid_square_batch`;
    each takes only its own settings.

    Args:
        batch_size (int): clips.
        steps (int): transitions per clip.

    Keyword Args:
        toy (str, optional): ``"square"`` or ``"grid"``. Defaults to ``"square"``.
        image_size (int, optional): frame side, in pixels. Defaults to ``64``.
        square (int, optional): square side, in pixels. Defaults to ``12``.
        num_squares (int, optional): squares per clip (``"square"`` only). Defaults to ``1``.
        max_shift (int, optional): largest shift per axis and step, in pixels (``"square"``
            only). Defaults to ``4``.
        cell (int, optional): grid cell side, in pixels (``"grid"`` only). Defaults to ``4``.
        generator (torch.Generator, optional): random stream. Defaults to ``None`` (the
            global one).

    Raises:
        ValueError: if ``toy`` is unknown or a setting is out of range (naming it).

    Examples:
        >>> toy_batch(2, 3, toy="grid", image_size=16, square=8)["pixels"].shape
        torch.Size([2, 3, 3, 16, 16])
    """
    settings = _toy_settings(toy, image_size, square, num_squares, max_shift, cell)
    return TOYS[toy][0](batch_size, steps, generator=generator, **settings)


def toy_episodes(
    num_episodes: int,
    length: int,
    *,
    toy: str = "square",
    image_size: int = 64,
    square: int = 12,
    num_squares: int = 1,
    max_shift: int = 4,
    cell: int = 4,
    seed: int = 0,
) -> list[Episode]:
    """Episodes of the toy named ``toy``, its settings checked first.

    ``"square"`` is :func:`moving_square_episodes` and ``"grid"``
    :func:`grid_square_episodes`; the settings are those of :func:`toy_batch`.

    Args:
        num_episodes (int): episodes.
        length (int): transitions per episode (``length + 1`` frames).

    Keyword Args:
        toy (str, optional): ``"square"`` or ``"grid"``. Defaults to ``"square"``.
        image_size (int, optional): frame side, in pixels. Defaults to ``64``.
        square (int, optional): square side, in pixels. Defaults to ``12``.
        num_squares (int, optional): squares per clip (``"square"`` only). Defaults to ``1``.
        max_shift (int, optional): largest shift per axis and step, in pixels (``"square"``
            only). Defaults to ``4``.
        cell (int, optional): grid cell side, in pixels (``"grid"`` only). Defaults to ``4``.
        seed (int, optional): seeds the episodes. Defaults to ``0``.

    Raises:
        ValueError: if ``toy`` is unknown or a setting is out of range (naming it).

    Examples:
        >>> [episode.name for episode in toy_episodes(2, 4, toy="grid", image_size=16)]
        ['grid-0-0', 'grid-0-1']
    """
    settings = _toy_settings(toy, image_size, square, num_squares, max_shift, cell)
    return TOYS[toy][1](num_episodes, length, seed=seed, **settings)


def _episodes(batch: TensorDict, prefix: str) -> list[Episode]:
    """The clips of a toy batch as whole episodes (APV action convention, per-frame states)."""
    num_episodes = batch.shape[0]
    frames = torch.cat([batch["pixels"][:, :1], batch["next", "pixels"]], 1)
    frames = frames.permute(0, 1, 3, 4, 2).numpy()
    action = batch["true_action"]
    actions = torch.cat([torch.zeros_like(action[:, :1]), action], 1).numpy()
    state, change = batch["true_state"], batch["true_state_change"]
    states = torch.cat([state, state[:, -1:] + change[:, -1:]], 1).numpy()
    return [
        Episode(frames[i], actions[i], name=f"{prefix}-{i}", source="synthetic", states=states[i])
        for i in range(num_episodes)
    ]
