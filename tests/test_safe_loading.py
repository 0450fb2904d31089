"""Checkpoints load with ``weights_only=True`` (single files) or hold only JSON and memory-mapped
tensors (TorchRL ``Checkpoint`` directories): nothing is unpickled."""

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY
from dreamer_prelar import pretrain
from dreamer_prelar_utils import PRETRAIN_CHECKPOINT as CHECKPOINT_NAME
from dreamer_prelar_utils import FinetuneProgress, restore_finetune_checkpoint
from tensordict import TensorDict
from torchrl.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointRotation,
    GlobalRNGState,
    JSONCheckpointAdapter,
)
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

from torchrl_prelar import PreLARLoss, make_world_model
from torchrl_prelar.data.dataset import VideoExperienceReplay
from torchrl_prelar.data.episodes import Episode
from torchrl_prelar.data.synthetic import moving_square_batch
from torchrl_prelar.io import (
    UnsafeCheckpointError,
    check_no_pickles,
    load_checkpoint,
    save_checkpoint,
)
from torchrl_prelar.training.checkpoint import (
    ReplayDumpAdapter,
    latest_checkpoint,
    load_torchrl_checkpoint,
    read_torchrl_checkpoint,
    rng_state,
    set_rng_state,
)
from torchrl_prelar.training.pretrain import PreLARPretrainer, make_optimizer


