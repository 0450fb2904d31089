"""Does a fine-tuned world model see the goal? A linear probe of its latent state.

On Meta-world's reach the goal is a small red sphere (a few pixels at 64 x 64), drawn anew each
episode. A policy acts on the world model's latent state, so it can only go to a goal that
state holds. For each fine-tuning run folder of ``examples/dreamer_prelar.py stage=finetune``
(started from the command line, so the folder holds ``hydra/config.yaml``) this script:

1. builds the run's agent and loads its latest checkpoint;
2. renders ``--episodes`` episodes of the run's task, camera, render quality and goal
   distribution, each reset with its own seed and driven by ``--steps`` uniformly random
   actions (each held for ``--action-hold`` env steps, so that the hand travels), or with
   ``--driver policy`` by the run's own policy (:func:`policy_episodes`: actions sampled as
   when it collects, so the hand goes where the agent takes it);
3. runs the world model's posterior over each episode and keeps the last latent state
   (stochastic state and belief) and its reconstruction of the last frame;
4. measures the goal marker's recall in that reconstruction (:func:`goal_marker_recall`):
   the last frame is rendered again with the goal's sphere hidden, the pixels that differ
   are the marker's, and recall is the share of the marker's squared contrast the
   reconstruction reproduces there (1: drawn as rendered; 0: drawn as if absent);
5. fits a linear probe (``torchrl_prelar.evaluation.latent_actions.linear_probe_r2``) from
   that state to the goal's position and, as the control, to the hand's position, on half of
   the goals, and scores it (R^2) on the other half: a goal is never on both sides. R^2 is
   averaged over ``--splits`` random halvings;
6. compares the reward head's prediction of the env's reward over the episodes with what the
   hand's position alone predicts (:func:`reward_readout`): a world model that knows the
   goal predicts reach's reward better than the hand alone does.

Each probe also records the success rate of the best *fixed point*
(:func:`best_fixed_point_success`): a policy that moves the hand to one point, whatever the
goal, and holds it there. It is computed for the goals of ``--goal-samples`` resets under each
goal distribution of the env (``finetune.goals``: one set of MT1's 50 fixed goals, the point
chosen for that set; or a new uniform goal per reset, as in the anchors' env). It bounds what
holding still earns without seeing the goal; it does not bound a policy that sweeps the hand
through the goal range, since an episode succeeds if the hand ever comes within the success
distance.

``OUT`` (JSON) holds a list of probes, each with its command, machine and settings and, per
run, its env steps, the marker's recall and size in pixels, and the R^2 of each target (per
coordinate and their mean). ``--append``
adds this invocation's probe to those already in ``OUT`` (e.g. the same runs at a later
checkpoint; a run's checkpoint probed again on episodes of the same kind (driver, action
hold, steps) replaces its earlier row); without it ``OUT``
holds this probe alone.

    MUJOCO_GL=egl python experiments/goal_probe.py --run dreamer=runs/mw/dreamer_seed0 \
        --run dreamer=runs/mw/dreamer_seed1 --out docs/results/goal_probe_reach.json
    MUJOCO_GL=egl python experiments/goal_probe.py --run dreamer=runs/mw/dreamer_seed0 \
        --driver policy --episodes 100 --steps 100 --out runs/goal_probe_policy.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples"))

from torchrl_prelar.envs.metaworld import (  # noqa: E402
    goal_site,
    make_metaworld_gym_env,
)
from torchrl_prelar.evaluation.latent_actions import (  # noqa: E402
    linear_probe_r2,
    split_episodes,
)
from torchrl_prelar.io import atomic_write_text  # noqa: E402
from torchrl_prelar.modules.pixels import centred_pixels  # noqa: E402
from torchrl_prelar.training.finetune_agent import AUX_REWARD_KEY, REWARD_KEY  # noqa: E402


def random_action_episodes(
    task: str,
    *,
    episodes: int,
    steps: int,
    image_size: int,
    camera: str,
    render_quality: str,
    action_repeat: int = 1,
    action_hold: int = 1,
    goals: str = "mt1",
    marker_scale: float = 1.0,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Episodes of ``task`` under uniformly random actions, with the goal and the hand.

    Returns ``frames`` ``[E, steps + 1, 3, H, W]`` uint8 (the reset frame first),
    ``last_without_goal`` ``[E, 3, H, W]`` (the last frame again, the goal's sphere hidden),
    ``actions`` ``[E, steps, A]``, the ``reward`` after each action ``[E, steps]``, the hand's
    (tool centre's) position after each action ``hands`` ``[E, steps, 3]``, and the ``goal``
    and the final ``hand`` positions ``[E, 3]``. Episode ``e`` is reset with seed
    ``seed + e``; each action is held for ``action_repeat`` simulator steps, as the
    fine-tuning env does (the reward summed over them); a new random action is drawn every
    ``action_hold`` env steps and repeated in between, so that the hand travels further than
    under a new action at each step; ``goals`` is the env's goal
    distribution (``finetune.goals``); ``marker_scale`` multiplies the radius of the goal's
    sphere as rendered (a diagnostic: 1 is the task as it is).

    Examples:
        >>> data = random_action_episodes("reach-v3", episodes=2, steps=3, image_size=64,
        ...                               camera="corner", render_quality="fast")  # doctest: +SKIP
        >>> data["frames"].shape, data["goal"].shape  # doctest: +SKIP
        ((2, 4, 3, 64, 64), (2, 3))
    """
    if episodes < 4 or steps < 1:
        raise ValueError(f"Expected episodes >= 4 and steps >= 1, got {episodes} and {steps}.")
    if action_hold < 1:
        raise ValueError(f"Expected action_hold >= 1, got {action_hold}.")
    env = make_metaworld_gym_env(
        task,
        image_size=image_size,
        camera=camera,
        render_quality=render_quality,
        goals=goals,
        goal_marker_scale=marker_scale,
        seed=seed,
    )
    generator = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    frames = np.zeros((episodes, steps + 1, 3, image_size, image_size), np.uint8)
    last_without_goal = np.zeros((episodes, 3, image_size, image_size), np.uint8)
    actions = np.zeros((episodes, steps, low.shape[0]), np.float32)
    reward, hands = np.zeros((episodes, steps), np.float32), np.zeros((episodes, steps, 3))
    goal = np.zeros((episodes, 3))
    try:
        for episode in tqdm(range(episodes), desc=f"rendering {task}", unit="ep"):
            env.reset(seed=seed + episode)
            goal[episode] = env.unwrapped._target_pos
            frames[episode, 0] = env.render().transpose(2, 0, 1)
            for step in range(steps):
                if step % action_hold == 0:
                    action = generator.uniform(low, high).astype(np.float32)
                actions[episode, step] = action
                for _ in range(action_repeat):
                    reward[episode, step] += env.step(action)[1]
                frames[episode, step + 1] = env.render().transpose(2, 0, 1)
                hands[episode, step] = env.unwrapped.tcp_center
            last_without_goal[episode] = render_without_goal(env).transpose(2, 0, 1)
    finally:
        env.close()
    return {
        "frames": frames,
        "last_without_goal": last_without_goal,
        "actions": actions,
        "reward": reward,
        "hands": hands,
        "goal": goal,
        "hand": hands[:, -1],
    }


