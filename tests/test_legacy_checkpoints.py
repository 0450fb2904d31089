"""Checkpoints of 2026-11-27 (commit 2275562), whose world model is named by a preset, load.

The fixtures are that commit's own pre-training (``fixtures/checkpoints_2275562/README.md``).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import WORLD_MODELS

from torchrl_prelar import make_world_model, resolve_world_model_kwargs
from torchrl_prelar.data.synthetic import moving_square_batch
from torchrl_prelar.evaluation.__main__ import load_pretrained_run, world_model_entries
from torchrl_prelar.io import load_checkpoint
from torchrl_prelar.legacy import legacy_world_model_kwargs, upgrade_checkpoint
from torchrl_prelar.training.finetune_agent import build_finetune_world_model
from torchrl_prelar.training.run_settings import RUN_SETTINGS_FILE, check_run_settings

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "checkpoints_2275562"
PRETRAINED = FIXTURES / "pretrained_world_model.pt"
PRETRAINING = FIXTURES / "pretrain_last.pt"
#: The world model of the fixtures, as the 2275562 code stored it.
OLD_CONFIG = {
    "preset": "tiny",
    "overrides": {
        "encoder": {"depth": 4, "mults": [1, 2, 2, 2]},
        "decoder": {"depth": 4, "mults": [1, 2, 2, 2]},
        "rssm": {"deter": 32, "hidden": 32, "categoricals": 4, "classes": 4},
        "latent_action": {"dim": 4, "hidden": 32, "trunk": {"depth": 4, "mults": [1, 2, 2, 2]}},
        "reward_head": {"hidden": 8},
    },
}


def assert_holds(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """``model``'s parameters and buffers are exactly ``state``'s."""
    assert model.state_dict().keys() == state.keys()
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name


def test_the_fixtures_are_of_the_old_format():
    pretrained, pretraining = load_checkpoint(PRETRAINED), load_checkpoint(PRETRAINING)
    assert pretrained["config"] == OLD_CONFIG and "world_model_kwargs" not in pretrained
    assert pretraining["world_model_config"] == OLD_CONFIG and pretraining["step"] == 3


def test_the_old_entry_resolves_to_the_model_the_old_code_built():
    kwargs = legacy_world_model_kwargs(OLD_CONFIG)
    assert kwargs["rssm"] == OLD_CONFIG["overrides"]["rssm"]
    encoder = {**resolve_world_model_kwargs()["encoder"], "depth": 4, "mults": [1, 2, 2, 2]}
    assert kwargs["encoder"] == encoder
    assert kwargs["latent_action"]["trunk"]["padding"] == "zeros"  # the old code's default
    model = make_world_model(**kwargs)
    model.load_state_dict(load_checkpoint(PRETRAINED)["world_model"])  # strict: same entries


@pytest.mark.parametrize("name", ["paper", "small", "tiny"])
def test_the_old_presets_are_the_example_world_models(name):
    """A run of 2026-11-27 named ``world_model.preset: <name>``; the same run is now
    ``world_model=<name>``: both resolve to the same arguments."""
    old = legacy_world_model_kwargs({"preset": name, "overrides": {}})
    assert old == resolve_world_model_kwargs(**WORLD_MODELS[name])


def test_the_converter_command_writes_the_resolved_arguments(tmp_path):
    new = tmp_path / "pretrained_world_model.pt"
    command = [sys.executable, "-m", "torchrl_prelar.legacy", "convert", str(PRETRAINED), str(new)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    old, converted = load_checkpoint(PRETRAINED), load_checkpoint(new)
    assert "config" not in converted
    assert converted["world_model_kwargs"] == legacy_world_model_kwargs(OLD_CONFIG)
    assert converted["evaluation"] == old["evaluation"]
    for name, value in old["world_model"].items():
        assert torch.equal(converted["world_model"][name], value), name
    assert upgrade_checkpoint(converted) == converted  # nothing left to convert


@pytest.mark.parametrize("converted", [False, True], ids=["old file", "converted file"])
def test_the_evaluation_loader_rebuilds_the_stored_model_and_it_runs(tmp_path, converted):
    run_dir = FIXTURES
    if converted:
        from torchrl_prelar.legacy import main as legacy

        run_dir = tmp_path
        legacy(["convert", str(PRETRAINED), str(run_dir / PRETRAINED.name)])
    model, evaluation = load_pretrained_run(run_dir)
    assert_holds(model, load_checkpoint(PRETRAINED)["world_model"])
    assert evaluation["num_transitions"] == 8  # the `test` preset's evaluation block
    out = model(moving_square_batch(2, 3))
    assert out["next", "reco_pixels"].shape == (2, 3, 3, 64, 64)
    assert out["latent_action"].shape == (2, 3, 4)


def test_the_old_pretraining_checkpoint_gives_its_world_model():
    model, _ = load_pretrained_run(FIXTURES, checkpoint=PRETRAINING)
    trainer_state = load_checkpoint(PRETRAINING)["trainer"]["model"]
    assert_holds(model, world_model_entries(trainer_state, model, PRETRAINING))
    # The run's last checkpoint (update 3) holds the model of its pre-trained model file.
    assert_holds(model, load_checkpoint(PRETRAINED)["world_model"])


def test_fine_tuning_starts_from_an_old_pretrained_file():
    kwargs = legacy_world_model_kwargs(OLD_CONFIG)
    model = build_finetune_world_model(4, init="prelar", pretrained=PRETRAINED, **kwargs)
    state = load_checkpoint(PRETRAINED)["world_model"]
    for name, value in model.state_dict().items():
        if not name.startswith("action_model."):
            assert torch.equal(value, state[name]), name
    other = legacy_world_model_kwargs({"preset": "tiny", "overrides": {}})
    with pytest.raises(ValueError, match="does not match the configured world model"):
        build_finetune_world_model(4, init="prelar", pretrained=PRETRAINED, **other)


def test_an_old_run_settings_record_compares_with_the_new_arguments(tmp_path):
    checkpoint = tmp_path / "pretrain_last.pt"
    checkpoint.write_bytes(b"")  # the stage has run
    record = {"world_model": OLD_CONFIG, "loss": {"beta_action": 0.1}, "finetune.init": "prelar"}
    (tmp_path / RUN_SETTINGS_FILE).write_text(json.dumps({"pretrain": record}))
    call = {
        "world_model": legacy_world_model_kwargs(OLD_CONFIG),
        "loss": {"beta_action": 0.1},
        "finetune": {"init": "prelar"},
    }
    check_run_settings(tmp_path, "pretrain", call, checkpoint=checkpoint)
    call["world_model"] = resolve_world_model_kwargs(**WORLD_MODELS["tiny"])
    with pytest.raises(ValueError, match="world_model.rssm.deter: 32 in the run, 64 in this call"):
        check_run_settings(tmp_path, "pretrain", call, checkpoint=checkpoint)


def test_a_record_made_before_a_setting_existed_resumes_only_at_its_default(tmp_path):
    checkpoint = tmp_path / "pretrain_last.pt"
    checkpoint.write_bytes(b"")  # the stage has run
    call = {"world_model": resolve_world_model_kwargs(**WORLD_MODELS["tiny"]), "loss": {}}
    older = json.loads(json.dumps(call["world_model"]))
    del older["action_encoder"]["identity"]  # recorded before the setting was added
    (tmp_path / RUN_SETTINGS_FILE).write_text(
        json.dumps({"pretrain": {"world_model": older, "loss": {}}})
    )
    check_run_settings(tmp_path, "pretrain", call, checkpoint=checkpoint)
    call["world_model"]["action_encoder"]["identity"] = True
    with pytest.raises(
        ValueError, match="action_encoder.identity: false in the run, true in this call"
    ):
        check_run_settings(tmp_path, "pretrain", call, checkpoint=checkpoint)


def test_an_entry_without_a_known_preset_is_refused():
    with pytest.raises(ValueError, match="names no preset of 2026-11-27"):
        legacy_world_model_kwargs({"preset": "huge", "overrides": {}})
