import pytest
import torch
from conftest import TINY, WORLD_MODELS, make_clip_batch, tiny
from dreamer_prelar_utils import example_world_model
from tensordict import TensorDict

from torchrl_prelar import ActionEncoder, make_world_model, resolve_world_model_kwargs
from torchrl_prelar.modules.networks import ResidualBlock


def test_the_defaults_are_the_small_world_model():
    assert resolve_world_model_kwargs() == resolve_world_model_kwargs(**WORLD_MODELS["small"])
    torch.manual_seed(0)
    default = make_world_model().state_dict()
    torch.manual_seed(0)
    small = make_world_model(**WORLD_MODELS["small"]).state_dict()
    assert default.keys() == small.keys()
    assert all(torch.equal(default[name], small[name]) for name in default)


@pytest.mark.parametrize(
    "part, setting, factory",
    [
        ("rssm", "size", "make_rssm_rollout"),
        ("encoder", "dpeth", "make_pixel_encoder"),
        ("latent_action", "trunk_depth", "make_latent_action_model"),
        ("reward_head", "width", "make_reward_head"),
    ],
)
def test_an_unknown_setting_is_named_with_the_accepted_ones(part, setting, factory):
    with pytest.raises(TypeError, match=rf"{part} has no setting '{setting}'.*{factory} are"):
        make_world_model(**{part: {setting: 1}})
    with pytest.raises(TypeError, match=r"latent_action.trunk has no setting 'depht'.*depth"):
        make_world_model(latent_action={"trunk": {"depht": 8}})


@pytest.mark.parametrize("name", ["paper", "small", "tiny"])
@pytest.mark.parametrize(
    "latent_action",
    [
        {"output_type": "gaussian"},
        {"output_type": "deterministic"},
        {"output_type": "discrete"},
        {"input_mode": "embedding"},
    ],
)
def test_shapes_and_keys(name, latent_action):
    config = example_world_model(name, {"latent_action": latent_action})
    torch.manual_seed(0)
    model = make_world_model(**config)
    rssm = config["rssm"]
    batch = make_clip_batch(2, 3)
    frames = batch.select("pixels", ("next", "pixels")).clone()
    td = model(batch)
    assert td.batch_size == (2, 3)
    assert td["next", "reco_pixels"].shape == (2, 3, 3, 64, 64)
    assert td["next", "prior_logits"].shape == (2, 3, rssm["categoricals"], rssm["classes"])
    assert td["next", "posterior_logits"].shape == (2, 3, rssm["categoricals"], rssm["classes"])
    assert td["next", "belief"].shape == (2, 3, rssm["deter"])
    assert td["latent_action"].shape == (2, 3, config["latent_action"]["dim"])
    for key in ("pixels", ("next", "pixels")):  # the frames are left as they were given
        assert td[key].dtype == torch.uint8 and torch.equal(td[key], frames[key])


def test_paper_preset_matches_reference_parameter_counts():
    model = make_world_model(**WORLD_MODELS["paper"])

    def millions(module):
        return round(sum(p.numel() for p in module.parameters()) / 1e6, 2)

    assert millions(model.encoder) == 1.56
    assert millions(model.decoder) == 7.52
    assert millions(model.rssm) == 14.76
    assert millions(model.action_model) == 4.84