def policy_episodes(
    policy,
    env,
    *,
    episodes: int,
    steps: int,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Episodes driven by an agent's acting ``policy``, with the goal and the hand.

    ``env`` is a fine-tuning env of ``examples/dreamer_prelar_utils.make_finetune_env`` (a
    TorchRL env over one Meta-world gym env, ``"pixels"`` only, with the policy's recurrent
    entries primed). Episode ``e`` is reset with seed ``seed + e``; its actions are sampled
    from the policy (``ExplorationType.RANDOM``), as when the agent collects its training
    episodes. Returns the entries of :func:`random_action_episodes`: ``frames``
    ``[E, steps + 1, 3, H, W]`` uint8 (the reset frame first), ``last_without_goal``,
    ``actions``, ``reward``, ``hands`` ``[E, steps, 3]``, ``goal`` and ``hand`` ``[E, 3]``.

    Examples:
        >>> data = policy_episodes(agent.policy, env, episodes=4, steps=100)  # doctest: +SKIP
        >>> data["actions"].shape  # doctest: +SKIP
        (4, 100, 4)
    """
    from torchrl.envs.utils import ExplorationType, set_exploration_type, step_mdp

    if episodes < 4 or steps < 1:
        raise ValueError(f"Expected episodes >= 4 and steps >= 1, got {episodes} and {steps}.")
    gym_env = env.base_env._env
    metaworld_env = gym_env.unwrapped
    pixels_shape = tuple(env.observation_spec["pixels"].shape)
    frames = np.zeros((episodes, steps + 1, *pixels_shape), np.uint8)
    last_without_goal = np.zeros((episodes, *pixels_shape), np.uint8)
    actions = np.zeros((episodes, steps, *env.action_spec.shape), np.float32)
    reward = np.zeros((episodes, steps), np.float32)
    hands = np.zeros((episodes, steps, 3))
    goal = np.zeros((episodes, 3))
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        for episode in tqdm(range(episodes), desc="policy episodes", unit="ep"):
            env.set_seed(seed + episode)
            td = env.reset()
            frames[episode, 0] = td["pixels"].numpy()
            goal[episode] = metaworld_env._target_pos
            for step in range(steps):
                td = env.step(policy(td))
                if td["next", "done"].any() and step < steps - 1:
                    raise ValueError(
                        f"The env's episodes end after {step + 1} steps; steps={steps} needs "
                        "episodes at least that long."
                    )
                actions[episode, step] = td["action"].numpy()
                reward[episode, step] = float(td["next", "reward"])
                frames[episode, step + 1] = td["next", "pixels"].numpy()
                hands[episode, step] = metaworld_env.tcp_center
                td = step_mdp(td)
            last_without_goal[episode] = render_without_goal(gym_env).transpose(2, 0, 1)
    return {
        "frames": frames,
        "last_without_goal": last_without_goal,
        "actions": actions,
        "reward": reward,
        "hands": hands,
        "goal": goal,
        "hand": hands[:, -1],
    }


def reset_goals(task: str, *, goals: str, resets: int, seed: int = 0) -> np.ndarray:
    """The goal positions of ``resets`` resets of ``task`` (seeds ``seed``, ``seed + 1``, ...)
    under the goal distribution ``goals``, ``[resets, 3]``, without rendering.

    Examples:
        >>> reset_goals("reach-v3", goals="uniform", resets=3).shape  # doctest: +SKIP
        (3, 3)
    """
    env = make_metaworld_gym_env(task, goals=goals, seed=seed)
    positions = np.zeros((resets, 3))
    try:
        for reset in range(resets):
            env.reset(seed=seed + reset)
            positions[reset] = env.unwrapped._target_pos
    finally:
        env.close()
    return positions


def best_fixed_point_success(goals: np.ndarray, *, radius: float, grid: int = 25) -> dict[str, Any]:
    """The success rate of the best fixed point: a hand held there, whatever the goal.

    A goal counts as reached when it lies within ``radius`` of the point (Meta-world's reach
    succeeds within 0.05 m). The point is searched on a ``grid`` ^ 3 lattice spanning the
    goals' bounding box, so the rate is a lower bound of the best one.

    Args:
        goals (np.ndarray): goal positions, ``[N, 3]``.

    Keyword Args:
        radius (float): the success distance.
        grid (int, optional): lattice points per axis. Defaults to ``25``.

    Returns:
        ``{"success": rate, "point": [x, y, z], "goals": N, "radius": radius}``.

    Examples:
        >>> goals = np.array([[0.0, 0.0, 0.0], [0.01, 0.0, 0.0], [1.0, 1.0, 1.0]])
        >>> best_fixed_point_success(goals, radius=0.05, grid=101)["success"]
        0.6666666666666666
    """
    goals = np.asarray(goals, dtype=np.float64)
    if goals.ndim != 2 or goals.shape[1] != 3 or len(goals) == 0:
        raise ValueError(f"goals must be [N, 3] with N >= 1, got shape {goals.shape}.")
    axes = np.linspace(goals.min(0), goals.max(0), grid).T
    points = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    reached = np.zeros(len(points))
    for goal in goals:
        reached += np.linalg.norm(points - goal, axis=1) <= radius
    best = int(reached.argmax())
    return {
        "success": float(reached[best] / len(goals)),
        "point": [round(float(v), 4) for v in points[best]],
        "goals": len(goals),
        "radius": radius,
    }


def render_without_goal(env) -> np.ndarray:
    """A Meta-world env's frame with its ``"goal"`` site made transparent, ``[H, W, 3]``.

    The site's colour is restored before returning, so the env renders as before.

    Examples:
        >>> env = make_metaworld_gym_env("reach-v3")  # doctest: +SKIP
        >>> _ = env.reset(seed=0)  # doctest: +SKIP
        >>> (env.render() != render_without_goal(env)).any()  # doctest: +SKIP
        True
    """
    model = env.unwrapped.model
    site = goal_site(model)
    rgba = model.site_rgba[site].copy()
    model.site_rgba[site, 3] = 0.0
    try:
        return env.render()
    finally:
        model.site_rgba[site] = rgba


def goal_marker_recall(
    reconstruction: torch.Tensor, frame: torch.Tensor, frame_without_goal: torch.Tensor
) -> dict[str, float]:
    """How much of the goal marker a reconstruction draws, pooled over a batch of frames.

    The marker's pixels are those where ``frame`` and ``frame_without_goal`` differ (any
    channel). Over them, ``recall = 1 - sum (reconstruction - frame)^2 / sum (frame_without_goal
    - frame)^2``: 1 when the marker is drawn as rendered, 0 when it is drawn as if absent
    (the reconstruction equals ``frame_without_goal`` there), below 0 when worse than absent.
    ``marker_pixels`` is the mean number of marker pixels per frame, ``marker_contrast`` the
    mean squared contrast per frame. All three tensors are ``[N, 3, H, W]`` in the same units.

    Examples:
        >>> without = torch.zeros(2, 3, 4, 4)
        >>> frame = without.clone()
        >>> frame[:, 0, 1, 1] = 1.0
        >>> goal_marker_recall(frame, frame, without)["recall"]
        1.0
        >>> goal_marker_recall(without, frame, without)
        {'recall': 0.0, 'marker_pixels': 1.0, 'marker_contrast': 1.0}
    """
    if not reconstruction.shape == frame.shape == frame_without_goal.shape:
        raise ValueError(
            "reconstruction, frame and frame_without_goal must have one shape, got "
            f"{tuple(reconstruction.shape)}, {tuple(frame.shape)}, "
            f"{tuple(frame_without_goal.shape)}."
        )
    frame, reconstruction = frame.double(), reconstruction.double()
    marker = (frame - frame_without_goal.double()).ne(0).any(1, keepdim=True).expand_as(frame)
    contrast = (frame - frame_without_goal.double()).pow(2).sum()
    if contrast == 0:
        raise ValueError("No frame shows the goal marker: its recall is undefined.")
    error = (reconstruction - frame).pow(2)[marker].sum()
    return {
        "recall": float(1.0 - error / contrast),
        "marker_pixels": float(marker[:, 0].sum()) / len(frame),
        "marker_contrast": float(contrast) / len(frame),
    }


def episodes_marker_recall(
    reconstruction: torch.Tensor, data: Mapping[str, np.ndarray]
) -> dict[str, float]:
    """:func:`goal_marker_recall` of ``reconstruction`` (centred pixels) against the last
    frames of :func:`random_action_episodes` ``data``, with and without the goal."""
    return goal_marker_recall(
        reconstruction,
        centred_pixels(torch.from_numpy(data["frames"][:, -1])),
        centred_pixels(torch.from_numpy(data["last_without_goal"])),
    )


def posterior(world_model, frames: np.ndarray, actions: np.ndarray):
    """The world model's posterior pass over whole episodes (eval mode, no gradient): its
    output TensorDict ``[E, T]``, where ``("next", "state")`` and ``("next", "belief")`` are
    the latent state after each action. ``frames`` ``[E, T + 1, 3, H, W]`` uint8 (the reset
    frame first), ``actions`` ``[E, T, A]``."""
    from tensordict import TensorDict

    pixels = torch.from_numpy(frames)
    episodes, steps = actions.shape[:2]
    is_init = torch.zeros(episodes, steps, 1, dtype=torch.bool)
    is_init[:, 0] = True
    clips = TensorDict(
        {
            "pixels": pixels[:, :-1],
            ("next", "pixels"): pixels[:, 1:],
            "action": torch.from_numpy(actions),
            "is_init": is_init,
        },
        [episodes, steps],
    )
    was_training = world_model.training
    world_model.eval()
    try:
        with torch.no_grad():
            return world_model(clips)
    finally:
        world_model.train(was_training)


def last_posterior(
    world_model, frames: np.ndarray, actions: np.ndarray, critic=None
) -> dict[str, Any]:
    """The world model's posterior over whole episodes: ``features``, the last stochastic
    state and belief ``[E, F]``; ``reconstruction``, of the last frame ``[E, 3, H, W]``
    (centred pixels); ``reward``, the reward head's prediction after each action ``[E, T]``
    (the auxiliary head, which learns the env's reward alone, where the model has one; ``None``
    for a model without reward heads); with a ``critic`` (a module from ``"state"`` and
    ``"belief"`` to ``"state_value"``), ``value``, its value of the state after each action
    ``[E, T]``."""
    episodes, steps = actions.shape[:2]
    out = posterior(world_model, frames, actions)
    state = out["next", "state"][:, -1].flatten(1)
    keys = out.keys(include_nested=True)
    reward_key = next((key for key in (AUX_REWARD_KEY, REWARD_KEY) if key in keys), None)
    value = None
    if critic is not None:
        states = out.get("next").select("state", "belief").clone()
        with torch.no_grad():
            value = critic(states)["state_value"].reshape(episodes, steps).float()
    return {
        "features": torch.cat([state, out["next", "belief"][:, -1]], -1).float(),
        "reconstruction": out["next", "reco_pixels"][:, -1].float(),
        "reward": None if reward_key is None else out[reward_key].reshape(episodes, steps).float(),
        "value": value,
    }


def critic_readout(
    value: torch.Tensor, reward: np.ndarray, *, gamma: float, horizon: int
) -> dict[str, Any] | None:
    """The critic's value of the states the episodes pass through, against the discounted
    return that followed them.

    ``value[e, t]`` is the critic's value of the state after action ``t``, which estimates
    ``sum_k gamma^k reward[e, t + 1 + k]``; that sum is computed from the episode's own rewards
    up to its end. Only the steps followed by at least ``horizon`` more steps are scored, so
    the cut-off tail weighs at most ``gamma^horizon``. Returns ``None`` if no step is.

    Examples:
        >>> reward = np.ones((2, 400))
        >>> result = critic_readout(torch.full((2, 400), 50.0), reward, gamma=0.99, horizon=300)
        >>> result["steps"], round(result["return"], 1), round(result["ratio"], 2)
        (99, 96.9, 0.52)
    """
    episodes, steps = reward.shape
    scored = steps - 1 - horizon
    if scored < 1:
        return None
    to_go = np.zeros((episodes, steps + 1))
    for t in reversed(range(steps)):
        to_go[:, t] = reward[:, t] + gamma * to_go[:, t + 1]
    predicted = value[:, :scored].double().numpy()
    realised = to_go[:, 1 : scored + 1]
    return {
        "steps": int(scored),
        "gamma": gamma,
        "horizon": horizon,
        "value": float(predicted.mean()),
        "return": float(realised.mean()),
        "ratio": float(predicted.mean() / realised.mean()),
        "correlation": float(np.corrcoef(predicted.ravel(), realised.ravel())[0, 1])
        if predicted.std() > 0 and realised.std() > 0
        else None,
        "mean_reward": float(reward.mean()),
    }


#: The goal distributions whose best fixed point each probe records (a ``"fixed"`` goal is
#: reached by one point at every reset).
DRAWN_GOALS = ("mt1", "uniform")

#: Relative ridge penalties (``linear_probe_r2``) the probe chooses from on its train half.
RIDGES = (0.01, 0.1, 1.0, 10.0, 100.0)


def _choose_ridge(
    x: torch.Tensor, y: torch.Tensor, groups: torch.Tensor, ridges: Sequence[float], seed: int
) -> float:
    """The penalty of ``ridges`` whose probe fitted on half of the groups scores best on the
    other half."""
    fit, score = split_episodes(groups, seed=seed)
    return max(
        ridges, key=lambda r: float(linear_probe_r2(x[fit], y[fit], x[score], y[score], ridge=r))
    )


def probe(
    features: torch.Tensor,
    targets: np.ndarray,
    groups: np.ndarray,
    *,
    splits: int = 5,
    ridges: Sequence[float] = RIDGES,
) -> dict[str, Any]:
    """Test R^2 of a linear probe ``features -> targets``, fitted on half of the groups.

    ``groups`` gives each row's group (the goal): a group is on one side of each split only.
    Features are standardised with the train half's statistics. The ridge penalty is chosen
    on the train half alone (fitted on half of its groups, scored on the others), then the
    probe is refitted on the whole train half and scored on the test half. R^2 per target
    coordinate and their mean, averaged over ``splits`` random halvings, with the penalty
    chosen in each; ``train_mean_r2`` is what predicting the train half's mean target scores
    on the same halvings, the floor a probe that finds nothing falls to.

    Examples:
        >>> x = torch.randn(80, 3)
        >>> result = probe(x, (x @ torch.randn(3, 2)).numpy(), np.arange(80), ridges=(0.0,))
        >>> round(result["mean"], 3)
        1.0
    """
    group_ids = torch.from_numpy(np.unique(groups, return_inverse=True)[1].reshape(-1))
    target = torch.as_tensor(targets, dtype=torch.float64)
    features = features.double()
    per_split, chosen, floor = [], [], []
    for seed in range(splits):
        train, test = split_episodes(group_ids, seed=seed)
        floor.append(_train_mean_r2(target[train], target[test]))
        mean, std = features[train].mean(0), features[train].std(0).clamp_min(1e-6)
        x = (features - mean) / std
        ridge = _choose_ridge(x[train], target[train], group_ids[train], ridges, seed + splits)
        chosen.append(ridge)
        per_split.append(
            linear_probe_r2(
                x[train],
                target[train],
                x[test],
                target[test],
                ridge=ridge,
                multioutput="raw_values",
            )
        )
    per_coordinate = torch.stack(per_split).mean(0)
    return {
        "per_coordinate": [round(float(v), 4) for v in per_coordinate],
        "mean": float(per_coordinate.mean()),
        "ridges_chosen": chosen,
        "train_mean_r2": float(torch.stack(floor).mean()),
    }


def reward_readout(
    predicted: torch.Tensor,
    data: Mapping[str, np.ndarray],
    groups: np.ndarray,
    *,
    splits: int = 5,
    neighbours: int = 10,
) -> dict[str, float]:
    """How well the world model predicts the env's reward, against what the hand alone tells.

    Reach's reward depends on the hand and the goal. ``r2`` is the R^2 of the reward head's
    prediction ``predicted`` ``[E, T]`` against the episodes' ``reward`` (every step), scored on
    the test halves of ``splits`` random halvings of the goals ``groups``. ``hand_only_r2`` is,
    on the same halves, the R^2 of the mean reward of the ``neighbours`` nearest hand positions
    of the train half (``hands``; all of them if it has fewer): roughly the best a predictor
    blind to the goal does. A world model that knows the goal beats it; one that does not
    scores about the same.

    Examples:
        >>> hands = np.random.default_rng(0).uniform(size=(20, 5, 3))
        >>> data = {"hands": hands, "reward": hands.sum(-1)}
        >>> result = reward_readout(torch.tensor(hands.sum(-1)), data, np.arange(20))
        >>> result["r2"], result["hand_only_r2"] > 0.5
        (1.0, True)
    """
    group_ids = torch.from_numpy(np.unique(groups, return_inverse=True)[1].reshape(-1))
    reward = torch.as_tensor(data["reward"], dtype=torch.float64)
    hands = torch.as_tensor(data["hands"], dtype=torch.float64)
    predicted = predicted.double()

    def r2(prediction: torch.Tensor, target: torch.Tensor) -> float:
        return float(1 - (prediction - target).square().mean() / target.var(unbiased=False))

    model, hand_only = [], []
    for seed in range(splits):
        train, test = split_episodes(group_ids, seed=seed)
        model.append(r2(predicted[test].flatten(), reward[test].flatten()))
        nearest = torch.cdist(hands[test].reshape(-1, 3), hands[train].reshape(-1, 3))
        index = nearest.topk(min(neighbours, nearest.shape[1]), largest=False).indices
        guess = reward[train].flatten()[index].mean(-1)
        hand_only.append(r2(guess, reward[test].flatten()))
    return {"r2": float(np.mean(model)), "hand_only_r2": float(np.mean(hand_only))}


def _train_mean_r2(train: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """R^2 per coordinate of predicting ``test`` by the mean of ``train``: ``linear_probe_r2``
    of a constant feature, whose fit is the train mean."""
    return linear_probe_r2(
        train.new_zeros(len(train), 1),
        train,
        test.new_zeros(len(test), 1),
        test,
        ridge=0.0,
        multioutput="raw_values",
    )


def run_config(run_dir: Path) -> dict[str, Any]:
    """The composed configuration a run of ``examples/dreamer_prelar.py`` saved in
    ``hydra/config.yaml`` (``SystemExit`` naming the folder if it has none)."""
    from omegaconf import OmegaConf

    config_file = run_dir / "hydra" / "config.yaml"
    if not config_file.is_file():
        raise SystemExit(
            f"{run_dir}: no hydra/config.yaml (the run was not started with "
            "examples/dreamer_prelar.py from the command line)."
        )
    return OmegaConf.to_container(OmegaConf.load(config_file), resolve=True)


def load_run(run_dir: Path) -> tuple[Mapping[str, Any], Any, int]:
    """The run's composed configuration, its agent with the latest checkpoint, its env steps."""
    from dreamer_prelar_utils import make_agent, read_finetune_checkpoint

    cfg = run_config(run_dir)
    cfg["finetune"]["compile_networks"] = False
    state = read_finetune_checkpoint(run_dir)
    agent = make_agent(cfg, action_dim=4)
    agent.loss.load_state_dict(state["loss"])
    return cfg, agent, int(state["progress"]["env_steps"])


