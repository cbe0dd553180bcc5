"""MLflow plumbing: one URI resolution, run tags, batched metric logging, artifact files.

`import mlflow` costs seconds, so it happens only inside these functions.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from linebridge.core.config import flatten, repo_root


def tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI if set, else sqlite:///<repo root>/mlflow.db (DVC_ROOT-aware)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def git_commit(root: Path | None = None, short: bool = False) -> str:
    """The commit the code runs at; else $LINEBRIDGE_COMMIT, else 'unknown'.

    The variable serves copies of the tree without .git (a GPU machine gets the working tree
    only): `LINEBRIDGE_COMMIT=$(git rev-parse HEAD)` where the copy is made. Full form: the
    sha with '-dirty' when tracked files changed (MLflow tags). Short form: the abbreviated
    sha alone, for the report, which `dvc repro` writes while the stages'
    outputs are still uncommitted.
    """
    root = root or repo_root()
    try:
        if short:
            return subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
            ).stdout.strip()
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("LINEBRIDGE_COMMIT", "unknown")


def start_run(
    experiment_name: str, run_name: str, cfg: dict[str, Any], tags: dict[str, str], run_id: str | None = None
):
    """Start (or, with run_id, resume) an MLflow run with the resolved config as params."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_experiment(experiment_name)
    run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name)
    if run_id is None:
        params = {k: str(v)[:500] for k, v in flatten(cfg).items()}
        mlflow.log_params(params)
        mlflow.set_tags({"git_commit": git_commit(), **tags})
    return run


def log_metrics(metrics: dict[str, float], step: int) -> None:
    """All of one step's values in one request (per-value calls are slow on sqlite)."""
    import mlflow
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    mlflow.MlflowClient().log_batch(mlflow.active_run().info.run_id, metrics=batch)


def log_to_run(run_id: str, metrics: dict[str, float]) -> bool:
    """Add `metrics` to an existing, finished run (test metrics to the training run they evaluate).

    False when this tracking store has no such run (the model was trained against another store).
    """
    import mlflow
    from mlflow.entities import Metric
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri())
    try:
        client.get_run(run_id)
    except MlflowException:
        return False
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
    return True


def log_file(path: Path, folder: str) -> None:
    """One file into the active run's artifact store under `folder` (a served store uploads it over HTTP)."""
    import mlflow

    mlflow.log_artifact(str(path), folder)


def end_run(status: str = "FINISHED") -> None:
    import mlflow

    mlflow.end_run(status=status)


def log_results(checkpoint: Path, results: dict[str, Any], prefix: str) -> None:
    """Each protocol's means as `PREFIX/PROTOCOL/METRIC` on the MLflow run that trained `checkpoint`.

    So `mlflow ui` compares models by their test metrics next to their training curves.
    """
    run_file = checkpoint.parent / "mlflow_run_id"
    if not run_file.exists():
        print(f"not logged to MLflow: {checkpoint.parent} has no mlflow_run_id (trained with --no-mlflow)")
        return
    values = {
        f"{prefix}/{protocol}/{metric}": value["mean"] if "mean" in value else value["value"]
        for protocol, res in results.items()
        for metric, value in res["metrics"].items()
        if not value.get("unavailable") and (value.get("mean", value.get("value")) is not None)
    }
    values = {k: v for k, v in values.items() if v == v}  # NaN (e.g. no tone pixels) is not a metric
    run_id = run_file.read_text().strip()
    if log_to_run(run_id, values):
        print(f"logged {len(values)} test metrics to MLflow run {run_id}")
    else:
        print(f"not logged to MLflow: {tracking_uri()} has no run {run_id} (trained against another store)")
