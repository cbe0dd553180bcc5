"""From a BBDM checkpoint to colour images: rebuild the network and bridge, run the sampler in batches."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from linebridge.bbdm.bridge import BrownianBridge, StepCallback
from linebridge.bbdm.unet import build_model, use_channels_last
from linebridge.core.config import Config, UserError


def build_bridge(cfg: Config) -> BrownianBridge:
    b = cfg["bridge"]
    return BrownianBridge(b["num_timesteps"], b["max_var"], b["objective"])


def from_state(
    state: dict, weights: str = "ema", device: torch.device | str = "cpu"
) -> tuple[nn.Module, BrownianBridge, Config]:
    """Network (EMA or raw weights), its bridge and its config from a loaded BBDM checkpoint."""
    if weights not in ("ema", "raw"):
        raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
    cfg = state["config"]
    if weights == "raw" and "model" not in state:
        raise UserError("released weights hold the EMA weights only: sample them with --weights ema")
    net = build_model(cfg).to(device)
    net.load_state_dict(state["ema" if weights == "ema" else "model"])
    return use_channels_last(net, cfg).eval(), build_bridge(cfg).to(device), cfg


@torch.inference_mode()
def colorize(
    net: nn.Module,
    bridge: BrownianBridge,
    lineart: Tensor,
    ref: Tensor | None,
    steps: int,
    eta: float = 1.0,
    deterministic: bool = False,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = False,
    callback: StepCallback | None = None,
) -> Tensor:
    """Colour images in [-1, 1] for line art [B,1,H,W] (and references [B,3,H,W]).

    The reference is encoded once per batch and reused at every sampler step. Noise comes
    from a generator seeded per batch (seed + batch index), so results do not depend on
    how many batches ran before. `callback(i, x̂)` is `BrownianBridge.sample`'s, called
    for each batch in turn with that batch's predicted target (unclamped; the result is clamped).
    """
    from tqdm.auto import tqdm

    outs = []
    starts = range(0, lineart.shape[0], batch_size)
    for k, i in enumerate(tqdm(starts, desc="colorizing", unit="batch", disable=not progress, leave=False)):
        line = lineart[i : i + batch_size]
        r = None if ref is None else ref[i : i + batch_size]
        gen = torch.Generator(line.device).manual_seed(seed + k)
        ctx = net.encode_reference(r)
        out = bridge.sample(
            lambda x, t: net(x, t, line, r, context=ctx),
            line.expand(-1, 3, -1, -1),
            steps,
            eta=eta,
            deterministic=deterministic,
            generator=gen,
            callback=callback,
        )
        outs.append(out.clamp(-1, 1))
    return torch.cat(outs)
