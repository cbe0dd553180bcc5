"""Tune λ_edge and tps_scale of the full method A3 with Optuna (SPEC §7, issue 8).

    linebridge tune [--profile P] [--set k=v] [--trials N] [--workers N] [--storage URL]
                    [--study-name NAME] [--out DIR] [--no-mlflow]

Each trial trains A3 for the short budget of the `tune:` params section with the sampled
values from `tune.space` (seeded TPE) and reports one value per epoch to a MedianPruner.

Objective, and why it is not train's own val loss. `train.validate` scores a model on
references warped with *its own* `augment.tps_scale` and with *its own* `loss.lambda_edge`
weighting, so its numbers are not comparable across trials: a small λ_edge or a mild warp
lowers the loss without a better model. Every trial is therefore scored by the same
judge: `train.validate` on each epoch's checkpoint under the base (untuned) A3 `loss` and
`augment` settings, with its fixed seed, on the val images train uses (`train.max_val_images`). It scores the raw weights,
not the EMA: an EMA rate of 0.999 averages over ~1000 steps, longer than a trial, so it
would mostly show the early weights (or, before `train.ema_start`, equal the raw ones).
Those per-epoch values are what the pruner sees; the objective is their minimum. It is
still a loss under the default weighting, not a sample metric.

Pruner: MedianPruner with a warm-up (no pruning before `tune.pruner_startup_trials` trials
finished, nor before epoch `tune.pruner_first_epoch` of a trial). A trial trains only a few epochs, too few rungs for
Hyperband's brackets (which also split the few trials among them); the median rule needs
no resource schedule and is easy to explain.

Storage and resuming. A journal file by default (`tune.storage`, safe for several
processes on one machine); an RDB URL (`sqlite:///…`, `postgresql://…`) gets heartbeats,
and a trial whose worker stops beating is failed and queued again once. A journal has no
heartbeat, so at start a RUNNING trial whose worker process on this host is gone is treated
the same way. `--trials` is the study's total of COMPLETE + PRUNED trials: a killed and
restarted run does only the remainder; failed trials do not count (a worker gives up after
`tune.max_failed` failures). The study remembers a hash of the trial configuration and
refuses to continue under another one.

Parallel. The parent creates the study once (concurrent creation races, CONVENTIONS.md),
then `--workers N` spawned processes share the remaining trials. Only one worker is
reproducible: the TPE seed is `tune.seed` + trials already in the study + worker index,
so an uninterrupted one-worker study repeats exactly and a resumed one does not replay
its first random proposals.

MLflow: one "tune" run per study (resumed on restart), each trial a nested run with the
trial's resolved config, per-epoch losses, the objective and its Optuna state.

Outputs (temp + rename; with --out DIR all inside DIR): `tuned/best_params.yaml` (the
`load_config` override form; DVC reads it as a params file), `metrics/tune.json`
(`study_summary` of the storage, so rerunning a finished study rewrites identical files),
`reports/figures/tune_history.png` and `tune_importances.png`. Trial checkpoints are
deleted after each trial; their history.csv stays under outputs/tune/trials.

Ablations use the tuned values, for fairness: `dvc repro` runs `tune` first and
`tuned_overrides(path, cfg)` applies the same λ_edge to every experiment that has the
edge loss (A2-A4) and the same tps_scale to those that warp references (A3, A4). A0/A1
keep λ_edge = 0, their "off" switch.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import socket
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from linebridge.config import Config, UserError, flatten, load_config, merge, repo_root
from linebridge.io import save_with, write_atomic, write_json

EXPERIMENT = "A3"  # SPEC §7: the full method
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
STALE_RETRIES = 1  # a trial whose worker died is queued again this many times


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


def is_rdb(storage: str) -> bool:
    return "://" in storage


def open_storage(storage: str, heartbeat_interval: int = 60) -> BaseStorage:
    """A journal file for a path, an RDB (with heartbeats and one retry of stale trials) for a URL."""
    if is_rdb(storage):
        with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.8
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=STALE_RETRIES)
            return optuna.storages.RDBStorage(
                storage, heartbeat_interval=heartbeat_interval, heartbeat_stale_trial_callback=retry
            )
    Path(storage).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))


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


def counts(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    return {state.name: sum(t.state == state for t in trials) for state in TrialState}


def n_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


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


def make_sampler(tune: Config, seed: int) -> optuna.samplers.TPESampler:
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=tune["n_startup_trials"])


def make_pruner(tune: Config) -> optuna.pruners.MedianPruner:
    return optuna.pruners.MedianPruner(
        n_startup_trials=tune["pruner_startup_trials"], n_warmup_steps=tune["pruner_first_epoch"]
    )


def run_worker(setup: Setup, quota: int, seed: int, threads: int) -> None:
    """Run trials until `quota` of them finished (COMPLETE or PRUNED) or `tune.max_failed` failed."""
    import torch

    torch.set_num_threads(threads)
    storage = open_storage(setup.paths.storage, setup.tune["heartbeat_interval"])
    study = optuna.load_study(
        study_name=setup.study_name,
        storage=storage,
        sampler=make_sampler(setup.tune, seed),
        pruner=make_pruner(setup.tune),
    )
    judge = FixedJudge(setup.cfg)
    tally = {"done": 0, "failed": 0}

    def stop_when_enough(study: optuna.Study, trial: FrozenTrial) -> None:
        tally["done" if trial.state in FINISHED else "failed"] += 1
        if tally["done"] >= quota or tally["failed"] >= setup.tune["max_failed"]:
            study.stop()

    study.optimize(lambda trial: run_trial(trial, setup, judge), callbacks=[stop_when_enough], catch=(Exception,))


def fail_dead_workers_trials(study: optuna.Study) -> list[FrozenTrial]:
    """A RUNNING trial whose worker process on this host is gone was killed: fail it and queue its
    parameters again once, as an RDB heartbeat would (a journal has none; an RDB's takes a grace period)."""
    host = socket.gethostname()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=STALE_RETRIES)
    dead = []
    for trial in study.get_trials(states=(TrialState.RUNNING,)):
        if trial.user_attrs.get("host") != host or pid_alive(trial.user_attrs.get("pid")):
            continue
        dead.append(study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True))
        retry(study, trial)
    return dead


