import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY
from dreamer_prelar import pretrain
from dreamer_prelar_utils import PRETRAIN_CHECKPOINT as CHECKPOINT_NAME

from torchrl_prelar import PreLARLoss, make_world_model
from torchrl_prelar import io as io_module
from torchrl_prelar.data.synthetic import moving_square_batch
from torchrl_prelar.io import load_checkpoint, save_checkpoint
from torchrl_prelar.training.precision import cpu_has_native_bf16, resolve_precision
from torchrl_prelar.training.pretrain import PreLARPretrainer, make_optimizer

REPO = Path(__file__).resolve().parents[1]


def make_trainer(seed=0):
    torch.manual_seed(seed)
    loss = PreLARLoss(make_world_model(**TINY))
    return PreLARPretrainer(loss, make_optimizer(loss.parameters(), lr=1e-3), precision="fp32")


def sample():
    return moving_square_batch(2, 5)


def parameters(trainer):
    return [p.detach().clone() for p in trainer.loss.parameters()]


def test_update_changes_parameters_and_reports_metrics():
    trainer = make_trainer()
    before = parameters(trainer)
    metrics = trainer.update(sample())
    assert {"loss", "grad_norm", "action_kl", "loss_model_reco"} <= set(metrics.keys())
    assert all(not value.requires_grad for value in metrics.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, parameters(trainer), strict=True))


def test_trainer_moves_every_module_of_the_loss_to_its_device():
    # The forward-reconstruction model belongs to the loss, not the world model: on a GPU it
    # stayed on the CPU until the trainer moved the whole loss ("meta" stands in for "cuda").
    loss = PreLARLoss(make_world_model(**TINY), lambda_forward_reco=1.0)
    assert loss.forward_model is not None
    PreLARPretrainer(loss, make_optimizer(loss.parameters()), precision="fp32", device="meta")
    tensors = [*loss.parameters(), *loss.buffers()]
    assert {tensor.device.type for tensor in tensors} == {"meta"}


def test_resume_continues_exactly(tmp_path):
    straight = make_trainer()
    torch.manual_seed(5)
    pretrain(straight, sample, num_updates=4, run_dir=tmp_path / "a", progress=False)

    first = make_trainer()
    torch.manual_seed(5)
    pretrain(first, sample, num_updates=2, run_dir=tmp_path / "b", progress=False)
    torch.manual_seed(123)  # a new process starts from another RNG state
    resumed = make_trainer(seed=99)
    pretrain(resumed, sample, num_updates=4, run_dir=tmp_path / "b", progress=False)

    assert load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)["step"] == 4
    for a, b in zip(parameters(straight), parameters(resumed), strict=True):
        torch.testing.assert_close(a, b)


def test_checkpoint_every_seconds_adds_checkpoints_by_elapsed_time(tmp_path, monkeypatch):
    clock = [0.0]  # each update's batch takes 10 s of this clock

    def slow_sample():
        clock[0] += 10.0
        return sample()

    monkeypatch.setattr("dreamer_prelar.time.monotonic", lambda: clock[0])
    for seconds, expected in ((25.0, [3, 6, 7]), (None, [7])):
        saved = []
        pretrain(
            make_trainer(),
            slow_sample,
            num_updates=7,
            run_dir=tmp_path / str(seconds),
            checkpoint_every=100,
            checkpoint_every_seconds=seconds,
            on_checkpoint=saved.append,
            progress=False,
        )
        assert saved == expected
    with pytest.raises(ValueError, match="checkpoint_every_seconds is for one process"):
        pretrain(
            make_trainer(),
            sample,
            num_updates=1,
            run_dir=tmp_path / "ddp",
            checkpoint_every_seconds=60.0,
            distributed=SimpleNamespace(is_distributed=True),
            progress=False,
        )
    assert not (tmp_path / "ddp").exists()


def test_interrupted_checkpoint_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "last.pt", {"step": 1})

    def killed_mid_write(state, file):
        file.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(io_module.torch, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"step": 2})
    assert load_checkpoint(path)["step"] == 1


