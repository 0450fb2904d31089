"""Distributed pre-training: two CPU ranks with gloo, launched by torchrun.

The launches run this file as a script under ``python -m torch.distributed.run``; the
``__main__`` block at the bottom is the code of one rank.
"""

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from unittest import mock

import conftest  # run by torchrun as a script: puts examples/ on sys.path
import pytest
import torch
import torch.distributed as dist
from dreamer_prelar import pretrain
from dreamer_prelar_utils import PRETRAIN_CHECKPOINT as CHECKPOINT_NAME
from tensordict.nn import set_interaction_type
from torchrl.modules.models import model_based_v3

from torchrl_prelar import PreLARLoss, make_world_model
from torchrl_prelar.data.synthetic import moving_square_batch
from torchrl_prelar.io import load_checkpoint
from torchrl_prelar.training.checkpoint import rng_state
from torchrl_prelar.training.distributed import (
    DistributedContext,
    choose_backend,
    distributed_session,
    init_distributed,
    rank_seed,
    resolve_device,
    scaled_lr,
    seed_everything,
)
from torchrl_prelar.training.pretrain import PreLARPretrainer, make_optimizer

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="needs torch.distributed with the gloo backend",
)

REPO = Path(__file__).resolve().parents[1]
GLOBAL_BATCH = 4
STEPS = 4
UPDATES = 3
CHECKPOINT_EVERY = 2
LAUNCH_TIMEOUT = 120
STUCK_TIMEOUT_S = 5


def global_batch(update: int):
    """The same global batch for every process; rank r trains on its slice of it."""
    generator = torch.Generator().manual_seed(1000 + update)
    return moving_square_batch(GLOBAL_BATCH, STEPS, generator=generator)


def shard(batch, job: DistributedContext):
    size = batch.shape[0] // job.world_size
    return batch[job.rank * size : (job.rank + 1) * size]


def make_trainer(job: DistributedContext | None = None) -> PreLARPretrainer:
    torch.manual_seed(0)
    loss = PreLARLoss(make_world_model(**conftest.TINY), sample_latent_action=False)
    optimizer = make_optimizer(loss.parameters(), lr=1e-3)
    return PreLARPretrainer(loss, optimizer, precision="fp32", distributed=job)


def flat_parameters(trainer: PreLARPretrainer) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in trainer.loss.parameters()])


def _median_categorical(logits, unimix=0.0, uniform=None):
    return _STRAIGHT_THROUGH(logits, unimix, torch.full_like(uniform, 0.5))


_STRAIGHT_THROUGH = model_based_v3._straight_through_categorical


@contextmanager
def per_sample_deterministic():
    """Make each sample's forward pass independent of the batch it is in.

    The latent action takes its mean (``"mode"`` interaction), and the RSSM's categorical
    state takes the class where the cumulative probability crosses 0.5 instead of a uniform
    draw: TorchRL draws those uniforms as one ``[T, 2, B, C]`` tensor, so the draws of a shard
    are not the rows of the global batch's draws. Gradients still flow (straight-through).
    """
    with ExitStack() as stack:
        stack.enter_context(set_interaction_type("mode"))
        stack.enter_context(
            mock.patch.object(model_based_v3, "_straight_through_categorical", _median_categorical)
        )
        yield


def torchrun(*args: str, nproc: int = 2) -> tuple[subprocess.CompletedProcess, float]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MUJOCO_GL="egl", WANDB_MODE="offline")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        *args,
    ]
    started = time.monotonic()
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=LAUNCH_TIMEOUT, cwd=REPO
    )
    return result, time.monotonic() - started


