"""Run bookkeeping shared by every training loop (BBDM and the GAN baselines).

A loop owns its maths (batches, losses, optimiser steps); `TrainingRun` owns what every
run must do the same way: resume from `last.pt`, the stop (the cap train.epochs, the
convergence rule of `convergence_value` / `converged_at`, early stopping on validation loss),
`best.pt` / `last.pt` checkpoints, the MLflow run, the non-finite-loss watch with a host
sync every `CHECK_EVERY` steps, rank-0-only writing under torchrun, and the summary JSON
and history CSV at the end. Keeping it in one place is what lets `--resume` after
`kill -9` replay the same bytes in both families.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from linebridge.core import checkpoint
from linebridge.core.config import Config, flatten, repo_root
from linebridge.core.distributed import Dist
from linebridge.core.io import save_with, write_atomic, write_json

CHECK_EVERY = 10  # steps between host syncs (non-finite check, progress bar)
NO_BAD_STEP = 2**62
# Keys that change no number a run produces: a checkpoint saved under other values of
# these still resumes (perf switches change float rounding only, not the maths).
RESUMABLE_KEYS = ("description", "perf.", "eval.", "tune.", "train.checkpoint_every", "train.sample_every")
# Keys that only say when to stop (the lr schedule follows train.decay_epochs, not the cap): they change no step
# taken, so a run resumes under a longer cap (`--set train.epochs=N`) or another stop rule; `resume` starts afresh
# only when the new settings would have stopped the run before its checkpoint.
STOP_KEYS = ("train.epochs", "train.stop_at_convergence", "train.convergence_gain", "train.min_epochs")
UNREAD_BY_BBDM = ("baselines",)  # sections a BBDM run never reads (the GAN baselines' settings)
CONVERGED_CHECKS = 2  # the rule must hold at this many epoch ends in a row: one noisy epoch does not stop a run
HISTORY_COLUMNS = ["epoch", "step", "train_loss", "val_loss", "lr"]

EpochCallback = Callable[[int, float], None]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class Paths:
    out: Path  # checkpoints and samples (DVC cache)
    metrics: Path  # small JSON summary (committed)
    history: Path  # per-epoch CSV for `dvc plots` (committed)

    @classmethod
    def for_experiment(cls, experiment: str, out: str | Path | None = None) -> Paths:
        """Default: outputs/train/ID plus metrics/train/ID.{json,csv}; with `out`, all inside it."""
        if out:
            return cls(Path(out), Path(out) / "metrics.json", Path(out) / "history.csv")
        root = repo_root()
        return cls(
            root / "outputs" / "train" / experiment,
            root / "metrics" / "train" / f"{experiment}.json",
            root / "metrics" / "train" / f"{experiment}.csv",
        )

    @property
    def last(self) -> Path:
        return self.out / "last.pt"

    @property
    def best(self) -> Path:
        return self.out / "best.pt"


def config_changes(saved: Config, cfg: Config) -> list[str]:
    """`key: old → new` for every setting that differs and changes what training computes (a BBDM run never reads
    the GAN baselines' section)."""
    old, new = flatten(saved), flatten(cfg)
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    unread = tuple(f"{section}." for section in UNREAD_BY_BBDM) if cfg["model"]["family"] == "bbdm" else ()
    free = RESUMABLE_KEYS + STOP_KEYS + unread
    return [f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in changed if not k.startswith(free)]


def convergence_value(history: list[dict[str, Any]]) -> float | None:
    """Relative fall of validation loss over the last quarter of the steps; None with fewer than two epochs.

    The earlier point is the history row whose step is closest to 0.75 × the final step, but at least one epoch
    before the last: (val_loss there − final val_loss) / val_loss there. A run still improving by more than
    train.convergence_gain over its last quarter would have gained from more steps; one below it has converged.
    """
    if len(history) < 2:
        return None
    final = history[-1]
    target = 0.75 * final["step"]
    there = min(history[:-1], key=lambda r: abs(r["step"] - target))
    return (there["val_loss"] - final["val_loss"]) / there["val_loss"]


def limited(dataset, n: int):
    """The first `n` items of `dataset` (0 = all): fixed, so every epoch and run sees the same ones."""
    return torch.utils.data.Subset(dataset, range(min(n, len(dataset)))) if n else dataset


def save_sample_grid(path: Path, lineart: Tensor, ref: Tensor, out: Tensor, gt: Tensor) -> Path:
    """PNG grid, one row per item: line art | reference | output | ground truth (images in [-1, 1])."""
    from torchvision.utils import save_image

    rows = torch.stack([lineart.expand(-1, 3, -1, -1), ref, out, gt], dim=1).flatten(0, 1)
    return save_with(path, lambda tmp: save_image((rows + 1) / 2, tmp, nrow=4, padding=1))


class NanWatch:
    """Remembers the first step with a non-finite loss on the device; `check` syncs with the host."""

    def __init__(self, device: torch.device) -> None:
        self.bad_step = torch.full((), NO_BAD_STEP, device=device)
        self.bad_loss = torch.zeros((), device=device)

    def update(self, step: int, loss: Tensor) -> None:
        first = ~torch.isfinite(loss) & (self.bad_step == NO_BAD_STEP)
        self.bad_step = torch.where(first, step, self.bad_step)
        self.bad_loss = torch.where(first, loss.float(), self.bad_loss)

    def check(self, ddp: Dist, where: str) -> None:
        """Raise TrainingDiverged naming the first bad step of any rank (one host sync)."""
        first_bad = ddp.min_item(self.bad_step)
        if first_bad != NO_BAD_STEP:
            value = self.bad_loss.item() if int(self.bad_step) == first_bad else "on another process"
            raise TrainingDiverged(f"{where}: loss is not finite ({value}) at step {first_bad}")


def converged_at(history: list[dict[str, Any]], gain: float, min_epochs: int) -> int | None:
    """The first epoch (1-based) at which the convergence rule has held at CONVERGED_CHECKS epoch ends in a row,
    counting only ends from `min_epochs` on; None if it never has."""
    streak = 0
    for n in range(1, len(history) + 1):
        value = convergence_value(history[:n])
        streak = streak + 1 if n >= min_epochs and value is not None and value < gain else 0
        if streak >= CONVERGED_CHECKS:
            return n
    return None


def converged_now(history: list[dict[str, Any]], gain: float, min_epochs: int) -> bool:
    """Whether the rule holds at each of the last CONVERGED_CHECKS epoch ends of `history` (from `min_epochs` on)."""
    n = len(history)
    return n >= max(min_epochs, 1) + CONVERGED_CHECKS - 1 and all(
        (value := convergence_value(history[:k])) is not None and value < gain
        for k in range(n - CONVERGED_CHECKS + 1, n + 1)
    )


class TrainingRun:
    """Counters, checkpoints, early stopping and tracking of one run; see the module docstring.

    Use: `resume(restore)`, `start_tracking(tags)`, then per epoch `while run.going:` …
    `end_epoch(...)`, and `finish(summary)`. `fail()` in an exception handler closes MLflow.
    """

    def __init__(
        self,
        cfg: Config,
        paths: Paths,
        kind: str,
        epochs: int,
        ddp: Dist,
        log_mlflow: bool,
        convergence_stop: bool | None = None,
    ) -> None:
        """`convergence_stop` overrides train.stop_at_convergence (the GAN loop turns it off: its lr decays
        linearly over its fixed epochs, and a stop would cut the decay short)."""
        self.cfg, self.paths, self.kind, self.epochs, self.ddp = cfg, paths, kind, epochs, ddp
        self.log_mlflow = log_mlflow and ddp.main
        tc = cfg["train"]
        self.patience, self.min_delta = tc["patience"], tc["min_delta"]
        self.stop_at_convergence = tc["stop_at_convergence"] if convergence_stop is None else convergence_stop
        self.gain, self.min_epochs = tc["convergence_gain"], tc["min_epochs"]
        self.epoch, self.step, self.best_val, self.bad_epochs = 0, 0, math.inf, 0
        self.history: list[dict[str, Any]] = []
        self.wall = 0.0
        self.epoch_walls: list[float] = []

    @property
    def name(self) -> str:
        return self.cfg["experiment"]

    @property
    def stopped_early(self) -> bool:
        return self.bad_epochs >= self.patience

    def epoch_checkpoint(self, epoch: int) -> Path:
        return self.paths.out / "epochs" / f"epoch_{epoch:03d}.pt"

    @property
    def converged(self) -> bool:
        """The convergence rule holds at the last CONVERGED_CHECKS epoch ends (`converged_now`)."""
        return converged_now(self.history, self.gain, self.min_epochs)

    def stop_epoch(self, history: list[dict[str, Any]]) -> int | None:
        """The epoch at which this run's settings stop a run with `history` (cap, convergence), None if not yet."""
        stops = [self.epochs] if len(history) >= self.epochs else []
        if self.stop_at_convergence and (n := converged_at(history, self.gain, self.min_epochs)) is not None:
            stops.append(n)
        return min(stops) if stops else None

    @property
    def going(self) -> bool:
        """Another epoch: below the cap (train.epochs), no early stop, and not converged when that stops the run."""
        return self.epoch < self.epochs and not self.stopped_early and not (self.stop_at_convergence and self.converged)

    def progress(self, epoch_batches: list, show: bool):
        """This epoch's batches under a progress bar (rank 0 only, and only when `show`)."""
        from tqdm.auto import tqdm

        desc = f"{self.name} epoch {self.epoch + 1}/{self.epochs}"
        return tqdm(epoch_batches, desc=desc, unit="batch", disable=not show or not self.ddp.main, leave=False)

    def resume(self, restore: Callable[[dict[str, Any]], None]) -> None:
        """Continue from last.pt when its config matches in every key that changes the numbers.

        `restore(state)` loads the loop's own objects (weights, optimisers, schedulers); the
        counters, history, wall time and the global RNG are restored here.
        """
        last = self.paths.last
        if not last.exists():
            return
        state = checkpoint.load(last, kind=self.kind, map_location=self.ddp.device())
        changes = config_changes(state["config"], self.cfg)
        if changes:
            print(
                f"{last}: saved with a different config ({'; '.join(changes[:5])}"
                f"{' …' if len(changes) > 5 else ''}); starting from scratch"
            )
            return
        stop = self.stop_epoch(state["history"])
        if stop is not None and stop < state["epoch"]:  # a run that trained past where these settings stop it
            print(
                f"{last}: trained {state['epoch']} epochs; these settings stop at epoch {stop} "
                "(train.epochs, the convergence rule); starting from scratch"
            )
            return
        restore(state)
        torch.set_rng_state(state["rng"])
        self.epoch, self.step, self.best_val, self.bad_epochs = (
            state["epoch"],
            state["step"],
            state["best_val"],
            state["bad_epochs"],
        )
        self.history = state["history"]
        timing = last.with_name("timing.json")
        times = json.loads(timing.read_text()) if timing.exists() else {}
        self.wall = times.get("wall_time_s", 0.0)
        self.epoch_walls = times.get("epoch_wall_s", [])[: self.epoch]
        if self.ddp.main:
            print(f"resuming {self.name} after epoch {self.epoch} (step {self.step})")

    def start_tracking(self, tags: dict[str, str], resume: bool) -> None:
        """Open (or, when resuming, reopen) this run's MLflow run; its id is kept beside the checkpoints."""
        if not self.log_mlflow:
            return
        from linebridge.core import tracking

        run_id_file = self.paths.out / "mlflow_run_id"
        old_id = run_id_file.read_text().strip() if resume and self.epoch > 0 and run_id_file.exists() else None
        base = {"stage": f"train@{self.name}", "experiment_id": self.name, "profile": self.cfg["profile"]}
        run = tracking.start_run("train", f"train-{self.name}", self.cfg, {**base, **tags}, old_id)
        write_atomic(run_id_file, run.info.run_id)

    def check_finite(self, watch: NanWatch, force: bool = False) -> bool:
        """Every CHECK_EVERY steps (or when `force`): sync and raise on a non-finite loss; True if it synced."""
        if self.step % CHECK_EVERY and not force:
            return False
        try:
            watch.check(self.ddp, self.name)
        except TrainingDiverged as err:
            raise TrainingDiverged(
                f"{err} (epoch {self.epoch + 1}); the last good checkpoint is kept at "
                f"{self.paths.last}. Lower the learning rate or check the data."
            ) from None
        return True

    def end_epoch(
        self,
        train_loss: float,
        val_loss: float,
        lr: float,
        seconds: float,
        images: int,
        *,
        best_state: Callable[[], dict[str, Any]],
        last_state: Callable[[], dict[str, Any]],
        log: str,
        metrics: dict[str, float] | None = None,
        sample: Callable[[Path], Path] | None = None,
        keep: bool = False,
        on_epoch: EpochCallback | None = None,
    ) -> None:
        """Record one finished epoch: history, best/early stop, checkpoints, MLflow, then `on_epoch`.

        `best_state()` / `last_state()` build the loop's checkpoint contents (the counters are
        added here); `log` is the loop's own progress line; `sample(path)` writes a sample grid;
        `keep` also saves this epoch's weights as epochs/epoch_NNN.pt (for learning curves).
        """
        val_loss = self.ddp.from_main(val_loss)  # every rank decides best and early stop on rank 0's value
        self.wall += seconds
        self.epoch += 1
        self.history.append(
            {"epoch": self.epoch, "step": self.step, "train_loss": train_loss, "val_loss": val_loss, "lr": lr}
        )
        self.epoch_walls.append(round(self.wall, 1))  # training seconds so far, kept out of the checkpoint
        improved = val_loss < self.best_val - self.min_delta
        if improved:
            self.best_val, self.bad_epochs = val_loss, 0
        else:
            self.bad_epochs += 1
        tc, main = self.cfg["train"], self.ddp.main
        if main:
            print(
                f"{self.name} epoch {self.epoch}: {log}  {images / seconds:.0f} img/s{'  (best)' if improved else ''}",
                flush=True,
            )
        weights = {"kind": self.kind, "config": self.cfg, "epoch": self.epoch, "step": self.step, "val_loss": val_loss}
        if improved and main:
            checkpoint.save({**weights, **best_state()}, self.paths.best)
        if keep and main:
            checkpoint.save({**weights, **best_state()}, self.epoch_checkpoint(self.epoch))
        if self.log_mlflow:
            from linebridge.core import tracking

            tracking.log_metrics(
                {
                    **(metrics or {}),
                    "train_loss": train_loss,
                    "val_loss": val_loss,
                    "lr": lr,
                    "images_per_s": images / seconds,
                },
                self.epoch,
            )
            if sample is not None and (self.epoch % tc["sample_every"] == 0 or not self.going):
                tracking.log_file(sample(self.paths.out / "samples" / f"epoch_{self.epoch:03d}.png"), "samples")
        if main and (self.epoch % tc["checkpoint_every"] == 0 or not self.going):
            state = {
                "kind": self.kind,
                "config": self.cfg,
                **last_state(),
                "rng": torch.get_rng_state(),
                "epoch": self.epoch,
                "step": self.step,
                "best_val": self.best_val,
                "bad_epochs": self.bad_epochs,
                "history": self.history,
            }
            checkpoint.save(state, self.paths.last)  # the wall time beside it keeps checkpoints byte-reproducible
            times = {"wall_time_s": self.wall, "epoch_wall_s": self.epoch_walls}
            write_atomic(self.paths.last.with_name("timing.json"), json.dumps(times) + "\n")
        if on_epoch is not None:
            on_epoch(self.epoch, val_loss)

    def fail(self) -> None:
        if self.log_mlflow:
            from linebridge.core import tracking

            tracking.end_run("FAILED")

    def finish(self, summary: dict[str, Any], train_images: int) -> dict[str, Any]:
        """The summary JSON, the history CSV, MLflow's best_val_loss, run closed; rank 0 only."""
        best = checkpoint.load(self.paths.best, kind=self.kind, map_location=self.ddp.device())
        summary = {
            **summary,
            "best_val_loss": best["val_loss"],
            "best_epoch": best["epoch"],
            "epochs_run": self.epoch,
            "steps": self.step,
            "stopped_early": self.stopped_early,
            "converged": self.converged,  # the rule at the last epoch, whether or not it stopped the run
            "train_images": train_images,
            "wall_time_s": round(self.wall, 1),
            "epoch_wall_s": self.epoch_walls,  # training seconds at each epoch's end (history.csv stays byte-stable)
        }
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.history)
        write_atomic(self.paths.history, buf.getvalue())
        write_json(self.paths.metrics, summary)
        if self.log_mlflow:
            from linebridge.core import tracking

            tracking.log_metrics({"best_val_loss": best["val_loss"]}, self.epoch)
            tracking.log_file(self.paths.best, "checkpoint")  # once per run: a tracking server's clients get the model
            tracking.end_run()
        return summary
