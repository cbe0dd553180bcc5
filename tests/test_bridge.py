"""The Brownian bridge pinned down against known values."""

from __future__ import annotations

import pytest
import torch

from linebridge.bbdm.bridge import OBJECTIVES, BrownianBridge


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
    """Hand-computed: δ = 2·s·(m − m²) is 2·(0.001 − 0.001²) = 0.001998 at both ends and 2·s·¼ where m = ½."""
    bridge = BrownianBridge()
    assert bridge.m[0].item() == pytest.approx(0.001)
    assert bridge.m[-1].item() == pytest.approx(0.999)
    assert [bridge.variance[0].item(), bridge.variance[-1].item()] == pytest.approx([0.001998, 0.001998])
    assert bridge.variance.max().item() == pytest.approx(0.5, abs=1e-6) and int(bridge.variance.argmax()) in (499, 500)
    half = BrownianBridge(max_var=0.5).variance
    assert half[0].item() == pytest.approx(0.000999) and half.max().item() == pytest.approx(0.25, abs=1e-6)


def test_linear_step_lists_match_bbdm():
    bridge = BrownianBridge()
    s200 = bridge.timesteps(200).tolist()
    assert len(s200) == 200
    assert s200[:3] == [999, 993, 988] and s200[-4:] == [10, 5, 1, 0]
    assert bridge.timesteps(5).tolist() == [999, 666, 333, 1, 0]
    assert bridge.timesteps(2).tolist() == [999, 0]
    assert bridge.timesteps(1000).tolist() == list(range(999, -1, -1))


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_every_step_list_runs_strictly_down_from_the_last_index_to_0(kind):
    bridge = BrownianBridge()
    T = bridge.num_timesteps
    for sample_step in range(2, T + 1):
        steps = bridge.timesteps(sample_step, kind)
        assert steps.dtype == torch.long, sample_step
        assert steps[0].item() == T - 1 and steps[-1].item() == 0, sample_step
        assert bool((steps[1:] < steps[:-1]).all()), sample_step
        assert len(steps) <= sample_step, sample_step
        if kind == "linear":
            # from S = 502 to 999 the step 999/(S − 2) is below 2, the truncated arange reaches 1 itself: merged
            assert len(steps) == sample_step - (502 <= sample_step <= 999), sample_step


def test_sampling_with_a_merged_linear_step_list_runs():
    bridge = BrownianBridge()
    source = torch.rand(2, 3, 4, 4) * 2 - 1
    calls = []

    def model_fn(x, t):
        calls.append(int(t[0]))
        return torch.zeros_like(x)

    out = bridge.sample(model_fn, source, sample_step=700, generator=torch.Generator().manual_seed(0))
    assert out.shape == source.shape and bool(torch.isfinite(out).all())
    assert calls == bridge.timesteps(700).tolist() and len(calls) == 699


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
    """Hand-computed: target 1, source −1, ε = 0.5 at t = 0, 500, 999, where m = 0.001, 0.5004995, 0.999 and
    √δ = 0.0446990, 0.7071064, 0.0446990: x_t = (1 − m) − m + 0.5 √δ."""
    bridge = BrownianBridge(objective=objective)
    one = torch.ones(3, 1, 1, 1, dtype=torch.float64)
    t = torch.tensor([0, 500, 999])
    x_t, obj = bridge.q_sample(one, -one, t, 0.5 * one)
    assert x_t.flatten().tolist() == pytest.approx([1.0203495, 0.3525542, -0.9756505], abs=1e-6)
    expected = {"grad": [0.0203495, -0.6474458, -1.9756505], "noise": [0.5] * 3, "ysubx": [-2.0] * 3}[objective]
    assert obj.flatten().tolist() == pytest.approx(expected, abs=1e-6)
    # predict_target inverts the objective exactly
    target, source = pair(torch.float64)
    x_t, obj = bridge.q_sample(target, source, t, torch.randn_like(target))
    assert torch.allclose(bridge.predict_target(x_t, source, t, obj), target)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("mode", [dict(eta=1.0), dict(eta=0.0), dict(deterministic=True)])
