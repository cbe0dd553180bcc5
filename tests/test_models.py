"""Shapes, reference use and gradient flow of every network variant."""

from __future__ import annotations

import pytest
import torch

from conftest import experiments
from linebridge.bbdm.info import model_info
from linebridge.bbdm.unet import DualStreamUNet, build_model
from linebridge.cli import main as cli_main
from linebridge.core.config import ConfigError, load_config

SMALL = dict(
    model_channels=16,
    channel_mult=(1, 2, 2),
    num_res_blocks=1,
    attention_sizes=(8,),
    context_dim=32,
    heads=2,
    dim_head=8,
)


def inputs(size: int, b: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, size, size, generator=g)
    line = torch.rand(b, 1, size, size, generator=g) * 2 - 1
    ref = torch.rand(b, 3, size, size, generator=g) * 2 - 1
    t = torch.randint(0, 1000, (b,), generator=g)
    return x, t, line, ref


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("reference", ["none", "cross_attention", "concat"])
@pytest.mark.parametrize("spatial", [False, True])
def test_output_shape(size, reference, spatial):
    net = DualStreamUNet(size, reference=reference, use_spatial_transformer=spatial, **SMALL).eval()
    x, t, line, ref = inputs(size)
    assert net(x, t, line, ref).shape == (2, 3, size, size)
    assert net.in_channels == (7 if reference == "concat" else 4)


@pytest.mark.parametrize("reference", ["cross_attention", "concat"])
def test_reference_changes_output(reference):
    torch.manual_seed(0)
    net = DualStreamUNet(32, reference=reference, **SMALL).eval()
    x, t, line, ref = inputs(32)
    other = torch.flip(ref, dims=[0]) * -1
    with torch.no_grad():
        assert (net(x, t, line, ref) - net(x, t, line, other)).abs().max() > 1e-4


def test_a0_takes_no_reference():
    net = DualStreamUNet(32, reference="none", **SMALL).eval()
    x, t, line, ref = inputs(32)
    assert net.ref_encoder is None and net.mid_cross is None
    with torch.no_grad():
        assert torch.equal(net(x, t, line, ref), net(x, t, line, None))


