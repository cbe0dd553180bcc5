"""One interface to every trained model: `fn(lineart, ref, seed) -> colour`, whatever its family.

Evaluation, `colorize` and the demo call this and never ask which family a checkpoint
holds: BBDM checkpoints get the bridge sampler with its settings bound here, GAN
baselines their generator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from linebridge.bbdm.bridge import StepCallback
from linebridge.core import checkpoint
from linebridge.core.checkpoint import Colorizer
from linebridge.core.config import Config, UserError

__all__ = ["Colorizer", "Sampler", "load_colorizer"]


@dataclass(frozen=True)
class Sampler:
    """How a BBDM checkpoint is sampled: the four settings of a config's eval section in one object.

    `steps` sampler steps (2 … bridge.num_timesteps); `deterministic` the DDIM-style ODE, which
    ignores `eta`, instead of BBDM's stochastic sampler, whose noise `eta` scales; `weights` the
    EMA ("ema") or the raw ("raw") weights. A setting left None is the checkpoint's own (`over`),
    so `linebridge colorize --steps 5` changes the steps alone. GAN baselines have no sampler.
    """

    steps: int | None = None
    deterministic: bool | None = None
    eta: float | None = None
    weights: str | None = None

    def over(self, base: Sampler) -> Sampler:
        """These settings, with those left None taken from `base`."""
        mine = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(base, **{name: value for name, value in mine.items() if value is not None})

    @classmethod
    def from_eval(cls, ec: Mapping[str, Any]) -> Sampler:
        """The sampler of an eval section (params.yaml `eval` or a checkpoint's)."""
        return cls(ec["sample_step"], ec["deterministic"], ec["eta"], ec["weights"])

    @classmethod
    def of_checkpoint(cls, cfg: Config) -> Sampler:
        """The sampler a checkpoint's own config names. Checkpoints from before eval.deterministic and
        eval.weights existed sampled stochastically from the EMA weights, and kept η under bridge."""
        ec = cfg["eval"]
        eta = ec.get("eta", cfg["bridge"].get("eta", 1.0))
        return cls(ec["sample_step"], ec.get("deterministic", False), float(eta), ec.get("weights", "ema"))


def check_sampler(steps: int, eta: float, num_timesteps: int) -> None:
    """A UserError naming the option unless 2 ≤ steps ≤ T and η is a finite number ≥ 0."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 2 <= steps <= num_timesteps:
        raise UserError(f"--steps {steps}: give a whole number from 2 to {num_timesteps} (the model's bridge length)")
    if not math.isfinite(eta) or eta < 0:
        raise UserError(f"--eta {eta}: give a finite number ≥ 0 (1 = BBDM's sampler, 0 = no noise)")


def load_colorizer(
    path: Path,
    sampler: Sampler | None = None,
    device: torch.device | str = "cpu",
    callback: StepCallback | None = None,
) -> tuple[Colorizer, Config]:
    """`fn(lineart, ref, seed) -> colour` for any linebridge checkpoint (BBDM or a GAN baseline), and its config.

    For BBDM the sampler is bound here (its settings left None, or all of them when `sampler`
    is None: those the checkpoint's config names, see `Sampler.of_checkpoint`), and so is
    `callback(i, x̂)` (see `BrownianBridge.sample`); GAN baselines ignore both (they have no
    sampler, so the callback is never called).
    """
    state = checkpoint.load(path, kind=None, map_location=device)
    kind = state.get("kind")
    if kind == checkpoint.BBDM_KIND:
        from linebridge.bbdm.sampling import colorize, from_state

        s = (sampler or Sampler()).over(Sampler.of_checkpoint(state["config"]))
        net, bridge, cfg = from_state(state, s.weights, device)
        check_sampler(s.steps, s.eta, cfg["bridge"]["num_timesteps"])

        def fn(lineart: Tensor, ref: Tensor | None, seed: int) -> Tensor:
            ref = None if net.reference == "none" else ref
            return colorize(net, bridge, lineart, ref, s.steps, s.eta, s.deterministic, seed, callback=callback)

        return fn, cfg
    if kind == checkpoint.GAN_KIND:
        from linebridge.baselines.gan import colorizer_from_state

        return colorizer_from_state(state, device), state["config"]
    raise checkpoint.CheckpointError(f"{path}: checkpoint of kind {kind!r}; expected a linebridge training checkpoint")
