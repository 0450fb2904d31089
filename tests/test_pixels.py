"""Frames stay as given in the TensorDict; uint8 frames are centred once, inside the networks
and the loss, and give the same losses as the equivalent centred floats."""

import pytest
import torch
from conftest import TINY, make_clip_batch, tiny
from tensordict import TensorDict

from torchrl_prelar import PreLARLoss, make_world_model
from torchrl_prelar.baselines.apv import make_apv_world_model
from torchrl_prelar.baselines.contextwm import make_contextwm_pretrain_model
from torchrl_prelar.modules.networks import make_conv_decoder, make_conv_encoder
from torchrl_prelar.modules.pixels import centred_pixels

PIXEL_KEYS = ("pixels", ("next", "pixels"))
RESNET = {"type": "resnet", "widths": [8, 8, 16], "blocks_per_stage": 1}


def as_centred_floats(batch: TensorDict) -> TensorDict:
    floats = batch.clone()
    for key in PIXEL_KEYS:
        floats.set(key, batch.get(key).float() / 255 - 0.5)
    return floats


def test_centred_pixels_scales_uint8_and_passes_floats_through():
    frames = torch.tensor([0, 51, 255], dtype=torch.uint8)
    centred = centred_pixels(frames)
    assert centred.dtype == torch.float32
    torch.testing.assert_close(centred, torch.tensor([-0.5, -0.3, 0.5]))
    assert frames.tolist() == [0, 51, 255]  # a new tensor, the input is left alone
    floats = torch.rand(4) - 0.5
    assert centred_pixels(floats) is floats


def test_conv_encoder_centres_once_as_torchrl_does():
    """TorchRL's encoder reads uint8 itself (/ 255 - 0.5): ours gives the same features."""
    torch.manual_seed(0)
    encoder = make_conv_encoder(depth=4, mults=(1, 2))
    frames = torch.randint(0, 256, (2, 5, 3, 64, 64), dtype=torch.uint8)
    features = encoder(frames)
    torch.testing.assert_close(features, encoder.encoder(frames))  # TorchRL's own forward
    torch.testing.assert_close(features, encoder(centred_pixels(frames)), rtol=0, atol=0)


def test_conv_decoder_predicts_centred_frames():
    torch.manual_seed(0)
    decoder = make_conv_decoder(8, depth=4, mults=(1, 2))
    features = torch.randn(2, 3, 8)
    torch.testing.assert_close(decoder(features), decoder.decoder(features) - 0.5)


def _models():
    return {
        "tiny gaussian": lambda: make_world_model(**TINY),
        "tiny discrete": lambda: make_world_model(
            **tiny(latent_action={"output_type": "discrete"})
        ),
        "difference input": lambda: make_world_model(
            **tiny(latent_action={"input_mode": "difference", "output_type": "deterministic"})
        ),
        "embedding input": lambda: make_world_model(
            **tiny(latent_action={"input_mode": "embedding"})
        ),
        "resnet": lambda: make_world_model(
            **tiny(
                encoder=RESNET,
                decoder={"type": "resnet", "widths": [16, 8, 8, 4]},
                latent_action={"trunk": RESNET},
            )
        ),
        "contextwm": lambda: make_contextwm_pretrain_model(**TINY, context={"shift": 2}),
    }


@pytest.mark.parametrize("name", list(_models()))
def test_loss_is_the_same_on_uint8_and_on_centred_float_frames(name):
    batch = make_clip_batch(2, 5)
    results = []
    for frames in (batch, as_centred_floats(batch)):
        torch.manual_seed(0)
        # the reconstruction terms of the latent action (ContextWM has none), o_t included
        terms = (
            {} if name == "contextwm" else {"lambda_prior_reco": 0.5, "lambda_forward_reco": 0.5}
        )
        loss = PreLARLoss(_models()[name](), forward_residual=True, **terms)
        torch.manual_seed(1)
        losses, _ = loss(frames)
        total = sum(value for key, value in losses.items() if key.startswith("loss_"))
        total.backward()
        gradients = [p.grad.clone() for p in loss.parameters() if p.grad is not None]
        results.append((losses.detach(), gradients))
    (uint8_losses, uint8_grads), (float_losses, float_grads) = results
    for key, value in uint8_losses.items():
        torch.testing.assert_close(value, float_losses[key], rtol=1e-5, atol=1e-6)
    assert len(uint8_grads) == len(float_grads) > 0
    for uint8_grad, float_grad in zip(uint8_grads, float_grads, strict=True):
        torch.testing.assert_close(uint8_grad, float_grad, rtol=1e-4, atol=1e-5)


def test_fine_tuning_loss_is_the_same_on_uint8_and_on_centred_float_frames():
    batch = make_clip_batch(2, 4)
    batch.set("action", torch.randn(2, 4, 4))
    batch.set(("next", "reward"), torch.randn(2, 4, 1))
    results = []
    for frames in (batch, as_centred_floats(batch)):
        torch.manual_seed(0)
        loss = PreLARLoss(make_apv_world_model(4, reward_keys=[("next", "reward")], **TINY))
        torch.manual_seed(1)
        losses, _ = loss(frames)
        results.append(losses.detach())
    for key, value in results[0].items():
        torch.testing.assert_close(value, results[1][key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_loss_and_world_model_leave_the_frames_of_the_batch_as_they_were(dtype):
    batch = make_clip_batch(2, 4)
    if dtype == torch.float32:
        batch = as_centred_floats(batch)
    frames = {key: batch.get(key) for key in PIXEL_KEYS}
    copies = {key: value.clone() for key, value in frames.items()}
    torch.manual_seed(0)
    loss = PreLARLoss(make_world_model(**TINY), lambda_forward_reco=0.5, forward_residual=True)
    loss(batch)
    loss.world_model(batch)
    for key in PIXEL_KEYS:
        assert batch.get(key) is frames[key]  # the entry was not replaced
        assert batch.get(key).dtype == dtype and torch.equal(batch.get(key), copies[key])


def test_scored_target_is_centred_in_the_loss_output():
    batch = make_clip_batch(2, 4)
    _, model_td = PreLARLoss(make_world_model(**TINY))(batch)
    target = model_td["next", "pixels"]
    assert target.dtype == torch.float32
    torch.testing.assert_close(target, centred_pixels(batch["next", "pixels"]))
    assert model_td["pixels"].dtype == torch.uint8  # o_t is left as given