@pytest.mark.parametrize("clip_denoised", [False, True])
def test_oracle_sampler_returns_target(objective, dtype, device, mode, clip_denoised):
    bridge = BrownianBridge(objective=objective).to(device)
    target, source = pair(dtype, device)
    calls = []
    fn = oracle(bridge, target, source)

    def counted(x, t):
        calls.append(int(t[0]))
        return fn(x, t)

    gen = torch.Generator(device).manual_seed(1)
    out = bridge.sample(counted, source, sample_step=20, generator=gen, clip_denoised=clip_denoised, **mode)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    assert out.dtype == dtype
    assert torch.allclose(out, target, atol=tol)
    assert calls == bridge.timesteps(20).tolist()


def start_chain(bridge: BrownianBridge, shape: tuple[int, ...], g: torch.Generator):
    """Scalar pairs (target, source) and x_{T−1} drawn exactly from q(x_{T−1} | target, source), and its ε.

    The chain starts from the bridge's own marginal, not from x = source as `sample` does:
    at T−1 that marginal is N((1 − m) target + m source, δ) with δ > 0, so only this start
    makes every later x_n follow q(x_n | target, source) exactly.
    """
    target = torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1
    source = torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(shape, generator=g, dtype=torch.float64)
    t = bridge.num_timesteps - 1
    x = marginal_mean(bridge, target, source, t) + bridge.variance[t].sqrt() * eps
    return target, source, eps, x


def marginal_mean(bridge: BrownianBridge, target: torch.Tensor, source: torch.Tensor, n: int) -> torch.Tensor:
    return (1 - bridge.m[n]) * target + bridge.m[n] * source


@pytest.mark.parametrize("sample_step", [5, 20, 200])
def test_eta1_chain_with_the_true_target_follows_the_forward_bridge(sample_step):
    """With x̂ = x0 and η = 1 the reverse chain is the forward bridge run backwards.

    Every visited x_n is distributed as q(x_n | x0, y) = N((1−m_n) x0 + m_n y, δ_n), and each
    jump t → n has the forward process's joint law: with r = (x − mean)/√δ, corr(r_t, r_n) =
    ρ = (1−m_t)/(1−m_n) √(δ_n/δ_t), so u = (r_n − ρ r_t)/√(1−ρ²) is N(0, 1) and uncorrelated
    with r_t. The marginals alone hold for any noise level σ² ≤ δ_n; the joint pins σ² too.
    """
    bridge = BrownianBridge().double()
    n_chains = 200_000
    g = torch.Generator().manual_seed(sample_step)
    target, source, eps, x = start_chain(bridge, (n_chains,), g)  # flat: step() accepts any shape
    r_t = eps
    se_mean, se_var = 5 / n_chains**0.5, 5 * (2 / n_chains) ** 0.5  # five standard errors
    steps = bridge.timesteps(sample_step).tolist()
    for t, n in zip(steps[:-1], steps[1:]):
        z = torch.randn(x.shape, generator=g, dtype=torch.float64)
        x = bridge.step(x, source, target, t, n, eta=1.0, noise=z)
        r_n = (x - marginal_mean(bridge, target, source, n)) / bridge.variance[n].sqrt()
        assert abs(r_n.mean().item()) < se_mean, (t, n, r_n.mean().item())
        assert abs(r_n.var().item() - 1) < se_var, (t, n, r_n.var().item())
        rho = (1 - bridge.m[t]) / (1 - bridge.m[n]) * (bridge.variance[n] / bridge.variance[t]).sqrt()
        u = (r_n - rho * r_t) / (1 - rho**2).sqrt()
        assert abs((u * r_t).mean().item()) < se_mean, (t, n, (u * r_t).mean().item())
        assert abs(u.var().item() - 1) < se_var, (t, n, u.var().item())
        r_t = r_n


