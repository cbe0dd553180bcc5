"""One Optuna trial: train A3 with the sampled values, scored by a judge that is the same for every trial.

`train`'s own validation loss scores a model on references warped with its own
`augment.tps_scale` and weighted by its own `loss.lambda_edge`, so it is not comparable
across trials. `FixedJudge` scores each epoch's checkpoint (raw weights) under the base
A3 loss and references instead; the per-epoch values feed the pruner and the objective is
their minimum. Each trial is a nested MLflow run under the study's run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from linebridge.config import Config, flatten, merge, repo_root
from linebridge.tuning.storage import is_rdb

EXPERIMENT = "A3"  # the full method


@dataclass(frozen=True)
class TunePaths:
    storage: str  # journal file path or RDB URL
    trials: Path  # one training folder per trial
    best_params: Path
    summary: Path
    history_png: Path
    importances_png: Path

    @classmethod
    def resolve(cls, tune: Config, out: str | Path | None, storage: str | None) -> TunePaths:
        """Defaults from params (repo-root relative); with `out`, everything inside it."""
        if storage and not is_rdb(storage):
            storage = str(Path(storage).resolve())  # spawned workers and later runs may start elsewhere
        if out:
            out = Path(out).resolve()
            return cls(
                storage or str(out / "optuna.journal"),
                out / "trials",
                out / "best_params.yaml",
                out / "tune.json",
                out / "tune_history.png",
                out / "tune_importances.png",
            )
        root = repo_root()
        default_storage = tune["storage"] if is_rdb(tune["storage"]) else str(root / tune["storage"])
        figures = root / "reports" / "figures"
        return cls(
            storage or default_storage,
            root / "outputs" / "tune" / "trials",
            root / tune["best_params"],
            root / "metrics" / "tune.json",
            figures / "tune_history.png",
            figures / "tune_importances.png",
        )


@dataclass(frozen=True)
class Setup:
    """Everything a worker process needs (picklable for the spawn start method)."""

    cfg: Config  # A3 at the tune budget, before the sampled values
    tune: Config
    paths: TunePaths
    study_name: str
    mlflow_run_id: str | None  # the parent "tune" run; None = no MLflow
    mlflow_experiment_id: str | None
    git_commit: str


def nested(flat: dict[str, Any]) -> Config:
    """{'a.b': 1} → {'a': {'b': 1}}: the inverse of config.flatten."""
    out: Config = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def fingerprint(cfg: Config, space: dict[str, list[float]]) -> str:
    return hashlib.sha256(json.dumps({"config": cfg, "space": space}, sort_keys=True).encode()).hexdigest()


class FixedJudge:
    """Scores a checkpoint's raw weights under the base loss and references (comparable across trials)."""

    def __init__(self, cfg: Config) -> None:
        import torch

        from linebridge.bbdm.sampling import build_bridge
        from linebridge.bbdm.unet import build_model
        from linebridge.data.datasets import build_dataset
        from linebridge.runs import limited

        self.cfg = cfg
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.net = build_model(cfg).to(self.device)
        self.bridge = build_bridge(cfg).to(self.device)
        self.val_set = limited(
            build_dataset(cfg, "val"), cfg["train"]["max_val_images"]
        )  # the val images training uses

    def __call__(self, last: Path, epoch: int) -> float:
        from linebridge import checkpoint
        from linebridge.bbdm.train import validate

        state = checkpoint.load(last, map_location=self.device)
        if state["epoch"] != epoch:
            raise RuntimeError(
                f"{last} holds epoch {state['epoch']}, expected {epoch}: tune needs train.checkpoint_every=1"
            )
        self.net.load_state_dict(state["model"])
        return validate(self.net, self.bridge, self.val_set, self.cfg, self.device)


class TrialLog:
    """A nested MLflow run for one trial (or nothing when MLflow is off)."""

    def __init__(self, setup: Setup) -> None:
        self.setup, self.active = setup, False

    def start(self, trial: optuna.Trial, cfg: Config) -> None:
        if self.setup.mlflow_run_id is None:
            return
        import mlflow

        from linebridge.tracking import tracking_uri

        s = self.setup
        mlflow.set_tracking_uri(tracking_uri())
        run = mlflow.start_run(
            experiment_id=s.mlflow_experiment_id,
            run_name=f"trial-{trial.number:04d}",
            nested=True,
            parent_run_id=s.mlflow_run_id,
            tags={
                "git_commit": s.git_commit,
                "stage": "tune",
                "experiment_id": EXPERIMENT,
                "profile": cfg["profile"],
                "study_name": s.study_name,
                "trial_number": str(trial.number),
                "worker_pid": str(os.getpid()),
            },
        )
        self.active = True
        trial.set_user_attr("mlflow_run_id", run.info.run_id)
        mlflow.log_params({k: str(v)[:500] for k, v in flatten(cfg).items()})

    def metrics(self, values: dict[str, float], step: int) -> None:
        if self.active:
            from linebridge.tracking import log_metrics

            log_metrics(values, step)

    def end(self, state: TrialState) -> None:
        if self.active:
            import mlflow

            mlflow.set_tag("optuna_state", state.name)
            mlflow.end_run({TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED"}.get(state, "FAILED"))
            self.active = False


def run_trial(trial: optuna.Trial, setup: Setup, judge: FixedJudge) -> float:
    """Train with the sampled values; report the fixed-reference val loss per epoch; return its minimum."""
    from linebridge.bbdm.train import train
    from linebridge.runs import Paths

    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    space = flatten(setup.tune["space"])
    sampled = {key: trial.suggest_float(key, low, high) for key, (low, high) in space.items()}
    cfg = merge(setup.cfg, nested(sampled), f"tune trial {trial.number}")
    cfg["train"]["keep_epochs"] = False  # a trial's weights are deleted; its epochs need not be kept
    out = setup.paths.trials / f"{trial.number:04d}"
    shutil.rmtree(out, ignore_errors=True)
    log = TrialLog(setup)
    best, state = math.inf, TrialState.FAIL

    def on_epoch(epoch: int, train_val_loss: float) -> None:
        nonlocal best
        value = judge(out / "last.pt", epoch)
        best = min(best, value)
        log.metrics({"val_loss": value, "train_val_loss": train_val_loss}, epoch)  # the latter: EMA, own λ and tps
        trial.report(value, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"val loss {value:.4f} at epoch {epoch} is worse than the median")

    try:
        log.start(trial, cfg)
        train(cfg, Paths.for_experiment(EXPERIMENT, out), log_mlflow=False, progress=False, on_epoch=on_epoch)
        log.metrics({"objective": best}, cfg["train"]["epochs"])
        state = TrialState.COMPLETE
        return best
    except optuna.TrialPruned:
        state = TrialState.PRUNED
        raise
    except Exception as err:  # kept in the storage: `optuna trials` shows why a trial failed
        trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:500])
        raise
    finally:
        log.end(state)
        for ckpt in out.glob("*.pt"):
            ckpt.unlink()