def test_embedding_input_reuses_the_encoder_for_o_t_and_o_t1():
    torch.manual_seed(0)
    model = make_world_model(
        **tiny(latent_action={"input_mode": "embedding", "output_type": "deterministic"})
    ).eval()
    assert not any(isinstance(m, torch.nn.Conv2d) for m in model.action_model.modules())
    batch = make_clip_batch(2, 5)
    out = model(batch.clone())
    encode = model.encoder.module
    frames = torch.cat([out["pixels"][:, :1], out["next", "pixels"]], 1)
    embeddings = encode(frames)
    expected, _, _ = model.action_model.infer(embeddings[:, :-1], embeddings[:, 1:])
    torch.testing.assert_close(out["latent_action"][:, 1:], expected[:, 1:])
    out["next", "reco_pixels"].sum().backward()
    assert model.action_model.head[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("input_mode", ["concat", "embedding"])
def test_infer_latent_action_gives_the_forward_latent_action_without_the_rssm(input_mode):
    torch.manual_seed(0)
    model = make_world_model(
        **tiny(latent_action={"input_mode": input_mode, "output_type": "deterministic"})
    ).eval()
    batch = make_clip_batch(2, 5)
    alone = model.infer_latent_action(batch.clone())
    assert ("next", "state") not in alone.keys(True) and ("next", "reco_pixels") not in alone
    full = model(batch.clone())["latent_action"]  # the RSSM zeroes it where "is_init" is set
    torch.testing.assert_close(alone["latent_action"][:, 1:], full[:, 1:])
    alone["latent_action"].sum().backward()  # the code trains the trunk (and the encoder)
    trained = model.encoder if input_mode == "embedding" else model.action_model
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trained.parameters())


def test_embedding_difference_input_sees_only_the_change_of_the_embeddings():
    """``embedding_difference`` (LAPA's input): the latent action of (o_t, o_t+1) is the head
    applied to e(o_t+1) - e(o_t), so a shift common to both embeddings cannot reach it,
    while the ``embedding`` mode sees it; gradients still reach the head through the world
    model."""
    torch.manual_seed(0)
    settings = {"output_type": "deterministic"}
    model = make_world_model(
        **tiny(latent_action={**settings, "input_mode": "embedding_difference"})
    ).eval()
    assert model.action_model.trunk.output_features == model.encoder.module.output_features
    batch = make_clip_batch(2, 5)
    out = model(batch.clone())
    frames = torch.cat([out["pixels"][:, :1], out["next", "pixels"]], 1)
    embeddings = model.encoder.module(frames)
    change = embeddings[:, 1:] - embeddings[:, :-1]
    torch.testing.assert_close(out["latent_action"][:, 1:], model.action_model.head(change)[:, 1:])
    shift = torch.randn(embeddings.shape[-1])
    for mode, moves in (("embedding_difference", False), ("embedding", True)):
        torch.manual_seed(0)
        other = make_world_model(**tiny(latent_action={**settings, "input_mode": mode})).eval()
        codes = [
            other.action_model.infer(embeddings[:, :-1] + s, embeddings[:, 1:] + s)[0]
            for s in (0.0, shift)
        ]
        assert torch.allclose(codes[0], codes[1], atol=1e-5) != moves, mode
    out["next", "reco_pixels"].sum().backward()
    assert model.action_model.head[0].weight.grad.abs().sum() > 0


def test_time_alignment_latent_action_t_from_o_t_and_o_t1_feeds_prior_of_t1():
    torch.manual_seed(0)
    model = make_world_model(**tiny(latent_action={"output_type": "deterministic"})).eval()
    batch = make_clip_batch(2, 5)
    torch.manual_seed(0)
    base = model(batch.clone())
    expected, _, _ = model.action_model.infer(base["pixels"], base["next", "pixels"])
    assert torch.allclose(base["latent_action"][:, 1:], expected[:, 1:])
    assert (base["latent_action"][:, 0] == 0).all(), "the rssm zeroes the action at is_init"

    # Change only the latent action of step 2: the prior for o_3 moves, earlier priors do not.
    model.action_model.register_forward_hook(
        lambda module, args, out: out.set(
            "latent_action",
            out["latent_action"].index_add(
                1, torch.tensor([2]), torch.ones(2, 1, out["latent_action"].shape[-1])
            ),
        )
    )
    torch.manual_seed(0)
    shifted = model(batch.clone())
    prior_changed = shifted["next", "prior_logits"] != base["next", "prior_logits"]
    prior_changed = prior_changed.flatten(2).any(-1).any(0)
    assert prior_changed.tolist() == [False, False, True, True, True]


