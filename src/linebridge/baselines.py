"""GAN baselines of SPEC §7 — Pix2Pix and SCFT — and whether ControlNet can run here.

Both train through `train_gan`, which keeps `train.train`'s contract: one seed gives the
same bytes (batch order from `train.batches(seed, epoch)`, the global RNG — dropout, TPS,
jitter — saved in every checkpoint), `--resume` continues `last.pt` to the same weights,
`best.pt` is chosen by validation L1 (generated vs ground truth on the val split, fixed
references), early stopping, NaN → `TrainingDiverged`, one MLflow run, and the same
metrics JSON / history CSV. Checkpoints are `checkpoint.GAN_KIND`; `colorizer_from_state`
turns one into the `fn(lineart, ref, seed)` that evaluation calls.

**Pix2Pix** (Isola et al. 2017), with the defaults of the reference code
(junyanz/pytorch-CycleGAN-and-pix2pix): U-Net generator with log2(image_size)
downsamplings (4×4 stride-2 convs, widths ngf·min(2^i, 8), skips by concatenation,
tanh output), PatchGAN discriminator on concat(line art, image), vanilla GAN loss
(BCE with logits, D loss halved) + λ_L1·L1 with λ_L1 = 100, Adam(2e-4, β = (0.5, 0.999))
for both nets, N(0, 0.02) init, lr constant for the first half of the epochs and then
linearly decaying to 0 (the reference's `linear` policy). It sees the line art only.
Where we differ from the reference:
- Dropout 0.5 sits in the `dropout_layers` decoder layers nearest the bottleneck (the
  paper's "first 3 decoder layers"); the reference code puts it on the num_downs − 5
  blocks above the innermost, which is none at 32² (num_downs = 5).
- PatchGAN depth: `n_layers_d` = 3 gives the paper's 70×70 receptive field, right at
  256² (27 % of the side). On 32² images that field exceeds the image (an ImageGAN),
  so the CPU profile uses n_layers_d = 1: 16×16 patches (receptive field 16 px, half the
  side; n = 2 would give 34 px). The paper profile uses 3.
- Widths ngf = ndf = 32 on the CPU profile (reference: 64; the paper profile uses 64): at
  64 a step costs ~3× more and the run would not fit the study's time budget.
- Batch 16 (`train.batch_size`) instead of 1, so BatchNorm uses real batch statistics.
- Evaluation runs the generator in eval mode (running BatchNorm statistics, no
  dropout), so outputs do not depend on the batch and `seed` has no effect; the
  reference's test script keeps train mode (dropout as noise) unless `--eval` is given.
- The reference's in-place LeakyReLU overwrites each block's input before the skip
  concatenation; we reproduce that behaviour explicitly (the skip carries LReLU(x)).

**SCFT** (Lee et al., "Reference-Based Sketch Image Colorization using Augmented-Self
Reference and Dense Semantic Correspondence", CVPR 2020): sketch and reference encoders
of two 3×3 conv layers per scale (widths base·2^k, stride 2 entering each new scale);
every layer's activation is average-pooled to the coarsest size and all are concatenated
into d_v channels; SCFT attention Q = W_q·v_s, K = W_k·v_r, V = W_v·v_r,
c = v_s + softmax(QKᵀ/√d_v)·V; residual blocks; a decoder with U-Net skips from the sketch
encoder; tanh output. Trained on the augmented-self reference (the target after TPS +
colour jitter, `train.reference_for`: the very references BBDM A3 sees) with
λ_rec·L1 (λ_rec = 30) + λ_adv·adversarial (λ_adv = 1, conditional PatchGAN on the
sketch) + λ_perc·perceptual (0.01) + λ_style·style (50), Adam β = (0.5, 0.999),
lr 1e-4 (G) and 2e-4 (D). Deviations:
- Size: `levels` = 2 stride-2 stages at 32² (6 layers per encoder, an 8×8 token map,
  d_v = 14·base) instead of the paper's 4 (10 layers, 16×16 tokens at 256², d_v = 992 at
  base 16); the CPU profile uses base 8 (d_v = 112) and a PatchGAN of width 32 to fit the
  time budget. The paper profile restores levels 4, base 16 and the 70×70 PatchGAN.
- No triplet (similarity-based) loss: it needs each TPS warp's dense correspondence,
  which `augment.make_reference` does not return.
- The perceptual and style losses (VGG19 relu1_1…relu5_1, L1 on features and on Gram
  matrices) run only when the VGG19 ImageNet weights are on disk (`vgg_weights_dir` or
  torch's hub cache); without them training uses L1 + adversarial only. The MLflow tag
  `losses` and the metrics JSON record which losses ran, and why the others did not.
- BatchNorm (`norm`) in encoders, residual blocks and decoder, and the Pix2Pix init,
  schedule (constant, then linear decay) and halved D loss: the paper does not specify
  them as far as we know.
- The discriminator is the same PatchGAN as Pix2Pix's, on concat(sketch, image).

**ControlNet** (Stable Diffusion 1.5 + a line-art ControlNet, through diffusers) needs
weights this study cannot download and a GPU: `controlnet_status` says whether it can run
here and, if not, why (the reason the report prints); `controlnet_colorizer` is the
`fn(lineart, ref, seed)` evaluation calls when it can. It is zero-shot: no training on
our data, text prompt + line art only (the reference image is not used; SD has no
reference input without an adapter such as IP-Adapter). Line art goes in as white lines
on black (the line-art ControlNet's convention), upscaled to `resolution`; the output
is resized back to data.image_size.
"""

