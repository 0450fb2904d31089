"""Does imagination rank actions as the env does? Imagined against real returns of held actions.

A Dreamer actor learns from imagination alone: it moves towards whatever actions the world
model's imagined rewards favour. This script checks that the world model favours the actions
the env rewards. For a fine-tuning run folder of ``examples/dreamer_prelar.py stage=finetune``
it:

1. loads the run's latest checkpoint and drives ``--episodes`` episodes of ``--steps`` steps
   with the run's policy (``goal_probe.policy_episodes``), and takes the world model's
   posterior state after every ``--every``-th action;
2. from each such state, imagines each plan of :data:`PLANS` (one action held for
   ``--horizon`` steps: +1 or -1 on one axis of the hand, 0 elsewhere; with
   ``--around-policy DELTA``, the policy's own action in that state, +DELTA or -DELTA on one
   axis, which is what the actor's gradient is about) ``--samples`` times
   with the agent's imagination (the world model's prior and the reward head imagination
   uses), sums the discounted imagined rewards, and reads where the hand went with a linear
   probe from latent state to hand position (fitted on the episodes' posterior states; its
   R^2 on held-out episodes is reported);
3. from the same env state (the episode replayed up to that action, without rendering:
   :func:`real_plans`) holds each plan in the env, sums the discounted rewards and records
   where the hand went; and, as the reference of a model that cannot see the goal, sums them
   again with the episode's goal replaced by each of ``--goal-samples`` other goals of the
   run's goal distribution, and averages;
4. per axis, compares the effect of the sign, ``return(+1) - return(-1)``, imagined against
   real (and against the goal-averaged real): the share of starts where both have the same
   sign (among those where the real effect is at least ``--decisive``), and their
   correlation; and how far the hand moves along the axis under +1 rather than -1, imagined
   against real.

A world model whose imagined effects agree with the env's in sign gives the actor gradients
that point where the env's reward lies; one that disagrees misleads the actor, however well
actor and critic learn. ``OUT`` (JSON) holds the command, machine, settings and per run the
figures of each plan and axis; ``OUT`` with ``.png`` holds the scatter of imagined against real
effects.

    MUJOCO_GL=egl python experiments/imagined_actions.py \\
        --run dreamer=runs/metaworld/dreamer_seed2 --out imagined_actions.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples"))
sys.path.insert(0, str(REPO / "experiments"))

from anchor_curves import add_run_argument, labelled_runs  # noqa: E402
from goal_probe import load_run, policy_episodes, posterior, reset_goals  # noqa: E402

from torchrl_prelar.evaluation import fit_linear_probe, linear_probe_r2  # noqa: E402
from torchrl_prelar.io import atomic_write_text  # noqa: E402

#: Held actions compared: +1 and -1 on each axis of the hand's motion (x, y, z), 0 elsewhere
#: (the gripper too).
PLANS: dict[str, tuple[float, float, float, float]] = {
    "x+": (1.0, 0.0, 0.0, 0.0),
    "x-": (-1.0, 0.0, 0.0, 0.0),
    "y+": (0.0, 1.0, 0.0, 0.0),
    "y-": (0.0, -1.0, 0.0, 0.0),
    "z+": (0.0, 0.0, 1.0, 0.0),
    "z-": (0.0, 0.0, -1.0, 0.0),
}
AXES = ("x", "y", "z")
#: The options a report records.
SETTINGS = (
    "episodes",
    "steps",
    "every",
    "horizon",
    "samples",
    "decisive",
    "goal_samples",
    "around_policy",
    "seed",
)


def start_indices(steps: int, *, every: int, horizon: int, max_episode_steps: int) -> list[int]:
    """The actions after which a plan starts: every ``every``-th of an episode's ``steps``,
    those leaving ``horizon`` more steps before the env's ``max_episode_steps``.

    Examples:
        >>> start_indices(10, every=4, horizon=3, max_episode_steps=500)
        [0, 4, 8]
        >>> start_indices(10, every=4, horizon=3, max_episode_steps=10)
        [0, 4]
    """
    return [t for t in range(0, steps, every) if t + 1 + horizon <= max_episode_steps]


def discounted_sum(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """``sum_k gamma^k r_k`` over the last axis.

    Examples:
        >>> float(discounted_sum(np.array([1.0, 1.0, 1.0]), 0.5))
        1.75
    """
    return (rewards * gamma ** np.arange(rewards.shape[-1])).sum(-1)


def _snapshot(metaworld_env) -> tuple[np.ndarray, dict[str, Any]]:
    """The simulator's full state and the Python state a Meta-world step reads or changes."""
    state = np.empty(mujoco.mj_stateSize(metaworld_env.model, mujoco.mjtState.mjSTATE_INTEGRATION))
    mujoco.mj_getState(
        metaworld_env.model, metaworld_env.data, state, mujoco.mjtState.mjSTATE_INTEGRATION
    )
    python_state = {
        name: copy.deepcopy(getattr(metaworld_env, name))
        for name in ("curr_path_length", "_prev_obs", "_last_stable_obs", "_target_pos")
    }
    return state, python_state


