"""The GAN baselines' training loop (Pix2Pix and SCFT), their losses and inference.

The loop keeps the BBDM loop's contract through `runs.TrainingRun`: one seed gives the
same bytes on the CPU (batch order from (seed, epoch), the global CPU RNG -- dropout,
TPS, jitter -- saved in every checkpoint; the CUDA RNG is not), `--resume` continues `last.pt` to the same weights,
`best.pt` is chosen by validation L1 (generated against ground truth on the val split,
fixed references), early stopping, a non-finite loss stops the run, one MLflow run, the
same metrics JSON and history CSV, and DDP under torchrun (each rank computes its slice
of the global batch, rank 0 writes). One step is the reference code's
`optimize_parameters`: D on (real, detached fake), then G with D frozen.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from linebridge.baselines.pix2pix import PatchDiscriminator, Pix2PixGenerator, norm_factory
from linebridge.baselines.scft import SCFTGenerator, load_vgg19_features, perceptual_style_losses
from linebridge.core import checkpoint, distributed
from linebridge.core.config import Config, ConfigError, UserError
from linebridge.core.pretrained import Unavailable
from linebridge.core.runs import EpochCallback, NanWatch, Paths, TrainingRun, limited, save_sample_grid
from linebridge.data.batches import batches, collate, reference_for, validation_rng

FAMILIES = ("pix2pix", "scft")
INFER_BATCH = 64


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
    def build(cls, cfg: Config, device: torch.device) -> Gan:
        s = settings(cfg)
        gen, disc = build_generator(cfg).to(device), build_discriminator(cfg).to(device)
        opt_g = torch.optim.Adam(gen.parameters(), lr=s["lr"], betas=tuple(s["betas"]))
        opt_d = torch.optim.Adam(disc.parameters(), lr=s["lr_d"], betas=tuple(s["betas"]))
        policy = linear_decay(s["epochs"])
        return cls(
            gen,
            disc,
            opt_g,
            opt_d,
            torch.optim.lr_scheduler.LambdaLR(opt_g, policy),
            torch.optim.lr_scheduler.LambdaLR(opt_d, policy),
        )

    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name).state_dict() for name in self.__dataclass_fields__}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self.__dataclass_fields__:
            getattr(self, name).load_state_dict(state[name])


def adversarial(logits: Tensor, real: bool) -> Tensor:
    """The reference's vanilla GANLoss: BCE with logits against an all-real or all-fake target."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(real)))