from __future__ import annotations

import importlib.util
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from linebridge import checkpoint
from linebridge.config import Config, ConfigError, UserError, repo_root
from linebridge.data import build_dataset
from linebridge.train import (EpochCallback, Paths, TrainingDiverged, batches, collate, finish_run, reference_for, save_last,
                              saved_wall_time, write_atomic)

FAMILIES = ("pix2pix", "scft")
NormFactory = Callable[[int], nn.Module]
Colorizer = Callable[[Tensor, "Tensor | None", int], Tensor]
VGG_LAYERS = (1, 6, 11, 20, 29)  # relu1_1 … relu5_1 in torchvision's vgg19().features
INFER_BATCH = 64
SD_DIR, CONTROLNET_DIR = "stable-diffusion", "controlnet"  # inside baselines.controlnet.weights_dir


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

    def __init__(self, outer: int, inner: int, norm: NormFactory, inner_block: nn.Module | None = None,
                 in_channels: int | None = None, dropout: bool = False) -> None:
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
        if 2 ** depth != image_size or depth < 2:
            raise ConfigError(f"Pix2Pix needs a power-of-two data.image_size ≥ 4 (one downsampling per factor 2); got {image_size}")

        def width(level: int) -> int:
            return ngf * min(2 ** level, 8)

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
            width = ndf * min(2 ** n, 8)
            layers += [nn.Conv2d(prev, width, 4, 2 if n < n_layers else 1, 1, bias=bias), norm(width), nn.LeakyReLU(0.2)]
            prev = width
        layers.append(nn.Conv2d(prev, 1, 4, 1, 1))
        self.net = init_weights(nn.Sequential(*layers))

    def forward(self, lineart: Tensor, image: Tensor) -> Tensor:
        return self.net(torch.cat([lineart, image], 1))


# --------------------------------------------------------------------------- SCFT


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
            w = base * 2 ** k
            layers += [conv_norm_act(cin, w, norm, nn.LeakyReLU(0.2), stride=2 if k else 1), conv_norm_act(w, w, norm, nn.LeakyReLU(0.2))]
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


