"""Shapes, reference use and gradient flow of every network variant (SPEC §4)."""

from __future__ import annotations

import pytest
import torch

from linebridge.bbdm.unet import DualStreamUNet, build_model, model_info
from linebridge.cli import main as cli_main
from linebridge.config import ConfigError, load_config

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
    refs = {}
    for exp in ["A0", "A1", "A2", "A3", "A4"]:
        cfg = load_config(exp, "tiny")
        net = build_model(cfg)
        refs[exp] = net.reference
        x, t, line, ref = inputs(cfg["data"]["image_size"])
        assert net(x, t, line, ref).shape == x.shape
    assert refs == {
        "A0": "none",
        "A1": "cross_attention",
        "A2": "cross_attention",
        "A3": "cross_attention",
        "A4": "concat",
    }


def test_model_info_counts_parameters():
    info = model_info(load_config("A3"))
    net = build_model(load_config("A3"))
    assert info["params_total"] == sum(p.numel() for p in net.parameters())
    assert info["params_reference_encoder"] > 0 and info["gflops_forward"] > 0
    assert model_info(load_config("A0"))["params_reference_encoder"] == 0


def test_model_info_cli_and_bad_key(capsys):
    assert cli_main(["model-info", "--experiment", "A4"]) == 0
    assert "in_channels" in capsys.readouterr().out
    assert cli_main(["model-info", "--experiment", "A4", "--set", "model.nope=1"]) == 2
    assert "unknown key 'model.nope'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="no such experiment"):
        load_config("A9")
