"""Pix2Pix (Isola et al. 2017) as in the reference code (junyanz/pytorch-CycleGAN-and-pix2pix).

U-Net generator with log2(image_size) downsamplings, PatchGAN discriminator on
concat(line art, image) -- the discriminator serves SCFT too -- and the reference's norm
and init helpers. Training is `baselines.gan`; what differs from the reference is in
docs/deviations.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from linebridge.core.config import ConfigError

NormFactory = Callable[[int], nn.Module]


def norm_factory(kind: str) -> NormFactory:
    """The reference's `get_norm_layer`: affine BatchNorm, or InstanceNorm without affine or running stats."""
    if kind == "batch":
        return nn.BatchNorm2d
    if kind == "instance":
        return partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    raise ConfigError(f"baselines norm={kind!r}: use batch or instance")


def uses_bias(norm: NormFactory) -> bool:
    """Convs before BatchNorm drop their bias (BatchNorm's shift replaces it), as in the reference."""
    return norm is not nn.BatchNorm2d


def init_weights(net: nn.Module) -> nn.Module:
    """The reference's `normal` init: conv/linear weights N(0, 0.02), BatchNorm weights N(1, 0.02), biases 0."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return net


# --------------------------------------------------------------------------- Pix2Pix


class UNetBlock(nn.Module):
    """One level of the reference U-Net: LReLU → conv↓ → norm → inner levels → ReLU → conv↑ → norm [→ dropout].

    The innermost level has no norm after conv↓; the outermost has no activation or norm
    around conv↓ and ends in tanh. Non-outermost levels return concat(LReLU(x), up).
    """

    def __init__(
        self,
        outer: int,
        inner: int,
        norm: NormFactory,
        inner_block: nn.Module | None = None,
        in_channels: int | None = None,
        dropout: bool = False,
    ) -> None:
        super().__init__()
        self.outermost = in_channels is not None
        bias = uses_bias(norm)
        down: list[nn.Module] = [nn.Conv2d(in_channels or outer, inner, 4, 2, 1, bias=bias)]
        if inner_block is not None and not self.outermost:
            down.append(norm(inner))
        up_in = inner if inner_block is None else inner * 2
        if self.outermost:
            up: list[nn.Module] = [nn.ReLU(), nn.ConvTranspose2d(up_in, outer, 4, 2, 1), nn.Tanh()]
        else:
            up = [nn.ReLU(), nn.ConvTranspose2d(up_in, outer, 4, 2, 1, bias=bias), norm(outer)]
            up += [nn.Dropout(0.5)] if dropout else []
        middle = [inner_block] if inner_block is not None else []
        self.model = nn.Sequential(*down, *middle, *up)

    def forward(self, x: Tensor) -> Tensor:
        if self.outermost:
            return self.model(x)
        x = F.leaky_relu(x, 0.2)
        return torch.cat([x, self.model(x)], 1)


class Pix2PixGenerator(nn.Module):
    """The reference `UnetGenerator` with num_downs = log2(image_size): line art [B,1,H,W] → colour [B,3,H,W]."""

    uses_reference = False

    def __init__(self, image_size: int, ngf: int, norm: NormFactory, dropout_layers: int) -> None:
        super().__init__()
        depth = int(math.log2(image_size))
        if 2**depth != image_size or depth < 2:
            raise ConfigError(
                f"Pix2Pix needs a power-of-two data.image_size ≥ 4 (one downsampling per factor 2); got {image_size}"
            )

        def width(level: int) -> int:
            return ngf * min(2**level, 8)

        block: nn.Module | None = None
        for level in reversed(range(1, depth)):
            block = UNetBlock(width(level - 1), width(level), norm, block, dropout=depth - 1 - level < dropout_layers)
        self.net = init_weights(UNetBlock(3, ngf, norm, block, in_channels=1))

    def forward(self, lineart: Tensor, ref: Tensor | None = None) -> Tensor:
        return self.net(lineart)


class PatchDiscriminator(nn.Module):
    """The reference `NLayerDiscriminator` on concat(line art, image): one logit per patch.

    Receptive field 16, 34, 70 px for n_layers 1, 2, 3 (4×4 convs: n stride-2, then two stride-1).
    """

    def __init__(self, ndf: int, n_layers: int, norm: NormFactory, in_channels: int = 4) -> None:
        super().__init__()
        bias = uses_bias(norm)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        prev = ndf
        for n in range(1, n_layers + 1):
            width = ndf * min(2**n, 8)
            layers += [
                nn.Conv2d(prev, width, 4, 2 if n < n_layers else 1, 1, bias=bias),
                norm(width),
                nn.LeakyReLU(0.2),
            ]
            prev = width
        layers.append(nn.Conv2d(prev, 1, 4, 1, 1))
        self.net = init_weights(nn.Sequential(*layers))

    def forward(self, lineart: Tensor, image: Tensor) -> Tensor:
        return self.net(torch.cat([lineart, image], 1))