def test_two_ranks_match_one_process_on_the_global_batch(tmp_path):
    result, _ = torchrun(__file__, "equivalence", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]
    assert torch.equal(ranks[0]["parameters"], ranks[1]["parameters"])
    assert ranks[0]["loss"] == ranks[1]["loss"]

    single = make_trainer()
    with per_sample_deterministic():
        for update in range(UPDATES):
            metrics = single.update(global_batch(update))
    parameters = flat_parameters(single)
    difference = (ranks[0]["parameters"] - parameters).abs().max().item()
    print(f"max |theta_ddp - theta_single| after {UPDATES} updates: {difference:.3g}")
    assert not torch.equal(parameters, ranks[0]["initial"])
    torch.testing.assert_close(ranks[0]["parameters"], parameters, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ranks[0]["loss"], metrics["loss"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("failure", ["killed", "stuck"])
def test_failed_rank_fails_the_job_and_keeps_the_last_checkpoint(tmp_path, failure):
    """A SIGKILLed rank (torchrun stops the others) or a stuck one (the process-group timeout
    fails the waiting rank, torchrun stops the stuck one) fails the job within bounded time."""
    result, seconds = torchrun(__file__, failure, str(tmp_path))
    print(f"{failure} rank: exit code {result.returncode} after {seconds:.1f} s")
    assert result.returncode != 0
    assert seconds < 60, f"the job took {seconds:.0f} s to fail"
    expected = "SIGKILL" if failure == "killed" else f"Timed out waiting {STUCK_TIMEOUT_S * 1000}ms"
    assert expected in result.stderr, result.stderr[-2000:]

    state = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert state["step"] == CHECKPOINT_EVERY
    assert len(state["rng_per_rank"]) == 2
    assert not any(key.startswith("module.") for key in state["trainer"]["model"])

    resumed = make_trainer()  # one process resumes what two ranks wrote
    out = pretrain(
        resumed,
        lambda: global_batch(0),
        num_updates=CHECKPOINT_EVERY + 1,
        run_dir=tmp_path,
        log_every=1,
        progress=False,
    )
    assert out["loss"] > 0
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["step"] == CHECKPOINT_EVERY + 1


def test_example_under_torchrun_then_resumed_by_one_process(tmp_path):
    overrides = ["stage=pretrain", "preset=test", f"run_dir={tmp_path}"]
    example = str(REPO / "examples" / "dreamer_prelar.py")
    result, _ = torchrun(example, *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())["pretrain"]
    assert summary["world_size"] == 2 and summary["updates"] == 6
    loss_csv = tmp_path / "csv" / "prelar_test" / "scalars" / "pretrain" / "loss.csv"
    assert len(loss_csv.read_text().splitlines()) == 3  # rank 0 alone logs, at steps 2, 4, 6
    state = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert len(state["rng_per_rank"]) == 2
    assert not any(key.startswith("module.") for key in state["trainer"]["model"])

    result, _ = torchrun(example, *overrides, "pretrain.updates=8", nproc=1)
    assert result.returncode == 0, result.stderr[-3000:]
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["step"] == 8
    assert json.loads((tmp_path / "summary.json").read_text())["pretrain"]["world_size"] == 1


def test_single_process_context_without_torchrun_environment():
    job = init_distributed("cpu", seed=3, env={"RANK": "0"})
    assert (job.rank, job.world_size, job.is_main, job.is_distributed) == (0, 1, True, False)
    module = torch.nn.Linear(2, 2)
    assert job.wrap(module) is module
    with pytest.raises(RuntimeError, match="LOCAL_RANK is not set: launch with torchrun"):
        init_distributed("cpu", env={"WORLD_SIZE": "2", "RANK": "0"})


def test_device_backend_and_learning_rate_choices():
    assert resolve_device("cuda", local_rank=1, world_size=2) == torch.device("cuda", 1)
    assert resolve_device("cuda:0", local_rank=1, world_size=1) == torch.device("cuda", 0)
    with pytest.raises(ValueError, match="expected device=cuda"):
        resolve_device("cuda:0", local_rank=1, world_size=2)
    assert choose_backend(torch.device("cuda", 1)) == "nccl"
    assert choose_backend(torch.device("cpu")) == "gloo"
    with pytest.raises(ValueError, match="nccl backend needs device=cuda"):
        choose_backend(torch.device("cpu"), "nccl")
    with pytest.raises(ValueError, match="backend must be one of"):
        choose_backend(torch.device("cpu"), "mpi")
    assert scaled_lr(1e-3, 4) == 1e-3
    assert scaled_lr(1e-3, 4, "linear") == pytest.approx(4e-3)
    with pytest.raises(ValueError, match="lr_scaling must be one of"):
        scaled_lr(1e-3, 4, "sqrt")


def test_rng_streams_restored_at_same_world_size_rederived_at_another():
    seed_everything(1)
    saved = [rng_state(), rng_state()]
    expected = torch.rand(3)

    DistributedContext(rank=1, world_size=2).restore_rng_states(saved, step=4)
    assert torch.equal(torch.rand(3), expected)

    DistributedContext(seed=7).restore_rng_states(saved, step=4)
    rederived = torch.rand(3)
    seed_everything(rank_seed(7, 0, 4))
    assert torch.equal(rederived, torch.rand(3))
    assert rank_seed(7, 0, 4) != rank_seed(7, 1, 4) != rank_seed(7, 0, 5)


def _equivalence_rank(out_dir: Path) -> None:
    with distributed_session("cpu", seed=0, timeout_s=60) as job:
        trainer = make_trainer(job)
        initial = flat_parameters(trainer)
        with per_sample_deterministic():
            for update in range(UPDATES):
                metrics = trainer.update(shard(global_batch(update), job))
        loss = job.mean(metrics)["loss"]
        result = {"parameters": flat_parameters(trainer), "initial": initial, "loss": loss}
        torch.save(result, out_dir / f"rank{job.rank}.pt")


def _failing_rank(run_dir: Path, failure: str) -> None:
    with distributed_session("cpu", seed=0, timeout_s=STUCK_TIMEOUT_S) as job:
        trainer = make_trainer(job)
        done = itertools.count()

        def sample():
            updates_done = next(done)
            # Update CHECKPOINT_EVERY + 1 all-reduced, so rank 0 has written that checkpoint.
            if job.rank == 1 and updates_done == CHECKPOINT_EVERY + 1:
                if failure == "killed":
                    os.kill(os.getpid(), signal.SIGKILL)
                time.sleep(10 * LAUNCH_TIMEOUT)
            return shard(global_batch(updates_done), job)

        pretrain(
            trainer,
            sample,
            num_updates=100,
            run_dir=run_dir,
            checkpoint_every=CHECKPOINT_EVERY,
            progress=False,
            distributed=job,
        )


if __name__ == "__main__":
    torch.set_num_threads(1)
    mode, directory = sys.argv[1], Path(sys.argv[2])
    if mode == "equivalence":
        _equivalence_rank(directory)
    else:
        _failing_rank(directory, mode)
