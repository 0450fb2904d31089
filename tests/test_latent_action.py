import pytest
import torch
from conftest import TINY, make_clip_batch, tiny
from tensordict import TensorDict
from tensordict.nn import set_interaction_type

from torchrl_prelar import ActionEncoder, make_latent_action_model, make_world_model
from torchrl_prelar.data.synthetic import grid_square_batch
from torchrl_prelar.modules.latent_action import OneHotCategoricals, use_circular_padding


def tiny_lam(**latent_action):
    return make_latent_action_model(**{**TINY["latent_action"], **latent_action})


@pytest.mark.parametrize(
    "output_type, keys",
    [
        ("gaussian", {"latent_action", "latent_action_loc", "latent_action_scale"}),
        ("deterministic", {"latent_action"}),
        ("discrete", {"latent_action", "latent_action_logits"}),
    ],
)
@pytest.mark.parametrize("input_mode", ["concat", "difference"])
def test_output_types_write_their_keys(output_type, keys, input_mode):
    model = tiny_lam(output_type=output_type, input_mode=input_mode)
    td = model(make_clip_batch(3, 5))
    written = set(td.keys()) - {"pixels", "next", "is_init"}
    assert written == keys
    assert td["latent_action"].shape == (3, 5, 8)
    if output_type == "discrete":
        assert td["latent_action_logits"].shape == (3, 5, 4, 2)
        one_hot = td["latent_action"].view(3, 5, 4, 2)
        assert torch.equal(one_hot.sum(-1), torch.ones(3, 5, 4))


def test_gaussian_scale_is_bounded_and_sample_is_reparameterised():
    model = tiny_lam()
    td = model(make_clip_batch())
    scale = td["latent_action_scale"]
    assert (scale > 0).all() and (scale < 2).all()
    td["latent_action"].sum().backward()
    assert all(p.grad is not None for p in model.head.parameters())


def test_mode_in_eval_and_under_deterministic_interaction():
    model = tiny_lam()
    batch = make_clip_batch()
    model.eval()
    td = model(batch.clone())
    assert torch.equal(td["latent_action"], td["latent_action_loc"])
    with set_interaction_type("random"):
        td = model(batch.clone())
    assert not torch.equal(td["latent_action"], td["latent_action_loc"])
    model.train()
    td = model(batch.clone())
    assert not torch.equal(td["latent_action"], td["latent_action_loc"])
    with set_interaction_type("deterministic"):
        td = model(batch.clone())
    assert torch.equal(td["latent_action"], td["latent_action_loc"])


def test_window_reads_earlier_frames_of_the_clip():
    model = tiny_lam(window=3, output_type="deterministic")
    batch = make_clip_batch(2, 5)
    base = model(batch.clone())["latent_action"]
    changed = batch.clone()
    changed["pixels"][:, 2] = 0
    changed["next", "pixels"][:, 1] = 0
    out = model(changed)["latent_action"]
    differs = (out != base).flatten(2).any(-1).any(0)
    # o_2 is in the windows (o_0, o_1, o_2), (o_1, o_2, o_3), (o_2, o_3, o_4) of steps 1 to 3.
    assert differs.tolist() == [False, True, True, True, False]


def test_window_needs_a_time_dimension():
    model = tiny_lam(window=3)
    td = make_clip_batch(2, 1)[:, 0]
    with pytest.raises(ValueError, match="time dimension"):
        model(td)


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="output_type"):
        tiny_lam(output_type="beta")
    with pytest.raises(ValueError, match="input_mode"):
        tiny_lam(input_mode="sum")
    with pytest.raises(ValueError, match="window"):
        tiny_lam(window=1)


def test_action_encoder_maps_actions_to_latent_space():
    encoder = ActionEncoder(4, latent_dim=8, hidden_dim=16)
    td = encoder(TensorDict({"action": torch.randn(5, 7, 4)}, [5, 7]))
    assert td["latent_action"].shape == (5, 7, 8)
    assert encoder.in_keys == ["action"] and encoder.out_keys == ["latent_action"]