def test_gradients_reach_reference_encoder():
    net = DualStreamUNet(32, reference="cross_attention", use_spatial_transformer=True, **SMALL)
    x, t, line, ref = inputs(32)
    net(x, t, line, ref).square().mean().backward()
    grads = [p.grad for p in net.ref_encoder.parameters()]
    assert all(g is not None for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0


def test_precomputed_context_matches():
    net = DualStreamUNet(32, **SMALL).eval()
    x, t, line, ref = inputs(32)
    with torch.no_grad():
        ctx = net.encode_reference(ref)
        assert torch.equal(net(x, t, line, ref), net(x, t, line, context=ctx))


def test_missing_reference_is_an_error():
    net = DualStreamUNet(32, **SMALL)
    x, t, line, _ = inputs(32)
    with pytest.raises(ValueError, match="reference"):
        net(x, t, line)


def test_factory_builds_every_experiment():
    """Every BBDM experiment of experiments/ builds and runs; A0 has no reference, A4 concatenates it, the rest
    (A1 on) read it by cross-attention."""
    refs = {}
    for exp in experiments():
        cfg = load_config(exp, "tiny")
        if cfg["model"]["family"] != "bbdm":
            continue  # the GAN baselines: test_baselines.py
        net = build_model(cfg)
        refs[exp] = net.reference
        x, t, line, ref = inputs(cfg["data"]["image_size"])
        assert net(x, t, line, ref).shape == x.shape
    assert {"A0", "A3", "A4"} <= set(refs)
    assert refs == {exp: {"A0": "none", "A4": "concat"}.get(exp, "cross_attention") for exp in refs}


def test_model_info_counts_parameters():
    """A known count: A3's network before the newer options has 1 895 171 parameters (the old-config test below
    counts them on the network itself)."""
    legacy = load_config("A3", None, [*LEGACY, *EIGHT_HEADS, "model.use_spatial_transformer=false"])
    assert model_info(legacy)["params_total"] == 1_895_171
    info = model_info(load_config("A3"))
    assert info["params_reference_encoder"] > 0 and info["gflops_forward"] > 0
    assert model_info(load_config("A0"))["params_reference_encoder"] == 0


def test_model_info_cli_and_bad_key(capsys):
    assert cli_main(["model-info", "--experiment", "A4"]) == 0
    assert "in_channels" in capsys.readouterr().out
    assert cli_main(["model-info", "--experiment", "A4", "--set", "model.nope=1"]) == 2
    assert "unknown key 'model.nope'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="no such experiment"):
        load_config("A9")


# ----- network options (model.norm_groups, zero_init, scale_shift, reference_downsample, reference_*) -----
NEW_KEYS = (
    "norm_groups",
    "zero_init",
    "scale_shift",
    "reference_downsample",
    "reference_positions",
)


# The network before these options existed: what a checkpoint config without the new keys builds.
LEGACY = ["model.norm_groups=32", "model.zero_init=false", "model.scale_shift=false", "model.reference_downsample=16",
          "model.reference_positions=false"]  # fmt: skip
EIGHT_HEADS = ["model.heads=8"]  # the default profile's attention before it went to 2 heads (the tiny one has 2)


@pytest.mark.parametrize(
    ("experiment", "profile", "params"),
    [("A3", None, 1_895_171), ("A0", None, 1_310_083), ("A4", None, 1_310_947), ("A3", "tiny", 616_675)],
)
def test_old_configs_build_the_network_they_were_trained_with(experiment, profile, params):
    """A checkpoint config from before the options existed builds the old network: same draws, same values.

    The counts are those of the network before the options were added (then without the spatial transformer).
    """
    heads = EIGHT_HEADS if profile is None else []
    cfg = load_config(experiment, profile, [*LEGACY, *heads, "model.use_spatial_transformer=false"])
    old = {**cfg, "model": {k: v for k, v in cfg["model"].items() if k not in NEW_KEYS}}
    torch.manual_seed(0)
    net = build_model(cfg).eval()
    torch.manual_seed(0)
    net_old = build_model(old).eval()
    assert sum(p.numel() for p in net.parameters()) == params
    a, b = net.state_dict(), net_old.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x, t, line, ref = inputs(cfg["data"]["image_size"])
    with torch.no_grad():
        assert torch.equal(net(x, t, line, ref), net_old(x, t, line, ref))


def test_paper_profile_keeps_the_original_network():
    assert load_config("A3", "paper") == load_config("A3", "paper", [*LEGACY, *EIGHT_HEADS])
    assert model_info(load_config("A3", "paper"))["params_total"] == 284_238_979


def group_counts(net) -> dict[int, set[int]]:
    counts: dict[int, set[int]] = {}
    for name, m in net.named_modules():
        if isinstance(m, torch.nn.GroupNorm) and not name.startswith("ref_encoder"):
            counts.setdefault(m.num_channels, set()).add(m.num_groups)
    return counts


def test_norm_groups_sets_the_channels_per_group():
    kw = dict(model_channels=32, channel_mult=(1, 2), context_dim=32, heads=2, dim_head=8)
    torch.manual_seed(0)
    default = DualStreamUNet(32, **kw)
    torch.manual_seed(0)
    eight = DualStreamUNet(32, norm_groups=8, **kw)
    assert group_counts(default)[32] == {32}  # one channel per group: instance normalisation
    assert group_counts(eight)[32] == {8} and group_counts(eight)[64] == {8}  # 4 and 8 channels per group
    a, b = default.state_dict(), eight.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # normalisation has no say in the parameters
    x, t, line, ref = inputs(32)
    with torch.no_grad():
        assert not torch.allclose(default.eval()(x, t, line, ref), eight.eval()(x, t, line, ref))


@pytest.mark.parametrize("cross", [False, True])
def test_attention_block_adds_only_what_attention_computes(cross):
    """With its output layers zeroed the block is the identity: x + attn(GN(x)), not x + GN(x) + attn(GN(x))."""
    from linebridge.bbdm.unet import SpatialAttention

    block = SpatialAttention(32, 2, 8, context_dim=16 if cross else None)
    x = torch.randn(2, 32, 8, 8) * 3 + 1
    ctx = torch.randn(2, 4, 16) if cross else None
    with torch.no_grad():
        assert not torch.allclose(block(x, ctx), x)
        for layer in [block.self_attn.to_out] + ([block.cross_attn.to_out, block.ff[-1]] if cross else []):
            layer.weight.zero_()
            layer.bias.zero_()
        assert torch.equal(block(x, ctx), x)


@pytest.mark.parametrize("reference", ["none", "cross_attention", "concat"])
@pytest.mark.parametrize("spatial", [False, True])
def test_zero_init_starts_as_zero_output_and_identity_blocks(reference, spatial):
    from linebridge.bbdm.unet import ColourCrossAttention, ResBlock, SpatialAttention

    kw = dict(SMALL, reference=reference, use_spatial_transformer=spatial)
    torch.manual_seed(0)
    net = DualStreamUNet(32, zero_init=True, **kw)
    torch.manual_seed(0)
    plain = DualStreamUNet(32, **kw)
    zeroed = {k for k, v in net.state_dict().items() if not v.any()}
    a, b = net.state_dict(), plain.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if k not in zeroed)  # zeroing draws nothing: the rest is the same
    x, t, line, ref = inputs(32)
    with torch.no_grad():
        assert torch.equal(net(x, t, line, ref), torch.zeros_like(x))
        temb, ctx = torch.randn(2, 4 * 16), net.encode_reference(ref)
        for m in net.modules():
            if isinstance(m, ResBlock):
                h = torch.randn(2, m.in_layers[-1].in_channels, 8, 8)
                assert torch.equal(m(h, temb), m.skip(h))
            elif isinstance(m, SpatialAttention | ColourCrossAttention):
                h = torch.randn(2, m.norm.num_channels, 8, 8)
                assert torch.equal(m(h, ctx), h)
    (net(x, t, line, ref) - x).square().mean().backward()  # a zero output still trains: the final conv gets a gradient
    assert net.out[-1].weight.grad.abs().sum() > 0


