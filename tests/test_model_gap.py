"""Model-gap benchmark: data, alignment, frozen schedule, scores, APV, the script end to end."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TINY
from results_report import model_gap_figure, show

from torchrl_prelar.baselines.contextwm import STACKED_BASELINES
from torchrl_prelar.data.synthetic import moving_square_episodes
from torchrl_prelar.evaluation.open_loop import open_loop_rollout
from torchrl_prelar.io import save_checkpoint
from torchrl_prelar.modules import make_world_model
from torchrl_prelar.modules.pixels import centred_pixels
from torchrl_prelar.training.finetune_agent import (
    AUX_REWARD_KEY,
    INITS,
    REWARD_KEY,
    build_finetune_world_model,
    make_finetune_agent,
    make_world_model_stepper,
    representation_parameters,
)
from torchrl_prelar.training.model_gap import (
    MODEL_GAP_ARMS,
    available_arms,
    finetune_world_model,
    generate_model_gap_splits,
    heldout_clips,
    make_model_gap_world_model,
    make_transition_buffer,
    open_loop_scores,
    run_model_gap_arm,
)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "experiments" / "model_gap.py"
# Seconds-long: one task, one 12-step episode per split, 3 updates (the first frozen), clips
# of 2 observed + 3 imagined frames; pre-training with the example's `test` preset.
SCRIPT_ARGS = [
    "--arms", "prelar", "apv", "dreamer",
    "--seeds", "0", "1",
    "--updates", "3", "--freeze-updates", "1",
    "--batch-size", "2", "--batch-length", "6",
    "--context", "2", "--horizon", "3",
    "--tasks", "reach-v3", "--train-episodes", "1", "--heldout-episodes", "1",
    "--episode-length", "12",
    "--preset", "test", "--threads", "1",
]  # fmt: skip


def load_script():
    spec = importlib.util.spec_from_file_location("model_gap_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script_run(tmp_path_factory):
    """One run of experiments/model_gap.py into a temp folder."""
    root = tmp_path_factory.mktemp("model_gap")
    out = root / "out"
    argv = ["--out", str(out), *SCRIPT_ARGS]
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *argv],
        env={**os.environ, "MUJOCO_GL": "egl"},
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out, argv


def _checkpoint(path: Path, world_model) -> Path:
    return save_checkpoint(
        path, {"world_model": world_model.state_dict(), "world_model_kwargs": TINY}
    )


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny (untrained) pre-trainings of the PreLAR, APV and ContextWM kinds."""
    root = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    paths = {"prelar": _checkpoint(root / "prelar.pt", make_world_model(**TINY))}
    for kind, (make_pretrained, _) in STACKED_BASELINES.items():
        paths[kind] = _checkpoint(root / f"{kind}.pt", make_pretrained(**TINY))
    return paths


@pytest.fixture(scope="module")
def squares():
    """Moving squares with their 2-d displacement as the real action."""
    buffer = make_transition_buffer(moving_square_episodes(4, 16), num_transitions=6, batch_size=3)
    clips = heldout_clips(moving_square_episodes(2, 16, seed=1), num_transitions=6)
    return buffer, clips


# ----------------------------------------------------------------------------- data


def test_splits_share_no_episode(script_run, tmp_path):
    out = script_run[0]
    train = sorted((out / "data" / "train").glob("*.npz"))
    heldout = sorted((out / "data" / "heldout").glob("*.npz"))
    assert train and heldout
    metadata = [out / "data" / split / "metadata.json" for split in ("train", "heldout")]
    seeds = [json.loads(path.read_text())["seed"] for path in metadata]
    assert seeds[0] != seeds[1]
    for a in train:
        for b in heldout:
            with np.load(a) as x, np.load(b) as y:
                assert not np.array_equal(x["image"], y["image"])
                assert not np.array_equal(x["action"], y["action"])
    with pytest.raises(ValueError, match="must differ"):
        generate_model_gap_splits(tmp_path, train_seed=3, heldout_seed=3)


