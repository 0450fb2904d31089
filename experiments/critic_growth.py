"""How fast does a critic's value grow under the agent's own critic update?

A fine-tuned agent's critic may value the states its policy visits far below the return that
follows them (``experiments/goal_probe.py``, ``critic`` column). This script measures how
fast a fresh critic's value grows when nothing else changes. For a fine-tuning run folder of
``examples/dreamer_prelar.py stage=finetune`` it:

1. loads the run's latest checkpoint and drives ``--episodes`` episodes of ``--steps`` steps
   with the run's policy (``goal_probe.policy_episodes``), and takes the world model's
   posterior state after every step;
2. for each variant of :data:`VARIANTS`, builds the agent again with a fresh critic (the
   variant's width, initialisation, loss or Adam epsilon), loads every other weight of the
   checkpoint, and trains the critic alone as the agent does: lambda returns of
   ``imagination_horizon`` imagined steps from ``--starts`` posterior states drawn per update
   (frozen world model and actor), bootstrapped from the target copy where the run has
   one (``critic_target: slow``: copied every ``target_update_every`` updates), Adam with the
   run's ``critic_lr`` and gradient clip;
3. every ``--eval-every`` updates, scores the critic's value of the episodes' states against
   the discounted return that followed them (``goal_probe.critic_readout``).

    MUJOCO_GL=egl python experiments/critic_growth.py --run runs/metaworld/dreamer_seed2 \\
        --variants default width400 mse_glorot --updates 400 --out critic_growth.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples"))
sys.path.insert(0, str(REPO / "experiments"))

from goal_probe import critic_readout, policy_episodes, posterior, run_config  # noqa: E402

from torchrl_prelar.io import atomic_write_text  # noqa: E402

#: One change each from the run's own critic: ``width`` (hidden units), ``loss``
#: (``"symlog_mse"``, TorchRL's, or ``"mse"``, DreamerV2's ``0.5 (v - target)^2``), ``init``
#: (``"torch"`` or ``"glorot"``: Glorot-uniform weights and zero biases, TensorFlow's default
#: as in DreamerV2) and ``eps`` (Adam's epsilon; ``None``: the run's).
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "width400": {"width": 400},
    "mse": {"loss": "mse"},
    "eps1e-8": {"eps": 1e-8},
    "mse_glorot": {"loss": "mse", "init": "glorot"},
}


def critic_loss(agent, fake_data, loss: str) -> torch.Tensor:
    """The critic's loss on imagined ``fake_data`` (with its ``lambda_target`` and discount
    weights): the agent's own (``"symlog_mse"``) or DreamerV2's plain ``"mse"``."""
    if loss == "symlog_mse":
        return agent.loss.value_loss(fake_data)[0]["loss_value"].float()
    value = agent.value(fake_data.select("state", "belief").detach())["state_value"].float()
    target = fake_data["lambda_target"].float().detach()
    weight = fake_data[agent.loss.actor_loss.tensor_keys.discount_weight].float()
    return (0.5 * weight * (value - target).square()).mean()


def fresh_agent(cfg: Mapping[str, Any], state: Mapping[str, Any], variant: Mapping[str, Any]):
    """The run's agent with a fresh critic of ``variant`` and every other checkpoint weight."""
    from dreamer_prelar_utils import make_agent

    cfg = copy.deepcopy(cfg)
    cfg["finetune"]["critic"]["hidden"] = variant.get("width", cfg["finetune"]["critic"]["hidden"])
    agent = make_agent(cfg, action_dim=4)
    kept = {
        key: value
        for key, value in state["loss"].items()
        if "value_model_params" not in key and not key.startswith("target_critic")
    }
    agent.loss.load_state_dict(kept, strict=False)
    params = list(agent.loss.value_loss.value_model_params.values(True, True))
    with torch.no_grad():
        if variant.get("init", "torch") == "glorot":
            for param in params:
                if param.ndim == 2:
                    torch.nn.init.xavier_uniform_(param)
                else:
                    param.zero_()
        if agent.target_critic is not None:
            for target, online in zip(agent.target_critic.module.parameters(), params, strict=True):
                target.copy_(online)
    return agent, params