def test_corrupt_checkpoint_gets_a_clear_error(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="corrupt or truncated"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize(
    "flags, expected",
    [("fpu avx2 avx512f avx512_bf16", True), ("fpu avx2 avx512f", False), ("amx_bf16", True)],
)
def test_native_bf16_detection_reads_cpu_flags(flags, expected, monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert cpu_has_native_bf16(flags) is expected
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert cpu_has_native_bf16(flags) is False


def test_precision_names():
    assert resolve_precision("fp32", "cpu") is None
    assert resolve_precision("bf16", "cpu") is torch.bfloat16
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("int8", "cpu")
    with pytest.raises(ValueError, match="fp16"):
        resolve_precision("fp16", "cpu")


def test_bf16_autocast_update_runs_and_stays_finite():
    torch.manual_seed(0)
    loss = PreLARLoss(make_world_model(**TINY))
    trainer = PreLARPretrainer(loss, make_optimizer(loss.parameters()), precision="bf16")
    metrics = trainer.update(sample())
    assert torch.isfinite(metrics["loss"])


def run_example(run_dir, *overrides):
    env = dict(os.environ, MUJOCO_GL="egl", WANDB_MODE="offline")
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "dreamer_prelar.py"),
            "preset=test",
            "stage=pretrain",
            f"run_dir={run_dir}",
            *overrides,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_example_pretrains_writes_outputs_and_resumes(tmp_path):
    import json

    from torchrl_prelar.training.run_lock import run_lock

    with run_lock(tmp_path, "pretrain"):  # as if another invocation were running
        refused = run_example(tmp_path)
    assert refused.returncode != 0
    assert f"already running in process {os.getpid()}" in refused.stderr
    assert not (tmp_path / "pretrain_last.pt").exists()

    result = run_example(tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in (
        "pretrain_last.pt",
        "pretrained_world_model.pt",
        "pretrain_curves.png",
        "pretrain_prediction.gif",
        "summary.json",
        "latent_actions.json",
        "latent_action_transfer.gif",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    summary = json.loads((tmp_path / "summary.json").read_text())["pretrain"]
    assert summary["updates"] == 6 and summary["last_metrics"]["loss"] > 0
    assert set(summary["latent_actions"]) == {"seen", "unseen"}
    assert {"probe_r2", "state_kl_shuffled_ratio", "delta_psnr"} <= set(
        summary["latent_actions"]["unseen"]
    )
    scalars = tmp_path / "csv" / "prelar_test" / "scalars" / "pretrain"
    assert len((scalars / "loss.csv").read_text().splitlines()) == 3
    probe_steps = [row.split(",")[0] for row in (scalars / "probe_r2_seen.csv").read_text().split()]
    assert probe_steps == ["3", "6"]  # evaluation.probe_every: 3
    assert len(list((tmp_path / "heldout" / "unseen").glob("*.npz"))) == 4
    hparams = tmp_path / "csv" / "prelar_test" / "texts" / "hparams0.txt"
    lines = hparams.read_text().splitlines()
    assert "pretrain.updates: 6" in lines and f"run_dir: {tmp_path}" in lines

    result = run_example(tmp_path, "pretrain.updates=8")
    assert result.returncode == 0, result.stderr[-2000:]
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["step"] == 8
    assert "pretrain.updates: 8" in hparams.with_name("hparams1.txt").read_text().splitlines()
    assert "reopened video dataset" in result.stderr + result.stdout


def test_compiled_networks_give_the_eager_update():
    import torch._inductor.config as inductor_config

    results = []
    for compiled in (False, True):
        torch.manual_seed(0)
        loss = PreLARLoss(make_world_model(**TINY), sample_latent_action=False)
        trainer = PreLARPretrainer(
            loss,
            make_optimizer(loss.parameters(), lr=1e-3),
            precision="fp32",
            compile_networks=compiled,
        )
        with inductor_config.patch(fallback_random=True):  # the RSSM's draws as in eager
            metrics = [trainer.update(moving_square_batch(2, 4)) for _ in range(2)]
        results.append((torch.stack([m["loss"] for m in metrics]), parameters(trainer)))
    (eager_loss, eager_params), (compiled_loss, compiled_params) = results
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-3, atol=1e-3)
    for compiled, eager in zip(compiled_params, eager_params, strict=True):
        torch.testing.assert_close(compiled, eager, rtol=1e-3, atol=1e-4)
