import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY, tiny, tiny_finetune_agent
from dreamer_prelar import run_finetune
from dreamer_prelar_utils import FINETUNE_CHECKPOINT as CHECKPOINT_NAME
from dreamer_prelar_utils import (
    make_finetune_buffer,
    make_finetune_world_model,
    read_finetune_checkpoint,
    validate_finetune,
)
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tensordict import TensorDict

from torchrl_prelar.io import load_checkpoint, save_checkpoint
from torchrl_prelar.modules import make_world_model
from torchrl_prelar.modules.intrinsic import VideoIntrinsicBonus
from torchrl_prelar.objectives import PreLARLoss
from torchrl_prelar.objectives.finetune import POSTERIOR_KEYS
from torchrl_prelar.training.finetune_agent import (
    AUX_REWARD_KEY,
    REWARD_KEY,
    FinetuneModelLoss,
    build_finetune_world_model,
    load_pretrained_world_model,
)

REPO = Path(__file__).resolve().parents[1]
REPRESENTATION = ("encoder.", "rssm.")
FROZEN_STEPS = 70  # prefill 50 + 4 batches of 5: updates 1..5 with freeze_updates = 5


def preset_config(run_dir, *overrides):
    with initialize_config_dir(str(REPO / "examples" / "config"), version_base=None):
        config = compose("config", overrides=["preset=test", f"run_dir={run_dir}", *overrides])
    return OmegaConf.to_container(config, resolve=True)


@pytest.fixture(scope="module")
def frozen_run(tmp_path_factory):
    """`stage=all preset=test` in a subprocess, stopped while encoder + RSSM are frozen."""
    run_dir = tmp_path_factory.mktemp("prelar") / "run"
    env = {**os.environ, "MUJOCO_GL": "egl"}
    subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "dreamer_prelar.py"),
            "stage=all",
            "preset=test",
            f"run_dir={run_dir}",
            f"finetune.env_steps={FROZEN_STEPS}",
        ],
        check=True,
        env=env,
        cwd=run_dir.parent,
        capture_output=True,
    )
    return run_dir


def representation(state):
    return {k: v for k, v in state.items() if k.startswith(REPRESENTATION)}


def finetuned_world_model(run_dir):
    state = read_finetune_checkpoint(run_dir)["loss"]
    prefix = "model_loss.prelar_loss.model_loss.world_model.world_model."
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def read_csv(path):
    with open(path, newline="") as file:
        return [(int(float(step)), float(value)) for step, value in csv.reader(file)]


def test_pipeline_loads_pretrained_world_model_and_writes_outputs(frozen_run):
    checkpoint = read_finetune_checkpoint(frozen_run)
    assert checkpoint["progress"]["env_steps"] == FROZEN_STEPS
    assert checkpoint["progress"]["updates"] == 5
    pretrained = load_checkpoint(frozen_run / "pretrained_world_model.pt")["world_model"]
    finetuned = finetuned_world_model(frozen_run)
    # Encoder and RSSM are the pre-trained ones (all updates so far were frozen) ...
    loaded = representation(pretrained)
    assert loaded and loaded.keys() == representation(finetuned).keys()
    for name, value in loaded.items():
        assert torch.equal(value, finetuned[name]), name
    # ... the decoder was loaded, then trained from the first update ...
    decoder = [k for k in pretrained if k.startswith("decoder.")]
    assert any(not torch.equal(pretrained[k], finetuned[k]) for k in decoder)
    # ... and the latent action model is gone, replaced by the action encoder.
    assert any(k.startswith("action_model.trunk.") for k in pretrained)
    assert not any(k.startswith("action_model.trunk.") for k in finetuned)
    assert finetuned["action_model.module.0.weight"].shape[-1] == 4
    assert any(k.startswith("reward_heads.1.") for k in finetuned)

    scalars = frozen_run / "csv" / "prelar_test" / "scalars" / "finetune"
    losses = read_csv(scalars / "world_model_loss.csv")
    assert losses and all(math.isfinite(value) for _, value in losses)
    success = read_csv(scalars / "train_success.csv")
    assert all(value in (0.0, 1.0) for _, value in success)
    image = frozen_run / "finetune_curves.png"
    assert image.stat().st_size > 1000 and image.read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((frozen_run / "summary.json").read_text())
    assert "pretrain" in summary and summary["finetune"]["updates"] == 5
    assert math.isfinite(summary["finetune"]["last_metrics"]["world_model_loss"])
    # Each stage logged the resolved config: pre-training first, then fine-tuning.
    texts = frozen_run / "csv" / "prelar_test" / "texts"
    assert sorted(path.name for path in texts.glob("hparams*.txt")) == [
        "hparams0.txt",
        "hparams1.txt",
    ]
    assert f"finetune.env_steps: {FROZEN_STEPS}" in (texts / "hparams1.txt").read_text()