def pid_alive(pid: int | None) -> bool:
    if pid is None:
        return True  # unknown worker: leave its trial alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def study_summary(storage: str | BaseStorage, study_name: str) -> dict[str, Any]:
    """Best value and params, trial counts by state, worker-seconds and importances (needs ≥ 2 COMPLETE trials).

    Read only from the storage, so equal studies give equal summaries.
    """
    study = optuna.load_study(
        study_name=study_name, storage=open_storage(storage) if isinstance(storage, str) else storage
    )
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    done = [t for t in study.get_trials(deepcopy=False) if t.datetime_start and t.datetime_complete]
    summary: dict[str, Any] = {
        "study_name": study_name,
        "direction": study.direction.name.lower(),
        "best_value": study.best_value if complete else None,
        "best_trial": study.best_trial.number if complete else None,
        "best_params": study.best_params if complete else {},
        "counts": counts(study),
        "trial_time_s": round(sum((t.datetime_complete - t.datetime_start).total_seconds() for t in done), 1),
        "importances": {},
        "importances_note": None,
    }
    if len(complete) >= 2:
        summary["importances"] = optuna.importance.get_param_importances(study)
    else:
        summary["importances_note"] = f"{len(complete)} COMPLETE trial(s); importances need at least 2"
    return summary


def write_outputs(study: optuna.Study, summary: dict[str, Any], paths: TunePaths) -> None:
    """best_params.yaml, the summary JSON and both figures, each written atomically."""
    header = (
        f"# Written by `linebridge tune` (study {summary['study_name']}, trial {summary['best_trial']}, "
        f"value {summary['best_value']}); `dvc repro` rewrites it.\n"
    )
    write_atomic(paths.best_params, header + yaml.safe_dump(nested(summary["best_params"]), sort_keys=False))
    write_json(paths.summary, summary)
    write_figures(study, summary, paths)