def test_deterministic_under_seed_and_state_dict_round_trip():
    batch = make_clip_batch()
    torch.manual_seed(1)
    model = make_world_model(**TINY)
    torch.manual_seed(7)
    first = model(batch.clone())
    torch.manual_seed(7)
    second = model(batch.clone())
    assert torch.equal(first["next", "reco_pixels"], second["next", "reco_pixels"])

    torch.manual_seed(2)
    other = make_world_model(**TINY)
    torch.manual_seed(7)
    assert not torch.equal(
        other(batch.clone())["next", "reco_pixels"], first["next", "reco_pixels"]
    )
    other.load_state_dict(model.state_dict())
    torch.manual_seed(7)
    assert torch.equal(other(batch.clone())["next", "reco_pixels"], first["next", "reco_pixels"])


def test_same_world_model_runs_with_action_encoder():
    torch.manual_seed(0)
    video = make_world_model(**TINY)
    torch.manual_seed(0)
    model = make_world_model(**TINY, action_dim=4)
    rssm_before = {k: v.clone() for k, v in model.rssm.state_dict().items()}
    assert all(torch.equal(v, video.rssm.state_dict()[k]) for k, v in rssm_before.items())
    assert isinstance(model.action_model, ActionEncoder)
    assert model.pixel_keys == [("next", "pixels")]  # no o_t frame needed
    batch = make_clip_batch(2, 3)
    del batch["pixels"]
    batch["action"] = torch.randn(2, 3, 4)
    td = model(batch)
    assert td["latent_action"].shape == (2, 3, 8)
    td["next", "reco_pixels"].sum().backward()
    assert model.action_model.module[0].weight.grad.abs().sum() > 0
    assert all(torch.equal(v, model.rssm.state_dict()[k]) for k, v in rssm_before.items())


def test_identity_action_encoder_feeds_the_real_action_to_the_rssm():
    torch.manual_seed(0)
    model = make_world_model(**tiny(action_encoder={"identity": True}), action_dim=4)
    assert list(model.action_model.parameters()) == []
    projector = model.rssm_prior.action_state_projector[0]
    stoch = TINY["rssm"]["categoricals"] * TINY["rssm"]["classes"]
    assert projector.in_features == stoch + 4  # latent_action's dim (8) is not used
    batch = make_clip_batch(2, 3)
    del batch["pixels"]
    batch["action"] = torch.randn(2, 3, 4)
    td = model(batch)
    # the action itself, zeroed where an episode starts (as every latent action is)
    assert torch.equal(td["latent_action"][:, 1:], batch["action"][:, 1:])
    assert not td["latent_action"][:, 0].any()
    td["next", "reco_pixels"].sum().backward()
    assert projector.weight.grad[:, stoch:].abs().sum() > 0  # the action's own columns learn
    with pytest.raises(ValueError, match="latent_dim must be 4, got 8"):
        ActionEncoder(4, latent_dim=8, identity=True)


def test_action_encoder_refuses_bad_sizes_and_an_action_of_another_width():
    with pytest.raises(ValueError, match="ActionEncoder: action_dim must be an integer >= 1"):
        ActionEncoder(0, latent_dim=8)
    with pytest.raises(ValueError, match="ActionEncoder: depth must be an integer >= 1"):
        ActionEncoder(4, latent_dim=8, depth=0)
    with pytest.raises(ValueError, match="LatentActionModel: action_dim must be an integer"):
        make_world_model(**tiny(latent_action={"dim": 0}))
    encoder = ActionEncoder(4, latent_dim=8, hidden_dim=16)
    with pytest.raises(ValueError, match=r"'action' has shape \(2, 5\).*width 4"):
        encoder(TensorDict({"action": torch.zeros(2, 5)}, [2]))
    assert encoder(TensorDict({"action": torch.zeros(2, 4)}, [2]))["latent_action"].shape == (2, 8)
    assert encoder(torch.zeros(2, 4)).shape == (2, 8)  # a tensor, as TensorDictModules take
    with pytest.raises(ValueError, match=r"'action' has shape \(3,\)"):
        encoder(torch.zeros(3))


