"""`linebridge model-info`: parameter counts and the FLOPs of one forward pass of an experiment's U-Net.

What a change of width, depth or attention costs before anything trains (`bench` times it; this counts it).
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from torch import nn

from linebridge.bbdm.unet import DualStreamUNet, build_model


def count_parameters(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def forward_flops(model: DualStreamUNet, image_size: int, batch: int = 1) -> int:
    """FLOPs of one forward pass (torch.utils.flop_counter; a multiply-add counts as 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(batch, 3, image_size, image_size)
    line = torch.zeros(batch, 1, image_size, image_size)
    ref = torch.zeros(batch, 3, image_size, image_size)
    t = torch.zeros(batch, dtype=torch.long)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x, t, line, ref)
    return int(counter.get_total_flops())


def model_info(cfg: dict[str, Any]) -> dict[str, Any]:
    """Parameter counts (total, reference encoder, cross-attention) and forward GFLOPs."""
    model = build_model(cfg)
    size = cfg["data"]["image_size"]
    return {
        "experiment": cfg["experiment"],
        "profile": cfg["profile"],
        "image_size": size,
        "reference": model.reference,
        "in_channels": model.in_channels,
        "params_total": count_parameters(model),
        "params_reference_encoder": count_parameters(model.ref_encoder),
        "params_colour_cross_attention": count_parameters(model.mid_cross),
        "gflops_forward": forward_flops(model, size) / 1e9,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from linebridge.core.config import add_config_arguments

    add_config_arguments(parser, experiment=True)


def main(args: argparse.Namespace) -> int:
    from linebridge.core.config import load_config

    info = model_info(load_config(args.experiment, args.profile, args.overrides))
    width = max(map(len, info))
    for key, value in info.items():
        shown = (
            f"{value:,}"
            if isinstance(value, int) and not isinstance(value, bool)
            else (f"{value:.3f}" if isinstance(value, float) else value)
        )
        print(f"{key:<{width}}  {shown}")
    return 0
