"""One Optuna trial: train the method (params.yaml `study.method`) with the sampled values, scored by a judge
that is the same for every trial.

`train`'s own validation loss weights lines by the trial's own `loss.lambda_edge` and warps
references with its own `augment.tps_scale`, so it cannot compare trials. `ValidationJudge`
samples the validation protocols with each epoch's checkpoint instead; the per-epoch values
feed the pruner and the objective is the last epoch's (the model the recipe ends with).
Each trial is a nested MLflow run under the study's run.
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

from linebridge.core.config import Config, flatten, merge, repo_root
from linebridge.tuning.storage import is_rdb


@dataclass(frozen=True)
class TunePaths:
    storage: str  # journal file path or RDB URL
    trials: Path  # one training folder per trial
    best_params: Path
    summary: Path
    history_png: Path
    importances_png: Path
    confirm: Path  # the default and the best values re-trained at the full recipe

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
                out / "confirm",
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
            root / "outputs" / "tune" / "confirm",
        )


@dataclass(frozen=True)
class Setup:
    """Everything a worker process needs (picklable for the spawn start method)."""

    cfg: Config  # the declared method at the tune budget, before the sampled values
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
    """What a study's trials were run under: the method's configuration (less what a BBDM run never reads) and the
    search space."""
    from linebridge.core.runs import UNREAD_BY_BBDM

    used = {k: v for k, v in cfg.items() if k not in UNREAD_BY_BBDM}
    return hashlib.sha256(json.dumps({"config": used, "space": space}, sort_keys=True).encode()).hexdigest()


class ValidationJudge:
    """Scores a checkpoint by what λ_edge and TPS strength are for, the same way for every trial.

    The objective is the mean of two validation metrics at the study's sampler (params.yaml
    `eval`): self-reference ΔE00 (colour fidelity, lines included: what the edge
    loss should help) and cross_gt tone ΔE00 (whether a reference's skin colour arrives: what
    TPS warping should teach). Both are in ΔE00 units, lower is better, and neither contains
    a trial's own λ or warp, unlike a training loss.
    """

    def __init__(self, cfg: Config) -> None:
        from linebridge.evaluation.evaluate import validation_sets

        self.cfg = cfg
        self.data = validation_sets(cfg)

    def __call__(self, path: Path) -> dict[str, float]:
        """{objective, delta_e, delta_e_tone, psnr, ...} of the checkpoint at `path`."""
        from linebridge.evaluation.evaluate import study_quality

        quality = study_quality(path, self.cfg, self.data)
        return {"objective": (quality["delta_e"] + quality["delta_e_tone"]) / 2, **quality}


class TrialLog:
    """A nested MLflow run for one trial (or nothing when MLflow is off)."""

    def __init__(self, setup: Setup) -> None:
        self.setup, self.active = setup, False

    def start(self, trial: optuna.Trial, cfg: Config) -> None:
        if self.setup.mlflow_run_id is None:
            return
        import mlflow

        from linebridge.core.tracking import tracking_uri

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
                "experiment_id": cfg["experiment"],
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
            from linebridge.core.tracking import log_metrics

            log_metrics(values, step)

    def end(self, state: TrialState) -> None:
        if self.active:
            import mlflow

            mlflow.set_tag("optuna_state", state.name)
            mlflow.end_run({TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED"}.get(state, "FAILED"))
            self.active = False


def run_trial(trial: optuna.Trial, setup: Setup, judge: ValidationJudge) -> float:
    """Train with the sampled values; report the judge's value per epoch; return the last epoch's."""
    from linebridge.bbdm.train import train
    from linebridge.core.runs import Paths

    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    space = flatten(setup.tune["space"])
    sampled = {key: trial.suggest_float(key, low, high) for key, (low, high) in space.items()}
    cfg = merge(setup.cfg, nested(sampled), f"tune trial {trial.number}")
    cfg["train"]["keep_epochs"] = False  # a trial's weights are deleted; its epochs need not be kept
    out = setup.paths.trials / f"{trial.number:04d}"
    shutil.rmtree(out, ignore_errors=True)
    log = TrialLog(setup)
    last, state = math.inf, TrialState.FAIL

    def on_epoch(epoch: int, val_loss: float) -> None:
        nonlocal last
        scores = judge(out / "last.pt")
        last = scores["objective"]
        log.metrics({**scores, "val_loss": val_loss}, epoch)  # val_loss: the trial's own, not comparable
        trial.report(last, epoch)
        if epoch < cfg["train"]["epochs"] and trial.should_prune():  # after the last epoch the budget is spent
            raise optuna.TrialPruned(f"objective {last:.4f} at epoch {epoch} is worse than the median")

    try:
        log.start(trial, cfg)
        train(cfg, Paths.for_experiment(cfg["experiment"], out), log_mlflow=False, progress=False, on_epoch=on_epoch)
        log.metrics({"final_objective": last}, cfg["train"]["epochs"])
        state = TrialState.COMPLETE
        return last
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
