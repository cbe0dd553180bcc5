"""The Brownian bridge pinned down against known values (SPEC §3)."""

from __future__ import annotations

import pytest
import torch

from linebridge.bridge import OBJECTIVES, BrownianBridge


def oracle(bridge: BrownianBridge, target: torch.Tensor, source: torch.Tensor):
    """A network that returns the exact objective for the true target at any (x_t, t)."""

    def model_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        m = bridge.m[t].to(x_t.dtype).view(-1, 1, 1, 1)
        std = bridge.variance[t].to(x_t.dtype).sqrt().view(-1, 1, 1, 1)
        eps = (x_t - (1 - m) * target - m * source) / std
        return bridge.q_sample(target, source, t, eps)[1]

    return model_fn


def pair(dtype=torch.float32, device="cpu", b=3, size=8):
    g = torch.Generator().manual_seed(0)
    target = (torch.rand(b, 3, size, size, generator=g) * 2 - 1).to(device, dtype)
    source = (torch.rand(b, 3, size, size, generator=g) * 2 - 1).to(device, dtype)
    return target, source


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def test_schedule_values():
    bridge = BrownianBridge()
    assert bridge.m[0].item() == pytest.approx(0.001)
    assert bridge.m[-1].item() == pytest.approx(0.999)
    m = bridge.m
    assert torch.allclose(bridge.variance, 2 * (m - m**2))
    assert torch.allclose(BrownianBridge(max_var=0.5).variance, m - m**2)


def test_linear_step_lists_match_bbdm():
    bridge = BrownianBridge()
    s200 = bridge.timesteps(200).tolist()
    assert len(s200) == 200
    assert s200[:3] == [999, 993, 988] and s200[-4:] == [10, 5, 1, 0]
    assert bridge.timesteps(5).tolist() == [999, 666, 333, 1, 0]
    assert bridge.timesteps(2).tolist() == [999, 0]
    assert bridge.timesteps(1000).tolist() == list(range(999, -1, -1))


def test_cosine_step_list_is_in_range_and_descending():
    steps = BrownianBridge().timesteps(50, kind="cosine")
    assert steps[0].item() == 999 and steps[-1].item() == 0
    assert bool((steps[1:] < steps[:-1]).all())
    assert len(steps) == 50
    # cosine spacing: denser at both ends than in the middle
    gaps = (steps[:-1] - steps[1:]).float()
    assert gaps[0] < gaps[len(gaps) // 2] and gaps[-1] < gaps[len(gaps) // 2]


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="objective"):
        BrownianBridge(objective="x0")
    with pytest.raises(ValueError, match="sample_step"):
        BrownianBridge().timesteps(1)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_q_sample_forward_marginal_and_objectives(objective):
    bridge = BrownianBridge(objective=objective)
    target, source = pair(torch.float64)
    t = torch.tensor([0, 500, 999])
    noise = torch.randn_like(target)
    x_t, obj = bridge.q_sample(target, source, t, noise)
    m = bridge.m[t].view(-1, 1, 1, 1)
    var = bridge.variance[t].view(-1, 1, 1, 1)
    assert torch.allclose(x_t, (1 - m) * target + m * source + var.sqrt() * noise)
    expected = {"grad": x_t - target, "noise": noise, "ysubx": source - target}[objective]
    assert torch.allclose(obj, expected)
    # predict_target inverts the objective exactly
    assert torch.allclose(bridge.predict_target(x_t, source, t, obj), target)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("mode", [dict(eta=1.0), dict(eta=0.0), dict(deterministic=True)])
def test_oracle_sampler_returns_target(objective, dtype, device, mode):
    bridge = BrownianBridge(objective=objective).to(device)
    target, source = pair(dtype, device)
    calls = []
    fn = oracle(bridge, target, source)

    def counted(x, t):
        calls.append(int(t[0]))
        return fn(x, t)

    out = bridge.sample(counted, source, sample_step=20, generator=torch.Generator(device).manual_seed(1), **mode)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    assert out.dtype == dtype
    assert torch.allclose(out, target, atol=tol)
    assert calls == bridge.timesteps(20).tolist()


def test_eta1_chain_variance_tracks_delta():
    """Start 10^4 chains from the true marginal at T-1; after each jump Var(x_n) ≈ δ_n."""
    bridge = BrownianBridge().double()
    n_chains = 20000
    target = torch.zeros(n_chains, 1, 1, 1, dtype=torch.float64)
    source = torch.ones(n_chains, 1, 1, 1, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    steps = bridge.timesteps(10).tolist()
    t0 = steps[0]
    x = (1 - bridge.m[t0]) * target + bridge.m[t0] * source + bridge.variance[t0].sqrt() * torch.randn(target.shape, generator=g, dtype=torch.float64)
    for t, n in zip(steps[:-1], steps[1:]):
        x = bridge.step(x, source, target, t, n, eta=1.0, noise=torch.randn(x.shape, generator=g, dtype=torch.float64))
        expected_mean = (1 - bridge.m[n]) * 0 + bridge.m[n] * 1
        var = x.var().item()
        # sampling error of a variance estimate: sd ≈ var·sqrt(2/N) ≈ 1 % at N = 2·10^4
        assert var == pytest.approx(bridge.variance[n].item(), rel=0.05), (t, n)
        assert x.mean().item() == pytest.approx(expected_mean.item(), abs=4 * var**0.5 / n_chains**0.5 + 1e-12)


def test_deterministic_step_keeps_noise_scale_and_eta0_differs():
    """The ODE variant maps √δ_t ε to √δ_n ε; BBDM's η=0 shrinks it further (it is not an ODE)."""
    bridge = BrownianBridge().double()
    target = torch.zeros(1, 1, 1, 1, dtype=torch.float64)
    source = torch.zeros_like(target)
    t, n = 999, 500
    x_t = bridge.variance[t].sqrt() * torch.ones_like(target)
    ode = bridge.step(x_t, source, target, t, n, deterministic=True)
    assert ode.item() == pytest.approx(bridge.variance[n].sqrt().item())
    eta0 = bridge.step(x_t, source, target, t, n, eta=0.0)
    assert eta0.item() < ode.item() - 1e-3


def test_same_generator_same_samples():
    bridge = BrownianBridge()
    target, source = pair()
    fn = lambda x, t: torch.zeros_like(x)  # noqa: E731 - a deliberately wrong network
    a = bridge.sample(fn, source, 10, generator=torch.Generator().manual_seed(3))
    b = bridge.sample(fn, source, 10, generator=torch.Generator().manual_seed(3))
    c = bridge.sample(fn, source, 10, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("deterministic", [False, True])
def test_sample_callback_sees_every_step_and_changes_nothing(deterministic):
    bridge = BrownianBridge(objective="grad")
    target, source = pair()
    fn = lambda x, t: 0.5 * (x - target)  # noqa: E731 (a not-quite-oracle: x̂ moves along the path)
    plain = bridge.sample(fn, source, 12, deterministic=deterministic, generator=torch.Generator().manual_seed(3))
    seen = []
    watched = bridge.sample(fn, source, 12, deterministic=deterministic, generator=torch.Generator().manual_seed(3),
                            callback=lambda i, x_hat: seen.append((i, x_hat.clone())))
    assert torch.equal(plain, watched)
    assert [i for i, _ in seen] == list(range(12))
    assert torch.equal(seen[-1][1], watched) and not torch.equal(seen[0][1], watched)