def test_circular_padding_with_mean_pooling_hides_where_the_square_is():
    """Same move, different cell: same latent action (only with circular padding)."""
    torch.manual_seed(0)
    trunk = {"mults": [1, 2], "pool": "mean"}
    settings = tiny(latent_action={"trunk": trunk})["latent_action"]
    clips = grid_square_batch(1, 3, generator=torch.Generator().manual_seed(0))
    moved = clips.clone()
    for key in ("pixels", ("next", "pixels")):
        moved[key] = clips[key].roll((4, 8), (-2, -1))
    model = make_latent_action_model(**settings, image_size=16).eval()
    assert not torch.allclose(model(clips.clone())["latent_action"], model(moved)["latent_action"])
    use_circular_padding(model.trunk)
    torch.testing.assert_close(
        model(clips.clone())["latent_action"], model(moved)["latent_action"], atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("output_type", ["gaussian", "discrete", "deterministic"])
def test_get_dist_is_the_distribution_the_latent_action_is_drawn_from(output_type):
    model = tiny_lam(output_type=output_type)
    batch = make_clip_batch(3, 5)
    dist = model.get_dist(batch)
    assert dist.batch_shape == (3, 5)
    torch.manual_seed(0)
    td = model(batch.clone())
    if output_type == "gaussian":
        assert dist.event_shape == (8,)
        assert torch.allclose(dist.mean, td["latent_action_loc"])
        assert torch.allclose(dist.stddev, td["latent_action_scale"])
        torch.manual_seed(0)  # the same noise, drawn by hand
        noise = torch.randn(3, 5, 8)
        expected = td["latent_action_loc"] + td["latent_action_scale"] * noise
        assert torch.allclose(td["latent_action"], expected, atol=1e-6)
        assert dist.log_prob(td["latent_action"]).shape == (3, 5)
    elif output_type == "discrete":
        assert dist.event_shape == (8,)  # 4 categoricals of 2 classes, flat like the action
        assert torch.allclose(dist.logits, td["latent_action_logits"].log_softmax(-1))
        assert torch.isfinite(dist.log_prob(td["latent_action"])).all()
    else:
        assert torch.equal(dist.mode, td["latent_action"])
    model.eval()  # eval: the mode, deterministic
    mode = model(batch.clone())["latent_action"]
    assert torch.equal(mode, model(batch.clone())["latent_action"])
    assert torch.allclose(mode, dist.mode)


def test_discrete_sample_is_one_hot_with_gradients_through_the_probabilities():
    model = tiny_lam(output_type="discrete")
    td = model(make_clip_batch(3, 5))
    sample = td["latent_action"].view(3, 5, 4, 2)
    assert set(sample.unique().tolist()) == {0.0, 1.0}
    weights = torch.randn(2)
    (sample * weights).sum().backward()
    grads = [p.grad for p in model.head.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("output_type", ["gaussian", "discrete", "deterministic"])
def test_sample_or_mode_follows_the_interaction_type(output_type):
    model = tiny_lam(output_type=output_type)
    batch = make_clip_batch(3, 5)
    dist = model.get_dist(batch)
    for training in (True, False):
        model.train(training)
        for kind in ("deterministic", "mode"):
            with set_interaction_type(kind):
                assert torch.equal(model(batch.clone())["latent_action"], dist.mode)
        with set_interaction_type("mean"):
            torch.testing.assert_close(model(batch.clone())["latent_action"], dist.mean)
        with set_interaction_type("random"):
            draws = [model(batch.clone())["latent_action"] for _ in range(2)]
        assert torch.equal(draws[0], draws[1]) == (output_type == "deterministic")
    # without an interaction type: a draw in train(), the mode in eval()
    assert model.eval().sampler.default_interaction_type == "deterministic"
    assert torch.equal(model(batch.clone())["latent_action"], dist.mode)
    assert model.train().sampler.default_interaction_type == "random"


@pytest.mark.parametrize("output_type", ["gaussian", "discrete", "deterministic"])
def test_latent_actions_are_reproducible_under_a_seed(output_type):
    batch = make_clip_batch(3, 5)
    draws = []
    for seed in (0, 0, 1):
        torch.manual_seed(0)
        model = tiny_lam(output_type=output_type)
        torch.manual_seed(seed)
        draws.append(model(batch.clone())["latent_action"])
    assert torch.equal(draws[0], draws[1])
    assert torch.equal(draws[0], draws[2]) == (output_type == "deterministic")


def test_discrete_pass_through_gradient_is_the_gradient_of_the_probabilities():
    logits = torch.randn(3, 4, 5, requires_grad=True)
    weights = torch.randn(3, 20)
    sample = OneHotCategoricals(logits).rsample()
    assert set(sample.unique().tolist()) == {0.0, 1.0}  # exactly one-hot
    assert torch.equal(sample.detach().unflatten(-1, (4, 5)).sum(-1), torch.ones(3, 4))
    (gradient,) = torch.autograd.grad((sample * weights).sum(), logits)
    (expected,) = torch.autograd.grad((logits.softmax(-1).flatten(-2) * weights).sum(), logits)
    torch.testing.assert_close(gradient, expected)


@pytest.mark.parametrize("output_type", ["gaussian", "discrete"])
def test_gradients_reach_the_trunk_through_the_sample(output_type):
    model = tiny_lam(output_type=output_type)
    with set_interaction_type("random"):
        td = model(make_clip_batch(3, 5))
    (td["latent_action"] * torch.randn(3, 5, 8)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.trunk.parameters())


@pytest.mark.parametrize("output_type", ["gaussian", "discrete", "deterministic"])
def test_state_dict_of_the_old_layout_loads_and_gives_the_reference_outputs(output_type):
    """Checkpoints written before the probabilistic modules: ``trunk.*`` and a ``head`` of
    ``Linear -> ELU -> Linear`` with the std ``2 * sigmoid(raw / 2)`` computed by hand."""
    torch.manual_seed(0)
    model = tiny_lam(output_type=output_type).eval()
    torch.manual_seed(1)
    reference = tiny_lam(output_type=output_type)
    old_head = torch.nn.Sequential(*list(reference.head)[:3])
    old_layout = {f"trunk.{name}": value for name, value in reference.trunk.state_dict().items()}
    old_layout.update({f"head.{name}": value for name, value in old_head.state_dict().items()})
    model.load_state_dict(old_layout, strict=True)
    assert set(model.state_dict()) == set(old_layout)

    batch = make_clip_batch(2, 3)
    frames = torch.cat([batch["pixels"], batch["next", "pixels"]], -3).float() / 255 - 0.5
    raw = old_head(reference.trunk(frames))
    td = model(batch)
    if output_type == "gaussian":
        loc, raw_scale = raw.chunk(2, -1)
        torch.testing.assert_close(td["latent_action_loc"], loc)
        torch.testing.assert_close(td["latent_action_scale"], 2 * torch.sigmoid(raw_scale / 2))
        torch.testing.assert_close(td["latent_action"], loc)
    elif output_type == "discrete":
        logits = raw.unflatten(-1, (4, 2))
        torch.testing.assert_close(td["latent_action_logits"], logits)
        one_hot = torch.nn.functional.one_hot(logits.argmax(-1), 2).flatten(-2).float()
        torch.testing.assert_close(td["latent_action"], one_hot)
    else:
        torch.testing.assert_close(td["latent_action"], raw)


def test_shift_together_crops_each_stack_at_one_offset_of_the_padded_frames():
    from torchrl_prelar.modules.latent_action import shift_together

    torch.manual_seed(0)
    frames = torch.rand(64, 6, 8, 8)
    shifted = shift_together(frames, 2)
    padded = torch.nn.functional.pad(frames, (2, 2, 2, 2), mode="replicate")
    offsets = set()
    for i in range(frames.shape[0]):
        matches = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(shifted[i], padded[i, :, dy : dy + 8, dx : dx + 8])
        ]
        assert len(matches) == 1, i  # all six channels moved by the same offset
        offsets |= set(matches)
    assert len(offsets) > 10  # each stack draws its own offset
    assert torch.equal(shift_together(frames, 0), frames)


def test_shift_applies_in_training_only_and_not_to_embeddings():
    torch.manual_seed(0)
    plain = make_world_model(**tiny(latent_action={"output_type": "deterministic"}))
    shifted = make_world_model(**tiny(latent_action={"output_type": "deterministic", "shift": 4}))
    shifted.load_state_dict(plain.state_dict())
    frames = torch.randint(0, 256, (2, 5, 3, 64, 64), dtype=torch.uint8)
    later = torch.randint(0, 256, (2, 5, 3, 64, 64), dtype=torch.uint8)
    for model in (plain, shifted):
        model.action_model.eval()
    torch.testing.assert_close(
        plain.action_model.infer(frames, later)[0], shifted.action_model.infer(frames, later)[0]
    )
    plain.action_model.train()
    shifted.action_model.train()
    assert not torch.allclose(
        plain.action_model.infer(frames, later)[0], shifted.action_model.infer(frames, later)[0]
    )
    with pytest.raises(ValueError, match="frame inputs only"):
        make_world_model(**tiny(latent_action={"input_mode": "embedding", "shift": 2}))