class ResBlock(nn.Module):
    """conv → norm → ReLU → conv → norm, plus the input (He et al.), at the token-map resolution."""

    def __init__(self, channels: int, norm: NormFactory) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_norm_act(channels, channels, norm, nn.ReLU()),
                                  nn.Conv2d(channels, channels, 3, 1, 1, bias=uses_bias(norm)), norm(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class SCFTGenerator(nn.Module):
    """Sketch + reference encoders → SCFT → residual blocks → decoder with sketch skips → tanh."""

    uses_reference = True

    def __init__(self, image_size: int, base: int, levels: int, res_blocks: int, norm: NormFactory) -> None:
        super().__init__()
        if image_size % 2 ** levels:
            raise ConfigError(f"SCFT with baselines.scft.levels={levels} needs data.image_size divisible by {2 ** levels}; got {image_size}")
        self.sketch_encoder = SCFTEncoder(1, base, levels, norm)
        self.reference_encoder = SCFTEncoder(3, base, levels, norm)
        dim = self.sketch_encoder.dim
        self.scft = SCFT(dim)
        self.res_blocks = nn.Sequential(*(ResBlock(dim, norm) for _ in range(res_blocks)))
        self.up, self.fuse = nn.ModuleList(), nn.ModuleList()
        cin = dim
        for k in reversed(range(levels)):
            w = base * 2 ** k
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
    """Frozen VGG19 up to relu5_1 with ImageNet weights from disk, or metrics.MetricUnavailable."""
    from torchvision.models import VGG19_Weights
    from torchvision.models.vgg import cfgs, make_layers

    from linebridge.metrics import _find_weights

    url = VGG19_Weights.IMAGENET1K_V1.url
    path = _find_weights(url.rsplit("/", 1)[-1], url, "SCFT's perceptual and style losses (VGG19)", weights_dir or None)
    features = make_layers(cfgs["E"])[: VGG_LAYERS[-1] + 1]  # vgg19().features without building the classifier
    state = torch.load(path, map_location="cpu", weights_only=True)
    features.load_state_dict({k.removeprefix("features."): v for k, v in state.items()
                              if k.startswith("features.") and int(k.split(".")[1]) <= VGG_LAYERS[-1]})
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


# --------------------------------------------------------------------------- building


def settings(cfg: Config) -> dict[str, Any]:
    """The `baselines.<family>` section of a GAN baseline's config."""
    family = cfg["model"]["family"]
    if family not in FAMILIES:
        raise ConfigError(f"model.family={family!r} is not a GAN baseline; use one of {', '.join(FAMILIES)}")
    return cfg["baselines"][family]


def build_generator(cfg: Config) -> nn.Module:
    s, size = settings(cfg), int(cfg["data"]["image_size"])
    norm = norm_factory(s["norm"])
    if cfg["model"]["family"] == "pix2pix":
        return Pix2PixGenerator(size, s["ngf"], norm, s["dropout_layers"])
    return SCFTGenerator(size, s["base_channels"], s["levels"], s["res_blocks"], norm)


def build_discriminator(cfg: Config) -> nn.Module:
    s = settings(cfg)
    return PatchDiscriminator(s["ndf"], s["n_layers_d"], norm_factory(s["norm"]))


def linear_decay(epochs: int) -> Callable[[int], float]:
    """The reference's `linear` lr policy: factor 1 for the first half of the epochs, then linearly to 0."""
    constant = epochs // 2
    decay = epochs - constant

    def factor(epoch: int) -> float:
        return 1.0 - max(0, epoch + 1 - constant) / (decay + 1)

    return factor


@dataclass
class Gan:
    """Both nets with their optimisers and schedulers: what a checkpoint saves and restores."""

    generator: nn.Module
    discriminator: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    sched_g: torch.optim.lr_scheduler.LambdaLR
    sched_d: torch.optim.lr_scheduler.LambdaLR

    @classmethod
    def build(cls, cfg: Config, device: torch.device) -> "Gan":
        s = settings(cfg)
        gen, disc = build_generator(cfg).to(device), build_discriminator(cfg).to(device)
        opt_g = torch.optim.Adam(gen.parameters(), lr=s["lr"], betas=tuple(s["betas"]))
        opt_d = torch.optim.Adam(disc.parameters(), lr=s["lr_d"], betas=tuple(s["betas"]))
        policy = linear_decay(s["epochs"])
        return cls(gen, disc, opt_g, opt_d, torch.optim.lr_scheduler.LambdaLR(opt_g, policy),
                   torch.optim.lr_scheduler.LambdaLR(opt_d, policy))

    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name).state_dict() for name in self.__dataclass_fields__}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self.__dataclass_fields__:
            getattr(self, name).load_state_dict(state[name])