def grow_critic(
    agent,
    params: Sequence[torch.nn.Parameter],
    states,
    reward: np.ndarray,
    *,
    tune: Mapping[str, Any],
    variant: Mapping[str, Any],
    updates: int,
    eval_every: int,
    starts: int,
    horizon: int,
    seed: int,
) -> list[dict[str, float]]:
    """Train the critic alone from ``states`` ``[E, T]`` (posterior ``state``, ``belief``);
    the critic readout every ``eval_every`` updates, with the update count."""
    episodes, steps = reward.shape
    optimizer = torch.optim.Adam(
        params, lr=tune["critic_lr"], eps=variant.get("eps") or tune["eps"]
    )
    generator = torch.Generator().manual_seed(seed)
    flat = states.reshape(-1)
    curve = []
    for update in tqdm(range(updates + 1), desc="critic updates", leave=False):
        if update % eval_every == 0 or update == updates:
            with torch.no_grad():
                value = agent.value(states.clone())["state_value"].reshape(episodes, steps)
            readout = critic_readout(value.float(), reward, gamma=tune["gamma"], horizon=horizon)
            curve.append({"update": update, "value": readout["value"], "ratio": readout["ratio"]})
        if update == updates:
            break
        start = flat[torch.randint(len(flat), (starts,), generator=generator)].clone()
        _, fake_data = agent.loss.actor_loss(start)
        loss = critic_loss(agent, fake_data, variant.get("loss", "symlog_mse"))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, tune["grad_clip"])
        optimizer.step()
        if agent.target_critic is not None:
            agent.target_critic.step()
    return curve


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a fine-tuning run folder")
    parser.add_argument("--variants", nargs="+", default=["default"], choices=list(VARIANTS))
    parser.add_argument("--updates", type=int, default=400, help="critic updates per variant")
    parser.add_argument("--eval-every", type=int, default=100, help="updates between readouts")
    parser.add_argument("--starts", type=int, default=500, help="imagination starts per update")
    parser.add_argument("--episodes", type=int, default=8, help="policy episodes")
    parser.add_argument("--steps", type=int, default=500, help="steps per episode")
    parser.add_argument("--critic-horizon", type=int, default=300, help="see goal_probe")
    parser.add_argument("--seed", type=int, default=5000, help="seed of the first episode")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    args = parser.parse_args(argv)
    for option, least in (("updates", 1), ("eval_every", 1), ("starts", 1), ("episodes", 4)):
        if getattr(args, option) < least:
            parser.error(f"--{option.replace('_', '-')} must be >= {least}")
    if args.steps <= args.critic_horizon + 1:
        parser.error(f"--steps must exceed --critic-horizon + 1 ({args.critic_horizon + 1})")
    from dreamer_prelar_utils import make_finetune_env, read_finetune_checkpoint
    from results_report import command_line, machine_description

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = run_config(args.run)
    cfg["finetune"]["compile_networks"] = False
    tune = cfg["finetune"]
    state = read_finetune_checkpoint(args.run)
    agent, _ = fresh_agent(cfg, state, {})
    agent.loss.load_state_dict(state["loss"])
    env = make_finetune_env(tune, agent.carried, args.seed, render_quality=cfg["render_quality"])
    try:
        data = policy_episodes(
            agent.policy, env, episodes=args.episodes, steps=args.steps, seed=args.seed
        )
    finally:
        env.close()
    states = posterior(agent.world_model, data["frames"], data["actions"])
    states = states.get("next").select("state", "belief").clone()
    with torch.no_grad():
        run_value = agent.value(states.clone())["state_value"].reshape(args.episodes, args.steps)
    results = {}
    for name in args.variants:
        variant_agent, params = fresh_agent(cfg, state, VARIANTS[name])
        results[name] = {
            "change": VARIANTS[name],
            "curve": grow_critic(
                variant_agent,
                params,
                states,
                data["reward"],
                tune=tune,
                variant=VARIANTS[name],
                updates=args.updates,
                eval_every=args.eval_every,
                starts=args.starts,
                horizon=args.critic_horizon,
                seed=args.seed,
            ),
        }
        last = results[name]["curve"][-1]
        print(f"{name}: value {last['value']:.2f} after {last['update']} updates")
    run_readout = critic_readout(
        run_value, data["reward"], gamma=tune["gamma"], horizon=args.critic_horizon
    )
    report = {
        "command": command_line(__file__, argv),
        "machine": machine_description(args.threads),
        "run_dir": str(args.run),
        "env_steps": int(state["progress"]["env_steps"]),
        "settings": {k: getattr(args, k) for k in ("updates", "starts", "episodes", "steps")},
        "return_followed": run_readout["return"],
        "mean_reward": run_readout["mean_reward"],
        "run_critic": run_readout["value"],
        "variants": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