def _numbered_episode(folder: Path, name: str, frames: int) -> None:
    """Frame t is filled with the value 10 t; APV action[t] (into frame t) is (t, -t)."""
    image = (10 * np.arange(frames, dtype=np.uint8))[:, None, None, None].repeat(64, 1)
    image = image.repeat(64, 2).repeat(3, 3)
    steps = np.arange(frames, dtype=np.float32)
    action = np.stack([steps, -steps], 1)
    action[0] = 0
    path = folder / f"20260101T000000-{name}-{frames - 1}.npz"
    np.savez_compressed(path, image=image, action=action)


def test_action_is_the_one_taken_at_o_t(tmp_path):
    for index in range(2):
        _numbered_episode(tmp_path, f"ep{index}", 12)
    clips = heldout_clips(tmp_path, num_transitions=4)
    assert clips.batch_size == (4, 4)  # frames 0-4 and 4-8 of two 12-frame episodes

    def frame_index(pixels):
        return ((centred_pixels(pixels)[..., 0, 0, 0] + 0.5) * 255 / 10).round()

    for batch in (
        clips,
        make_transition_buffer(tmp_path, num_transitions=4, batch_size=5).sample(),
    ):
        t = frame_index(batch["pixels"])
        torch.testing.assert_close(frame_index(batch["next", "pixels"]), t + 1)
        # the action leading from o_t to o_{t+1}: APV's action[t + 1]
        torch.testing.assert_close(batch["action"], torch.stack([t + 1, -(t + 1)], -1))
        assert batch["is_init"][:, 0].all() and not batch["is_init"][:, 1:].any()


def test_episodes_without_actions_are_refused(tmp_path):
    image = np.zeros((10, 64, 64, 3), np.uint8)
    np.savez_compressed(tmp_path / "20260101T000000-a-9.npz", image=image)
    with pytest.raises(ValueError, match="no actions"):
        make_transition_buffer(tmp_path, num_transitions=4, batch_size=2)


# ----------------------------------------------------------------------------- fine-tuning


def _snapshot(parameters):
    return [p.detach().clone() for p in parameters]


def _changed(before, parameters):
    return any(not torch.equal(b, p) for b, p in zip(before, parameters, strict=True))


@pytest.mark.parametrize("arm", ["prelar", "apv", "contextwm"])
def test_frozen_schedule(arm, checkpoints, squares):
    buffer, _ = squares
    torch.manual_seed(0)
    model = make_model_gap_world_model(arm, action_dim=2, pretrained=checkpoints[arm])
    frozen = representation_parameters(model)
    new = model.action_model.parameters() if arm == "prelar" else model.rssm.parameters()
    trained_from_start = [*new, *model.decoder.parameters()]
    # the parameters before each update and after the last
    snapshots, gradients = [], []

    def sample():
        snapshots.append((_snapshot(frozen), _snapshot(trained_from_start)))
        gradients.append(all(p.grad is not None for p in model.encoder.parameters()))
        return buffer.sample()

    finetune_world_model(model, sample, updates=3, freeze_updates=2, lr=1e-3)
    snapshots.append((_snapshot(frozen), _snapshot(trained_from_start)))
    for update in (0, 1):
        (frozen_before, trained_before), (frozen_after, trained_after) = snapshots[
            update : update + 2
        ]
        assert not _changed(frozen_before, frozen_after)
        assert _changed(trained_before, trained_after)
    # frozen by lr 0, not by a missing gradient (the action-free prior head of APV and
    # ContextWM has none: its KL is not trained at fine-tuning)
    assert gradients[1:] == [True, True]
    assert _changed(snapshots[2][0], snapshots[3][0])


