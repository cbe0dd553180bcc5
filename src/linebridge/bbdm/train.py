"""Train one BBDM experiment, read top to bottom.

    config → data → network + bridge → loop(epochs: batches → loss → AdamW → lr step → EMA)
           → validate (EMA, fixed timesteps) → checkpoint / early stop (runs.TrainingRun)

Determinism: one seed drives everything; the batch order of epoch e comes from
(seed, e), and the global RNG (timesteps, noise, TPS, jitter) is saved in every
checkpoint, so `--resume` after `kill -9` replays the same numbers as a run that
was never stopped. Checkpoints are taken at epoch ends.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from linebridge.bbdm.bridge import BrownianBridge
from linebridge.bbdm.losses import LPIPS_LOSS_NET, edge_weighted_l1, lpips_loss, region_weighted_l1
from linebridge.bbdm.sampling import build_bridge, colorize
from linebridge.bbdm.unet import build_model, use_channels_last
from linebridge.core import checkpoint, distributed
from linebridge.core.config import Config, UserError
from linebridge.core.pretrained import load_lpips
from linebridge.core.runs import EpochCallback, NanWatch, Paths, TrainingRun, limited, save_sample_grid
from linebridge.data.batches import (
    SameToneDonors,
    batches,
    collate,
    reference_for,
    shared_jitter,
    tone_regions,
    validation_rng,
)
from linebridge.data.styles import restyle


class EMA:
    """Shadow weights: copies the model before `start`, then shadow ← r·shadow + (1−r)·weights."""

    def __init__(self, model: nn.Module, rate: float, start: int) -> None:
        self.rate, self.start = rate, start
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        for s, p in zip(self.shadow.state_dict().values(), model.state_dict().values()):
            if step < self.start or not s.dtype.is_floating_point:
                s.copy_(p)
            else:
                s.lerp_(p, 1.0 - self.rate)


def autocast(device: torch.device):
    """bf16 autocast on CUDA; a no-op on CPU (bf16 is slower than fp32 on this CPU)."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def make_optimizer(net: nn.Module, cfg: Config, fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW of `train`; fused (one kernel for all parameters) unless `perf.fused_adamw` is off."""
    tc = cfg["train"]
    fused = cfg["perf"]["fused_adamw"] if fused is None else fused
    return torch.optim.AdamW(
        net.parameters(), lr=tc["lr"], weight_decay=tc["weight_decay"], betas=tuple(tc["betas"]), fused=fused or None
    )


