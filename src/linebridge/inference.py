"""One interface to every trained model: `fn(lineart, ref, seed) -> colour`, whatever its family.

Evaluation, `colorize` and the demo call this and never ask which family a checkpoint
holds: BBDM checkpoints get the bridge sampler with its settings bound here, GAN
baselines their generator.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from linebridge import checkpoint
from linebridge.config import Config

Colorizer = Callable[[Tensor, "Tensor | None", int], Tensor]


def load_colorizer(
    path: Path,
    weights: str = "ema",
    steps: int | None = None,
    eta: float | None = None,
    deterministic: bool = False,
    device: torch.device | str = "cpu",
) -> tuple[Colorizer, Config]:
    """`fn(lineart, ref, seed) -> colour` for any linebridge checkpoint (BBDM or a GAN baseline).

    For BBDM the sampler settings are bound here (None: the checkpoint's eval.sample_step
    and bridge.eta); GAN baselines ignore them.
    """
    state = checkpoint.load(path, kind=None, map_location=device)
    kind = state.get("kind")
    if kind == checkpoint.BBDM_KIND:
        from linebridge.bbdm.sampling import colorize, from_state

        if weights not in ("ema", "raw"):
            raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
        net, bridge, cfg = from_state(state, weights, device)
        steps = steps or cfg["eval"]["sample_step"]
        eta = cfg["bridge"]["eta"] if eta is None else eta

        def fn(lineart: Tensor, ref: Tensor | None, seed: int) -> Tensor:
            return colorize(
                net, bridge, lineart, None if net.reference == "none" else ref, steps, eta, deterministic, seed
            )

        return fn, cfg
    if kind == checkpoint.GAN_KIND:
        from linebridge.baselines.gan import colorizer_from_state

        return colorizer_from_state(state, device), state["config"]
    raise checkpoint.CheckpointError(f"{path}: checkpoint of kind {kind!r}; expected a linebridge training checkpoint")