def test_the_update_is_the_agents_world_model_step(squares):
    """finetune_world_model's update equals one step of the agent's world-model stepper."""
    buffer, _ = squares
    batch = buffer.sample()
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(make_model_gap_world_model("dreamer", action_dim=2, world_model_kwargs=TINY))

    def sample():
        torch.manual_seed(1)  # the same RSSM samples in both updates
        return batch.clone()

    curve = finetune_world_model(models[0], sample, updates=1, freeze_updates=0)
    stepper = make_world_model_stepper(models[1].train())  # lr 3e-4, the default of both
    losses = stepper.step(None, sample())
    total = sum(value.sum() for key, value in losses.items() if key.startswith("loss_"))
    assert curve[0]["loss"] == pytest.approx(total.item(), rel=1e-6)
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("reward_loss", [None, "gaussian"])
def test_the_stepper_loss_is_the_agents_world_model_loss(squares, reward_loss):
    """The shared update's terms are those of the agent's world-model loss on the same batch
    (bonus off): less the auxiliary reward head by default, all of them, scored as the agent
    scores its rewards, with ``reward_loss``."""
    buffer, _ = squares
    batch = buffer.sample()
    batch["next", "reward"] = torch.rand(*batch.shape, 1) * 10
    torch.manual_seed(0)
    model = build_finetune_world_model(
        2, init="dreamer", pretrained=None, reward_keys=[REWARD_KEY, AUX_REWARD_KEY], **TINY
    )
    agent = make_finetune_agent(
        model,
        2,
        actor_hidden=16,
        critic_hidden=16,
        intrinsic=False,
        reward_loss=reward_loss or "symlog_mse",
    )
    stepper = make_world_model_stepper(model, reward_loss=reward_loss)
    torch.manual_seed(1)
    agent_losses, _ = agent.loss.model_loss(batch.clone())
    torch.manual_seed(1)
    losses, _ = stepper.loss_module(batch.clone())
    terms = {key for key in losses.keys() if key.startswith("loss_")}
    agent_terms = {key for key in agent_losses.keys() if key.startswith("loss_")}
    assert terms == agent_terms - ({"loss_model_aux_reward"} if reward_loss is None else set())
    for key in terms:
        torch.testing.assert_close(losses[key], agent_losses[key])


def test_finetuning_loss_falls(squares):
    buffer, _ = squares
    torch.manual_seed(0)
    model = make_model_gap_world_model("dreamer", action_dim=2, world_model_kwargs=TINY)
    curve = finetune_world_model(model, buffer.sample, updates=20, freeze_updates=0, lr=1e-3)
    losses = [step["loss"] for step in curve]
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])


def test_on_update_sees_each_update_and_may_leave_the_model_in_eval_mode(squares):
    buffer, _ = squares
    model = make_model_gap_world_model("dreamer", action_dim=2, world_model_kwargs=TINY)
    seen = []

    def evaluate(done: int) -> None:
        seen.append((done, model.training))
        model.eval()

    finetune_world_model(model, buffer.sample, updates=3, freeze_updates=0, on_update=evaluate)
    assert seen == [(1, True), (2, True), (3, True)]  # each update trains in train mode


def test_free_nats_floor_the_state_kl_terms_of_the_update(squares):
    """With free nats far above the state KL, each KL term is the floor: the update's loss
    exceeds the one without free nats by about free_nats (balance 0.8 + 0.2 = 1)."""
    buffer, _ = squares
    batch = buffer.sample()
    curves = {}
    for free_nats in (None, 100.0):
        torch.manual_seed(0)
        model = make_model_gap_world_model("dreamer", action_dim=2, world_model_kwargs=TINY)
        torch.manual_seed(1)
        curves[free_nats] = finetune_world_model(
            model, batch.clone, updates=1, freeze_updates=0, free_nats=free_nats
        )[0]
    assert curves[None]["state_kl"] == pytest.approx(curves[100.0]["state_kl"], rel=1e-5)
    extra = curves[100.0]["loss"] - curves[None]["loss"]
    assert extra == pytest.approx(100.0 - curves[None]["state_kl"], rel=1e-3)


# ----------------------------------------------------------------------------- scores


def test_open_loop_score_is_seeded_and_matches_an_independent_psnr(checkpoints, squares):
    _, clips = squares
    torch.manual_seed(0)
    model = make_model_gap_world_model("prelar", action_dim=2, pretrained=checkpoints["prelar"])
    context = 2
    first = open_loop_scores(model, clips, context=context, seed=3)
    assert first == open_loop_scores(model, clips, context=context, seed=3)
    assert len(first["psnr"]) == clips.shape[1] - context

    truth, prediction = open_loop_rollout(model, clips, context, seed=3)
    error = (prediction.numpy()[:, context:] - truth.numpy()[:, context:]) ** 2
    mse = error.reshape(*error.shape[:2], -1).mean(-1)
    np.testing.assert_allclose(first["mse"], mse.mean(0), rtol=1e-5)
    np.testing.assert_allclose(first["psnr"], (10 * np.log10(1 / mse)).mean(0), rtol=1e-4)

    still = clips.clone()
    still["action"] = torch.zeros_like(still["action"])
    assert open_loop_scores(model, still, context=context, seed=3) != first  # actions drive it


