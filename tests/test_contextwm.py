import importlib.util
import math
from pathlib import Path

import pytest
import torch
from conftest import TINY, pretraining_totals
from dreamer_prelar import run_finetune, run_pretrain
from dreamer_prelar_utils import make_finetune_world_model, read_finetune_checkpoint
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tensordict import TensorDict

from torchrl_prelar.baselines.apv import make_action_free_world_model
from torchrl_prelar.baselines.contextwm import (
    CONTEXT_PIXELS_KEY,
    ContextFrame,
    ContextualDecoder,
    ContextWMWorldModel,
    MultiScaleEncoder,
    context_feature_key,
    make_contextwm_pretrain_model,
)
from torchrl_prelar.data.synthetic import moving_square_batch
from torchrl_prelar.evaluation.open_loop import open_loop_rollout
from torchrl_prelar.io import PRETRAINED_MODEL, load_checkpoint, save_checkpoint
from torchrl_prelar.modules import make_world_model
from torchrl_prelar.modules.networks import ResNetDecoder, ResNetEncoder, make_conv_decoder
from torchrl_prelar.training.finetune_agent import representation_parameters

REPO = Path(__file__).resolve().parents[1]


def preset_config(run_dir, *overrides):
    with initialize_config_dir(str(REPO / "examples" / "config"), version_base=None):
        config = compose("config", overrides=["preset=test", f"run_dir={run_dir}", *overrides])
    return OmegaConf.to_container(config, resolve=True)


def save_pretrained(path, model):
    save_checkpoint(path, {"world_model": model.state_dict(), "world_model_kwargs": TINY})


def test_cross_attention_path_shapes_and_gradients():
    torch.manual_seed(0)
    model = make_contextwm_pretrain_model(**TINY)
    assert sorted(model.decoder.module.attention) == ["16", "8"]
    out = model(moving_square_batch(2, 4))
    context = out.get(CONTEXT_PIXELS_KEY)
    assert context.shape == (2, 4, 3, 64, 64) and context.stride(1) == 0  # one frame per clip
    assert out.get(context_feature_key(16)).shape == (2, 4, 16, 16, 16)  # tiny: depth 8 x 2
    assert out.get(context_feature_key(8)).shape == (2, 4, 32, 8, 8)
    assert out["next", "reco_pixels"].shape == (2, 4, 3, 64, 64)
    out["next", "reco_pixels"].square().mean().backward()
    for name, parameter in [
        *model.context_encoder.named_parameters(),
        *model.decoder.module.attention.named_parameters(),
    ]:
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    # The context keys are made inside: the model reads only the video keys.
    assert all(key[0] != "context" for key in model.in_keys if isinstance(key, tuple))


def test_paper_resnet_networks_take_the_context():
    encoder = MultiScaleEncoder(
        ResNetEncoder(widths=(8, 8, 16), blocks_per_stage=1), [16, 8], (3, 64, 64)
    )
    assert encoder.channels == {16: 8, 8: 16}
    base = ResNetDecoder(12, widths=(16, 8, 8, 4)).eval()
    features = torch.randn(5, 12)
    assert torch.allclose(base(features), base.layers(base.stem(features)))
    decoder = ContextualDecoder(base, 12, encoder.channels, heads=2)
    maps = encoder(torch.rand(5, 3, 64, 64) - 0.5)
    decoder(features[:, :4], features[:, 4:], *maps).square().mean().backward()
    assert all(p.grad is not None for p in encoder.parameters())
    with pytest.raises(ValueError, match=r"no feature map of side \[2\]"):
        ContextualDecoder(make_conv_decoder(12, depth=4), 12, {2: 16})
    with pytest.raises(TypeError, match="followed by 2 context maps"):
        decoder(features[:, :4], features[:, 4:])


def test_context_frame_choice():
    frames = torch.rand(3, 6, 3, 8, 8) - 0.5
    td = TensorDict({("next", "pixels"): frames}, [3, 6])
    frame = ContextFrame("random", shift=2).train()
    picked = ContextFrame("random").train()(td.clone()).get(CONTEXT_PIXELS_KEY)
    for clip in range(3):  # a frame of the same clip, the same for all its steps
        assert any(torch.equal(picked[clip, 0], frames[clip, t]) for t in range(6))
        assert torch.equal(picked[clip, 0], picked[clip, -1])
    assert frame(td.clone()).get(CONTEXT_PIXELS_KEY).shape == frames.shape
    first = ContextFrame("random").eval()(td.clone()).get(CONTEXT_PIXELS_KEY)
    assert torch.equal(first, frames[:, :1].expand_as(frames))


def test_decoder_uses_the_context():
    torch.manual_seed(0)
    model = make_contextwm_pretrain_model(**TINY).eval()
    batch = moving_square_batch(2, 4, generator=torch.Generator().manual_seed(0))
    other = moving_square_batch(2, 4, generator=torch.Generator().manual_seed(1))
    outs = []
    for context in (batch, other):
        td = batch.clone()
        td.set(CONTEXT_PIXELS_KEY, context["next", "pixels"].float() / 255 - 0.5)
        torch.manual_seed(1)  # same RSSM samples
        outs.append(model(td))
    assert torch.equal(outs[0]["next", "state"], outs[1]["next", "state"])
    difference = (outs[0]["next", "reco_pixels"] - outs[1]["next", "reco_pixels"]).abs()
    assert difference.mean() > 1e-3