def _episode_kind(settings: Mapping[str, Any]) -> tuple:
    """What acted in a probe's episodes and how long they were (probes made before
    ``--driver`` used random actions, each held one step)."""
    return (settings.get("driver", "random"), settings.get("action_hold", 1), settings["steps"])


def merge_probes(
    earlier: Sequence[Mapping[str, Any]], later: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The probes of a goal-probe file after ``later`` ones are added to ``earlier`` ones.

    A checkpoint (``run_dir``, ``env_steps``) probed again on episodes of the same kind keeps
    only its later row; rows on other kinds of episodes stay. Probes left without rows go.

    Examples:
        >>> kind = {"driver": "random", "action_hold": 1, "steps": 30}
        >>> row = {"run_dir": "runs/a", "env_steps": 5000, "hand_r2": 0.1}
        >>> old = [{"settings": kind, "runs": [row]}]
        >>> new = [{"settings": kind, "runs": [{**row, "hand_r2": 0.2}]}]
        >>> [probe["runs"][0]["hand_r2"] for probe in merge_probes(old, new)]
        [0.2]
    """
    merged = [dict(probe) for probe in earlier]
    for report in later:
        probed = {(run["run_dir"], run["env_steps"]) for run in report["runs"]}
        for old in merged:
            if _episode_kind(old["settings"]) == _episode_kind(report["settings"]):
                old["runs"] = [
                    run for run in old["runs"] if (run["run_dir"], run["env_steps"]) not in probed
                ]
        merged = [old for old in merged if old["runs"]] + [dict(report)]
    return merged


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from anchor_curves import add_run_argument, labelled_runs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_argument(parser)
    parser.add_argument("--episodes", type=int, default=400, help="episodes (one goal each)")
    parser.add_argument("--steps", type=int, default=30, help="actions per episode")
    parser.add_argument(
        "--driver",
        choices=("random", "policy"),
        default="random",
        help="what acts in the probe's episodes: uniformly random actions, or the run's own "
        "policy (actions sampled as when it collects)",
    )
    parser.add_argument(
        "--action-hold",
        type=int,
        default=1,
        help="with --driver random, env steps each random action is held for",
    )
    parser.add_argument("--splits", type=int, default=5, help="random halvings of the goals")
    parser.add_argument("--seed", type=int, default=1000, help="seed of the first episode")
    parser.add_argument(
        "--goal-samples", type=int, default=2000, help="resets per goal distribution"
    )
    parser.add_argument(
        "--success-radius", type=float, default=0.05, help="the task's success distance (m)"
    )
    parser.add_argument(
        "--critic-horizon",
        type=int,
        default=300,
        help="the critic's value is scored at the steps followed by this many more (episodes "
        "of more steps than this are needed)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    parser.add_argument("--append", action="store_true", help="keep the probes already in OUT")
    args = parser.parse_args(argv)
    if args.action_hold != 1 and args.driver != "random":
        parser.error("--action-hold holds random actions: it needs --driver random")
    for option, least in (("episodes", 4), ("steps", 1), ("splits", 1), ("action_hold", 1)):
        if getattr(args, option) < least:
            parser.error(
                f"--{option.replace('_', '-')} must be >= {least}, got {getattr(args, option)}"
            )
    from dreamer_prelar_utils import make_finetune_env
    from results_report import command_line, machine_description

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # the posterior's samples
    results, episodes_by_setting, fixed_point = [], {}, {}
    for label, run_dir in labelled_runs(args.run):
        cfg, agent, env_steps = load_run(run_dir)
        tune = cfg["finetune"]
        goal_distribution = tune.get("goals", "mt1")  # runs made before finetune.goals: MT1
        setting = (
            tune["task"],
            tune["camera"],
            cfg["render_quality"],
            tune["action_repeat"],
            goal_distribution,
        )
        if tune["task"] not in fixed_point:
            fixed_point[tune["task"]] = {
                goals: best_fixed_point_success(
                    reset_goals(
                        tune["task"], goals=goals, resets=args.goal_samples, seed=args.seed
                    ),
                    radius=args.success_radius,
                )
                for goals in DRAWN_GOALS
            }
        if args.driver == "policy":
            env = make_finetune_env(tune, agent.carried, args.seed, render_quality=setting[2])
            try:
                data = policy_episodes(
                    agent.policy, env, episodes=args.episodes, steps=args.steps, seed=args.seed
                )
            finally:
                env.close()
        else:
            if setting not in episodes_by_setting:  # random episodes shared by runs alike
                episodes_by_setting[setting] = random_action_episodes(
                    tune["task"],
                    episodes=args.episodes,
                    steps=args.steps,
                    image_size=cfg["world_model"]["image_size"],
                    camera=tune["camera"],
                    render_quality=cfg["render_quality"],
                    action_repeat=tune["action_repeat"],
                    action_hold=args.action_hold,
                    goals=goal_distribution,
                    seed=args.seed,
                )
            data = episodes_by_setting[setting]
        posterior = last_posterior(
            agent.world_model, data["frames"], data["actions"], critic=agent.value
        )
        features = posterior["features"]
        goals = np.unique(data["goal"].round(5), axis=0, return_inverse=True)[1].reshape(-1)
        results.append(
            {
                "label": label,
                "run_dir": str(run_dir),
                "env_steps": env_steps,
                "task": tune["task"],
                "render_quality": cfg["render_quality"],
                "goals": goal_distribution,
                "distinct_goals": int(goals.max() + 1),
                "goal_marker": episodes_marker_recall(posterior["reconstruction"], data),
                "reward": None
                if posterior["reward"] is None
                else reward_readout(posterior["reward"], data, goals, splits=args.splits),
                "goal_r2": probe(features, data["goal"], goals, splits=args.splits),
                "hand_r2": probe(features, data["hand"], goals, splits=args.splits),
                "critic": critic_readout(
                    posterior["value"],
                    data["reward"],
                    gamma=tune["gamma"],
                    horizon=args.critic_horizon,
                ),
            }
        )
    report = {
        "command": command_line(__file__, argv),
        "machine": machine_description(args.threads),
        "settings": {
            k: getattr(args, k)
            for k in (
                "episodes",
                "steps",
                "driver",
                "action_hold",
                "splits",
                "seed",
                "goal_samples",
                "success_radius",
                "critic_horizon",
            )
        },
        "ridges": list(RIDGES),
        "fixed_point_success": fixed_point,
        "runs": results,
    }
    earlier = (
        json.loads(args.out.read_text())["probes"] if args.append and args.out.exists() else []
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        args.out, json.dumps({"probes": merge_probes(earlier, [report])}, indent=1) + "\n"
    )
    for task, rates in fixed_point.items():
        print(
            f"{task}: the best fixed point succeeds at "
            + ", ".join(f"{rate['success']:.2f} ({goals} goals)" for goals, rate in rates.items())
        )
    for run in results:
        print(
            f"{run['label']} {run['run_dir']} at {run['env_steps']} env steps: goal marker "
            f"recall {run['goal_marker']['recall']:.2f}, goal R^2 {run['goal_r2']['mean']:.2f}, "
            f"hand R^2 {run['hand_r2']['mean']:.2f}"
            + (
                f", reward R^2 {run['reward']['r2']:.2f} "
                f"(hand alone {run['reward']['hand_only_r2']:.2f})"
                if run["reward"]
                else ""
            )
        )
    return report


if __name__ == "__main__":
    main()