def lr_factor(step: int, total: int, warmup: int, floor: float) -> float:
    """Multiplier of train.lr after `step` optimiser steps: linear warm-up, then a cosine down to `floor`.

    The floor (train.lr_min / lr) keeps a short run learning at its end instead of spending its last
    quarter at lr ≈ 0; the warm-up keeps Adam's first, badly estimated steps small.
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(opt: torch.optim.Optimizer, cfg: Config, steps_per_epoch: int):
    """The per-step lr schedule of `lr_factor`: warm-up, a cosine over train.decay_epochs × steps_per_epoch steps,
    then train.lr_min for as long as the run lasts. The schedule does not depend on train.epochs, the cap: a run
    stopped by the convergence rule, or resumed under a longer cap, takes the same steps as one that never stopped."""
    tc = cfg["train"]
    total, floor = tc["decay_epochs"] * steps_per_epoch, tc["lr_min"] / tc["lr"]
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, total, tc["warmup_steps"], floor))


def train_step(
    model: nn.Module,
    net: nn.Module,
    bridge: BrownianBridge,
    opt: torch.optim.Optimizer,
    batch: dict[str, Tensor],
    ref: Tensor,
    t: Tensor,
    noise: Tensor,
    cfg: Config,
) -> Tensor:
    """Loss → backward → clip → AdamW on one batch; returns the detached loss without a host sync.

    `model` is what runs forward (`net`, or its DDP / torch.compile wrapper); `net` owns the parameters.
    """
    with autocast(t.device):
        loss, _ = diffusion_loss(model, bridge, batch, ref, cfg, t, noise)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(net.parameters(), cfg["train"]["grad_clip"])
    opt.step()
    return loss.detach()


def training_timesteps(n: int, T: int, high_share: float) -> Tensor:
    """Training timesteps: uniform, except a `high_share` of them drawn from the top tenth (t ≥ 0.9·T).

    Near T the bridge state is the line art plus noise, so the prediction there is where the
    colours, and the reference's part in them, are decided: a few-step sampler starts at T − 1
    (the 2-step one makes its picture there), while uniform draws give that end a tenth of
    the steps (train.t_high_share). The draws use the global RNG; at share 0 the stream is
    the plain uniform one.
    """
    t = torch.randint(0, T, (n,))
    if high_share <= 0:
        return t
    high = T - 1 - torch.randint(0, max(1, T // 10), (n,))
    return torch.where(torch.rand(n) < high_share, high, t)


def diffusion_loss(
    net: nn.Module, bridge: BrownianBridge, batch: dict[str, Tensor], ref: Tensor, cfg: Config, t: Tensor, noise: Tensor
) -> tuple[Tensor, dict[str, float]]:
    """L_diff + λ_edge·L_edge (+ λ_lpips·L_lpips) for one batch at given timesteps and noise.

    L_diff and L_edge both compare the network output with the bridge objective; the edge
    term counts the pixels on and next to a line more (`edge_weighted_l1`). Only LPIPS looks
    at the reconstructed image.
    """
    target, line = batch["GT"], batch["lineart"]
    source = line.expand(-1, 3, -1, -1)
    x_t, objective = bridge.q_sample(target, source, t, noise)
    out = net(x_t, t, line, ref).float()
    if "tone" in batch:  # training with loss.tone_weight; validation stays plain L1, comparable across recipes
        loss_diff = region_weighted_l1(out, objective, batch["tone"], cfg["loss"]["tone_weight"])
    else:
        loss_diff = F.l1_loss(out, objective)
    loss = loss_diff
    parts = {"loss_diff": loss_diff.detach()}
    lc = cfg["loss"]
    if lc["lambda_lpips"] > 0:
        loss_lpips = lpips_loss(bridge.predict_target(x_t, source, t, out), target)
        loss = loss + lc["lambda_lpips"] * loss_lpips
        parts["loss_lpips"] = loss_lpips.detach()
    if lc["lambda_edge"] > 0:
        loss_edge = edge_weighted_l1(out, objective, line, lc["edge_weight"], lc["edge_threshold"])
        loss = loss + lc["lambda_edge"] * loss_edge
        parts["loss_edge"] = loss_edge.detach()
    return loss, parts


@torch.no_grad()
def validate(net: nn.Module, bridge: BrownianBridge, dataset, cfg: Config, device: torch.device) -> float:
    """Loss on held-out drawings, averaged over `val_timesteps` fixed-seed timesteps per sample drawn as training
    draws them (train.t_high_share), so the convergence rule follows the timesteps the run learns; plain L1 + the
    edge term, without the tone-region weight; comparable across epochs, and across recipes of equal t_high_share."""
    net.eval()
    high_share = cfg["train"]["t_high_share"]
    total, count = 0.0, 0
    with validation_rng(cfg):
        for idx in batches(dataset, cfg["train"]["batch_size"], 0, 0, shuffle=False, drop_last=False):
            batch = collate(dataset, idx, device)
            ref = reference_for(batch["GT"], cfg)
            for _ in range(cfg["train"]["val_timesteps"]):
                t = training_timesteps(len(idx), bridge.num_timesteps, high_share).to(device)
                noise = torch.randn(batch["GT"].shape).to(device)
                with autocast(device):
                    loss, _ = diffusion_loss(net, bridge, batch, ref, cfg, t, noise)
                total += loss.item() * len(idx)
                count += len(idx)
    return total / max(count, 1)


def sample_grid(
    net: nn.Module,
    bridge: BrownianBridge,
    dataset,
    cfg: Config,
    device: torch.device,
    path: Path,
    n: int = 8,
    steps: int = 20,
) -> Path:
    """PNG grid, one row per item: line art | reference | sample | ground truth."""
    net.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg["seed"])
        batch = collate(dataset, list(range(min(n, len(dataset)))), device)
        ref = reference_for(batch["GT"], cfg)
    line = batch["lineart"]
    fake = colorize(net, bridge, line, ref, steps, seed=cfg["seed"])
    return save_sample_grid(path, line, ref, fake, batch["GT"])


def train(
    cfg: Config,
    paths: Paths,
    resume: bool = False,
    log_mlflow: bool = True,
    progress: bool = True,
    on_epoch: EpochCallback | None = None,
) -> dict[str, Any]:
    """Train `cfg` into `paths`; returns the summary that is also written to paths.metrics.

    `on_epoch(epoch, val_loss)` runs after each epoch's checkpoint (Optuna reports and
    prunes there: an exception it raises ends the run, marked FAILED in MLflow).
    """
    from linebridge.data.datasets import build_dataset

    tc = cfg["train"]
    ddp = distributed.setup()
    device = ddp.device()
    if tc["batch_size"] % ddp.world:
        raise UserError(
            f"train.batch_size={tc['batch_size']} (the global batch) must divide by the {ddp.world} processes"
        )
    if cfg["loss"]["lambda_lpips"] > 0:  # fail before any work when its weights are not on disk
        load_lpips(LPIPS_LOSS_NET)
    torch.manual_seed(cfg["seed"])
    train_set = limited(build_dataset(cfg, "train"), tc["max_train_images"])
    val_set = limited(build_dataset(cfg, "val"), tc["max_val_images"])
    if len(train_set) < tc["batch_size"]:
        raise UserError(f"train split has {len(train_set)} images, fewer than train.batch_size={tc['batch_size']}")

    net = use_channels_last(build_model(cfg).to(device), cfg)
    model = nn.parallel.DistributedDataParallel(net) if ddp.world > 1 else net
    if cfg["perf"]["compile"]:
        model = torch.compile(model)
    bridge = build_bridge(cfg).to(device)
    opt = make_optimizer(net, cfg)
    sched = make_scheduler(opt, cfg, len(batches(train_set, tc["batch_size"], cfg["seed"], 0)))
    ema = EMA(net, tc["ema_rate"], tc["ema_start"])
    donors = SameToneDonors(train_set) if cfg["augment"]["reference_source"] == "same_tone" else None
    regions = tone_regions(train_set) if cfg["loss"]["tone_weight"] != 1.0 else None
    styles = cfg["augment"]["line_styles"]

    def restore(state: dict[str, Any]) -> None:
        net.load_state_dict(state["model"])
        ema.shadow.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])

    run = TrainingRun(cfg, paths, checkpoint.BBDM_KIND, tc["epochs"], ddp, log_mlflow)
    if resume:
        run.resume(restore)
    run.start_tracking({}, resume)
    try:
        while run.going:
            net.train()
            t0 = time.perf_counter()
            sums, seen = torch.zeros((), device=device), 0
            watch = NanWatch(device)
            epoch_batches = batches(train_set, tc["batch_size"], cfg["seed"], run.epoch)
            bar = run.progress(epoch_batches, progress)
            for i, idx in enumerate(bar):
                batch = collate(train_set, idx, device)
                batch["lineart"] = restyle(batch["lineart"], batch["GT"], styles["share"], styles["families"])
                if regions is not None:
                    batch["tone"] = regions[idx].to(device)
                source = batch["GT"] if donors is None else collate(train_set, donors.pick(idx), device)["GT"]
                batch["GT"], source = shared_jitter(batch["GT"], source, cfg)
                ref = reference_for(source, cfg)
                t = training_timesteps(len(idx), bridge.num_timesteps, tc["t_high_share"]).to(device)
                noise = torch.randn(batch["GT"].shape).to(device)
                mine = ddp.my_slice(len(idx))  # the whole slice in a single process
                loss = train_step(
                    model,
                    net,
                    bridge,
                    opt,
                    {k: v[mine] for k, v in batch.items()},
                    ref[mine],
                    t[mine],
                    noise[mine],
                    cfg,
                )
                sched.step()
                run.step += 1
                watch.update(run.step, loss)
                ema.update(net, run.step)
                sums += ddp.mean(loss) * len(idx)
                seen += len(idx)
                if run.check_finite(watch, force=i == len(epoch_batches) - 1):
                    bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{seen / (time.perf_counter() - t0):.0f}")
            seconds = time.perf_counter() - t0
            lr = opt.param_groups[0]["lr"]
            val_loss = validate(ema.shadow, bridge, val_set, cfg, device)
            train_loss = (sums / max(seen, 1)).item()
            run.end_epoch(
                train_loss,
                val_loss,
                lr,
                seconds,
                seen,
                log=f"train {train_loss:.4f}  val {val_loss:.4f}",
                best_state=lambda: {"model": net.state_dict(), "ema": ema.shadow.state_dict()},
                last_state=lambda: {
                    "model": net.state_dict(),
                    "ema": ema.shadow.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                },
                sample=lambda path: sample_grid(ema.shadow, bridge, val_set, cfg, device, path),
                keep=tc["keep_epochs"],
                on_epoch=on_epoch,
            )
    except BaseException:
        run.fail()
        distributed.teardown(ddp)
        raise

    identical = ddp.same_everywhere(list(net.state_dict().values()))  # DDP keeps replicas in lockstep; check it
    distributed.teardown(ddp)
    if not identical:
        raise RuntimeError("DDP ranks ended with different weights; this is a bug")
    if not ddp.main:
        return {}
    return run.finish(
        {"experiment": cfg["experiment"], "profile": cfg["profile"], "processes": ddp.world}, len(train_set)
    )