def _restore(metaworld_env, snapshot: tuple[np.ndarray, dict[str, Any]]) -> None:
    state, python_state = snapshot
    mujoco.mj_setState(
        metaworld_env.model, metaworld_env.data, state, mujoco.mjtState.mjSTATE_INTEGRATION
    )
    mujoco.mj_forward(metaworld_env.model, metaworld_env.data)
    for name, value in python_state.items():
        setattr(metaworld_env, name, copy.deepcopy(value))


def real_plans(
    env,
    data: Mapping[str, np.ndarray],
    *,
    starts: Sequence[int],
    held: np.ndarray,
    horizon: int,
    gamma: float,
    seed: int,
    action_repeat: int = 1,
    other_goals: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """What each plan gives in the env after each start of each episode of ``data`` (from
    :func:`goal_probe.policy_episodes` on ``env`` with ``seed``), plan ``p`` holding the action
    ``held[e, s, p]`` (``[E, S, P, A]``) for ``horizon`` steps:
    ``returns``, discounted, ``[E, S, P]``, and ``hand_moves``, the hand's displacement,
    ``[E, S, P, 3]``. With ``other_goals`` ``[K, 3]``, also ``goal_averaged_returns``
    ``[E, S, P]``: the same plans from the same states with the episode's goal replaced by each
    of them in turn, the returns averaged over them; what a model that cannot see the goal,
    only the goals' distribution, should expect.

    Episode ``e`` is reset as ``policy_episodes`` reset it (``env.set_seed(seed + e)``), then
    its recorded actions are replayed on the Meta-world env beneath the gym wrappers (no frame
    is rendered, no step counts towards their truncation); the replay must retrace the recorded
    goal and hand positions (MuJoCo is deterministic). At each start the simulator's state is
    saved, each plan is held from it, and the state is restored.

    Raises:
        ValueError: if a replay leaves the recorded trajectory.

    Examples:
        >>> data = policy_episodes(agent.policy, env, episodes=8, steps=300,
        ...                        seed=7000)  # doctest: +SKIP
        >>> held = held_actions(PLANS, (8, 2))
        >>> real = real_plans(env, data, starts=[0, 10], held=held, horizon=15, gamma=0.99,
        ...                   seed=7000)  # doctest: +SKIP
        >>> real["returns"].shape, real["hand_moves"].shape  # doctest: +SKIP
        ((8, 2, 6), (8, 2, 6, 3))
    """
    metaworld_env = env.base_env._env.unwrapped
    actions = data["actions"]
    returns = np.zeros((len(actions), len(starts), held.shape[2]))
    hand_moves = np.zeros((*returns.shape, 3))
    goal_averaged = np.zeros_like(returns)
    for episode in tqdm(range(len(actions)), desc="replaying episodes", unit="ep"):
        env.set_seed(seed + episode)
        env.reset()
        if not np.allclose(metaworld_env._target_pos, data["goal"][episode]):
            raise ValueError(f"Episode {episode}: the replay's goal is not the recorded one.")
        step = -1
        for s, start in enumerate(starts):
            while step < start:
                step += 1
                for _ in range(action_repeat):
                    metaworld_env.step(actions[episode, step])
            hand = metaworld_env.tcp_center.copy()
            if not np.allclose(hand, data["hands"][episode, start], atol=1e-5):
                raise ValueError(
                    f"Episode {episode}: the replay left the recorded hand after action "
                    f"{start} ({hand.tolist()} vs {data['hands'][episode, start].tolist()})."
                )
            snapshot = _snapshot(metaworld_env)
            for p, plan in enumerate(held[episode, s]):
                returns[episode, s, p] = _held_return(
                    metaworld_env, plan, horizon, gamma, action_repeat
                )
                hand_moves[episode, s, p] = metaworld_env.tcp_center - hand
                _restore(metaworld_env, snapshot)
                for goal in [] if other_goals is None else other_goals:
                    metaworld_env._target_pos = np.array(goal, dtype=float)
                    goal_averaged[episode, s, p] += _held_return(
                        metaworld_env, plan, horizon, gamma, action_repeat
                    ) / len(other_goals)
                    _restore(metaworld_env, snapshot)
    out = {"returns": returns, "hand_moves": hand_moves}
    if other_goals is not None:
        out["goal_averaged_returns"] = goal_averaged
    return out


def _held_return(
    metaworld_env, plan: np.ndarray, horizon: int, gamma: float, action_repeat: int
) -> float:
    """The discounted return of the action ``plan`` held for ``horizon`` steps from the env's
    state."""
    held = np.asarray(plan, np.float32)
    rewards = np.zeros(horizon)
    for k in range(horizon):
        for _ in range(action_repeat):
            rewards[k] += metaworld_env.step(held)[1]
    return float(discounted_sum(rewards, gamma))


def imagine(agent, states, actions: np.ndarray, *, samples: int):
    """The agent's imagination from each of ``states`` (a TensorDict ``[N]``) under the action
    sequences ``actions`` ``[N, H, A]``, ``samples`` times each (the prior samples its
    stochastic state): the imagined rewards ``[samples, N, H]`` and the last imagined states
    (a TensorDict ``[samples * N]``, sample-major).

    Examples:
        >>> rewards, last = imagine(agent, states, np.zeros((len(states), 15, 4)),
        ...                         samples=2)  # doctest: +SKIP
    """
    from tensordict.nn import TensorDictModule
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    count, horizon = actions.shape[:2]
    sequence = torch.as_tensor(np.ascontiguousarray(actions), dtype=torch.float32)
    sequence = sequence.repeat(samples, 1, 1)
    step = iter(range(horizon))
    policy = TensorDictModule(
        lambda belief: sequence[:, next(step)], in_keys=["belief"], out_keys=["action"]
    )
    repeated = states.expand(samples, *states.shape).reshape(-1).clone()
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        rollout = agent.loss.actor_loss.model_based_env.rollout(
            max_steps=horizon, policy=policy, auto_reset=False, tensordict=repeated
        )
    rewards = rollout["next", "reward"].float().reshape(samples, count, horizon)
    return rewards, rollout["next"][:, -1]


def imagined_plans(
    agent,
    states,
    *,
    held: np.ndarray,
    horizon: int,
    gamma: float,
    samples: int,
    hand_probe: Callable[[torch.Tensor], torch.Tensor],
) -> dict[str, np.ndarray]:
    """What each plan gives in imagination from each posterior state of ``states`` (a
    TensorDict ``[N]`` of ``"state"`` and ``"belief"``), plan ``p`` holding the action
    ``held[n, p]`` (``[N, P, A]``) for ``horizon`` steps, averaged over
    ``samples`` imaginations (the prior samples its stochastic state): ``returns``, the
    discounted imagined rewards, ``[N, P]``, and ``hand_moves``, ``[N, P, 3]``, the change
    of the hand's position that ``hand_probe`` (a map from :func:`features` to the hand's
    position, fitted on posterior states) reads from the first to the last state.
    Imagination is the agent's own (``agent.loss.actor_loss.model_based_env``: the world
    model's prior and the reward head the actor learns from).

    Examples:
        >>> held = held_actions(PLANS, (240,))
        >>> imagined = imagined_plans(agent, states, held=held, horizon=15, gamma=0.99,
        ...                           samples=4, hand_probe=probe)  # doctest: +SKIP
        >>> imagined["returns"].shape  # doctest: +SKIP
        (240, 6)
    """
    returns = np.zeros((len(states), held.shape[1]))
    hand_moves = np.zeros((*returns.shape, 3))
    start_hand = hand_probe(features(states)).float()
    for p in range(held.shape[1]):
        plan = np.broadcast_to(held[:, p, None], (len(states), horizon, held.shape[-1]))
        rewards, end_states = imagine(agent, states, plan, samples=samples)
        returns[:, p] = discounted_sum(rewards.numpy(), gamma).mean(0)
        end_hand = hand_probe(features(end_states)).float()
        hand_moves[:, p] = (end_hand.reshape(samples, len(states), 3).mean(0) - start_hand).numpy()
    return {"returns": returns, "hand_moves": hand_moves}


def features(states) -> torch.Tensor:
    """``[stochastic state, belief]`` of a TensorDict ``[N]`` of posterior or prior states,
    ``[N, F]`` (float32)."""
    return torch.cat([states["state"].flatten(1), states["belief"]], -1).float()


def recorded_hand_moves(
    agent,
    states,
    data: Mapping[str, np.ndarray],
    *,
    horizon: int,
    every: int,
    samples: int,
    hand_probe: Callable[[torch.Tensor], torch.Tensor],
) -> dict[str, dict[str, float]]:
    """The control of the held plans: from the posterior state after every ``every``-th action
    of the episodes (``states`` ``[E, T]``), imagination under the actions the policy took next
    (``horizon`` of them, recorded in ``data``) against where they took the hand. Per axis the
    mean size of the real and of the imagined move, their correlation over the starts and the
    slope of imagined on real (1: imagination moves the hand as far as the env).

    Examples:
        >>> moves = recorded_hand_moves(agent, states, data, horizon=15, every=10, samples=4,
        ...                             hand_probe=probe)  # doctest: +SKIP
    """
    steps = data["actions"].shape[1]
    starts = list(range(0, steps - horizon, every))
    actions = np.stack([data["actions"][:, t + 1 : t + 1 + horizon] for t in starts], 1)
    real = np.stack([data["hands"][:, t + horizon] - data["hands"][:, t] for t in starts], 1)
    start_states = states[:, starts].reshape(-1)
    _, end_states = imagine(
        agent, start_states, actions.reshape(-1, horizon, actions.shape[-1]), samples=samples
    )
    end_hand = hand_probe(features(end_states)).float().reshape(samples, -1, 3).mean(0)
    imagined = (end_hand - hand_probe(features(start_states)).float()).numpy()
    real = real.reshape(-1, 3)
    moves = {}
    for a, axis in enumerate(AXES):
        varies = real[:, a].std() > 0 and imagined[:, a].std() > 0
        moves[axis] = {
            "real_size": float(np.abs(real[:, a]).mean()),
            "imagined_size": float(np.abs(imagined[:, a]).mean()),
            "correlation": float(np.corrcoef(real[:, a], imagined[:, a])[0, 1]) if varies else None,
            "slope": float(np.polyfit(real[:, a], imagined[:, a], 1)[0]) if varies else None,
        }
    return moves


def held_actions(plans: Mapping[str, Sequence[float]], shape: tuple[int, ...]) -> np.ndarray:
    """The actions of constant ``plans`` for every start of ``shape``: ``[*shape, P, A]``.

    Examples:
        >>> held_actions(PLANS, (8, 2)).shape
        (8, 2, 6, 4)
    """
    constant = np.array(list(plans.values()), np.float32)
    return np.broadcast_to(constant, (*shape, *constant.shape)).copy()


def around_actions(base: np.ndarray, delta: float) -> np.ndarray:
    """Plans centred on ``base`` (``[..., A]``, e.g. the policy's actions): ``+delta`` and
    ``-delta`` on each axis of :data:`AXES` in turn, in the order of :data:`PLANS`, clipped to
    the action bounds: ``[..., 6, A]``.

    Examples:
        >>> around_actions(np.array([0.0, 0.95, 0.0, 0.5]), 0.1)[2:4]
        array([[0.  , 1.  , 0.  , 0.5 ],
               [0.  , 0.85, 0.  , 0.5 ]], dtype=float32)
    """
    steps = np.array(list(PLANS.values()), np.float32) * delta
    return np.clip(base[..., None, :] + steps, -1.0, 1.0).astype(np.float32)


def compare_effects(
    imagined: np.ndarray, real: np.ndarray, *, plans: Sequence[str], decisive: float
) -> dict[str, Any]:
    """Per axis of :data:`AXES`, the imagined and real effect of the sign of the held action,
    ``return(+1) - return(-1)`` (``imagined`` and ``real`` ``[N, P]``, columns in the order of
    ``plans``): ``agreement``, the share of the starts whose real effect is at least
    ``decisive`` in size where the imagined effect has the same sign (``None`` if there are
    none), ``decisive_starts``, their number, ``correlation`` over all starts, and the mean
    effects; per plan, the mean imagined and real returns.

    Examples:
        >>> real = np.array([[2.0, 0.0, 0, 0, 0, 0], [0.0, 3.0, 0, 0, 0, 0]])
        >>> imagined = np.array([[1.0, 0.0, 0, 0, 0, 0], [1.0, 0.0, 0, 0, 0, 0]])
        >>> compare_effects(imagined, real, plans=list(PLANS), decisive=1.0)["x"]["agreement"]
        0.5
    """
    column = {name: i for i, name in enumerate(plans)}
    report: dict[str, Any] = {"plans": {}}
    for name, i in column.items():
        report["plans"][name] = {
            "imagined": float(imagined[:, i].mean()),
            "real": float(real[:, i].mean()),
        }
    for axis in AXES:
        plus, minus = column[f"{axis}+"], column[f"{axis}-"]
        imagined_effect = imagined[:, plus] - imagined[:, minus]
        real_effect = real[:, plus] - real[:, minus]
        decisive_starts = np.abs(real_effect) >= decisive
        same_sign = np.sign(imagined_effect) == np.sign(real_effect)
        varies = imagined_effect.std() > 0 and real_effect.std() > 0
        report[axis] = {
            "agreement": float(same_sign[decisive_starts].mean())
            if decisive_starts.any()
            else None,
            "decisive_starts": int(decisive_starts.sum()),
            "correlation": float(np.corrcoef(imagined_effect, real_effect)[0, 1])
            if varies
            else None,
            "imagined_effect": float(imagined_effect.mean()),
            "real_effect": float(real_effect.mean()),
        }
    return report


def hand_move_effects(
    imagined: np.ndarray, real: np.ndarray, *, plans: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Per axis of :data:`AXES`, how much further the hand moves along it under +1 than under
    -1 on that axis, ``move(+1) - move(-1)``, averaged over the starts (``imagined`` and
    ``real`` ``[N, P, 3]`` hand displacements, plans in the order of ``plans``), and the
    ratio imagined / real.

    Examples:
        >>> real = np.zeros((2, 6, 3)); real[:, 0, 0], real[:, 1, 0] = 0.1, -0.1
        >>> hand_move_effects(real / 4, real, plans=list(PLANS))["x"]["ratio"]
        0.25
    """
    column = {name: i for i, name in enumerate(plans)}
    effects = {}
    for a, axis in enumerate(AXES):
        plus, minus = column[f"{axis}+"], column[f"{axis}-"]
        moved = {
            name: float((table[:, plus, a] - table[:, minus, a]).mean())
            for name, table in (("imagined", imagined), ("real", real))
        }
        moved["ratio"] = moved["imagined"] / moved["real"] if moved["real"] else None
        effects[axis] = moved
    return effects


def plot_effects(path: Path, effects: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Scatter of imagined (y) against real (x) effects per axis, one row per run label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(effects), len(AXES), figsize=(4 * len(AXES), 3.6 * len(effects)), squeeze=False
    )
    for row, (label, (imagined, real)) in enumerate(effects.items()):
        for col, axis in enumerate(AXES):
            ax = axes[row, col]
            ax.scatter(real[:, col], imagined[:, col], s=8, alpha=0.6)
            ax.axhline(0, color="grey", lw=0.5)
            ax.axvline(0, color="grey", lw=0.5)
            ax.set_title(f"{label}: {axis}")
            ax.set_xlabel("real return(+1) - return(-1)")
            ax.set_ylabel("imagined")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def policy_actions(agent, states) -> np.ndarray:
    """The policy's deterministic action (its distribution's mode) in each of ``states`` (a
    TensorDict of ``"state"`` and ``"belief"``): ``[*states.shape, A]``."""
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        return agent.actor(states.clone())["action"].float().numpy()


def hand_probe(states, hands: np.ndarray) -> tuple[Callable, list[float]]:
    """A linear probe from latent state to hand position fitted on every posterior state of
    ``states`` (``[E, T]``) against ``hands`` (``[E, T, 3]``), and its R^2 per axis when fitted
    on the even episodes and scored on the odd ones (never an episode on both sides).

    Examples:
        >>> probe, r2 = hand_probe(posterior_states, data["hands"])  # doctest: +SKIP
    """
    episodes, steps = hands.shape[:2]
    every_state = features(states.reshape(-1))
    targets = torch.from_numpy(hands).reshape(-1, 3)
    even = torch.arange(episodes).repeat_interleave(steps) % 2 == 0
    r2 = linear_probe_r2(
        every_state[even],
        targets[even],
        every_state[~even],
        targets[~even],
        multioutput="raw_values",
    )
    return fit_linear_probe(every_state, targets), r2.tolist()


def measure_run(
    run_dir: Path, args: argparse.Namespace
) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray]]:
    """The figures of one run (see the module's docstring) and its imagined and real effects
    per start and axis ``[N, 3]`` (for :func:`plot_effects`)."""
    from dreamer_prelar_utils import make_finetune_env

    torch.manual_seed(args.seed)  # a run's figures do not depend on the runs before it
    cfg, agent, env_steps = load_run(run_dir)
    tune = cfg["finetune"]
    horizon = args.horizon or tune["imagination_horizon"]
    starts = start_indices(
        args.steps, every=args.every, horizon=horizon, max_episode_steps=tune["max_episode_steps"]
    )
    other_goals = reset_goals(
        tune["task"], goals=tune["goals"], resets=args.episodes + args.goal_samples, seed=args.seed
    )[args.episodes :]  # the resets after the episodes'
    env = make_finetune_env(tune, agent.carried, args.seed, render_quality=cfg["render_quality"])
    try:
        data = policy_episodes(
            agent.policy, env, episodes=args.episodes, steps=args.steps, seed=args.seed
        )
        states = posterior(agent.world_model, data["frames"], data["actions"]).get("next")
        states = states.select("state", "belief")
        start_states = states[:, starts]
        if args.around_policy is None:
            held = held_actions(PLANS, tuple(start_states.shape))
        else:
            held = around_actions(policy_actions(agent, start_states), args.around_policy)
        real = real_plans(
            env,
            data,
            starts=starts,
            held=held,
            horizon=horizon,
            gamma=tune["gamma"],
            seed=args.seed,
            action_repeat=tune["action_repeat"],
            other_goals=other_goals,
        )
    finally:
        env.close()
    probe, probe_r2 = hand_probe(states, data["hands"])
    imagined = imagined_plans(
        agent,
        start_states.reshape(-1),
        held=held.reshape(-1, *held.shape[2:]),
        horizon=horizon,
        gamma=tune["gamma"],
        samples=args.samples,
        hand_probe=probe,
    )
    real = {key: value.reshape(-1, *value.shape[2:]) for key, value in real.items()}
    plans = list(PLANS)
    figures = compare_effects(
        imagined["returns"], real["returns"], plans=plans, decisive=args.decisive
    )
    goal_averaged = compare_effects(
        imagined["returns"], real["goal_averaged_returns"], plans=plans, decisive=args.decisive
    )
    report = {
        "run_dir": str(run_dir),
        "env_steps": env_steps,
        "starts": len(real["returns"]),
        **figures,
        "goal_averaged": {axis: goal_averaged[axis] for axis in AXES},
        "hand_probe_r2": dict(zip(AXES, probe_r2, strict=True)),
        "policy_episodes": {  # where the policy takes the hand, per axis
            "action_mean": data["actions"].mean((0, 1))[:3].tolist(),
            "last_hand_min": data["hand"].min(0).tolist(),
            "last_hand_max": data["hand"].max(0).tolist(),
            "goal_min": data["goal"].min(0).tolist(),
            "goal_max": data["goal"].max(0).tolist(),
        },
        "hand_moves": hand_move_effects(imagined["hand_moves"], real["hand_moves"], plans=plans),
        "recorded_actions": recorded_hand_moves(
            agent,
            states,
            data,
            horizon=horizon,
            every=args.every,
            samples=args.samples,
            hand_probe=probe,
        ),
    }
    effects = tuple(
        np.stack([table[:, 2 * i] - table[:, 2 * i + 1] for i in range(len(AXES))], 1)
        for table in (imagined["returns"], real["returns"])
    )
    return report, effects


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_argument(parser)
    parser.add_argument("--episodes", type=int, default=8, help="policy episodes per run")
    parser.add_argument("--steps", type=int, default=300, help="steps per episode")
    parser.add_argument("--every", type=int, default=10, help="actions between two starts")
    parser.add_argument(
        "--horizon", type=int, default=None, help="held steps (the run's imagination horizon)"
    )
    parser.add_argument("--samples", type=int, default=4, help="imaginations per start and plan")
    parser.add_argument(
        "--decisive", type=float, default=1.0, help="least real effect counted in agreement"
    )
    parser.add_argument(
        "--goal-samples", type=int, default=8, help="other goals of the goal-blind reference"
    )
    parser.add_argument(
        "--around-policy",
        type=float,
        default=None,
        metavar="DELTA",
        help="hold the policy's own action at each start +- DELTA on one axis (default: +-1)",
    )
    parser.add_argument("--seed", type=int, default=7000, help="seed of the first episode")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    args = parser.parse_args(argv)
    for option, least in (
        ("episodes", 4),
        ("steps", 1),
        ("every", 1),
        ("samples", 1),
        ("goal_samples", 1),
    ):
        if getattr(args, option) < least:
            parser.error(f"--{option.replace('_', '-')} must be >= {least}")
    if args.horizon is not None and args.horizon < 1:
        parser.error("--horizon must be >= 1")
    if args.around_policy is not None and not 0 < args.around_policy <= 1:
        parser.error("--around-policy must be in (0, 1]")
    from results_report import command_line, machine_description

    torch.set_num_threads(args.threads)
    runs, effects = {}, {}
    for label, run_dir in labelled_runs(args.run):
        runs[label], run_effects = measure_run(run_dir, args)
        effects[f"{label} ({runs[label]['env_steps']} env steps)"] = run_effects
        print(
            f"{label} at {runs[label]['env_steps']}: "
            + ", ".join(f"{axis} agreement {runs[label][axis]['agreement']}" for axis in AXES)
        )
    report = {
        "command": command_line(__file__, argv),
        "machine": machine_description(args.threads),
        "settings": {key: getattr(args, key) for key in SETTINGS},
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")
    plot_effects(args.out.with_suffix(".png"), effects)
    return report


if __name__ == "__main__":
    main()