class Losses:
    """Which generator losses run and their weights; perceptual/style only when VGG19 is on disk."""

    def __init__(self, cfg: Config, device: torch.device) -> None:
        s = settings(cfg)
        self.lambda_l1, self.lambda_adv = s["lambda_l1"], s["lambda_adv"]
        self.lambda_perc, self.lambda_style = s.get("lambda_perc", 0.0), s.get("lambda_style", 0.0)
        self.vgg: nn.Module | None = None
        self.note = ""
        if self.lambda_perc > 0 or self.lambda_style > 0:
            try:
                self.vgg = load_vgg19_features(s["vgg_weights_dir"]).to(device)
            except Unavailable:  # no machine paths here: the note goes into the committed metrics JSON
                self.note = (
                    "perceptual and style losses not run: the VGG19 ImageNet weights (vgg19-dcbb9e9d.pth) are not "
                    "in baselines.scft.vgg_weights_dir or torch's hub cache"
                )
        self.names = ["l1", "adversarial"] + (["perceptual", "style"] if self.vgg is not None else [])

    def generator(self, disc: nn.Module, line: Tensor, fake: Tensor, gt: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        parts = {"l1": F.l1_loss(fake, gt), "adv": adversarial(disc(line, fake), True)}
        loss = self.lambda_l1 * parts["l1"] + self.lambda_adv * parts["adv"]
        if self.vgg is not None:
            parts["perc"], parts["style"] = perceptual_style_losses(self.vgg, fake, gt)
            loss = loss + self.lambda_perc * parts["perc"] + self.lambda_style * parts["style"]
        return loss, parts


def gan_step(
    gan: Gan, losses: Losses, batch: dict[str, Tensor], ref: Tensor | None, g_model: nn.Module, d_model: nn.Module
) -> dict[str, Tensor]:
    """One reference `optimize_parameters`: G forward, D step on (real, detached fake), G step with D frozen.

    `g_model` / `d_model` run forward (the nets, or their DDP wrappers); under DDP the
    generator loss's pass through D skips D's gradient sync (D is frozen there).
    """
    line, gt = batch["lineart"], batch["GT"]
    fake = g_model(line, ref)
    gan.discriminator.requires_grad_(True)
    d_loss = 0.5 * (adversarial(d_model(line, fake.detach()), False) + adversarial(d_model(line, gt), True))
    gan.opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    gan.opt_d.step()
    gan.discriminator.requires_grad_(False)
    no_sync = (
        d_model.no_sync() if isinstance(d_model, nn.parallel.DistributedDataParallel) else contextlib.nullcontext()
    )
    with no_sync:
        g_loss, parts = losses.generator(d_model, line, fake, gt)
    gan.opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    gan.opt_g.step()
    return {"g_loss": g_loss.detach(), "d_loss": d_loss.detach(), **{k: v.detach() for k, v in parts.items()}}


def fixed_batches(dataset, cfg: Config, device: torch.device, generator: nn.Module):
    """(batch, reference) pairs of `dataset` in order, references drawn under a fixed seed (same every epoch)."""
    with validation_rng(cfg):
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
    """PNG grid like the BBDM loop's: line art | reference (blank for Pix2Pix) | output | ground truth."""
    generator.eval()
    batch, ref = next(fixed_batches(limited(dataset, n), cfg, device, generator))
    line, gt = batch["lineart"], batch["GT"]
    shown = ref if ref is not None else torch.ones_like(gt)
    fake = generator(line, ref)
    generator.train()
    return save_sample_grid(path, line, shown, fake, gt)


def train_gan(
    cfg: Config,
    paths: Paths,
    resume: bool = False,
    log_mlflow: bool = True,
    progress: bool = True,
    on_epoch: EpochCallback | None = None,
) -> dict[str, Any]:
    """Train the GAN baseline `cfg['model']['family']` into `paths`, with the BBDM loop's contract.

    Epochs come from `baselines.<family>.epochs`; batch size, max_train/val_images,
    patience, min_delta, checkpoint_every and sample_every from `train`.
    `on_epoch(epoch, val_loss)` runs after each epoch's checkpoint.
    """
    from linebridge.data.datasets import build_dataset

    tc, s = cfg["train"], settings(cfg)
    family, epochs = cfg["model"]["family"], s["epochs"]
    ddp = distributed.setup()
    device = ddp.device()
    if tc["batch_size"] % ddp.world:
        raise UserError(
            f"train.batch_size={tc['batch_size']} (the global batch) must divide by the {ddp.world} processes"
        )
    torch.manual_seed(cfg["seed"])
    train_set = limited(build_dataset(cfg, "train"), tc["max_train_images"])
    val_set = limited(build_dataset(cfg, "val"), tc["max_val_images"])
    if len(train_set) < tc["batch_size"]:
        raise UserError(f"train split has {len(train_set)} images, fewer than train.batch_size={tc['batch_size']}")
    gan = Gan.build(cfg, device)
    losses = Losses(cfg, device)
    wrap = nn.parallel.DistributedDataParallel if ddp.world > 1 else (lambda net: net)
    g_model, d_model = wrap(gan.generator), wrap(gan.discriminator)

    run = TrainingRun(cfg, paths, checkpoint.GAN_KIND, epochs, ddp, log_mlflow, convergence_stop=False)
    if resume:
        run.resume(gan.load_state_dict)
    run.start_tracking(
        {"family": family, "losses": "+".join(losses.names), "losses_note": losses.note or "all configured losses ran"},
        resume,
    )
    try:
        while run.going:
            gan.generator.train()
            gan.discriminator.train()
            t0 = time.perf_counter()
            sums: dict[str, Tensor] = {}
            seen = 0
            watch = NanWatch(device)
            epoch_batches = batches(train_set, tc["batch_size"], cfg["seed"], run.epoch)
            bar = run.progress(epoch_batches, progress)
            for i, idx in enumerate(bar):
                batch = collate(train_set, idx, device)
                ref = reference_for(batch["GT"], cfg) if gan.generator.uses_reference else None
                mine = ddp.my_slice(len(idx))
                parts = gan_step(
                    gan,
                    losses,
                    {k: v[mine] for k, v in batch.items()},
                    None if ref is None else ref[mine],
                    g_model,
                    d_model,
                )
                run.step += 1
                watch.update(run.step, parts["g_loss"] + parts["d_loss"])
                seen += len(idx)
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + ddp.mean(v) * len(idx)
                run.check_finite(watch, force=i == len(epoch_batches) - 1)
            seconds = time.perf_counter() - t0
            lr = gan.opt_g.param_groups[0]["lr"]
            gan.sched_g.step()
            gan.sched_d.step()
            ddp.broadcast_buffers(gan.generator)  # BatchNorm statistics: rank 0's, so every rank validates alike
            val_loss = validate_gan(gan.generator, val_set, cfg, device)
            means = {k: (v / seen).item() for k, v in sums.items()}
            run.end_epoch(
                means["g_loss"],
                val_loss,
                lr,
                seconds,
                seen,
                metrics=means,
                log=f"G {means['g_loss']:.4f}  D {means['d_loss']:.4f}  L1 {means['l1']:.4f}  val L1 {val_loss:.4f}",
                best_state=lambda: {"generator": gan.generator.state_dict()},
                last_state=gan.state_dict,
                sample=lambda path: sample_grid_gan(gan.generator, val_set, cfg, device, path),
                on_epoch=on_epoch,
            )
    except BaseException:
        run.fail()
        distributed.teardown(ddp)
        raise

    identical = ddp.same_everywhere([p for net in (gan.generator, gan.discriminator) for p in net.parameters()])
    distributed.teardown(ddp)
    if not identical:
        raise RuntimeError("DDP ranks ended with different weights; this is a bug")
    if not ddp.main:
        return {}
    summary = {
        "experiment": cfg["experiment"],
        "family": family,
        "profile": cfg["profile"],
        "losses": losses.names,
        "losses_note": losses.note,
    }
    return run.finish(summary, len(train_set))


def colorizer_from_state(state: dict[str, Any], device: torch.device | str) -> checkpoint.Colorizer:
    """`fn(lineart, ref, seed) -> colour in [-1, 1]` from a GAN checkpoint (best.pt or last.pt).

    GANs keep no EMA; the generator runs in eval mode (no dropout, running BatchNorm
    statistics), so `seed` is ignored. Pix2Pix ignores `ref`.
    """
    gen = build_generator(state["config"]).to(device)
    gen.load_state_dict(state["generator"])
    gen.eval()

    @torch.inference_mode()
    def fn(lineart: Tensor, ref: Tensor | None, seed: int) -> Tensor:
        outs = []
        for i in range(0, lineart.shape[0], INFER_BATCH):
            r = None if ref is None else ref[i : i + INFER_BATCH].to(device)
            outs.append(gen(lineart[i : i + INFER_BATCH].to(device), r).clamp(-1, 1).to(lineart.device))
        return torch.cat(outs)

    return fn
