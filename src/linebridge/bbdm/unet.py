"""The dual-stream U-Net: line art by concatenation, reference by cross-attention.

    x_t ─┐
         ├─ concat ─ U-Net (ResBlocks + time embedding, self-attention at `attention_sizes`)
    L ───┘                     │ middle block → ColourCrossAttention(Q: features, K/V: reference tokens)
    ref ── ReferenceEncoder ───┘ (4 convs, total stride d → [B, context_dim, H/d, W/d] → tokens)

d = `model.reference_downsample` (16: four stride-2 convs). `model.reference_positions`
adds a fixed 2D sinusoidal encoding to the tokens. Also `norm_groups` (GroupNorm groups),
`zero_init` (BBDM's zero-initialised output layers) and `scale_shift` (time embedding as
GroupNorm scale and shift instead of an added bias); their defaults (16, off, 32, off,
off) build the original network, same parameters drawn in the same order.

Variants, chosen by `model.reference`: `cross_attention` (A1–A3), `none` (A0: no
reference at all), `concat` (A4: the reference is 3 more input channels, no cross-attention).
`attention_sizes` are feature-map sizes in pixels (BBDM's `attention_resolutions`
are downsample factors — a different meaning under a similar name). How the network
differs from BBDM's: docs/deviations.md.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

REFERENCE_MODES = ("none", "cross_attention", "concat")


def group_norm(channels: int, groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with gcd(groups, channels) groups: `groups` where the width allows it (small nets have few channels).

    At 32 groups a 32-channel map gets one channel per group, i.e. instance normalisation,
    which removes every feature's per-image mean (`model.norm_groups` sets `groups`).
    """
    return nn.GroupNorm(math.gcd(groups, channels), channels)


def zero_(module: nn.Module) -> nn.Module:
    """Set every parameter of `module` to zero (draws no random numbers); returns it."""
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
    return module


def sincos_2d(height: int, width: int, dim: int, device: torch.device | None = None) -> Tensor:
    """Fixed 2D sinusoidal positions [height·width, dim], row-major like `flatten(2)`.

    The first half of the channels encodes the row, the second half the column, each as
    sin/cos at geometric frequencies (transformer style); channels beyond a multiple of 4 are zero.
    """
    quarter = dim // 4
    freqs = torch.exp(-math.log(10000.0) * torch.arange(quarter, device=device, dtype=torch.float32) / max(quarter, 1))

    def axis(n: int) -> Tensor:
        args = torch.arange(n, device=device, dtype=torch.float32)[:, None] * freqs[None]
        return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)

    rows = axis(height)[:, None, :].expand(height, width, 2 * quarter)
    cols = axis(width)[None, :, :].expand(height, width, 2 * quarter)
    return F.pad(torch.cat([rows, cols], dim=-1).reshape(height * width, 4 * quarter), (0, dim - 4 * quarter))


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of the integer timestep index (transformer / DDPM style)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv, twice, with the time embedding in between; 1×1 skip when widths differ.

    The time embedding is added to the features (default) or, with `scale_shift`, applied
    as h = GN(h)·(1 + scale) + shift before the second SiLU → conv (BBDM's use_scale_shift_norm).
    `zero_init` zeroes the last conv, so the block starts as its skip path.
    """

    def __init__(
        self,
        channels: int,
        out_channels: int,
        time_dim: int,
        dropout: float,
        norm_groups: int = 32,
        scale_shift: bool = False,
        zero_init: bool = False,
    ) -> None:
        super().__init__()
        self.scale_shift = scale_shift
        self.in_layers = nn.Sequential(
            group_norm(channels, norm_groups), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.time = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, (2 if scale_shift else 1) * out_channels))
        self.out_layers = nn.Sequential(
            group_norm(out_channels, norm_groups),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip = nn.Identity() if channels == out_channels else nn.Conv2d(channels, out_channels, 1)
        if zero_init:
            zero_(self.out_layers[-1])

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.in_layers(x)
        emb = self.time(temb)[:, :, None, None]
        if self.scale_shift:
            scale, shift = emb.chunk(2, dim=1)
            h = self.out_layers[1:](self.out_layers[0](h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + emb)
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head attention of tokens `x` over `context` (itself when None), via SDPA."""

    def __init__(self, query_dim: int, context_dim: int | None, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_out = nn.Linear(inner, query_dim)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        context = x if context is None else context
        b = x.shape[0]
        q, k, v = (
            proj(src).view(b, src.shape[1], self.heads, -1).transpose(1, 2)
            for proj, src in ((self.to_q, x), (self.to_k, context), (self.to_v, context))
        )
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, x.shape[1], -1))