# --------------------------------------------------------------------------- training


def adversarial(logits: Tensor, real: bool) -> Tensor:
    """The reference's vanilla GANLoss: BCE with logits against an all-real or all-fake target."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(real)))


class Losses:
    """Which generator losses run and their weights; perceptual/style only when VGG19 is on disk."""

    def __init__(self, cfg: Config, device: torch.device) -> None:
        from linebridge.metrics import MetricUnavailable

        s = settings(cfg)
        self.lambda_l1, self.lambda_adv = s["lambda_l1"], s["lambda_adv"]
        self.lambda_perc, self.lambda_style = s.get("lambda_perc", 0.0), s.get("lambda_style", 0.0)
        self.vgg: nn.Module | None = None
        self.note = ""
        if self.lambda_perc > 0 or self.lambda_style > 0:
            try:
                self.vgg = load_vgg19_features(s["vgg_weights_dir"]).to(device)
            except MetricUnavailable:  # no machine paths here: the note goes into the committed metrics JSON
                self.note = ("perceptual and style losses not run: the VGG19 ImageNet weights (vgg19-dcbb9e9d.pth) are not "
                             "in baselines.scft.vgg_weights_dir or torch's hub cache")
        self.names = ["l1", "adversarial"] + (["perceptual", "style"] if self.vgg is not None else [])

    def generator(self, disc: nn.Module, line: Tensor, fake: Tensor, gt: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        parts = {"l1": F.l1_loss(fake, gt), "adv": adversarial(disc(line, fake), True)}
        loss = self.lambda_l1 * parts["l1"] + self.lambda_adv * parts["adv"]
        if self.vgg is not None:
            parts["perc"], parts["style"] = perceptual_style_losses(self.vgg, fake, gt)
            loss = loss + self.lambda_perc * parts["perc"] + self.lambda_style * parts["style"]
        return loss, parts


def check_finite(loss: Tensor, what: str, cfg: Config, step: int, epoch: int, last: Path) -> None:
    if not torch.isfinite(loss):
        raise TrainingDiverged(f"{cfg['experiment']}: {what} is {loss.item()} at step {step} (epoch {epoch}); "
                               f"the last good checkpoint is kept at {last}. Lower the baseline's lr or check the data.")


def train_step(gan: Gan, losses: Losses, batch: dict[str, Tensor], ref: Tensor | None,
               check: Callable[[Tensor, str], None]) -> dict[str, Tensor]:
    """One reference `optimize_parameters`: G forward, D step on (real, detached fake), G step with D frozen."""
    line, gt = batch["lineart"], batch["GT"]
    fake = gan.generator(line, ref)
    gan.discriminator.requires_grad_(True)
    d_loss = 0.5 * (adversarial(gan.discriminator(line, fake.detach()), False) + adversarial(gan.discriminator(line, gt), True))
    check(d_loss, "the discriminator loss")
    gan.opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    gan.opt_d.step()
    gan.discriminator.requires_grad_(False)
    g_loss, parts = losses.generator(gan.discriminator, line, fake, gt)
    check(g_loss, "the generator loss")
    gan.opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    gan.opt_g.step()
    return {"g_loss": g_loss.detach(), "d_loss": d_loss.detach(), **{k: v.detach() for k, v in parts.items()}}


def fixed_batches(dataset, cfg: Config, device: torch.device, generator: nn.Module):
    """(batch, reference) pairs of `dataset` in order, references drawn under a fixed seed (same every epoch)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg["seed"] + 7919)
        for idx in batches(dataset, cfg["train"]["batch_size"], 0, 0, shuffle=False, drop_last=False):
            batch = collate(dataset, idx, device)
            yield batch, reference_for(batch["GT"], cfg) if generator.uses_reference else None