def test_scale_shift_runs_and_differs():
    torch.manual_seed(0)
    add = DualStreamUNet(32, **SMALL).eval()
    torch.manual_seed(0)
    ss = DualStreamUNet(32, scale_shift=True, **SMALL)
    assert ss.mid[0].time[-1].out_features == 2 * add.mid[0].time[-1].out_features
    x, t, line, ref = inputs(32)
    out = ss(x, t, line, ref)
    assert out.shape == x.shape and bool(torch.isfinite(out).all())
    with torch.no_grad():
        assert not torch.allclose(out, add(x, t, line, ref))
        assert not torch.allclose(out, ss(x, (t + 500) % 1000, line, ref))  # the timestep still matters
    out.square().mean().backward()
    assert ss.mid[0].time[-1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("downsample", "tokens"), [(1, 1024), (4, 64), (16, 4), (32, 1)])
@pytest.mark.parametrize("positions", [False, True])
def test_reference_token_grid_and_positions(downsample, tokens, positions):
    torch.manual_seed(0)
    net = DualStreamUNet(
        32,
        use_spatial_transformer=True,
        reference_downsample=downsample,
        reference_positions=positions,
        **SMALL,
    )
    x, t, line, ref = inputs(32)
    ctx = net.encode_reference(ref)
    assert ctx.shape == (2, tokens, SMALL["context_dim"])
    if downsample != 32:  # the encoder keeps its four convs; only their strides change
        torch.manual_seed(0)
        assert count_params(net) == count_params(DualStreamUNet(32, use_spatial_transformer=True, **SMALL))
    out = net(x, t, line, ref)
    assert out.shape == x.shape
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.ref_encoder.parameters() if p.dim() > 1)
    with torch.no_grad():
        assert (net(x, t, line, ref) - net(x, t, line, torch.flip(ref, dims=[0]) * -1)).abs().max() > 1e-4