def test_resume_continues_and_unfreezes_representation(frozen_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(frozen_run, run_dir)
    before = read_finetune_checkpoint(run_dir)
    torch.manual_seed(1234)  # a new process starts from another RNG state
    summary = run_finetune(preset_config(run_dir, "finetune.env_steps=100"))
    after = read_finetune_checkpoint(run_dir)

    # Counters continue: 5 frozen updates + one per 5 new env steps.
    assert after["progress"]["env_steps"] == summary["env_steps"] == 100
    assert after["progress"]["updates"] == 11
    assert after["progress"]["episodes"] >= before["progress"]["episodes"]
    # The optimiser continued (Adam counts every update) and the replay was restored whole.
    adam_steps = {float(s["step"]) for s in after["stepper"]["optimizer"]["state"].values()}
    assert adam_steps == {11.0}
    buffer = make_finetune_buffer(preset_config(run_dir)["finetune"])
    buffer.loads(run_dir / after["replay"])
    assert len(buffer) == 100
    assert list((run_dir / CHECKPOINT_NAME).iterdir()) == [after["path"]]  # older one deleted
    loss_names = [name for name in after["loss"] if name.endswith("queue_count")]
    assert int(after["loss"][loss_names[0]]) == 11 * 3 * 10  # bonus queue restored, then grown
    # Encoder and RSSM moved once the freeze ended; the evaluation at 100 steps was logged.
    moved = [
        name
        for name, value in representation(finetuned_world_model(frozen_run)).items()
        if not torch.equal(value, finetuned_world_model(run_dir)[name])
    ]
    assert moved
    assert [e["env_steps"] for e in summary["evaluations"]] == [100]
    assert 0.0 <= summary["evaluations"][0]["eval_success_rate"] <= 1.0


def test_max_seconds_stops_checkpoints_and_a_rerun_resumes(frozen_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(frozen_run, run_dir)
    stopped = run_finetune(
        preset_config(run_dir, "finetune.env_steps=100", "finetune.max_seconds=0")
    )
    # The first collected batch (5 env steps) is past a limit of 0 s: stop, checkpoint, summary.
    assert stopped["stopped_by_max_seconds"] and stopped["env_steps"] == FROZEN_STEPS + 5
    assert read_finetune_checkpoint(run_dir)["progress"]["env_steps"] == FROZEN_STEPS + 5
    summary = json.loads((run_dir / "summary.json").read_text())["finetune"]
    assert summary["env_steps"] == FROZEN_STEPS + 5
    finished = run_finetune(preset_config(run_dir, "finetune.env_steps=100"))
    assert not finished["stopped_by_max_seconds"] and finished["env_steps"] == 100
    assert finished["updates"] == 11


def test_pretrained_size_mismatch_names_parameters(tmp_path):
    path = tmp_path / "pretrained_world_model.pt"
    settings = tiny(rssm={"deter": 32})
    small = make_world_model(**settings)
    save_checkpoint(path, {"world_model": small.state_dict(), "world_model_kwargs": settings})
    with pytest.raises(ValueError, match=r"rssm\.rssm_prior.*pre-trained shape") as error:
        load_pretrained_world_model(make_world_model(**TINY), path, TINY)
    assert "'deter': 32" in str(error.value) and "'deter': 64" in str(error.value)
    cfg = preset_config(tmp_path, f"finetune.pretrained={path}")
    with pytest.raises(ValueError, match="does not match the configured world model"):
        make_finetune_world_model(cfg, action_dim=4)


def test_dreamer_baseline_has_the_same_structure_without_pretraining(tmp_path):
    cfg = preset_config(tmp_path, "arm=dreamer")  # no checkpoint in tmp_path
    model = make_finetune_world_model(cfg, action_dim=4)
    assert type(model.action_model).__name__ == "ActionEncoder"
    unknown = preset_config(tmp_path, "arm=dreamer")
    unknown["finetune"]["init"] = unknown["finetune"]["arm"] = "apv2"
    with pytest.raises(ValueError, match="finetune.init"):
        make_finetune_world_model(unknown, action_dim=4)


def test_dreamer_arm_with_dreamerv2_action_path_and_prelar_refusing_it(tmp_path):
    cfg = preset_config(tmp_path, "arm=dreamer", "world_model.action_encoder.identity=true")
    model = make_finetune_world_model(cfg, action_dim=4)
    assert list(model.action_model.parameters()) == []
    assert model.rssm_prior.action_state_projector[0].in_features == 8 * 8 + 4  # tiny: 8 x 8
    path = tmp_path / "pretrained_world_model.pt"
    save_checkpoint(path, {"world_model": make_world_model().state_dict()})
    with pytest.raises(ValueError, match="init='prelar' loads an RSSM that reads the pre-trained"):
        build_finetune_world_model(
            4, init="prelar", pretrained=path, action_encoder={"identity": True}
        )


#: What each arm runs (docs/guide.md, "Fine-tuning arms"): init, video bonus, frozen stage.
ARMS = {
    "dreamer": ("dreamer", False, False),
    "prelar": ("prelar", True, True),
    "apv": ("apv", True, True),
    "contextwm": ("contextwm", True, True),
}


@pytest.mark.parametrize("preset", ["test", "quick", "reach35k", "paper", "metaworld"])
@pytest.mark.parametrize("arm", sorted(ARMS))
def test_each_arm_composes_as_its_table_says(tmp_path, arm, preset):
    with initialize_config_dir(str(REPO / "examples" / "config"), version_base=None):
        config = compose("config", overrides=[f"preset={preset}", f"arm={arm}"])
    tune = OmegaConf.to_container(config, resolve=True)["finetune"]
    init, bonus, frozen = ARMS[arm]
    assert (tune["arm"], tune["init"]) == (arm, init)
    assert tune["intrinsic"]["enabled"] is bonus
    assert (tune["freeze_updates"] > 0) is frozen
    if bonus:
        assert tune["intrinsic"]["beta"] == 1.0


def test_metaworld_preset_draws_a_new_goal_per_reset_as_the_anchors_env():
    with initialize_config_dir(str(REPO / "examples" / "config"), version_base=None):
        anchors = compose("config", overrides=["preset=metaworld", "arm=dreamer"])
        default = compose("config", overrides=["arm=dreamer"])
    assert anchors.finetune.goals == "uniform" and default.finetune.goals == "mt1"


def test_unknown_goal_distribution_is_refused_before_the_run(tmp_path):
    cfg = preset_config(tmp_path, "arm=dreamer", "finetune.goals=random")
    with pytest.raises(ValueError, match="goals must be one of.*'uniform'"):
        validate_finetune(cfg["finetune"])


def test_default_arm_is_prelar(tmp_path):
    tune = preset_config(tmp_path)["finetune"]
    assert (tune["arm"], tune["init"], tune["intrinsic"]["enabled"]) == ("prelar", "prelar", True)


def test_init_set_apart_from_its_arm_is_refused(tmp_path):
    cfg = preset_config(tmp_path, "finetune.init=dreamer")
    with pytest.raises(ValueError, match="arm=dreamer") as error:
        validate_finetune(cfg["finetune"])
    assert "prelar's" in str(error.value)
    env = {**os.environ, "MUJOCO_GL": "egl"}
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "dreamer_prelar.py"),
            "preset=test",
            f"run_dir={tmp_path / 'run'}",
            "finetune.init=dreamer",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "arm=dreamer" in done.stderr
    assert not (tmp_path / "run" / "csv").exists()


def test_dreamer_arm_shows_no_bonus_and_no_freeze_in_cfg_job(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "dreamer_prelar.py"),
            "arm=dreamer",
            "--cfg",
            "job",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    tune = yaml.safe_load(done.stdout)["finetune"]
    assert tune["init"] == "dreamer"
    assert tune["intrinsic"]["enabled"] is False and tune["freeze_updates"] == 0


def transitions(batch=2, steps=4):
    generator = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (batch, steps, 3, 64, 64), generator=generator)
    is_init = torch.zeros(batch, steps, 1, dtype=torch.bool)
    is_init[:, 0] = True
    return TensorDict(
        {
            "action": torch.rand(batch, steps, 4, generator=generator) * 2 - 1,
            "is_init": is_init,
            ("next", "pixels"): frames.to(torch.uint8),
            ("next", "reward"): torch.rand(batch, steps, 1, generator=generator),
        },
        [batch, steps],
    )


