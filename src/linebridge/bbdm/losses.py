"""Training losses: L_total = L_diff + λ_edge·L_edge + λ_lpips·L_lpips.

L_diff may weight the skin-tone region more (loss.tone_weight). The edge term weights
line pixels more, so lines stay crisp; like L_diff it always compares the network output
with the bridge objective (the quantity bridge.objective names), not the reconstructed
image. The optional LPIPS term compares the reconstructed colour image with the target
perceptually (VGG trunk, the usual choice for a training loss; its weights must be in the
local cache).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from linebridge.core.pretrained import load_lpips

LPIPS_LOSS_NET = "vgg"  # accepts images from 16 px per side (AlexNet needs 31)


def edge_mask(lineart: Tensor, threshold: float = 0.5) -> Tensor:
    """Pixels on or next to a line: lineart < threshold ([-1, 1] scale), dilated by a 3×3 max-pool."""
    return F.max_pool2d((lineart < threshold).float(), kernel_size=3, stride=1, padding=1)


def region_weighted_l1(pred: Tensor, target: Tensor, region: Tensor, weight: float) -> Tensor:
    """Per-pixel L1 weighted by 1 + (weight − 1)·region, so the region's pixels count `weight` times."""
    return ((1.0 + (weight - 1.0) * region) * (pred - target).abs()).mean()


def edge_weighted_l1(
    pred: Tensor, target: Tensor, lineart: Tensor, edge_weight: float = 2.0, threshold: float = 0.5
) -> Tensor:
    """L1 in which lines (`edge_mask`) count edge_weight times."""
    return region_weighted_l1(pred, target, edge_mask(lineart, threshold), edge_weight)


def lpips_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean LPIPS (VGG) between images in [-1, 1]; gradients flow to `pred`, the network is frozen.

    Raises pretrained.Unavailable (a clear UserError) when the VGG16 weights are not cached.
    """
    model = load_lpips(LPIPS_LOSS_NET).to(pred.device)
    return model(pred.clamp(-1, 1).float(), target.float()).mean()