@torch.no_grad()
def validate_gan(generator: nn.Module, dataset, cfg: Config, device: torch.device) -> float:
    """Mean |G(line art, fixed reference) − ground truth| over the split, generator in eval mode."""
    generator.eval()
    total, count = torch.zeros((), device=device), 0
    for batch, ref in fixed_batches(dataset, cfg, device, generator):
        total += (generator(batch["lineart"], ref) - batch["GT"]).abs().mean(dim=(1, 2, 3)).sum()
        count += len(batch["GT"])
    generator.train()
    return total.item() / max(count, 1)


@torch.no_grad()
def sample_grid_gan(generator: nn.Module, dataset, cfg: Config, device: torch.device, path: Path, n: int = 8) -> Path:
    """PNG grid like train.sample_grid: line art | reference (blank for Pix2Pix) | output | ground truth."""
    from torchvision.utils import save_image

    generator.eval()
    batch, ref = next(fixed_batches(torch.utils.data.Subset(dataset, range(min(n, len(dataset)))), cfg, device, generator))
    line, gt = batch["lineart"], batch["GT"]
    shown = ref if ref is not None else torch.ones_like(gt)
    rows = torch.stack([line.expand(-1, 3, -1, -1), shown, generator(line, ref), gt], dim=1).flatten(0, 1)
    generator.train()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image((rows + 1) / 2, path, nrow=4, padding=1)
    return path


def limited(dataset, n: int):
    return torch.utils.data.Subset(dataset, range(min(n, len(dataset)))) if n else dataset