def finetune_model_loss(bonus):
    torch.manual_seed(0)
    model = make_world_model(**TINY, action_dim=4, reward_keys=[REWARD_KEY, AUX_REWARD_KEY])
    return FinetuneModelLoss(PreLARLoss(model), bonus)


def test_reward_head_learns_reward_plus_bonus_and_aux_head_plain_reward():
    batch = transitions()
    plain = finetune_model_loss(None)
    with_bonus = finetune_model_loss(VideoIntrinsicBonus(512, queue_size=64, k=4))
    with_bonus.bonus.compute(torch.randn(2, 4, 512))  # non-empty queue: a non-zero bonus
    torch.manual_seed(1)  # same posterior samples in both
    plain_losses, _ = plain(batch.clone())
    torch.manual_seed(1)
    bonus_losses, _ = with_bonus(batch.clone())
    assert float(bonus_losses["intrinsic_bonus"]) > 0
    # Same weights and batch: the aux term is unchanged, the reward term sees the bonus.
    torch.testing.assert_close(
        plain_losses["loss_model_aux_reward"], bonus_losses["loss_model_aux_reward"]
    )
    assert not torch.allclose(plain_losses["loss_model_reward"], bonus_losses["loss_model_reward"])
    assert torch.equal(batch["next", "reward"], transitions()["next", "reward"])  # input intact


