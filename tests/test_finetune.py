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
from dreamer_prelar import run_finetune
from dreamer_prelar_utils import FINETUNE_CHECKPOINT as CHECKPOINT_NAME
from dreamer_prelar_utils import (
    make_finetune_buffer,
    make_finetune_world_model,
    read_finetune_checkpoint,
)
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tensordict import TensorDict

from torchrl_prelar.modules import make_world_model
from torchrl_prelar.modules.intrinsic import VideoIntrinsicBonus
from torchrl_prelar.objectives import PreLARLoss
from torchrl_prelar.objectives.finetune import POSTERIOR_KEYS
from torchrl_prelar.training.checkpoint import load_checkpoint, save_checkpoint
from torchrl_prelar.training.finetune_agent import (
    AUX_REWARD_KEY,
    REWARD_KEY,
    FinetuneModelLoss,
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
    small = make_world_model("tiny", rssm={"deter": 32})
    save_checkpoint(path, {"world_model": small.state_dict(), "config": {"preset": "tiny"}})
    with pytest.raises(ValueError, match=r"rssm\.rssm_prior.*pre-trained shape"):
        load_pretrained_world_model(make_world_model("tiny"), path, {"preset": "tiny"})
    cfg = preset_config(tmp_path, f"finetune.pretrained={path}")
    with pytest.raises(ValueError, match="does not match the configured world model"):
        make_finetune_world_model(cfg, action_dim=4)


def test_dreamer_baseline_has_the_same_structure_without_pretraining(tmp_path):
    cfg = preset_config(tmp_path, "finetune.init=dreamer")  # no checkpoint in tmp_path
    model = make_finetune_world_model(cfg, action_dim=4)
    assert type(model.action_model).__name__ == "ActionEncoder"
    with pytest.raises(ValueError, match="finetune.init"):
        make_finetune_world_model(preset_config(tmp_path, "finetune.init=apv2"), action_dim=4)


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
    from torchrl_prelar.modules import make_action_encoder, world_model_config

    torch.manual_seed(0)
    model = make_world_model("tiny", reward_keys=[REWARD_KEY, AUX_REWARD_KEY])
    model.action_model = make_action_encoder(world_model_config("tiny"), 4)
    model.pixel_keys = [("next", "pixels")]
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
