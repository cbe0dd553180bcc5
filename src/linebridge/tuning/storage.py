"""Where the study lives: a journal file or an RDB, recovery of trials whose worker died, and its summary.

A journal file (safe for several processes on one machine) is the default; an RDB URL
(`sqlite:///…`, `postgresql://…`) gets heartbeats, and a trial whose worker stops beating
is failed and queued again once. A journal has no heartbeat, so at start a RUNNING trial
whose worker process on this host is gone is treated the same way. The summary is read
from the storage alone, so rerunning a finished study rewrites identical files.
"""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
STALE_RETRIES = 1  # a trial whose worker died is queued again this many times


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


def counts(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    return {state.name: sum(t.state == state for t in trials) for state in TrialState}


def n_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


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
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)  # seeded: equal studies, equal numbers
        summary["importances"] = optuna.importance.get_param_importances(study, evaluator=evaluator)
    else:
        summary["importances_note"] = f"{len(complete)} COMPLETE trial(s); importances need at least 2"
    return summary