@pytest.mark.parametrize("sample_step", [5, 20, 200])
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_deterministic_chain_with_the_true_target_keeps_the_start_noise(objective, sample_step):
    """The ODE step with the oracle maps x_t − mean_t = √δ_t ε to x_n − mean_n = √δ_n ε, the same ε, at every index."""
    bridge = BrownianBridge(objective=objective).double()
    target, source, eps, x = start_chain(bridge, (1000, 1, 1, 1), torch.Generator().manual_seed(0))
    model_fn = oracle(bridge, target, source)
    steps = bridge.timesteps(sample_step).tolist()
    for t, n in zip(steps[:-1], steps[1:]):
        t_batch = torch.full((x.shape[0],), t, dtype=torch.long)
        target_hat = bridge.predict_target(x, source, t_batch, model_fn(x, t_batch))
        torch.testing.assert_close(target_hat, target, rtol=0, atol=1e-12)
        x = bridge.step(x, source, target_hat, t, n, deterministic=True)
        expected = marginal_mean(bridge, target, source, n) + bridge.variance[n].sqrt() * eps
        torch.testing.assert_close(x, expected, rtol=0, atol=1e-12, msg=f"t={t}, n={n}")


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
    watched = bridge.sample(
        fn,
        source,
        12,
        deterministic=deterministic,
        generator=torch.Generator().manual_seed(3),
        callback=lambda i, x_hat: seen.append((i, x_hat.clone())),
    )
    assert torch.equal(plain, watched)
    assert [i for i, _ in seen] == list(range(12))
    assert torch.equal(seen[-1][1], watched) and not torch.equal(seen[0][1], watched)


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("deterministic", [False, True])
def test_clip_denoised_keeps_every_prediction_in_range(objective, deterministic):
    """A network far off the data range: every x̂ (the callback's and the result) stays in [-1, 1]."""
    bridge = BrownianBridge(objective=objective)
    _, source = pair()
    fn = lambda x, t: 10 * torch.ones_like(x) - x  # noqa: E731 (x̂ far outside [-1, 1] under every objective)

    def run(clip: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        seen: list[torch.Tensor] = []
        out = bridge.sample(
            fn,
            source,
            12,
            deterministic=deterministic,
            generator=torch.Generator().manual_seed(3),
            callback=lambda i, x_hat: seen.append(x_hat.clone()),
            clip_denoised=clip,
        )
        return out, seen

    free, free_seen = run(False)
    clipped, clipped_seen = run(True)
    assert free.abs().max() > 1 and any(x.abs().max() > 1 for x in free_seen)
    assert clipped.abs().max() <= 1 and all(x.abs().max() <= 1 for x in clipped_seen)
    assert torch.equal(clipped_seen[0], free_seen[0].clamp(-1, 1))


def test_clip_denoised_feeds_the_clamped_prediction_to_the_next_jump():
    """Hand-computed, deterministic, source 0: the first x̂ is 2, clamped to 1; the ODE jump 999 → 899 then gives
    x = x̂ ((1 − m_899) − √(δ_899 / δ_999) (1 − m_999)) = 0.0913705 x̂, which the network returns as the next x̂.
    Had the jump used the unclamped x̂ = 2, it would be 0.1827410."""
    bridge = BrownianBridge(objective="grad")
    source = torch.zeros(2, 3, 4, 4)
    T = bridge.num_timesteps

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # x̂ = x − output: x + 2 at the first step, then x
        return torch.full_like(x, -2.0) if int(t[0]) == T - 1 else torch.zeros_like(x)

    seen: list[torch.Tensor] = []
    cb = lambda i, x_hat: seen.append(x_hat.clone())  # noqa: E731
    bridge.sample(fn, source, 12, deterministic=True, callback=cb, clip_denoised=True)
    assert bridge.timesteps(12).tolist()[:2] == [999, 899] and len(seen) == 12
    assert torch.equal(seen[0], torch.ones_like(source))
    torch.testing.assert_close(seen[1], torch.full_like(source, 0.0913705), rtol=0, atol=1e-6)
