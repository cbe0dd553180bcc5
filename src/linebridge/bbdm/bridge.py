"""The Brownian bridge of BBDM (Li et al., CVPR 2023): every equation of the method lives here.

Convention (BBDM's paper and code): the colour image `target`
sits at index 0 (m ≈ 0) and the line art `source` (repeated to 3 channels) at
index T−1 (m ≈ 1). The network is not part of this class: `sample` takes any
`model_fn(x_t, t)`, so one network runs under several samplers.

    m_t      = linspace(0.001, 0.999, T)
    δ_t      = 2 s (m_t − m_t²)
    x_t      = (1 − m_t) target + m_t source + √δ_t ε
    grad     = m_t (source − target) + √δ_t ε      (= x_t − target)
    noise    = ε
    ysubx    = source − target

    jump t → n (n < t), x̂ = predicted target:
    δ_{t|n}  = δ_t − δ_n ((1 − m_t)/(1 − m_n))²
    σ²_t     = δ_{t|n} δ_n / δ_t
    μ        = (1 − m_n) x̂ + m_n source + √((δ_n − σ²_t)/δ_t) (x_t − (1 − m_t) x̂ − m_t source)
    x_n      = μ + η σ_t z                                   (BBDM; η only scales the noise)
    x_n      = (1 − m_n) x̂ + m_n source + √(δ_n/δ_t) (x_t − …)   (deterministic: DDIM-style ODE)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

OBJECTIVES = ("grad", "noise", "ysubx")
SKIP_KINDS = ("linear", "cosine")
ModelFn = Callable[[Tensor, Tensor], Tensor]
StepCallback = Callable[[int, Tensor], None]


def _at(values: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """values[t] shaped [B, 1, 1, ...] in the dtype and device of `like`."""
    out = values.to(like.device)[t.to(like.device)].to(like.dtype)
    return out.reshape(-1, *([1] * (like.dim() - 1)))


class BrownianBridge(nn.Module):
    """Forward process, objectives and the skip-step sampler of a Brownian bridge with T steps."""

    def __init__(
        self,
        num_timesteps: int = 1000,
        max_var: float = 1.0,
        objective: str = "grad",
    ) -> None:
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if num_timesteps < 2:
            raise ValueError(f"num_timesteps must be at least 2, got {num_timesteps}")
        self.num_timesteps = num_timesteps
        self.max_var = max_var
        self.objective = objective
        # Kept in float64 and cast on use, so float32 and float64 runs see the same schedule.
        m = torch.linspace(0.001, 0.999, num_timesteps, dtype=torch.float64)
        self.register_buffer("m", m, persistent=False)
        self.register_buffer("variance", 2.0 * max_var * (m - m * m), persistent=False)

    # ----- forward process and training target -------------------------------------------
    def q_sample(self, target: Tensor, source: Tensor, t: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        """x_t and the objective the network should output, from one shared ε."""
        m_t, std = _at(self.m, t, target), _at(self.variance, t, target).sqrt()
        x_t = (1 - m_t) * target + m_t * source + std * noise
        if self.objective == "grad":
            objective = m_t * (source - target) + std * noise
        elif self.objective == "noise":
            objective = noise
        else:
            objective = source - target
        return x_t, objective

    def predict_target(self, x_t: Tensor, source: Tensor, t: Tensor, net_output: Tensor) -> Tensor:
        """x̂ = the target implied by the network output under this objective."""
        if self.objective == "grad":
            return x_t - net_output
        if self.objective == "ysubx":
            return source - net_output
        m_t, std = _at(self.m, t, x_t), _at(self.variance, t, x_t).sqrt()
        return (x_t - m_t * source - std * net_output) / (1 - m_t)

    # ----- sampling --------------------------------------------------------------------
    def timesteps(self, sample_step: int, kind: str = "linear") -> Tensor:
        """Visited indices, strictly decreasing from T−1 to 0, `sample_step` entries (BBDM's lists).

        linear: BBDM's `arange(T−1, 1, −(T−1)/(S−2))` truncated to int, then [1, 0]
                (S=200 → 999, 993, 988, …, 10, 5, 1, 0; S=5 → 999, 666, 333, 1, 0).
                When the step is below 2 (T=1000: S from 502 to 999) the truncated
                arange already ends at 1; that repeated 1 is merged, so the list holds
                S − 1 entries. Every other list is BBDM's, unchanged.
        cosine: T−1 ⋅ (1 + cos(πu))/2 for u evenly in [0, 1], rounded; BBDM's version
                starts at index T (out of range) and is fixed here. Near-duplicate
                indices are merged, so it can hold slightly fewer than S entries.
        """
        T = self.num_timesteps
        if not 2 <= sample_step <= T:
            raise ValueError(f"sample_step must be in [2, {T}], got {sample_step}")
        if sample_step == T:  # no skipping (BBDM's skip_sample=False)
            return torch.arange(T - 1, -1, -1, dtype=torch.long)
        if kind == "linear":
            if sample_step == 2:
                return torch.tensor([T - 1, 0], dtype=torch.long)
            step = (T - 1) / (sample_step - 2)
            mid = torch.arange(T - 1, 1, -step).long()
            return torch.unique_consecutive(torch.cat([mid, torch.tensor([1, 0], dtype=torch.long)]))
        if kind == "cosine":
            u = torch.linspace(0, 1, sample_step, dtype=torch.float64)
            steps = torch.round((T - 1) * (1 + torch.cos(math.pi * u)) / 2).long()
            return torch.unique_consecutive(steps)
        raise ValueError(f"kind must be one of {SKIP_KINDS}, got {kind!r}")

    def step(
        self,
        x_t: Tensor,
        source: Tensor,
        target_hat: Tensor,
        t: int,
        n: int,
        eta: float = 1.0,
        deterministic: bool = False,
        noise: Tensor | None = None,
    ) -> Tensor:
        """One jump t → n of the reverse bridge given the predicted target x̂."""
        if not 0 <= n < t < self.num_timesteps:
            raise ValueError(f"need 0 <= n < t < T, got t={t}, n={n}")
        m_t, m_n = float(self.m[t]), float(self.m[n])
        var_t, var_n = float(self.variance[t]), float(self.variance[n])
        var_t_given_n = var_t - var_n * ((1 - m_t) / (1 - m_n)) ** 2
        sigma2 = 0.0 if deterministic else var_t_given_n * var_n / var_t
        mean = (
            (1 - m_n) * target_hat
            + m_n * source
            + math.sqrt((var_n - sigma2) / var_t) * (x_t - (1 - m_t) * target_hat - m_t * source)
        )
        if deterministic or eta == 0:
            return mean
        if noise is None:
            noise = torch.randn_like(x_t)
        return mean + eta * math.sqrt(sigma2) * noise

    @torch.no_grad()
    def sample(
        self,
        model_fn: ModelFn,
        source: Tensor,
        sample_step: int = 200,
        eta: float = 1.0,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
        progress: bool = False,
        kind: str = "linear",
        callback: StepCallback | None = None,
        clip_denoised: bool = False,
    ) -> Tensor:
        """Run the reverse bridge from x = source; returns the predicted target.

        `model_fn(x_t, t)` gets t as a LongTensor of shape [B] and returns the network
        output for this bridge's objective. `eta` keeps BBDM's meaning (it scales the
        noise only; η = 0 is not an ODE); `deterministic=True` is the DDIM-style ODE
        and ignores `eta`. Exactly `len(timesteps)` network calls. `callback(i, x̂)`, if
        given, sees each step's position i (0 … len(timesteps) − 1) and predicted target
        x̂ (read it, do not change it in place); it changes nothing in the result.
        `clip_denoised` clamps x̂ to [−1, 1] at every step, before the callback sees it and
        before the next jump uses it (BBDM's clip_denoised).
        """
        steps = self.timesteps(sample_step, kind).tolist()
        x = source
        iterator = range(len(steps))
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, desc="sampling", unit="step", leave=False)
        target_hat = source
        for i in iterator:
            t = steps[i]
            t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
            target_hat = self.predict_target(x, source, t_batch, model_fn(x, t_batch))
            if clip_denoised:
                target_hat = target_hat.clamp(-1, 1)
            if callback is not None:
                callback(i, target_hat)
            if i == len(steps) - 1:
                break
            noise = None
            if not deterministic and eta != 0:
                noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = self.step(x, source, target_hat, t, steps[i + 1], eta, deterministic, noise)
        return target_hat