@pytest.mark.parametrize("arm", ["apv", "contextwm"])
def test_stacked_baseline_arm_end_to_end(arm, checkpoints, squares):
    buffer, clips = squares
    result = run_model_gap_arm(
        arm,
        seed=0,
        sample=buffer.sample,
        clips=clips,
        context=2,
        updates=3,
        freeze_updates=1,
        pretrained=checkpoints[arm],
    )
    assert len(result["loss"]) == 3 and len(result["psnr"]) == len(result["mse"]) == 4
    assert np.isfinite(result["loss"]).all() and np.isfinite(result["psnr"]).all()
    with pytest.raises(ValueError, match="PreLAR"):  # a PreLAR checkpoint is refused
        make_model_gap_world_model(arm, action_dim=2, pretrained=checkpoints["prelar"])


def test_arms():
    assert {"prelar", "prelar_no_action_learning", "apv", "dreamer"} <= set(available_arms())
    assert ("contextwm" in available_arms()) == ("contextwm" in INITS)
    assert not MODEL_GAP_ARMS["dreamer"].pretrained


# ----------------------------------------------------------------------------- script


def test_script_writes_the_runs_and_their_summary(script_run, tmp_path):
    out, _ = script_run
    results = json.loads((out / "model_gap.json").read_text())
    assert results["settings"]["updates"] == 3
    for arm in ("prelar", "apv", "dreamer"):
        assert sorted(results["runs"][arm]) == ["0", "1"]
        run = results["runs"][arm]["0"]
        assert len(run["loss"]) == 3 and len(run["psnr"]) == 3
    assert results["pretrain"]["apv"]["updates"] == 6  # the `test` preset's pre-training
    assert "for 3 updates" in results["what"] and "torch" in results["machine"]

    rows = results["variants"]["default"]["rows"]
    assert [row["arm"] for row in rows] == [
        "prelar",
        "apv",
        "dreamer",
        "last observed frame (no model)",
    ]
    for row in rows[:-1]:  # the summary against the runs it summarises
        runs = [results["runs"][row["arm"]][seed] for seed in ("0", "1")]
        psnr = np.array([run["psnr"] for run in runs])
        assert row["seeds"] == 2
        assert row["psnr_1"]["mean"] == pytest.approx(psnr[:, 0].mean(), abs=0.006)
        assert row["psnr_mean_1_3"]["mean"] == pytest.approx(psnr.mean(), abs=0.006)
        assert row["psnr_mean_1_3"]["std"] == pytest.approx(psnr.mean(1).std(ddof=1), abs=0.006)
        losses = [np.mean(run["loss"][-10:]) for run in runs]
        assert row["final_loss_last10"]["mean"] == pytest.approx(np.mean(losses), abs=0.051)
    floor = rows[-1]
    assert floor["seeds"] is None and floor["final_loss_last10"] is None
    assert floor["psnr_1"]["mean"] == pytest.approx(results["last_frame"]["psnr"][0], abs=0.006)

    # The report writer renders it: the table, prelar against the other arms, the figure.
    text = show(results)
    assert "| prelar | 2 |" in text and "| prelar - apv |" in text and "2 + 2" in text
    assert model_gap_figure(results, tmp_path / "gap.png").stat().st_size > 0


def _must_not_run(*args, **kwargs):
    raise AssertionError("resumed benchmark ran again what was done")


def test_script_resumes(script_run, monkeypatch):
    out, argv = script_run
    before = json.loads((out / "model_gap.json").read_text())
    module = load_script()
    monkeypatch.setattr(module, "subprocess", SimpleNamespace(run=_must_not_run))  # no pre-training
    monkeypatch.setattr("torchrl_prelar.training.model_gap.run_model_gap_arm", _must_not_run)
    assert module.main(argv) == out / "model_gap.json"
    after = json.loads((out / "model_gap.json").read_text())
    assert after["runs"] == before["runs"]
    assert after["variants"]["default"]["rows"] == before["variants"]["default"]["rows"]
    with pytest.raises(ValueError, match="updates"):
        module.main([*argv, "--updates", "4"])


