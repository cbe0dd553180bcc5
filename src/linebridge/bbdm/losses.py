"""Training losses: L_total = L_diff + λ_edge·L_edge + λ_lpips·L_lpips.

The edge term weights line pixels more, so lines stay crisp; the optional LPIPS term
compares the reconstructed colour image with the target perceptually (VGG trunk, the
usual choice for a training loss; its weights must be in the local cache).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from linebridge.pretrained import load_lpips

LPIPS_LOSS_NET = "vgg"  # accepts images from 16 px per side (AlexNet needs 31)


def edge_mask(lineart: Tensor, threshold: float = 0.5) -> Tensor:
    """Pixels on or next to a line: lineart < threshold ([-1, 1] scale), dilated by a 3×3 max-pool."""
    return F.max_pool2d((lineart < threshold).float(), kernel_size=3, stride=1, padding=1)


def edge_weighted_l1(
    pred: Tensor, target: Tensor, lineart: Tensor, edge_weight: float = 2.0, threshold: float = 0.5
) -> Tensor:
    """Per-pixel L1 weighted by 1 + (edge_weight − 1)·mask, so lines count edge_weight times."""
    weight = 1.0 + (edge_weight - 1.0) * edge_mask(lineart, threshold)
    return (weight * (pred - target).abs()).mean()


def lpips_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean LPIPS (VGG) between images in [-1, 1]; gradients flow to `pred`, the network is frozen.

    Raises pretrained.Unavailable (a clear UserError) when the VGG16 weights are not cached.
    """
    model = load_lpips(LPIPS_LOSS_NET).to(pred.device)
    return model(pred.clamp(-1, 1).float(), target.float()).mean()