def count_params(net) -> int:
    return sum(p.numel() for p in net.parameters())


def test_reference_positions_are_a_fixed_2d_sinusoid():
    from linebridge.bbdm.unet import sincos_2d

    torch.manual_seed(0)
    net = DualStreamUNet(32, reference_downsample=4, **SMALL).eval()
    torch.manual_seed(0)
    pos = DualStreamUNet(32, reference_downsample=4, reference_positions=True, **SMALL).eval()
    assert count_params(net) == count_params(pos)  # no parameters: nothing else changes
    _, _, _, ref = inputs(32)
    with torch.no_grad():
        diff = pos.encode_reference(ref) - net.encode_reference(ref)
    pe = sincos_2d(8, 8, SMALL["context_dim"])
    torch.testing.assert_close(diff, pe.expand_as(diff))
    q = SMALL["context_dim"] // 4  # [sin row, cos row, sin column, cos column], q channels each
    assert torch.equal(pe[0], torch.tensor([0.0, 1.0, 0.0, 1.0]).repeat_interleave(q))  # position (0, 0)
    assert pe.unique(dim=0).shape[0] == 64  # every position distinct
    # row-major like flatten(2): the first half of the channels changes down the rows only
    half = SMALL["context_dim"] // 2
    torch.testing.assert_close(pe.view(8, 8, -1)[:, 0, :half], pe.view(8, 8, -1)[:, 5, :half])
    torch.testing.assert_close(pe.view(8, 8, -1)[0, :, half:], pe.view(8, 8, -1)[5, :, half:])


def test_bad_network_options_are_rejected():
    from linebridge.core.schema import problems

    with pytest.raises(ValueError, match="power of 2"):
        DualStreamUNet(32, reference_downsample=12, **SMALL)
    with pytest.raises(ValueError, match="reference_downsample"):
        DualStreamUNet(32, reference_downsample=64, **SMALL)
    cfg = load_config("A3")
    for model, expected in [
        ({"reference_downsample": 12}, "model.reference_downsample: Value error, must be a power of 2"),
        ({"reference_downsample": 0}, "model.reference_downsample: Input should be greater than or equal to 1"),
        ({"reference_downsample": 64}, "is smaller than model.reference_downsample=64"),
        ({"norm_groups": 0}, "model.norm_groups: Input should be greater than 0"),
        ({"zero_init": "true"}, "model.zero_init: Input should be a valid boolean"),
        ({"reference_positions": True, "context_dim": 2}, "model.context_dim=2: the reference encoder needs"),
    ]:
        bad = problems({**cfg, "model": {**cfg["model"], **model}})
        assert any(expected in line for line in bad), (model, bad)
    assert problems({**cfg, "model": {**cfg["model"], "reference": "none", "reference_downsample": 64}}) == []
    assert problems({**cfg, "eval": {**cfg["eval"], "deterministic": 1}})[0].startswith("eval.deterministic")


def test_model_info_reports_the_options():
    base = model_info(load_config("A3", None, [*LEGACY, "model.use_spatial_transformer=false"]))
    grid = model_info(
        load_config(
            "A3",
            None,
            [
                "model.reference_downsample=4",
                "model.reference_positions=true",
                "model.use_spatial_transformer=true",
                "model.norm_groups=8",
                "model.scale_shift=true",
                "model.zero_init=true",
            ],
        )
    )
    assert grid["params_reference_encoder"] == base["params_reference_encoder"]
    assert grid["params_total"] > base["params_total"]  # spatial transformers and the wider time projections
    assert grid["gflops_forward"] > base["gflops_forward"]