def test_pretrain_seed_reaches_the_pretraining_and_guards_the_results_file(tmp_path):
    module = load_script()
    args = module.parse_args(["--out", str(tmp_path), "--pretrain-seed", "2", *SCRIPT_ARGS])
    assert "seed=2" in module.pretrain_overrides(args, "prelar", tmp_path / "prelar")
    # A results file written before the setting existed was made with pre-training seed 0.
    legacy = {k: v for k, v in module.settings(args).items() if k != "pretrain_seed"}
    path = tmp_path / "model_gap.json"
    path.write_text(json.dumps({"settings": legacy, "pretrain": {}, "runs": {}}))
    with pytest.raises(ValueError, match="pretrain_seed"):
        module.load_results(path, module.settings(args))
    seed0 = module.settings(module.parse_args(["--out", str(tmp_path), *SCRIPT_ARGS]))
    assert module.load_results(path, seed0)["settings"]["pretrain_seed"] == 0


def _gap_results(seed: int, prelar: list[float], ablation: list[float]) -> dict:
    """A model-gap results file of two arms whose runs have these mean PSNRs."""
    settings = {"pretrain_seed": seed, "updates": 3, "horizon": 2}
    rows = [
        {"arm": arm, "seeds": len(values), "psnr_mean_1_2": {"mean": float(np.mean(values))}}
        for arm, values in (("prelar", prelar), ("prelar_no_action_learning", ablation))
    ]
    rows.append({"arm": "last observed frame (no model)", "seeds": None})
    return {"settings": settings, "variants": {"default": {"rows": rows}}}


def test_pretrain_seeds_combine_into_a_paired_test_over_pretrainings(tmp_path):
    from results_report import main as report_main
    from results_report import pretrain_seed_record, pretrain_seed_table
    from scipy.stats import ttest_rel

    runs = {0: ([25.0, 25.2], [24.8, 24.6]), 1: ([24.1, 24.3], [24.4, 24.2]), 2: ([25.5], [25.0])}
    files = []
    for seed, (prelar, ablation) in runs.items():
        files.append(tmp_path / f"p{seed}.json")
        files[-1].write_text(json.dumps(_gap_results(seed, prelar, ablation)))
    record = pretrain_seed_record(files)

    prelar = [np.mean(runs[seed][0]) for seed in runs]
    ablation = [np.mean(runs[seed][1]) for seed in runs]
    arm = record["arms"]["prelar"]
    assert [e["psnr_mean"] for e in arm["per_pretraining"]] == pytest.approx(prelar)
    assert arm["mean"] == pytest.approx(np.mean(prelar), abs=1e-3)
    assert arm["std"] == pytest.approx(np.std(prelar, ddof=1), abs=1e-3)
    (pair,) = record["pairs"]
    assert pair["pair"] == ["prelar", "prelar_no_action_learning"]
    assert pair["differences"] == pytest.approx(np.subtract(prelar, ablation), abs=1e-3)
    expected = ttest_rel(prelar, ablation)  # n = 3 pre-trainings, not 5 fine-tuning runs
    assert pair["paired_t"] == pytest.approx(expected.statistic, abs=1e-3)
    assert pair["p"] == pytest.approx(expected.pvalue, abs=1e-4)
    table = pretrain_seed_table(record)
    assert "| prelar - prelar_no_action_learning | +0.40, -0.10, +0.50 |" in table
    assert table.count("| 3 |") == 1

    written = tmp_path / "combined.json"
    report_main(["--pretrain-seeds", *map(str, files), "--write", str(written)])
    assert json.loads(written.read_text())["pairs"] == record["pairs"]

    files[1].write_text(json.dumps(_gap_results(0, *runs[1])))
    with pytest.raises(ValueError, match="share a pre-training seed"):
        pretrain_seed_record(files)
    other = _gap_results(1, *runs[1])
    other["settings"]["updates"] = 4
    files[1].write_text(json.dumps(other))
    with pytest.raises(ValueError, match="other settings"):
        pretrain_seed_record(files)