class SpatialAttention(nn.Module):
    """Residual attention on a feature map: self-attention, then cross-attention to the reference.

    `context_dim=None` gives plain self-attention, x + attn(GN(x)) (BBDM's AttentionBlock);
    with a context dimension it is LDM's depth-1 SpatialTransformer (self-attn, cross-attn,
    feed-forward on a token stream that starts at GN(x)), and x gets what those three added
    to the stream, not the normalised copy itself. `zero_init` zeroes the three output
    layers, so the block starts as the identity (LDM zeroes its proj_out, which this block has not).
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        dim_head: int,
        context_dim: int | None = None,
        norm_groups: int = 32,
        zero_init: bool = False,
    ) -> None:
        super().__init__()
        self.norm = group_norm(channels, norm_groups)
        self.self_attn = Attention(channels, None, heads, dim_head)
        self.cross = context_dim is not None
        if self.cross:
            self.norm_cross = nn.LayerNorm(channels)
            self.cross_attn = Attention(channels, context_dim, heads, dim_head)
            self.norm_ff = nn.LayerNorm(channels)
            self.ff = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels))
        if zero_init:
            zero_(self.self_attn.to_out)
            if self.cross:
                zero_(self.cross_attn.to_out)
                zero_(self.ff[-1])

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        b, c, h, w = x.shape
        normed = self.norm(x).flatten(2).transpose(1, 2)
        update = self.self_attn(normed)
        if self.cross:
            tokens = normed + update
            tokens = tokens + self.cross_attn(self.norm_cross(tokens), context)
            tokens = tokens + self.ff(self.norm_ff(tokens))
            update = tokens - normed
        return x + update.transpose(1, 2).reshape(b, c, h, w)


class ColourCrossAttention(nn.Module):
    """The colour injection: Q from U-Net features, K/V from reference tokens, output projection, residual add."""

    def __init__(
        self, channels: int, context_dim: int, heads: int, dim_head: int, norm_groups: int = 32, zero_init: bool = False
    ) -> None:
        super().__init__()
        self.norm = group_norm(channels, norm_groups)
        self.attn = Attention(channels, context_dim, heads, dim_head)
        if zero_init:
            zero_(self.attn.to_out)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)
        return x + self.attn(tokens, context).transpose(1, 2).reshape(b, c, h, w)


def check_downsample(downsample: int) -> int:
    """log2(downsample); a ValueError unless it is a power of 2 ≥ 1."""
    if not isinstance(downsample, int) or downsample < 1 or downsample & (downsample - 1):
        raise ValueError(f"model.reference_downsample must be a power of 2 ≥ 1, got {downsample!r}")
    return downsample.bit_length() - 1


class ReferenceEncoder(nn.Module):
    """Reference-image encoder: 3×3 convs 3→64→128→256→feature_dim, each GroupNorm(8) + SiLU.

    The first log2(`downsample`) convs have stride 2, the others stride 1 (16: all four, the
    original encoder); beyond 16 more stride-2 convs at feature_dim follow.
    """

    def __init__(self, feature_dim: int, widths: tuple[int, ...] = (64, 128, 256), downsample: int = 16) -> None:
        super().__init__()
        n_down = check_downsample(downsample)
        chans = (3, *widths, *[feature_dim] * max(1, n_down - len(widths)))
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:])):
            stride = 2 if i < n_down else 1
            layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.GroupNorm(8, cout), nn.SiLU()]
        self.net = nn.Sequential(*layers)

    def forward(self, ref: Tensor) -> Tensor:
        """[B, 3, H, W] → [B, feature_dim, H/downsample, W/downsample]."""
        return self.net(ref)


class DualStreamUNet(nn.Module):
    """ε/grad predictor: input concat(x_t, line art[, reference]), output 3 channels."""

    def __init__(
        self,
        image_size: int,
        model_channels: int = 32,
        channel_mult: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 1,
        attention_sizes: tuple[int, ...] = (8,),
        dropout: float = 0.0,
        reference: str = "cross_attention",
        context_dim: int = 64,
        heads: int = 8,
        dim_head: int = 32,
        use_spatial_transformer: bool = False,
        norm_groups: int = 32,
        zero_init: bool = False,
        scale_shift: bool = False,
        reference_downsample: int = 16,
        reference_positions: bool = False,
    ) -> None:
        super().__init__()
        if reference not in REFERENCE_MODES:
            raise ValueError(f"model.reference must be one of {REFERENCE_MODES}, got {reference!r}")
        if image_size % 2 ** (len(channel_mult) - 1):
            raise ValueError(f"image_size {image_size} is not divisible by 2^{len(channel_mult) - 1} (channel_mult)")
        check_downsample(reference_downsample)
        if reference == "cross_attention" and image_size % reference_downsample:
            raise ValueError(f"image_size {image_size} is not divisible by reference_downsample {reference_downsample}")
        if reference_positions and context_dim < 4:
            raise ValueError(f"reference_positions needs context_dim ≥ 4 (2 sin/cos pairs), got {context_dim}")
        self.reference = reference
        self.reference_positions = reference_positions
        self.in_channels = 4 + (3 if reference == "concat" else 0)
        cross_dim = context_dim if reference == "cross_attention" else None
        spatial_ctx = cross_dim if use_spatial_transformer else None
        time_dim = 4 * model_channels
        self.model_channels = model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.ref_encoder = ReferenceEncoder(context_dim, downsample=reference_downsample) if cross_dim else None

        def res_block(ch: int, out: int) -> ResBlock:
            return ResBlock(ch, out, time_dim, dropout, norm_groups, scale_shift, zero_init)

        def spatial(ch: int) -> SpatialAttention:
            return SpatialAttention(ch, heads, dim_head, spatial_ctx, norm_groups, zero_init)

        def attn(ch: int, size: int) -> nn.Module | None:
            return spatial(ch) if size in attention_sizes else None

        self.input_conv = nn.Conv2d(self.in_channels, model_channels, 3, padding=1)
        self.down = nn.ModuleList()
        skips, ch, size = [model_channels], model_channels, image_size
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.down.append(
                    nn.ModuleList([res_block(ch, mult * model_channels), attn(mult * model_channels, size)])
                )
                ch = mult * model_channels
                skips.append(ch)
            if level < len(channel_mult) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(ch, ch, 3, stride=2, padding=1)]))
                skips.append(ch)
                size //= 2
        self.mid = nn.ModuleList([res_block(ch, ch), spatial(ch), res_block(ch, ch)])
        self.mid_cross = (
            ColourCrossAttention(ch, context_dim, heads, dim_head, norm_groups, zero_init) if cross_dim else None
        )
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                out = mult * model_channels
                upsample = level > 0 and i == num_res_blocks
                self.up.append(
                    nn.ModuleList(
                        [
                            res_block(ch + skips.pop(), out),
                            attn(out, size),
                            nn.Sequential(
                                nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(out, out, 3, padding=1)
                            )
                            if upsample
                            else None,
                        ]
                    )
                )
                ch = out
                if upsample:
                    size *= 2
        self.out = nn.Sequential(group_norm(ch, norm_groups), nn.SiLU(), nn.Conv2d(ch, 3, 3, padding=1))
        if zero_init:
            zero_(self.out[-1])

    def encode_reference(self, ref: Tensor | None) -> Tensor | None:
        """Reference tokens [B, (H/d)(W/d), context_dim] (+ positions), or None when the variant takes none."""
        if self.ref_encoder is None:
            return None
        if ref is None:
            raise ValueError("this model colours from a reference: pass ref=[B, 3, H, W]")
        feats = self.ref_encoder(ref)
        tokens = feats.flatten(2).transpose(1, 2)
        if self.reference_positions:
            b, c, h, w = feats.shape
            tokens = tokens + sincos_2d(h, w, c, feats.device).to(tokens.dtype)
        return tokens

    def forward(
        self, x_t: Tensor, t: Tensor, lineart: Tensor, ref: Tensor | None = None, context: Tensor | None = None
    ) -> Tensor:
        """`context` lets a sampler encode the reference once and reuse it at every step."""
        parts = [x_t, lineart]
        if self.reference == "concat":
            if ref is None:
                raise ValueError("the concat variant (A4) needs ref=[B, 3, H, W]")
            parts.append(ref)
        if context is None:
            context = self.encode_reference(ref)
        temb = self.time_embed(timestep_embedding(t, self.model_channels))
        h = self.input_conv(torch.cat(parts, dim=1))
        hs = [h]
        for block in self.down:
            if len(block) == 1:
                h = block[0](h)
            else:
                h = block[0](h, temb)
                if block[1] is not None:
                    h = block[1](h, context)
            hs.append(h)
        h = self.mid[0](h, temb)
        h = self.mid[1](h, context)
        h = self.mid[2](h, temb)
        if self.mid_cross is not None:
            h = self.mid_cross(h, context)
        for res, attention, upsample in self.up:
            h = res(torch.cat([h, hs.pop()], dim=1), temb)
            if attention is not None:
                h = attention(h, context)
            if upsample is not None:
                h = upsample(h)
        return self.out(h)


def build_model(cfg: dict[str, Any]) -> DualStreamUNet:
    """The one factory: any variant from a resolved config (`model` and `data.image_size`)."""
    m = cfg["model"]
    return DualStreamUNet(
        image_size=cfg["data"]["image_size"],
        model_channels=m["model_channels"],
        channel_mult=tuple(m["channel_mult"]),
        num_res_blocks=m["num_res_blocks"],
        attention_sizes=tuple(m["attention_sizes"]),
        dropout=m["dropout"],
        reference=m["reference"],
        context_dim=m["context_dim"],
        heads=m["heads"],
        dim_head=m["dim_head"],
        use_spatial_transformer=m["use_spatial_transformer"],
        # Checkpoints written before these keys existed hold the network the defaults build.
        norm_groups=m.get("norm_groups", 32),
        zero_init=m.get("zero_init", False),
        scale_shift=m.get("scale_shift", False),
        reference_downsample=m.get("reference_downsample", 16),
        reference_positions=m.get("reference_positions", False),
    )


def use_channels_last(net: nn.Module, cfg: dict[str, Any]) -> nn.Module:
    """`perf.channels_last`: NHWC weights (activations follow); same maths, faster convolutions.

    Checkpoints written before `perf` existed load in the contiguous layout.
    """
    return net.to(memory_format=torch.channels_last) if cfg.get("perf", {}).get("channels_last") else net