def train_gan(cfg: Config, paths: Paths, resume: bool = False, log_mlflow: bool = True, progress: bool = True,
              on_epoch: EpochCallback | None = None) -> dict[str, Any]:
    """Train the GAN baseline `cfg['model']['family']` into `paths`, with `train.train`'s contract.

    Epochs come from `baselines.<family>.epochs`; batch size, max_train/val_images,
    patience, min_delta, checkpoint_every and sample_every from `train`.
    `on_epoch(epoch, val_loss)` runs after each epoch's checkpoint.
    """
    from tqdm.auto import tqdm

    tc, s = cfg["train"], settings(cfg)
    family, epochs = cfg["model"]["family"], s["epochs"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg["seed"])
    train_set = limited(build_dataset(cfg, "train"), tc["max_train_images"])
    val_set = limited(build_dataset(cfg, "val"), tc["max_val_images"])
    if len(train_set) < tc["batch_size"]:
        raise UserError(f"train split has {len(train_set)} images, fewer than train.batch_size={tc['batch_size']}")
    gan = Gan.build(cfg, device)
    losses = Losses(cfg, device)

    epoch, step, best_val, bad_epochs, history, wall = 0, 0, math.inf, 0, [], 0.0
    last = paths.out / "last.pt"
    if resume and last.exists():
        state = checkpoint.load(last, kind=checkpoint.GAN_KIND, map_location=device)
        if state["config"] != cfg:
            print(f"{last}: saved with a different config; starting from scratch")
        else:
            gan.load_state_dict(state)
            torch.set_rng_state(state["rng"])
            epoch, step, best_val, bad_epochs, history = (state[k] for k in ("epoch", "step", "best_val", "bad_epochs", "history"))
            wall = saved_wall_time(last)
            print(f"resuming {cfg['experiment']} after epoch {epoch} (step {step})")

    run_id_file = paths.out / "mlflow_run_id"
    if log_mlflow:
        from linebridge import tracking

        old_id = run_id_file.read_text().strip() if resume and epoch > 0 and run_id_file.exists() else None
        tags = {"stage": f"train@{cfg['experiment']}", "experiment_id": cfg["experiment"], "profile": cfg["profile"],
                "family": family, "losses": "+".join(losses.names), "losses_note": losses.note or "all configured losses ran"}
        run = tracking.start_run("train", f"train-{cfg['experiment']}", cfg, tags, old_id)
        write_atomic(run_id_file, run.info.run_id)

    stopped_early = bad_epochs >= tc["patience"]
    try:
        while epoch < epochs and not stopped_early:
            gan.generator.train()
            gan.discriminator.train()
            t0 = time.perf_counter()
            sums: dict[str, Tensor] = {}
            seen = 0
            bar = tqdm(batches(train_set, tc["batch_size"], cfg["seed"], epoch), desc=f"{cfg['experiment']} epoch {epoch + 1}/{epochs}",
                       unit="batch", disable=not progress, leave=False)
            for idx in bar:
                batch = collate(train_set, idx, device)
                ref = reference_for(batch["GT"], cfg) if gan.generator.uses_reference else None
                parts = train_step(gan, losses, batch, ref, lambda loss, what: check_finite(loss, what, cfg, step + 1, epoch + 1, last))
                step += 1
                seen += len(idx)
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v * len(idx)
            epoch_time = time.perf_counter() - t0
            wall += epoch_time
            lr = gan.opt_g.param_groups[0]["lr"]
            gan.sched_g.step()
            gan.sched_d.step()
            val_loss = validate_gan(gan.generator, val_set, cfg, device)
            means = {k: (v / seen).item() for k, v in sums.items()}
            epoch += 1
            history.append({"epoch": epoch, "step": step, "train_loss": means["g_loss"], "val_loss": val_loss, "lr": lr})
            improved = val_loss < best_val - tc["min_delta"]
            best_val, bad_epochs = (val_loss, 0) if improved else (best_val, bad_epochs + 1)
            stopped_early = bad_epochs >= tc["patience"]
            print(f"{cfg['experiment']} epoch {epoch}: G {means['g_loss']:.4f}  D {means['d_loss']:.4f}  L1 {means['l1']:.4f}  "
                  f"val L1 {val_loss:.4f}  {seen / epoch_time:.0f} img/s{'  (best)' if improved else ''}", flush=True)
            if improved:
                checkpoint.save({"kind": checkpoint.GAN_KIND, "config": cfg, "generator": gan.generator.state_dict(),
                                 "epoch": epoch, "step": step, "val_loss": val_loss}, paths.out / "best.pt")
            if log_mlflow:
                tracking.log_metrics({**means, "train_loss": means["g_loss"], "val_loss": val_loss, "lr": lr,
                                      "images_per_s": seen / epoch_time}, epoch)
                if epoch % tc["sample_every"] == 0 or epoch == epochs:
                    tracking.log_image(sample_grid_gan(gan.generator, val_set, cfg, device, paths.out / "samples" / f"epoch_{epoch:03d}.png"))
            if epoch % tc["checkpoint_every"] == 0 or epoch == epochs or stopped_early:
                save_last({"kind": checkpoint.GAN_KIND, "config": cfg, **gan.state_dict(), "rng": torch.get_rng_state(),
                           "epoch": epoch, "step": step, "best_val": best_val, "bad_epochs": bad_epochs, "history": history}, last, wall)
            if on_epoch is not None:
                on_epoch(epoch, val_loss)
    except BaseException:
        if log_mlflow:
            tracking.end_run("FAILED")
        raise

    best = checkpoint.load(paths.out / "best.pt", kind=checkpoint.GAN_KIND, map_location=device)
    summary = {"experiment": cfg["experiment"], "family": family, "profile": cfg["profile"], "losses": losses.names, "losses_note": losses.note}
    return finish_run(summary, best, paths, history, epoch, step, stopped_early, len(train_set), wall, log_mlflow)


# --------------------------------------------------------------------------- inference


def colorizer_from_state(state: dict[str, Any], weights: str, device: torch.device | str) -> Colorizer:
    """`fn(lineart, ref, seed) -> colour in [-1, 1]` from a GAN checkpoint (best.pt or last.pt).

    GANs keep no EMA, so `weights` is ignored; the generator runs in eval mode (no
    dropout, running BatchNorm statistics), so `seed` is too. Pix2Pix ignores `ref`.
    """
    gen = build_generator(state["config"]).to(device)
    gen.load_state_dict(state["generator"])
    gen.eval()

    @torch.inference_mode()
    def fn(lineart: Tensor, ref: Tensor | None, seed: int) -> Tensor:
        outs = []
        for i in range(0, lineart.shape[0], INFER_BATCH):
            r = None if ref is None else ref[i:i + INFER_BATCH].to(device)
            outs.append(gen(lineart[i:i + INFER_BATCH].to(device), r).clamp(-1, 1).to(lineart.device))
        return torch.cat(outs)

    return fn