def test_action_free_pretraining_loss_falls():
    torch.manual_seed(0)
    model = make_contextwm_pretrain_model(**TINY)
    totals, action_kls = pretraining_totals(model)
    assert all(kl == 0.0 for kl in action_kls)  # no latent action at all
    assert all(math.isfinite(value) for value in totals)
    assert sum(totals[-5:]) / 5 < 0.7 * sum(totals[:5]) / 5
    truth, prediction = open_loop_rollout(model, moving_square_batch(1, 6), context=2)
    assert truth.shape == prediction.shape == (1, 6, 3, 64, 64)


def test_finetune_model_stacks_and_loads_contextwm_pretraining(tmp_path):
    path = tmp_path / PRETRAINED_MODEL
    pretrained = make_contextwm_pretrain_model(**TINY)
    save_pretrained(path, pretrained)
    model = make_finetune_world_model(preset_config(tmp_path, "arm=contextwm"), 4)
    assert isinstance(model, ContextWMWorldModel)
    saved = pretrained.state_dict()
    loaded = {
        "encoder.": model.encoder,
        "rssm.": model.action_free.rssm,
        "decoder.": model.decoder,
        "context_encoder.": model.context_encoder,
    }
    for prefix, module in loaded.items():
        for name, value in module.state_dict().items():
            assert torch.equal(value, saved[prefix + name]), prefix + name
    representation = {id(p) for p in representation_parameters(model)}
    assert all(id(p) in representation for p in model.context_encoder.parameters())

    td = TensorDict(
        {
            "action": torch.zeros(2, 5, 4),
            "is_init": torch.zeros(2, 5, 1, dtype=torch.bool),
            ("next", "pixels"): torch.randint(0, 256, (2, 5, 3, 64, 64), dtype=torch.uint8),
        },
        [2, 5],
    )
    out = model(td)
    assert out["next", "reco_pixels"].shape == (2, 5, 3, 64, 64)
    out["next", "reco_pixels"].square().mean().backward()
    assert all(p.grad is not None for p in model.context_encoder.parameters())


def test_checkpoint_of_the_wrong_kind_is_named(tmp_path):
    path = tmp_path / PRETRAINED_MODEL
    contextwm = preset_config(tmp_path, "arm=contextwm")
    save_pretrained(path, make_action_free_world_model(**TINY))
    with pytest.raises(
        ValueError, match=r"APV \(action-free\) pre-training, the configured model a ContextWM"
    ):
        make_finetune_world_model(contextwm, 4)
    save_pretrained(path, make_world_model(**TINY))
    with pytest.raises(ValueError, match=r"PreLAR \(with a latent action model\) pre-training"):
        make_finetune_world_model(contextwm, 4)
    save_pretrained(path, make_contextwm_pretrain_model(**TINY))
    for init, kind in (("apv", "APV"), ("prelar", "PreLAR")):
        with pytest.raises(
            ValueError, match=rf"ContextWM .*pre-training, the configured model a {kind}"
        ):
            make_finetune_world_model(preset_config(tmp_path, f"arm={init}"), 4)
    save_pretrained(path, make_contextwm_pretrain_model(**TINY, context={"resolutions": [8]}))
    with pytest.raises(ValueError, match=r"attention\.16.*missing from the checkpoint"):
        make_finetune_world_model(contextwm, 4)


def test_contextwm_pretrain_then_finetune_end_to_end(tmp_path):
    run_dir = tmp_path / "run"
    cfg = preset_config(run_dir, "arm=contextwm", "finetune.env_steps=100")
    run_pretrain(cfg)
    assert (run_dir / "pretrain_prediction.gif").exists()
    pretrained = load_checkpoint(run_dir / PRETRAINED_MODEL)["world_model"]
    assert any(name.startswith("context_encoder.") for name in pretrained)

    summary = run_finetune(cfg)
    assert summary["init"] == "contextwm"
    assert summary["env_steps"] == 100 and summary["updates"] == 11  # at steps 50, 55, ..., 100
    metrics = summary["last_metrics"]
    assert math.isfinite(metrics["world_model_loss"]) and metrics["intrinsic_bonus"] >= 0
    state = read_finetune_checkpoint(run_dir)["loss"]
    prefix = "model_loss.prelar_loss.model_loss.world_model.world_model."
    # The context encoder was frozen for 5 updates with the encoder, then trained.
    moved = [
        name
        for name, value in pretrained.items()
        if name.startswith("context_encoder.") and not torch.equal(value, state[prefix + name])
    ]
    assert moved


def test_compare_finetune_contextwm_arm(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        "compare_finetune", REPO / "experiments" / "compare_finetune.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with pytest.raises(SystemExit):
        script.parse_args(["--out", str(tmp_path), "--arms", "dreamer", "contextwm"])
    assert "--contextwm-pretrained is required" in capsys.readouterr().err
    checkpoint = tmp_path / "contextwm.pt"
    checkpoint.write_bytes(b"")
    argv = [
        "--out",
        str(tmp_path),
        "--arms",
        "contextwm",
        "--contextwm-pretrained",
        str(checkpoint),
    ]
    cfg = script.run_config(script.parse_args(argv), "contextwm", 0, None)
    assert cfg["finetune"]["init"] == "contextwm"
    assert cfg["finetune"]["pretrained"] == str(checkpoint.resolve())