def test_bf16_world_model_hands_fp32_losses_and_states_to_the_actor_critic():
    loss = finetune_model_loss(VideoIntrinsicBonus(512, queue_size=64, k=4))
    loss.autocast_dtype = torch.bfloat16
    losses, posterior = loss(transitions())
    assert {value.dtype for value in losses.values()} == {torch.float32}
    for key in POSTERIOR_KEYS:
        assert posterior[key].dtype == torch.float32
    assert posterior["next", "reco_pixels"].dtype == torch.bfloat16  # the decoder ran in bf16
    assert loss.bonus.queue.dtype == torch.float32


def test_gaussian_reward_loss_is_half_the_squared_error_of_both_heads():
    batch = transitions()
    batch.set(("next", "reward"), 10 * batch.get(("next", "reward")))  # near-goal rewards
    symlog_loss = finetune_model_loss(None)
    gaussian = finetune_model_loss(None)
    gaussian.reward_loss = "gaussian"
    torch.manual_seed(1)
    symlog_losses, _ = symlog_loss(batch.clone())
    torch.manual_seed(1)
    losses, model_td = gaussian(batch.clone())
    target = batch.get(("next", "reward"))
    predicted = model_td.get(("next", "reward"))
    aux = model_td.get(("next", "aux_reward"))
    expected = 0.5 * ((predicted - target) ** 2).mean()
    torch.testing.assert_close(losses["loss_model_reward"].squeeze(), expected)
    torch.testing.assert_close(
        losses["loss_model_aux_reward"].squeeze(), 0.5 * ((aux - target) ** 2).mean()
    )
    assert float(losses["loss_model_reward"]) > 2 * float(symlog_losses["loss_model_reward"])
    torch.testing.assert_close(losses["loss_model_reco"], symlog_losses["loss_model_reco"])
    with pytest.raises(ValueError, match="reward_loss"):
        FinetuneModelLoss(symlog_loss.prelar_loss, None, reward_loss="mse")


