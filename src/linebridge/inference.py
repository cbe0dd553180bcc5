"""One interface to every trained model: `fn(lineart, ref, seed) -> colour`, whatever its family.

Evaluation, `colorize` and the demo call this and never ask which family a checkpoint
holds: BBDM checkpoints get the bridge sampler with its settings bound here, GAN
baselines their generator.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from linebridge import checkpoint
from linebridge.bbdm.bridge import StepCallback
from linebridge.checkpoint import Colorizer
from linebridge.config import Config, UserError

__all__ = ["Colorizer", "load_colorizer"]


def sampler_eta(cfg: Config) -> float:
    """The η a checkpoint's config asks for (eval.eta; checkpoints from before it existed kept it in bridge)."""
    return float(cfg["eval"].get("eta", cfg["bridge"].get("eta", 1.0)))


def check_sampler(steps: int, eta: float, num_timesteps: int) -> None:
    """A UserError naming the option unless 2 ≤ steps ≤ T and η is a finite number ≥ 0."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 2 <= steps <= num_timesteps:
        raise UserError(f"--steps {steps}: give a whole number from 2 to {num_timesteps} (the model's bridge length)")
    if not math.isfinite(eta) or eta < 0:
        raise UserError(f"--eta {eta}: give a finite number ≥ 0 (1 = BBDM's sampler, 0 = no noise)")


def load_colorizer(
    path: Path,
    weights: str = "ema",
    steps: int | None = None,
    eta: float | None = None,
    deterministic: bool = False,
    device: torch.device | str = "cpu",
    callback: StepCallback | None = None,
    clip_denoised: bool | None = None,
    guidance: float | None = None,
) -> tuple[Colorizer, Config]:
    """`fn(lineart, ref, seed) -> colour` for any linebridge checkpoint (BBDM or a GAN baseline).

    For BBDM the sampler settings are bound here (None: the checkpoint's eval.sample_step,
    eval.eta, eval.clip_denoised and eval.guidance, off in checkpoints from before they
    existed), and so is `callback(i, x̂)` (see `BrownianBridge.sample`); GAN baselines ignore them all (they
    have no sampler, so the callback is never called).
    """
    state = checkpoint.load(path, kind=None, map_location=device)
    kind = state.get("kind")
    if kind == checkpoint.BBDM_KIND:
        from linebridge.bbdm.sampling import colorize, from_state

        net, bridge, cfg = from_state(state, weights, device)
        steps = cfg["eval"]["sample_step"] if steps is None else steps
        eta = sampler_eta(cfg) if eta is None else eta
        clip = bool(cfg["eval"].get("clip_denoised", False)) if clip_denoised is None else clip_denoised
        guidance = float(cfg["eval"].get("guidance", 1.0)) if guidance is None else guidance
        check_sampler(steps, eta, cfg["bridge"]["num_timesteps"])
        if guidance != 1.0 and not cfg["augment"].get("reference_dropout", 0.0):
            raise UserError(
                f"eval.guidance={guidance}: {path} was trained without augment.reference_dropout, so its blank-page "
                "prediction is out of distribution; use guidance 1, or train with --set augment.reference_dropout=0.1"
            )

        def fn(lineart: Tensor, ref: Tensor | None, seed: int) -> Tensor:
            ref = None if net.reference == "none" else ref
            return colorize(
                net,
                bridge,
                lineart,
                ref,
                steps,
                eta,
                deterministic,
                seed,
                callback=callback,
                clip_denoised=clip,
                guidance=guidance,
            )

        return fn, cfg
    if kind == checkpoint.GAN_KIND:
        from linebridge.baselines.gan import colorizer_from_state

        return colorizer_from_state(state, device), state["config"]
    raise checkpoint.CheckpointError(f"{path}: checkpoint of kind {kind!r}; expected a linebridge training checkpoint")
