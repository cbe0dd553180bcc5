"""From a checkpoint to colour images: load the network, run the bridge sampler in batches."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from linebridge import checkpoint
from linebridge.bridge import BrownianBridge, StepCallback
from linebridge.config import Config
from linebridge.models import build_model


def load_model(path: Path, weights: str = "ema", device: torch.device | str = "cpu") -> tuple[nn.Module, BrownianBridge, Config]:
    """Network (EMA or raw weights), its bridge and its config from a linebridge checkpoint."""
    from linebridge.train import build_bridge, speed_up

    if weights not in ("ema", "raw"):
        raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
    state = checkpoint.load(path, map_location=device)
    cfg = state["config"]
    net = build_model(cfg).to(device)
    net.load_state_dict(state["ema" if weights == "ema" else "model"])
    return speed_up(net, cfg).eval(), build_bridge(cfg).to(device), cfg


Colorizer = Callable[[Tensor, "Tensor | None", int], Tensor]


def load_colorizer(path: Path, weights: str = "ema", steps: int | None = None, eta: float | None = None,
                   deterministic: bool = False, device: torch.device | str = "cpu",
                   callback: StepCallback | None = None) -> tuple[Colorizer, Config]:
    """`fn(lineart, ref, seed) -> colour` for any linebridge checkpoint (BBDM or a GAN baseline).

    For BBDM the sampler settings are bound here (None: the checkpoint's eval.sample_step
    and bridge.eta), and so is `callback` (see `colorize`); GAN baselines ignore them all
    (they have no sampler, so the callback is never called).
    """
    state = checkpoint.load(path, kind=None, map_location=device)
    kind = state.get("kind")
    if kind == checkpoint.KIND:
        net, bridge, cfg = load_model(path, weights, device)
        steps = steps or cfg["eval"]["sample_step"]
        eta = cfg["bridge"]["eta"] if eta is None else eta

        def fn(lineart: Tensor, ref: Tensor | None, seed: int) -> Tensor:
            return colorize(net, bridge, lineart, None if net.reference == "none" else ref, steps, eta, deterministic, seed,
                            callback=callback)

        return fn, cfg
    if kind == checkpoint.GAN_KIND:
        from linebridge.baselines import colorizer_from_state

        return colorizer_from_state(state, weights, device), state["config"]
    raise checkpoint.CheckpointError(f"{path}: checkpoint of kind {kind!r}; expected a linebridge training checkpoint")


@torch.inference_mode()
def colorize(net: nn.Module, bridge: BrownianBridge, lineart: Tensor, ref: Tensor | None, steps: int, eta: float = 1.0,
             deterministic: bool = False, seed: int = 0, batch_size: int = 64, progress: bool = False,
             callback: StepCallback | None = None) -> Tensor:
    """Colour images in [-1, 1] for line art [B,1,H,W] (and references [B,3,H,W]).

    The reference is encoded once per batch and reused at every sampler step. Noise comes
    from a generator seeded per batch (seed + batch index), so results do not depend on
    how many batches ran before. `callback(i, x̂)` is `BrownianBridge.sample`'s, called
    for each batch in turn with that batch's predicted target (unclamped).
    """
    from tqdm.auto import tqdm

    outs = []
    starts = range(0, lineart.shape[0], batch_size)
    for k, i in enumerate(tqdm(starts, desc="colorizing", unit="batch", disable=not progress, leave=False)):
        line = lineart[i:i + batch_size]
        r = None if ref is None else ref[i:i + batch_size]
        ctx = net.encode_reference(r)
        gen = torch.Generator(line.device).manual_seed(seed + k)
        out = bridge.sample(lambda x, t: net(x, t, line, r, context=ctx), line.expand(-1, 3, -1, -1), steps,
                            eta=eta, deterministic=deterministic, generator=gen, callback=callback)
        outs.append(out.clamp(-1, 1))
    return torch.cat(outs)
