"""SCFT (Lee et al. CVPR 2020): reference-based colorization by attention from sketch to reference features.

Sketch and reference encoders, the SCFT attention block, residual blocks at the
token-map resolution and a decoder with sketch skips; plus the paper's perceptual and
style losses on VGG19 activations, which run only when VGG19 weights are on disk.
Training is `baselines.gan`; what differs from the paper is in docs/deviations.md.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from linebridge.baselines.pix2pix import NormFactory, init_weights, uses_bias
from linebridge.core.config import ConfigError, UserError
from linebridge.core.pretrained import find_weights

VGG_LAYERS = (1, 6, 11, 20, 29)  # relu1_1 … relu5_1 in torchvision's vgg19().features


def conv_norm_act(cin: int, cout: int, norm: NormFactory, act: nn.Module, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=uses_bias(norm)), norm(cout), act)


class SCFTEncoder(nn.Module):
    """Two 3×3 conv layers per scale (widths base·2^k, stride 2 entering scale k > 0), LReLU(0.2).

    Returns the token map (every layer avg-pooled to the coarsest size and concatenated:
    [B, d_v, H/2^levels, W/2^levels]) and each scale's last activation (the decoder's skips).
    """

    def __init__(self, in_channels: int, base: int, levels: int, norm: NormFactory) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for k in range(levels + 1):
            w = base * 2**k
            layers += [
                conv_norm_act(cin, w, norm, nn.LeakyReLU(0.2), stride=2 if k else 1),
                conv_norm_act(w, w, norm, nn.LeakyReLU(0.2)),
            ]
            cin = w
        self.layers = nn.ModuleList(layers)
        self.dim = 2 * base * (2 ** (levels + 1) - 1)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        size = feats[-1].shape[-2:]
        tokens = torch.cat([F.adaptive_avg_pool2d(f, size) for f in feats], 1)
        return tokens, feats[1::2]


class SCFT(nn.Module):
    """Spatially corresponding feature transfer: each sketch token attends over the reference tokens."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(dim, dim, bias=False) for _ in range(3))

    def forward(self, v_s: Tensor, v_r: Tensor) -> Tensor:
        """c = v_s + softmax(Q Kᵀ / √d_v) V on token maps [B, d_v, h, w]."""
        b, d, h, w = v_s.shape
        s, r = v_s.flatten(2).transpose(1, 2), v_r.flatten(2).transpose(1, 2)
        c = s + F.scaled_dot_product_attention(self.q(s), self.k(r), self.v(r))
        return c.transpose(1, 2).reshape(b, d, h, w)


class SCFTResBlock(nn.Module):
    """conv → norm → ReLU → conv → norm, plus the input (He et al.), at the token-map resolution."""

    def __init__(self, channels: int, norm: NormFactory) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_norm_act(channels, channels, norm, nn.ReLU()),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=uses_bias(norm)),
            norm(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class SCFTGenerator(nn.Module):
    """Sketch + reference encoders → SCFT → residual blocks → decoder with sketch skips → tanh."""

    uses_reference = True

    def __init__(self, image_size: int, base: int, levels: int, res_blocks: int, norm: NormFactory) -> None:
        super().__init__()
        if image_size % 2**levels:
            raise ConfigError(
                f"SCFT with baselines.scft.levels={levels} needs data.image_size divisible by {2**levels}; "
                f"got {image_size}"
            )
        self.sketch_encoder = SCFTEncoder(1, base, levels, norm)
        self.reference_encoder = SCFTEncoder(3, base, levels, norm)
        dim = self.sketch_encoder.dim
        self.scft = SCFT(dim)
        self.res_blocks = nn.Sequential(*(SCFTResBlock(dim, norm) for _ in range(res_blocks)))
        self.up, self.fuse = nn.ModuleList(), nn.ModuleList()
        cin = dim
        for k in reversed(range(levels)):
            w = base * 2**k
            self.up.append(nn.Sequential(nn.ConvTranspose2d(cin, w, 4, 2, 1, bias=uses_bias(norm)), norm(w), nn.ReLU()))
            self.fuse.append(conv_norm_act(2 * w, w, norm, nn.ReLU()))
            cin = w
        self.out = nn.Sequential(nn.Conv2d(cin, 3, 3, 1, 1), nn.Tanh())
        init_weights(self)

    def forward(self, lineart: Tensor, ref: Tensor | None) -> Tensor:
        if ref is None:
            raise UserError("SCFT colours from a reference image; it got none")
        v_s, skips = self.sketch_encoder(lineart)
        v_r, _ = self.reference_encoder(ref)
        x = self.res_blocks(self.scft(v_s, v_r))
        for up, fuse, skip in zip(self.up, self.fuse, reversed(skips[:-1])):
            x = fuse(torch.cat([up(x), skip], 1))
        return self.out(x)


# --------------------------------------------------------------------------- perceptual and style losses


def load_vgg19_features(weights_dir: str | Path | None = None) -> nn.Module:
    """Frozen VGG19 up to relu5_1 with ImageNet weights from disk, or pretrained.Unavailable."""
    from torchvision.models import VGG19_Weights
    from torchvision.models.vgg import cfgs, make_layers

    url = VGG19_Weights.IMAGENET1K_V1.url
    path = find_weights(url.rsplit("/", 1)[-1], url, "SCFT's perceptual and style losses (VGG19)", weights_dir or None)
    features = make_layers(cfgs["E"])[: VGG_LAYERS[-1] + 1]  # vgg19().features without building the classifier
    state = torch.load(path, map_location="cpu", weights_only=True)
    features.load_state_dict(
        {
            k.removeprefix("features."): v
            for k, v in state.items()
            if k.startswith("features.") and int(k.split(".")[1]) <= VGG_LAYERS[-1]
        }
    )
    return features.eval().requires_grad_(False)


def vgg_activations(features: nn.Module, images: Tensor) -> list[Tensor]:
    """relu1_1 … relu5_1 of images in [-1, 1] (ImageNet-normalised on the way in)."""
    mean = images.new_tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = images.new_tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x, out = ((images + 1) / 2 - mean) / std, []
    for i, layer in enumerate(features):
        x = layer(x)
        if i in VGG_LAYERS:
            out.append(x)
    return out


def gram(x: Tensor) -> Tensor:
    f = x.flatten(2)
    return f @ f.transpose(1, 2) / f.shape[1:].numel()


def perceptual_style_losses(features: nn.Module, fake: Tensor, real: Tensor) -> tuple[Tensor, Tensor]:
    """Lee et al.'s L_perc (L1 between VGG activations) and L_style (L1 between their Gram matrices)."""
    af, ar = vgg_activations(features, fake), vgg_activations(features, real)
    perceptual = sum(F.l1_loss(a, b) for a, b in zip(af, ar))
    style = sum(F.l1_loss(gram(a), gram(b)) for a, b in zip(af, ar))
    return perceptual, style