def test_reward_heads_write_their_keys():
    model = make_world_model(**TINY, reward_keys=[("next", "reward"), ("next", "aux_reward")])
    td = model(make_clip_batch())
    assert td["next", "reward"].shape == (2, 4, 1)
    assert td["next", "aux_reward"].shape == (2, 4, 1)


def bad_batches():
    wrong_size = make_clip_batch(size=32)
    wrong_channels = make_clip_batch()
    wrong_channels.set("pixels", wrong_channels["pixels"][:, :, :1])
    out_of_range = make_clip_batch()
    out_of_range.set("pixels", out_of_range["pixels"].float())
    missing_next = make_clip_batch()
    del missing_next["next", "pixels"]
    with_nan = make_clip_batch()
    with_nan.set(("next", "pixels"), with_nan["next", "pixels"].float() / 255 - 0.5)
    with_nan["next", "pixels"][0, 1, 0, 0, 0] = float("nan")
    integer = make_clip_batch()
    integer.set("pixels", integer["pixels"].long())
    float_is_init = make_clip_batch()
    float_is_init.set("is_init", float_is_init["is_init"].float())
    return [
        (wrong_size, ValueError, r"'pixels'.*\(3, 64, 64\)"),
        (wrong_channels, ValueError, r"'pixels'.*channels first"),
        (out_of_range, ValueError, r"'pixels' has float values in \[0.000, 255.000\]"),
        (missing_next, KeyError, r"Missing key \('next', 'pixels'\)"),
        (with_nan, ValueError, r"\('next', 'pixels'\) contains NaN"),
        (integer, ValueError, r"'pixels' has dtype torch.int64"),
        (float_is_init, ValueError, r"'is_init' has dtype torch.float32: expected torch.bool"),
    ]


@pytest.mark.parametrize("batch, error, message", bad_batches())
def test_bad_input_names_the_key(batch, error, message):
    model = make_world_model(**TINY)
    with pytest.raises(error, match=message):
        model(batch)


def test_unknown_network_type_and_padding():
    with pytest.raises(ValueError, match="Unknown encoder type 'vit'"):
        make_world_model(**tiny(encoder={"type": "vit"}))
    with pytest.raises(ValueError, match="Unknown decoder type 'vit'"):
        make_world_model(**tiny(decoder={"type": "vit"}))
    with pytest.raises(ValueError, match="padding must be 'zeros' or 'circular'"):
        make_world_model(**tiny(latent_action={"trunk": {"padding": "reflect"}}))


@pytest.mark.parametrize("name", ["paper", "tiny"])
def test_activation_checkpointing_gives_the_same_loss_and_gradients(name):
    from torchrl_prelar import PreLARLoss

    grads, losses = [], []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        settings = {**WORLD_MODELS[name], "activation_checkpointing": checkpointing}
        model = make_world_model(**settings)
        assert model.activation_checkpointing is checkpointing
        blocks = [m for m in model.modules() if isinstance(m, ResidualBlock)]
        assert all(block.checkpointed is checkpointing for block in blocks)
        assert len(blocks) == (18 if name == "paper" else 0)  # encoder, decoder, LAM trunk
        loss = PreLARLoss(model)
        torch.manual_seed(1)
        out, _ = loss(make_clip_batch(2, 3))
        total = sum(value for key, value in out.items() if key.startswith("loss_"))
        total.backward()
        losses.append(total.detach())
        grads.append(
            {name: p.grad.clone() for name, p in loss.named_parameters() if p.grad is not None}
        )
    torch.testing.assert_close(losses[1], losses[0])
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-6, msg=name)
