"""Train one experiment (SPEC §5), read top to bottom.

    config → data → model + bridge → loop(epochs: batches → loss → AdamW → EMA)
           → validate (EMA, fixed timesteps) → checkpoint / early stop → load best → outputs

Determinism: one seed drives everything; the batch order of epoch e comes from
(seed, e), and the global RNG (timesteps, noise, TPS, jitter) is saved in every
checkpoint, so `--resume` after `kill -9` replays the same numbers as a run that
was never stopped. Checkpoints are taken at epoch ends.
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from linebridge import checkpoint, distributed
from linebridge.bridge import BrownianBridge
from linebridge.config import Config, UserError, load_config, repo_root
from linebridge.losses import edge_weighted_l1
from linebridge.models import build_model


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class Paths:
    out: Path       # checkpoints and samples (DVC cache)
    metrics: Path   # small JSON summary (committed)
    history: Path   # per-epoch CSV for `dvc plots` (committed)

    @classmethod
    def for_experiment(cls, experiment: str, out: str | Path | None = None) -> "Paths":
        """Default: outputs/train/ID plus metrics/train/ID.{json,csv}; with `out`, all inside it."""
        if out:
            return cls(Path(out), Path(out) / "metrics.json", Path(out) / "history.csv")
        root = repo_root()
        return cls(root / "outputs" / "train" / experiment, root / "metrics" / "train" / f"{experiment}.json",
                   root / "metrics" / "train" / f"{experiment}.csv")


def build_bridge(cfg: Config) -> BrownianBridge:
    b = cfg["bridge"]
    return BrownianBridge(b["num_timesteps"], b["max_var"], b["objective"], b["mt_type"])


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
    return torch.optim.AdamW(net.parameters(), lr=tc["lr"], weight_decay=tc["weight_decay"], betas=tuple(tc["betas"]),
                             fused=fused or None)


def speed_up(net: nn.Module, cfg: Config) -> nn.Module:
    """`perf.channels_last`: NHWC weights (activations follow); same maths, faster convolutions.

    Checkpoints written before `perf` existed load in the contiguous layout.
    """
    return net.to(memory_format=torch.channels_last) if cfg.get("perf", {}).get("channels_last") else net


def train_step(model: nn.Module, net: nn.Module, bridge: BrownianBridge, opt: torch.optim.Optimizer, batch: dict[str, Tensor],
               ref: Tensor, t: Tensor, noise: Tensor, cfg: Config) -> Tensor:
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


def diffusion_loss(net: nn.Module, bridge: BrownianBridge, batch: dict[str, Tensor], ref: Tensor, cfg: Config,
                   t: Tensor, noise: Tensor) -> tuple[Tensor, dict[str, float]]:
    """L_diff + λ_edge·L_edge for one batch at given timesteps and noise."""
    target, line = batch["GT"], batch["lineart"]
    source = line.expand(-1, 3, -1, -1)
    x_t, objective = bridge.q_sample(target, source, t, noise)
    out = net(x_t, t, line, ref).float()
    loss_diff = F.l1_loss(out, objective)
    loss = loss_diff
    parts = {"loss_diff": loss_diff.detach()}
    lc = cfg["loss"]
    if lc["lambda_edge"] > 0:
        if lc["edge_target"] == "reconstruction":
            pred, goal = bridge.predict_target(x_t, source, t, out), target
        else:
            pred, goal = out, objective
        loss_edge = edge_weighted_l1(pred, goal, line, lc["edge_weight"], lc["edge_threshold"])
        loss = loss + lc["lambda_edge"] * loss_edge
        parts["loss_edge"] = loss_edge.detach()
    return loss, parts


def batches(dataset, batch_size: int, seed: int, epoch: int, skip: int = 0, shuffle: bool = True, drop_last: bool = True):
    """Index batches of one epoch; the order depends only on (seed, epoch)."""
    n = len(dataset)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch)) if shuffle else torch.arange(n)
    chunks = [c.tolist() for c in order.split(batch_size) if not drop_last or len(c) == batch_size]
    return chunks[skip:]


def collate(dataset, indices: list[int], device: torch.device) -> dict[str, Tensor]:
    items = [dataset[i] for i in indices]
    return {k: torch.stack([it[k] for it in items]).to(device) for k in ("GT", "lineart")}


@torch.no_grad()
def validate(net: nn.Module, bridge: BrownianBridge, dataset, cfg: Config, device: torch.device) -> float:
    """Loss averaged over `val_timesteps` fixed-seed timesteps per sample: comparable across epochs."""
    net.eval()
    total, count = 0.0, 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg["seed"] + 7919)
        for idx in batches(dataset, cfg["train"]["batch_size"], 0, 0, shuffle=False, drop_last=False):
            batch = collate(dataset, idx, device)
            ref = reference_for(batch["GT"], cfg)
            for _ in range(cfg["train"]["val_timesteps"]):
                t = torch.randint(0, bridge.num_timesteps, (len(idx),)).to(device)
                noise = torch.randn(batch["GT"].shape).to(device)
                with autocast(device):
                    loss, _ = diffusion_loss(net, bridge, batch, ref, cfg, t, noise)
                total += loss.item() * len(idx)
                count += len(idx)
    return total / max(count, 1)


def reference_for(gt: Tensor, cfg: Config) -> Tensor:
    from linebridge.augment import make_reference  # kornia, imported on use: the GPU check runs without it

    a = cfg["augment"]
    return make_reference(gt, a["use_tps"], a["tps_scale"], a["jitter"])


def sample_grid(net: nn.Module, bridge: BrownianBridge, dataset, cfg: Config, device: torch.device, path: Path, n: int = 8, steps: int = 20) -> Path:
    """PNG grid, one row per item: line art | reference | sample | ground truth."""
    from torchvision.utils import save_image

    from linebridge.inference import colorize

    net.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg["seed"])
        batch = collate(dataset, list(range(min(n, len(dataset)))), device)
        ref = reference_for(batch["GT"], cfg)
    line = batch["lineart"]
    fake = colorize(net, bridge, line, ref, steps, seed=cfg["seed"])
    rows = torch.stack([line.expand(-1, 3, -1, -1), ref, fake, batch["GT"]], dim=1).flatten(0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image((rows + 1) / 2, path, nrow=4, padding=1)
    return path


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_history(history: list[dict[str, Any]], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["epoch", "step", "train_loss", "val_loss", "lr"], extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_atomic(path, buf.getvalue())


def save_last(state: dict[str, Any], last: Path, wall: float) -> None:
    """The resumable checkpoint, and the wall time beside it (so checkpoints stay byte-reproducible)."""
    checkpoint.save(state, last)
    write_atomic(last.with_name("timing.json"), json.dumps({"wall_time_s": wall}) + "\n")


def saved_wall_time(last: Path) -> float:
    timing = last.with_name("timing.json")
    return json.loads(timing.read_text())["wall_time_s"] if timing.exists() else 0.0


EpochCallback = Callable[[int, float], None]
CHECK_EVERY = 10        # steps between the loop's host syncs (NaN check, progress bar)
NO_BAD_STEP = 2**62


def train(cfg: Config, paths: Paths, resume: bool = False, log_mlflow: bool = True, progress: bool = True,
          on_epoch: EpochCallback | None = None) -> dict[str, Any]:
    """Train `cfg` into `paths`; returns the summary that is also written to paths.metrics.

    `on_epoch(epoch, val_loss)` runs after each epoch's checkpoint (Optuna reports and
    prunes there: an exception it raises ends the run, marked FAILED in MLflow).
    """
    from tqdm.auto import tqdm

    from linebridge.data import build_dataset

    tc = cfg["train"]
    ddp = distributed.setup()
    device = ddp.device()
    if tc["batch_size"] % ddp.world:
        raise UserError(f"train.batch_size={tc['batch_size']} (the global batch) must divide by the {ddp.world} processes")
    log_mlflow = log_mlflow and ddp.main
    torch.manual_seed(cfg["seed"])
    train_set, val_set = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    if tc["max_train_images"]:
        train_set = torch.utils.data.Subset(train_set, range(min(tc["max_train_images"], len(train_set))))
    if tc["max_val_images"]:
        val_set = torch.utils.data.Subset(val_set, range(min(tc["max_val_images"], len(val_set))))
    if len(train_set) < tc["batch_size"]:
        raise UserError(f"train split has {len(train_set)} images, fewer than train.batch_size={tc['batch_size']}")

    net = speed_up(build_model(cfg).to(device), cfg)
    model = nn.parallel.DistributedDataParallel(net) if ddp.world > 1 else net
    if cfg["perf"]["compile"]:
        model = torch.compile(model)
    bridge = build_bridge(cfg).to(device)
    opt = make_optimizer(net, cfg)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=tc["epochs"], eta_min=tc["eta_min"])
    ema = EMA(net, tc["ema_rate"], tc["ema_start"])
    if cfg["loss"]["lambda_lpips"] > 0:
        raise UserError("loss.lambda_lpips > 0 needs the LPIPS VGG weights, which this build does not load yet; set loss.lambda_lpips=0")

    epoch, step, best_val, bad_epochs, history, wall = 0, 0, math.inf, 0, [], 0.0
    last = paths.out / "last.pt"
    if resume and last.exists():
        state = checkpoint.load(last, map_location=device)
        if state["config"] != cfg:
            print(f"{last}: saved with a different config; starting from scratch")
        else:
            net.load_state_dict(state["model"])
            ema.shadow.load_state_dict(state["ema"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
            epoch, step, best_val, bad_epochs = state["epoch"], state["step"], state["best_val"], state["bad_epochs"]
            history = state["history"]
            wall = saved_wall_time(last)
            if ddp.main:
                print(f"resuming {cfg['experiment']} after epoch {epoch} (step {step})")

    run_id_file = paths.out / "mlflow_run_id"
    if log_mlflow:
        from linebridge import tracking

        old_id = run_id_file.read_text().strip() if resume and epoch > 0 and run_id_file.exists() else None
        run = tracking.start_run("train", f"train-{cfg['experiment']}", cfg,
                                 {"stage": f"train@{cfg['experiment']}", "experiment_id": cfg["experiment"], "profile": cfg["profile"]}, old_id)
        write_atomic(run_id_file, run.info.run_id)

    stopped_early = bad_epochs >= tc["patience"]
    try:
        while epoch < tc["epochs"] and not stopped_early:
            net.train()
            t0 = time.perf_counter()
            sums, seen = torch.zeros((), device=device), 0
            bad_step = torch.full((), NO_BAD_STEP, device=device)  # first step with a non-finite loss and that loss,
            bad_loss = torch.zeros((), device=device)                # kept on the device until the next check
            epoch_batches = batches(train_set, tc["batch_size"], cfg["seed"], epoch)
            bar = tqdm(epoch_batches, desc=f"{cfg['experiment']} epoch {epoch + 1}/{tc['epochs']}",
                       unit="batch", disable=not progress or not ddp.main, leave=False)
            for i, idx in enumerate(bar):
                batch = collate(train_set, idx, device)
                ref = reference_for(batch["GT"], cfg)
                t = torch.randint(0, bridge.num_timesteps, (len(idx),)).to(device)
                noise = torch.randn(batch["GT"].shape).to(device)
                mine = ddp.my_slice(len(idx))  # the whole slice in a single process
                loss = train_step(model, net, bridge, opt, {k: v[mine] for k, v in batch.items()}, ref[mine], t[mine], noise[mine], cfg)
                step += 1
                first = ~torch.isfinite(loss) & (bad_step == NO_BAD_STEP)
                bad_step, bad_loss = torch.where(first, step, bad_step), torch.where(first, loss.float(), bad_loss)
                ema.update(net, step)
                sums += ddp.mean(loss) * len(idx)
                seen += len(idx)
                if step % CHECK_EVERY == 0 or i == len(epoch_batches) - 1:  # host syncs only every CHECK_EVERY steps
                    first_bad = ddp.min_item(bad_step)
                    if first_bad != NO_BAD_STEP:
                        value = bad_loss.item() if int(bad_step) == first_bad else "on another process"
                        raise TrainingDiverged(
                            f"{cfg['experiment']}: loss is not finite ({value}) at step {first_bad} (epoch {epoch + 1}); "
                            f"the last good checkpoint is kept at {last}. Lower train.lr or check the data."
                        )
                    bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{seen / (time.perf_counter() - t0):.0f}")
            epoch_time = time.perf_counter() - t0
            wall += epoch_time
            lr = opt.param_groups[0]["lr"]
            sched.step()
            val_loss = validate(ema.shadow, bridge, val_set, cfg, device)
            train_loss = (sums / max(seen, 1)).item()
            epoch += 1
            history.append({"epoch": epoch, "step": step, "train_loss": train_loss, "val_loss": val_loss, "lr": lr})
            improved = val_loss < best_val - tc["min_delta"]
            if improved:
                best_val, bad_epochs = val_loss, 0
            else:
                bad_epochs += 1
            stopped_early = bad_epochs >= tc["patience"]
            if ddp.main:
                print(f"{cfg['experiment']} epoch {epoch}: train {train_loss:.4f}  val {val_loss:.4f}  "
                      f"{seen / epoch_time:.0f} img/s{'  (best)' if improved else ''}", flush=True)
            if improved and ddp.main:
                checkpoint.save({"kind": checkpoint.KIND, "config": cfg, "model": net.state_dict(), "ema": ema.shadow.state_dict(),
                                 "epoch": epoch, "step": step, "val_loss": val_loss}, paths.out / "best.pt")
            if log_mlflow:
                tracking.log_metrics({"train_loss": train_loss, "val_loss": val_loss, "lr": lr, "images_per_s": seen / epoch_time}, epoch)
                if epoch % tc["sample_every"] == 0 or epoch == tc["epochs"]:
                    grid = sample_grid(ema.shadow, bridge, val_set, cfg, device, paths.out / "samples" / f"epoch_{epoch:03d}.png")
                    tracking.log_image(grid)
            if ddp.main and (epoch % tc["checkpoint_every"] == 0 or epoch == tc["epochs"] or stopped_early):
                save_last({"kind": checkpoint.KIND, "config": cfg, "model": net.state_dict(), "ema": ema.shadow.state_dict(),
                                 "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": torch.get_rng_state(),
                                 "epoch": epoch, "step": step, "best_val": best_val, "bad_epochs": bad_epochs,
                                 "history": history}, last, wall)
            if on_epoch is not None:
                on_epoch(epoch, val_loss)
    except BaseException:
        if log_mlflow:
            tracking.end_run("FAILED")
        distributed.teardown(ddp)
        raise

    identical = ddp.same_everywhere(list(net.state_dict().values()))  # DDP keeps replicas in lockstep; check it
    distributed.teardown(ddp)
    if not identical:
        raise RuntimeError("DDP ranks ended with different weights; this is a bug")
    if not ddp.main:
        return {}
    best = checkpoint.load(paths.out / "best.pt", map_location=device)
    summary = {"experiment": cfg["experiment"], "profile": cfg["profile"], "processes": ddp.world}
    return finish_run(summary, best, paths, history, epoch, step, stopped_early, len(train_set), wall, log_mlflow)


def finish_run(summary: dict[str, Any], best: dict[str, Any], paths: Paths, history: list[dict[str, Any]], epoch: int, step: int,
               stopped_early: bool, train_images: int, wall: float, log_mlflow: bool) -> dict[str, Any]:
    """End of a training run (BBDM or GAN): the summary JSON, the history CSV, MLflow's best_val_loss, run closed."""
    summary = {**summary, "best_val_loss": best["val_loss"], "best_epoch": best["epoch"], "epochs_run": epoch, "steps": step,
               "stopped_early": stopped_early, "train_images": train_images, "wall_time_s": round(wall, 1)}
    write_history(history, paths.history)
    write_atomic(paths.metrics, json.dumps(summary, indent=2) + "\n")
    if log_mlflow:
        from linebridge import tracking

        tracking.log_metrics({"best_val_loss": best["val_loss"]}, epoch)
        tracking.end_run()
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", required=True, help="experiment id: A0..A4 (experiments/ID.yaml)")
    parser.add_argument("--profile", default=None, help="params.yaml profile: default CPU profile, 'paper' (GPU) or 'tiny'")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a param, e.g. --set train.epochs=3 (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt if it exists and its config matches")
    parser.add_argument("--out", default=None, help="checkpoint folder (default outputs/train/ID)")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    parser.add_argument("--tuned", default=None, metavar="BEST_PARAMS_YAML",
                        help="apply `linebridge tune`'s best values (λ_edge where the edge loss is on, tps_scale where TPS is on); "
                             "--set still wins")


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.experiment, args.profile, args.overrides)
    if args.tuned:  # the Optuna study's best values, where this experiment has the component (tune.py)
        from linebridge.tune import tuned_overrides

        tuned = tuned_overrides(args.tuned, cfg)
        cfg = load_config(args.experiment, args.profile, [*tuned, *args.overrides])
        if tuned:
            print(f"tuned values from {args.tuned}: {' '.join(tuned)}")
    # one process per core group: torchrun's processes share the machine's cores
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    run = train
    if cfg["model"]["family"] != "bbdm":  # GAN baselines share the data, outputs and tracking contract
        from linebridge.baselines import train_gan as run
    try:
        summary = run(cfg, Paths.for_experiment(args.experiment, args.out), resume=args.resume, log_mlflow=not args.no_mlflow)
    except TrainingDiverged as err:
        print(f"linebridge train: {err}")
        return 3
    if summary:
        print(json.dumps(summary, indent=2))
    return 0