def write_figures(study: optuna.Study, summary: dict[str, Any], paths: TunePaths) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        history = vis.plot_optimization_history(study)
        if summary["importances"]:
            importances = vis.plot_param_importances(study)
        else:
            _, importances = plt.subplots(figsize=(6, 2))
            importances.axis("off")
            importances.text(0.5, 0.5, f"No importances: {summary['importances_note']}", ha="center", va="center")
    for ax, path in ((history, paths.history_png), (importances, paths.importances_png)):
        save_with(path, lambda tmp, fig=ax.figure: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
        plt.close(ax.figure)


def prepare_study(storage: BaseStorage, setup: Setup) -> optuna.Study:
    """Create or load the study (once, before any worker) and check it was run with this config."""
    study = optuna.create_study(study_name=setup.study_name, storage=storage, direction="minimize", load_if_exists=True)
    expected = fingerprint(setup.cfg, setup.tune["space"])
    found = study.user_attrs.get("config_sha256")
    if found is None:
        study.set_user_attr("config_sha256", expected)
        study.set_user_attr("experiment", EXPERIMENT)
        study.set_user_attr("profile", setup.cfg["profile"])
    elif found != expected:
        raise UserError(
            f"study '{setup.study_name}' in {setup.paths.storage} was run with another configuration; "
            "pass --study-name NEW or delete the storage to start over"
        )
    return study


def start_parent_run(study: optuna.Study, setup: Setup, dead: list[FrozenTrial]) -> Setup:
    """Open the study's "tune" MLflow run (resumed when this store has it) and close dead trials' runs."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from linebridge import tracking

    tags = {
        "stage": "tune",
        "experiment_id": EXPERIMENT,
        "profile": setup.cfg["profile"],
        "study_name": setup.study_name,
    }
    name = f"tune-{setup.study_name}"
    try:
        run = tracking.start_run("tune", name, setup.cfg, tags, study.user_attrs.get("mlflow_run_id"))
    except MlflowException:  # the study's run lives in another (or a deleted) tracking store
        run = tracking.start_run("tune", name, setup.cfg, tags)
    study.set_user_attr("mlflow_run_id", run.info.run_id)
    client = mlflow.MlflowClient()
    for trial in dead:
        if "mlflow_run_id" in trial.user_attrs:
            client.set_terminated(trial.user_attrs["mlflow_run_id"], "KILLED")
    return replace(
        setup,
        mlflow_run_id=run.info.run_id,
        mlflow_experiment_id=run.info.experiment_id,
        git_commit=tracking.git_commit(),
    )


def log_parent_run(summary: dict[str, Any], paths: TunePaths, wall_time_s: float) -> None:
    import mlflow

    from linebridge import tracking

    values = {"wall_time_s": wall_time_s, **{f"trials_{k}": v for k, v in summary["counts"].items()}}
    if summary["best_value"] is not None:
        values["best_value"] = summary["best_value"]
    tracking.log_metrics(values, summary["counts"]["COMPLETE"] + summary["counts"]["PRUNED"])
    for path in (paths.best_params, paths.summary, paths.history_png, paths.importances_png):
        if path.exists():
            mlflow.log_artifact(str(path), "tune")


def run_workers(setup: Setup, remaining: int, workers: int, first_seed: int) -> list[int]:
    """Share `remaining` trials among `workers` processes (in this one when 1); their exit codes.

    Each gets its share of the cores, or $OMP_NUM_THREADS when set: on a 2-core machine that
    something else also loads, two intra-op threads per process train ~20x slower than one.
    """
    threads = int(os.environ.get("OMP_NUM_THREADS") or 0) or max(1, (os.cpu_count() or 1) // workers)
    quotas = [remaining // workers + (i < remaining % workers) for i in range(workers)]
    if workers == 1:
        run_worker(setup, quotas[0], first_seed, threads)
        return [0]
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=run_worker, args=(setup, q, first_seed + i, threads), name=f"tune-worker-{i}")
        for i, q in enumerate(quotas)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return [p.exitcode for p in procs]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile", default=None, help="params.yaml profile: default CPU profile, 'paper' (GPU) or 'tiny'"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a param, e.g. --set tune.epochs=2 (repeatable)",
    )
    parser.add_argument(
        "--trials", type=int, default=None, help="COMPLETE + PRUNED trials the study ends with; None: tune.trials"
    )
    parser.add_argument("--workers", type=int, default=None, help="parallel worker processes; None: tune.workers")
    parser.add_argument("--storage", default=None, help="journal file path or RDB URL; None: tune.storage")
    parser.add_argument("--study-name", default=None, help="None: A3-PROFILE, e.g. A3-default")
    parser.add_argument("--out", default=None, help="put storage, trials and outputs in this folder")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")


def main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    cfg = load_config(EXPERIMENT, args.profile, args.overrides)
    tune = cfg.pop("tune")
    for key in ("trials", "workers"):
        if getattr(args, key) is not None:
            tune[key] = getattr(args, key)
    if tune["trials"] < 1 or tune["workers"] < 1:
        raise UserError(f"--trials and --workers must be at least 1, got {tune['trials']} and {tune['workers']}")
    budget = {"train": {"epochs": tune["epochs"], "max_train_images": tune["max_train_images"], "checkpoint_every": 1}}
    cfg = merge(cfg, budget, "params.yaml tune")
    paths = TunePaths.resolve(tune, args.out, args.storage)
    setup = Setup(cfg, tune, paths, args.study_name or f"{EXPERIMENT}-{cfg['profile']}", None, None, "unknown")
    storage = open_storage(paths.storage, tune["heartbeat_interval"])
    study = prepare_study(storage, setup)
    dead = fail_dead_workers_trials(study)
    for trial in dead:
        print(f"trial {trial.number}: its worker (pid {trial.user_attrs['pid']}) is gone; marked FAIL and queued again")
    if not args.no_mlflow:
        setup = start_parent_run(study, setup, dead)
    status = "FAILED"
    try:
        remaining = tune["trials"] - n_finished(study)
        if remaining > 0:
            workers = min(tune["workers"], remaining)
            print(
                f"study {setup.study_name}: {n_finished(study)} of {tune['trials']} trials finished; running {remaining} "
                f"on {workers} worker(s); storage {paths.storage}",
                flush=True,
            )
            codes = run_workers(setup, remaining, workers, tune["seed"] + len(study.trials))
            if any(codes):
                print(f"worker exit codes {codes}: see the messages above")
        summary = study_summary(storage, setup.study_name)
        if summary["best_trial"] is not None:
            write_outputs(study, summary, paths)
        if setup.mlflow_run_id:
            log_parent_run(summary, paths, time.perf_counter() - started)
        status = "FINISHED"
    finally:
        if setup.mlflow_run_id:
            from linebridge.tracking import end_run

            end_run(status)
    print(json.dumps(summary, indent=2))
    missing = tune["trials"] - n_finished(study)
    if summary["best_trial"] is None or missing > 0:
        print(
            f"linebridge tune: {missing} of {tune['trials']} trials still to run ({summary['trials']['FAIL']} failed so far); "
            "run the same command again to continue"
        )
        return 3
    return 0