class _CreatesMarker:
    """Unpickling it (plain ``pickle``) creates the file ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.mark.parametrize("zip_format", [True, False])
def test_checkpoint_with_code_on_load_is_refused_and_the_code_does_not_run(tmp_path, zip_format):
    marker = tmp_path / "marker"
    path = tmp_path / "last.pt"
    state = {"step": 3, "weights": torch.ones(2), "payload": _CreatesMarker(marker)}
    with open(path, "wb") as file:
        torch.save(state, file, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(UnsafeCheckpointError, match=r"last\.pt holds objects outside the allowed"):
        load_checkpoint(path)
    assert not marker.exists()
    pickle.loads(pickle.dumps(_CreatesMarker(marker)))  # the payload does run when unpickled
    assert marker.exists()


def test_old_checkpoint_with_numpy_random_state_is_refused(tmp_path):
    path = tmp_path / "finetune_last.pt"
    torch.save({"rng": {"numpy": np.random.get_state()}}, path)
    with pytest.raises(UnsafeCheckpointError, match="numpy.*will not be unpickled"):
        load_checkpoint(path)


def test_truncated_checkpoint_gets_the_corrupt_error(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", {"weights": torch.zeros(1000), "step": 1})
    path.write_bytes(path.read_bytes()[:1500])
    with pytest.raises(RuntimeError, match="corrupt or truncated") as error:
        load_checkpoint(path)
    assert not isinstance(error.value, UnsafeCheckpointError)


def test_random_states_round_trip_through_a_safe_checkpoint(tmp_path):
    np.random.seed(1)
    np.random.standard_normal()  # leaves a cached Gaussian in numpy's state
    path = save_checkpoint(tmp_path / "rng.pt", {"rng": rng_state()})
    draws = np.random.standard_normal(3), np.random.rand(2), random.random(), torch.rand(2)
    set_rng_state(load_checkpoint(path)["rng"])
    again = np.random.standard_normal(3), np.random.rand(2), random.random(), torch.rand(2)
    for first, second in zip(draws, again, strict=True):
        np.testing.assert_array_equal(np.asarray(first), np.asarray(second))


def test_pretraining_checkpoint_holds_only_weights_only_types(tmp_path):
    loss = PreLARLoss(make_world_model(**TINY))
    trainer = PreLARPretrainer(loss, make_optimizer(loss.parameters()), precision="fp32")
    pretrain(
        trainer, lambda: moving_square_batch(2, 4), num_updates=1, run_dir=tmp_path, progress=False
    )
    path = tmp_path / CHECKPOINT_NAME
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    assert load_checkpoint(path)["step"] == 1


def test_replay_folder_with_a_pickle_is_refused(tmp_path):
    buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(8))
    buffer.extend(TensorDict({"reward": torch.arange(4.0)}, [4]))
    folder = tmp_path / "replay_4"
    buffer.dumps(folder)
    with pytest.raises(UnsafeCheckpointError, match=r"prefetch\.pkl"):
        check_no_pickles(folder)  # why fine-tuning deletes it after ``dumps``
    (folder / "prefetch.pkl").unlink()
    check_no_pickles(folder)
    restored = TensorDictReplayBuffer(storage=LazyTensorStorage(8))
    restored.loads(folder)
    assert torch.equal(restored[:4]["reward"], torch.arange(4.0))

    marker = tmp_path / "marker"
    (folder / "storage" / "other.pickle").write_bytes(pickle.dumps(_CreatesMarker(marker)))
    with pytest.raises(UnsafeCheckpointError, match=r"replay_4 holds files other than"):
        check_no_pickles(folder)
    assert not marker.exists()


def test_video_buffer_with_a_pickle_is_not_reopened(tmp_path):
    root = tmp_path / "video_buffer"
    frames = np.zeros((6, 12, 12, 3), dtype=np.uint8)
    VideoExperienceReplay([Episode(frames)], num_transitions=3, batch_size=2, root=root)
    marker = tmp_path / "marker"
    (root / "storage" / "other.pickle").write_bytes(pickle.dumps(_CreatesMarker(marker)))
    with pytest.raises(UnsafeCheckpointError, match="other.pickle"):
        VideoExperienceReplay(num_transitions=3, batch_size=2, root=root)
    assert not marker.exists()


def small_checkpoint(buffer):
    checkpoint = Checkpoint(model=torch.nn.Linear(3, 2), rng=GlobalRNGState())
    checkpoint.register("progress", {"env_steps": 4}, adapter=JSONCheckpointAdapter())
    return checkpoint.register("replay", buffer, adapter=ReplayDumpAdapter())


def test_torchrl_checkpoint_holds_no_pickle_and_refuses_one(tmp_path):
    buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(8))
    buffer.extend(TensorDict({"reward": torch.arange(4.0)}, [4]))
    path = small_checkpoint(buffer).save(tmp_path / "checkpoint")
    check_no_pickles(path)  # prefetch.pkl was dropped: JSON and memory-mapped tensors only
    state = read_torchrl_checkpoint(path)
    assert state["progress"] == {"env_steps": 4} and sorted(state["model"]) == ["bias", "weight"]
    restored = TensorDictReplayBuffer(storage=LazyTensorStorage(8))
    restored.loads(state["replay"])
    assert torch.equal(restored[:4]["reward"], torch.arange(4.0))

    marker = tmp_path / "marker"
    (state["replay"] / "storage" / "other.pickle").write_bytes(pickle.dumps(_CreatesMarker(marker)))
    fresh = TensorDictReplayBuffer(storage=LazyTensorStorage(8))
    with pytest.raises(UnsafeCheckpointError, match=r"other\.pickle"):
        load_torchrl_checkpoint(small_checkpoint(fresh), path)
    with pytest.raises(UnsafeCheckpointError, match=r"other\.pickle"):
        read_torchrl_checkpoint(path)
    assert not marker.exists()


def test_corrupt_or_incomplete_torchrl_checkpoint_gets_a_named_error(tmp_path):
    rotation = CheckpointRotation(tmp_path / "checkpoints", keep_last=2)
    buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(8))
    buffer.extend(TensorDict({"reward": torch.arange(4.0)}, [4]))
    rotation.save(small_checkpoint(buffer), step=1)
    path = rotation.save(small_checkpoint(buffer), step=2)
    assert latest_checkpoint(rotation.directory) == path

    weight = next((path / "components").glob("*-model/state/tensor_00000000.memmap"))
    saved = weight.read_bytes()
    weight.write_bytes(saved[:4])  # TensorDict alone would read the missing bytes as zeros
    with pytest.raises(CheckpointError, match=r"tensor_00000000\.memmap holds 4 bytes.*need 24"):
        read_torchrl_checkpoint(path)
    weight.write_bytes(saved)
    schema = next((path / "components").glob("*-model/state.json"))
    schema.write_text("{")
    with pytest.raises(CheckpointError, match=r"checkpoint-000000000002 could not be restored"):
        read_torchrl_checkpoint(path)
    extra = small_checkpoint(buffer).register("other", torch.nn.Linear(1, 1))
    with pytest.raises(CheckpointError, match=r"missing=\['other'\]"):
        load_torchrl_checkpoint(extra, path)
    (path / "manifest.json").write_text("{")
    with pytest.raises(CheckpointError, match=r"checkpoint-000000000002 is not a valid"):
        latest_checkpoint(rotation.directory)  # never silently the older one
    with pytest.raises(FileNotFoundError, match="No checkpoint directory"):
        load_torchrl_checkpoint(extra, tmp_path / "missing")


def test_fine_tuning_checkpoint_of_the_old_format_is_named(tmp_path):
    torch.save({"progress": {}}, tmp_path / "finetune_last.pt")
    progress = FinetuneProgress()
    with pytest.raises(ValueError, match=r"finetune_last\.pt is a fine-tuning checkpoint of the"):
        restore_finetune_checkpoint(tmp_path, None, None, None, progress, torch.device("cpu"))
