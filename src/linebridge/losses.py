"""Training losses (SPEC §5): L_total = L_diff + λ_edge·L_edge + λ_lpips·L_lpips."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def edge_mask(lineart: Tensor, threshold: float = 0.5) -> Tensor:
    """Pixels on or next to a line: lineart < threshold ([-1, 1] scale), dilated by a 3×3 max-pool."""
    return F.max_pool2d((lineart < threshold).float(), kernel_size=3, stride=1, padding=1)


def edge_weighted_l1(pred: Tensor, target: Tensor, lineart: Tensor, edge_weight: float = 2.0, threshold: float = 0.5) -> Tensor:
    """Seed §5.3: per-pixel L1 weighted by 1 + (edge_weight − 1)·mask, so lines count edge_weight times."""
    weight = 1.0 + (edge_weight - 1.0) * edge_mask(lineart, threshold)
    return (weight * (pred - target).abs()).mean()