# --------------------------------------------------------------------------- ControlNet


def controlnet_weights(cfg: Config) -> Path | None:
    """baselines.controlnet.weights_dir as a path (relative ones from the repo root), or None when unset."""
    folder = cfg["baselines"]["controlnet"]["weights_dir"]
    return (repo_root() / folder) if folder else None


def controlnet_status(cfg: Config) -> dict[str, Any]:
    """{'run': True, 'reason': ''} when the ControlNet baseline can run here, else run=False and why not."""
    root = controlnet_weights(cfg)
    if root is None:
        reason = ("it needs Stable Diffusion 1.5 and a line-art ControlNet (e.g. lllyasviel/control_v11p_sd15_lineart), "
                  "which this study cannot download, and a GPU; set baselines.controlnet.weights_dir to a folder holding "
                  f"{SD_DIR}/ and {CONTROLNET_DIR}/ in diffusers format (save_pretrained output)")
    elif not (root / SD_DIR / "model_index.json").is_file() or not (root / CONTROLNET_DIR / "config.json").is_file():
        reason = (f"{root} must hold {SD_DIR}/model_index.json (a diffusers Stable Diffusion pipeline) and "
                  f"{CONTROLNET_DIR}/config.json (a diffusers ControlNetModel)")
    elif not torch.cuda.is_available():
        reason = "Stable Diffusion at 512² needs a CUDA GPU, and none is visible"
    elif importlib.util.find_spec("diffusers") is None or importlib.util.find_spec("transformers") is None:
        reason = "the diffusers and transformers packages are not installed (pip install -e .)"
    else:
        return {"run": True, "reason": ""}
    return {"run": False, "reason": f"ControlNet not run: {reason}."}


def controlnet_colorizer(cfg: Config, device: torch.device | str | None = None) -> Colorizer:
    """`fn(lineart, ref, seed) -> colour in [-1, 1]` from the local SD + ControlNet weights; `ref` is unused.

    Check `controlnet_status` first: this builds the pipeline on any device (tests run a
    tiny random one on the CPU). Noise comes from a generator seeded per batch (seed + k).
    """
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    c, root = cfg["baselines"]["controlnet"], controlnet_weights(cfg)
    if root is None:
        raise UserError(controlnet_status(cfg)["reason"])
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    controlnet = ControlNetModel.from_pretrained(root / CONTROLNET_DIR, dtype=dtype, local_files_only=True)
    pipe = StableDiffusionControlNetPipeline.from_pretrained(root / SD_DIR, controlnet=controlnet, dtype=dtype, local_files_only=True,
                                                             safety_checker=None, requires_safety_checker=False).to(device)
    pipe.set_progress_bar_config(disable=True)
    size, batch = c["resolution"], c["batch_size"]

    @torch.inference_mode()
    def fn(lineart: Tensor, ref: Tensor | None, seed: int) -> Tensor:
        outs = []
        for k, i in enumerate(range(0, lineart.shape[0], batch)):
            line = lineart[i:i + batch].to(device, torch.float32)
            control = F.interpolate((1 - line) / 2, size=(size, size), mode="bilinear").expand(-1, 3, -1, -1)
            images = pipe(prompt=[c["prompt"]] * len(line), negative_prompt=[c["negative_prompt"]] * len(line), image=control,
                          height=size, width=size, num_inference_steps=c["steps"], guidance_scale=c["guidance_scale"],
                          generator=torch.Generator(device).manual_seed(seed + k), output_type="pt").images
            small = F.interpolate(images.float(), size=lineart.shape[-2:], mode="bilinear", antialias=True)
            outs.append((small * 2 - 1).clamp(-1, 1).to(lineart.device))
        return torch.cat(outs)

    return fn