def test_prefill_updates_run_once_and_elapsed_time_survives_a_resume(tmp_path):
    run_dir = tmp_path / "run"
    overrides = ("arm=dreamer", "finetune.prefill_updates=4", "finetune.env_steps=100")
    first = run_finetune(preset_config(run_dir, *overrides))
    # prefill 50; updates from env step 50 every 5 steps: 11 batches, and 4 once
    assert first["updates"] == 4 + 11
    saved = read_finetune_checkpoint(run_dir)["progress"]["elapsed_seconds"]
    assert saved == pytest.approx(first["seconds_total"], abs=0.1) and saved > 0
    second = run_finetune(preset_config(run_dir, *overrides[:2], "finetune.env_steps=150"))
    assert second["updates"] == first["updates"] + 10  # no second burst after the resume
    # the resumed run adds its own time up to its last checkpoint, never more than it ran
    assert saved < second["seconds_total"] <= saved + second["seconds_this_run"] + 0.5


def test_dreamerv2_actor_samples_in_bounds_with_its_floor_and_learns_by_dynamics():
    agent = tiny_finetune_agent(actor_distribution="trunc_normal", actor_min_std=0.1)
    start = TensorDict(state=torch.randn(64, 64), belief=torch.randn(64, 64), batch_size=[64])
    out = agent.actor(start.clone())
    assert out["action"].abs().max() <= 1 and out["scale"].min() >= 0.1
    losses, _ = agent.loss.actor_loss(start)
    losses["loss_actor"].backward()
    grads = [p.grad for p in agent.actor.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    with pytest.raises(ValueError, match="distribution"):
        tiny_finetune_agent(actor_distribution="beta")


def test_slow_critic_target_bootstraps_from_a_copy_refreshed_every_n_updates():
    from torchrl_prelar.training.finetune_agent import TargetCritic

    agent = tiny_finetune_agent(critic_target="slow", slow_critic=0.0, target_update_every=2)
    target = agent.loss.actor_loss.value_model
    assert isinstance(target, TargetCritic) and target is agent.loss.target_critic
    optimised = {id(p) for group in agent.optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in optimised for p in target.parameters())
    assert "target_critic.updates" in agent.loss.state_dict()

    def online_equals_target():
        return all(
            torch.equal(a, b)
            for a, b in zip(agent.value.parameters(), target.parameters(), strict=True)
        )

    batch = transitions(2, 6)
    flags = torch.zeros(2, 6, 1, dtype=torch.bool)
    for key in ("done", "terminated", "truncated"):
        batch.set(("next", key), flags.clone())
    agent.update(batch.clone())
    assert not online_equals_target()  # the critic moved, its copy waits
    agent.update(batch.clone())
    assert online_equals_target() and int(target.updates) == 2
    with pytest.raises(ValueError, match="critic_target"):
        tiny_finetune_agent(critic_target="target")
