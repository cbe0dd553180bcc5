"""`linebridge tune`: the Optuna study of λ_edge and tps_scale for the method (params.yaml `study.method`).

    linebridge tune [--profile P] [--set k=v] [--trials N] [--workers N] [--storage URL]
                    [--study-name NAME] [--out DIR] [--no-mlflow]

Multi-fidelity: each trial trains the method for the short budget of the `tune:` params section
(`tune.epochs` on `tune.max_train_images`, every trial the same length: the convergence stop is
off within trials) with values from `tune.space` (seeded
TPE), and reports one value per epoch to a MedianPruner (objective.py says what it scores:
validation metrics at the study's sampler, never a loss). The pruner waits for
`tune.pruner_startup_trials` finished trials and epoch `tune.pruner_first_epoch`. When all
trials are done, the default and the best values are re-trained at the full recipe with
the seeds `tune.confirm_seeds` (`confirm`, `tune.confirm_workers` of them at once), and best_params.yaml
carries the values only if they beat the defaults by more than seed noise.

`--trials` is the study's total of COMPLETE + PRUNED trials: a killed and restarted run
does only the remainder (failed trials do not count; a worker gives up after
`tune.max_failed`), and the study refuses to continue under another trial configuration.
The parent creates the study once (concurrent creation races), then `--workers N` spawned
processes share the remaining trials. Only one worker is reproducible: the TPE seed is
`tune.seed` + trials already in the study + worker index.

Outputs (atomic; with --out DIR all inside it): `tuned/best_params.yaml` (the override form
`core.config.tuned_overrides` applies: λ_edge where the edge loss is on, tps_scale where
references are warped), `metrics/tune.json`, and the history and importance figures.
Trial checkpoints are deleted after each trial; their history.csv stays.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
import warnings
from dataclasses import replace
from typing import Any

import optuna
import yaml
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

from linebridge.core.config import (
    Config,
    UserError,
    add_config_arguments,
    declared_method,
    load_config,
    merge,
)
from linebridge.core.io import save_with, write_atomic, write_json
from linebridge.core.tracking import git_commit
from linebridge.tuning.objective import (
    Setup,
    TunePaths,
    ValidationJudge,
    fingerprint,
    nested,
    run_trial,
)
from linebridge.tuning.storage import FINISHED, fail_dead_workers_trials, n_finished, open_storage, study_summary


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
    judge = ValidationJudge(setup.cfg)
    tally = {"done": 0, "failed": 0}

    def stop_when_enough(study: optuna.Study, trial: FrozenTrial) -> None:
        tally["done" if trial.state in FINISHED else "failed"] += 1
        if tally["done"] >= quota or tally["failed"] >= setup.tune["max_failed"]:
            study.stop()

    study.optimize(lambda trial: run_trial(trial, setup, judge), callbacks=[stop_when_enough], catch=(Exception,))


def write_outputs(study: optuna.Study, summary: dict[str, Any], paths: TunePaths) -> None:
    """best_params.yaml (the adopted values only), the summary JSON and both figures, each written atomically."""
    check = summary.get("confirm") or {}
    adopted = summary["best_params"] if check.get("adopted") else {}
    verdict = (
        f"adopted: {check['verdict']}"
        if check.get("adopted")
        else f"none adopted: {check.get('verdict', 'the confirmation runs have not finished')}"
    )
    header = (
        f"# Written by `linebridge tune` (study {summary['study_name']}, best trial {summary['best_trial']}); "
        f"tuned values the study uses (`linebridge train --tuned`): {verdict}\n"
    )
    write_atomic(paths.best_params, header + yaml.safe_dump(nested(adopted), sort_keys=False))
    write_json(paths.summary, summary)
    write_figures(study, summary, paths)


def confirm(
    cfg: Config, best: dict[str, float], tune: Config, paths: TunePaths, judge: ValidationJudge, workers: int = 1
) -> dict:
    """Re-train the default and the best values at the full recipe with tune.confirm_seeds; adopt beyond seed noise.

    Trials are short and single-seed, so the best trial is partly luck. Adopted only when the
    tuned values are better on every confirmation seed and their mean gain in the objective
    exceeds the larger seed-to-seed standard deviation of the two configurations. The runs
    train `workers` at once (each resumes where a killed one stopped).
    """
    import numpy as np

    runs = []
    for label, values in (("default", {}), ("tuned", best)):
        for seed in tune["confirm_seeds"]:
            run_cfg = merge(cfg, nested(values), f"tune confirmation ({label})")
            run_cfg.update(seed=seed, experiment=f"{cfg['experiment']}-s{seed}")
            run_cfg["train"]["keep_epochs"] = False
            runs.append((label, run_cfg, paths.confirm / f"{label}-s{seed}"))
            print(f"confirmation: {label} values, seed {seed} → {runs[-1][2]}", flush=True)
    jobs = [(run_cfg, cfg["experiment"], out, worker_threads(workers)) for _, run_cfg, out in runs]
    if workers == 1:
        for job in jobs:
            train_confirmation(*job)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(train_confirmation, *zip(*jobs)))
    scores: dict[str, list[dict[str, float]]] = {"default": [], "tuned": []}
    for label, _, out in runs:
        ran = json.loads((out / "metrics.json").read_text())  # how the run went: where it stopped and its time
        facts = {k: ran[k] for k in ("epochs_run", "best_epoch", "converged", "wall_time_s")}
        scores[label].append({**judge(out / "best.pt"), **facts, "at_once": workers})
    default = np.array([s["objective"] for s in scores["default"]])
    tuned = np.array([s["objective"] for s in scores["tuned"]])
    gain = float(np.mean(default - tuned))
    noise = float(max(np.std(default, ddof=1), np.std(tuned, ddof=1))) if len(default) > 1 else float("nan")
    adopted = bool(np.all(tuned < default) and gain > noise)
    return {
        "seeds": list(tune["confirm_seeds"]),
        "default": scores["default"],
        "tuned": scores["tuned"],
        "gain": gain,
        "seed_sd": noise,
        "adopted": adopted,
        "rule": "better on every seed and mean gain > the larger seed SD of the two configurations",
        "verdict": f"objective {np.mean(tuned):.3f} (tuned) vs {np.mean(default):.3f} (default) over seeds "
        f"{list(tune['confirm_seeds'])}: gain {gain:+.3f}, seed SD {noise:.3f}",
    }


def train_confirmation(run_cfg: Config, arm: str, out, threads: int) -> None:
    """One confirmation run at the full recipe (in a worker process when several run at once)."""
    import torch

    from linebridge.bbdm.train import train
    from linebridge.core.runs import Paths

    torch.set_num_threads(threads)
    train(run_cfg, Paths.for_experiment(arm, out), resume=True, log_mlflow=False, progress=False)


def worker_threads(workers: int) -> int:
    """Threads for each of `workers` processes: $OMP_NUM_THREADS when set, else their share of the cores (on a
    2-core machine that something else also loads, two intra-op threads per process train ~20x slower than one)."""
    return int(os.environ.get("OMP_NUM_THREADS") or 0) or max(1, (os.cpu_count() or 1) // workers)


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
        study.set_user_attr("experiment", setup.cfg["experiment"])
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

    from linebridge.core import tracking

    tags = {
        "stage": "tune",
        "experiment_id": setup.cfg["experiment"],
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

    from linebridge.core import tracking

    values = {"wall_time_s": wall_time_s, **{f"trials_{k}": v for k, v in summary["counts"].items()}}
    if summary["best_value"] is not None:
        values["best_value"] = summary["best_value"]
    tracking.log_metrics(values, summary["counts"]["COMPLETE"] + summary["counts"]["PRUNED"])
    for path in (paths.best_params, paths.summary, paths.history_png, paths.importances_png):
        if path.exists():
            mlflow.log_artifact(str(path), "tune")


def run_workers(setup: Setup, remaining: int, workers: int, first_seed: int) -> list[int]:
    """Share `remaining` trials among `workers` processes (in this one when 1), each with `worker_threads`;
    their exit codes."""
    threads = worker_threads(workers)
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
    add_config_arguments(parser)
    parser.add_argument(
        "--trials", type=int, default=None, help="COMPLETE + PRUNED trials the study ends with; None: tune.trials"
    )
    parser.add_argument("--workers", type=int, default=None, help="parallel worker processes; None: tune.workers")
    parser.add_argument("--storage", default=None, help="journal file path or RDB URL; None: tune.storage")
    parser.add_argument("--study-name", default=None, help="None: METHOD-PROFILE, e.g. A5-default")
    parser.add_argument("--out", default=None, help="put storage, trials and outputs in this folder")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")


def main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    commit = git_commit()  # this sitting's, before it writes the (tracked) journal, which would read as a dirty tree
    cfg = load_config(declared_method(), args.profile, args.overrides)  # the judge samples with params.yaml `eval`
    full = copy.deepcopy(cfg)  # the full recipe, for the confirmation runs
    full.pop("tune")
    tune = cfg.pop("tune")
    for key in ("trials", "workers"):
        if getattr(args, key) is not None:
            tune[key] = getattr(args, key)
    if tune["trials"] < 1 or tune["workers"] < 1:
        raise UserError(f"--trials and --workers must be at least 1, got {tune['trials']} and {tune['workers']}")
    budget = {  # every trial trains exactly tune.epochs: the pruner compares trials epoch by epoch
        "train": {
            "epochs": tune["epochs"],
            "max_train_images": tune["max_train_images"],
            "checkpoint_every": 1,
            "stop_at_convergence": False,
        }
    }
    cfg = merge(cfg, budget, "params.yaml tune")
    paths = TunePaths.resolve(tune, args.out, args.storage)
    setup = Setup(cfg, tune, paths, args.study_name or f"{cfg['experiment']}-{cfg['profile']}", None, None, "unknown")
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
                f"study {setup.study_name}: {n_finished(study)} of {tune['trials']} trials finished; "
                f"running {remaining} on {workers} worker(s); storage {paths.storage}",
                flush=True,
            )
            codes = run_workers(setup, remaining, workers, tune["seed"] + len(study.trials))
            if any(codes):
                print(f"worker exit codes {codes}: see the messages above")
        summary = study_summary(storage, setup.study_name)
        summary["objective"] = "mean of validation self ΔE00 and cross_gt tone ΔE00 at the study's sampler (last epoch)"
        summary["sampler"] = {k: cfg["eval"][k] for k in ("sample_step", "eta", "deterministic", "weights")}
        summary["commit"] = commit
        summary["trial_budget"] = {k: tune[k] for k in ("epochs", "max_train_images")}
        if summary["best_trial"] is not None and n_finished(study) >= tune["trials"]:
            judge = ValidationJudge(cfg)
            summary["confirm"] = confirm(full, summary["best_params"], tune, paths, judge, tune["confirm_workers"])
        if summary["best_trial"] is not None:
            write_outputs(study, summary, paths)
        if setup.mlflow_run_id:
            log_parent_run(summary, paths, time.perf_counter() - started)
        status = "FINISHED"
    finally:
        if setup.mlflow_run_id:
            from linebridge.core.tracking import end_run

            end_run(status)
    print(json.dumps(summary, indent=2))
    missing = tune["trials"] - n_finished(study)
    if summary["best_trial"] is None or missing > 0:
        print(
            f"linebridge tune: {missing} of {tune['trials']} trials still to run "
            f"({summary['counts']['FAIL']} failed so far); run the same command again to continue"
        )
        return 3
    return 0
