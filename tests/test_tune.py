"""Optuna tuning: parallel workers on one journal, kill -9 and resume, failed trials, outputs.

Real Optuna storages (journal file, sqlite RDB) and a real MLflow sqlite store; tiny trials.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from linebridge.cli import main as cli_main
from linebridge.core.config import load_config, tuned_overrides
from linebridge.tuning.storage import FINISHED, open_storage, study_summary

TUNE = ["tune", "--profile", "tiny"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # tiny nets gain nothing from 2 threads; a loaded box loses a lot
STUDY = "A5-tiny"  # the study.method of params.yaml, tiny profile


def load(out: Path, storage: str | None = None) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=open_storage(storage or str(out / "optuna.journal")))


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=FINISHED)


def mlflow_client(db: Path):
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{db}")


@pytest.fixture(scope="module")
def parallel_study(tiny_study, tmp_path_factory) -> Path:
    """4 trials by 2 spawned workers against one journal file, logged to MLflow."""
    out = tmp_path_factory.mktemp("tune_parallel")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tiny_study)
        mp.delenv("DVC_ROOT", raising=False)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{out / 'mlflow.db'}")
        for key, value in ONE_THREAD.items():
            mp.setenv(key, value)
        assert cli_main([*TUNE, "--trials", "4", "--workers", "2", "--out", str(out)]) == 0
    return out


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    for key, value in ONE_THREAD.items():
        monkeypatch.setenv(key, value)


@pytest.mark.slow  # an Optuna study: 4 trials by 2 spawned workers
def test_two_workers_share_one_journal(parallel_study):
    study = load(parallel_study)
    trials = finished(study)
    assert len(trials) == 4 and len(study.trials) == 4
    pids = {t.user_attrs["pid"] for t in trials}
    assert len(pids) == 2 and os.getpid() not in pids, "both spawned workers ran trials"


@pytest.mark.slow  # the 4-trial study
def test_trials_are_nested_mlflow_runs(parallel_study):
    client = mlflow_client(parallel_study / "mlflow.db")
    experiment = client.get_experiment_by_name("tune")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.data.metrics["best_value"] == pytest.approx(
        study_summary(str(parallel_study / "optuna.journal"), STUDY)["best_value"]
    )
    study = load(parallel_study)
    for trial in finished(study):
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["optuna_state"] == trial.state.name
        assert run.info.status == {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED"}[trial.state]
        assert float(run.data.params["loss.lambda_edge"]) == trial.params["loss.lambda_edge"]
        history = client.get_metric_history(run.info.run_id, "objective")  # the judge's value, per epoch
        assert {m.step: m.value for m in history} == trial.intermediate_values


@pytest.mark.slow  # the 4-trial study
def test_summary_figures_and_best_params(parallel_study, tmp_path):
    summary = json.loads((parallel_study / "tune.json").read_text())
    assert summary["counts"]["COMPLETE"] + summary["counts"]["PRUNED"] == 4 and summary["counts"]["FAIL"] == 0
    assert set(summary["best_params"]) == {"loss.lambda_edge", "augment.tps_scale"}
    space = load_config("A3", "tiny")["tune"]["space"]
    for key, value in summary["best_params"].items():
        section, name = key.split(".")
        assert space[section][name][0] <= value <= space[section][name][1]
    assert set(summary["importances"]) == set(summary["best_params"]) and summary["importances_note"] is None
    assert "ΔE00" in summary["objective"] and summary["sampler"]["sample_step"] >= 2
    for name in ("tune_history.png", "tune_importances.png"):
        assert (parallel_study / name).read_bytes()[:4] == b"\x89PNG"
    assert not list(parallel_study.glob(".*.tmp"))
    assert not list((parallel_study / "trials").rglob("*.pt")), "trial checkpoints are removed"

    # The confirmation: default and best re-trained at the full recipe. The tiny profile confirms on one seed, so
    # the seed noise cannot be estimated and nothing is adopted, whatever the gain (the rule: the test below).
    check = summary["confirm"]
    assert check["seeds"] == [1] and len(check["default"]) == len(check["tuned"]) == 1
    assert math.isnan(check["seed_sd"]) and check["adopted"] is False
    assert tuned_overrides(parallel_study / "best_params.yaml") == []
    assert "none adopted" in (parallel_study / "best_params.yaml").read_text()


@pytest.mark.parametrize(
    ("default", "tuned", "gain", "seed_sd", "adopted"),
    [
        ([10.0, 12.0], [8.0, 9.0], 2.5, 2**0.5, True),  # better on both seeds, by more than the seed SD √2
        ([10.0, 12.0], [9.0, 11.0], 1.0, 2**0.5, False),  # better on both seeds, by less than the seed SD
        ([10.0, 10.0, 10.0], [7.0, 7.0, 10.1], 5.9 / 3, 3.1 / 3**0.5, False),  # beyond the SD, worse on seed 3
    ],
)
def test_confirmation_adopts_a_gain_on_every_seed_beyond_seed_noise(
    tmp_path, monkeypatch, default, tuned, gain, seed_sd, adopted
):
    """Objective values (lower is better) given by hand; gain = mean(default − tuned), seed SD = the larger SD."""
    import linebridge.bbdm.train as T
    from linebridge.tuning.objective import TunePaths
    from linebridge.tuning.study import confirm

    def fake_train(cfg, paths, **kwargs):  # what a run leaves: where it stopped and its time
        paths.out.mkdir(parents=True, exist_ok=True)
        facts = {"epochs_run": 3, "best_epoch": 3, "converged": True, "wall_time_s": 1.5}
        paths.metrics.write_text(json.dumps(facts))

    monkeypatch.setattr(T, "train", fake_train)
    seeds = list(range(len(default)))
    scores = {f"default-s{s}": v for s, v in zip(seeds, default)} | {f"tuned-s{s}": v for s, v in zip(seeds, tuned)}
    cfg = load_config("A3", "tiny")
    tune = {**cfg["tune"], "confirm_seeds": seeds}
    paths = TunePaths.resolve(tune, tmp_path, None)
    check = confirm(cfg, {"loss.lambda_edge": 1.5}, tune, paths, lambda path: {"objective": scores[path.parent.name]})
    assert check["gain"] == pytest.approx(gain) and check["seed_sd"] == pytest.approx(seed_sd)
    assert check["adopted"] is adopted
    ran = {"epochs_run": 3, "best_epoch": 3, "converged": True, "wall_time_s": 1.5, "at_once": 1}
    assert check["default"][0] == {"objective": default[0], **ran}


def test_tuned_values_apply_where_their_component_is_on(tmp_path):
    best = tmp_path / "best_params.yaml"
    best.write_text("loss:\n  lambda_edge: 1.5\naugment:\n  tps_scale: 0.3\n")
    overrides = tuned_overrides(best)
    assert overrides == ["loss.lambda_edge=1.5", "augment.tps_scale=0.3"]
    cfg = load_config("A4", "tiny", overrides)
    assert (cfg["loss"]["lambda_edge"], cfg["augment"]["tps_scale"]) == (1.5, 0.3)
    # Only where the component is on: A0/A1 keep λ_edge = 0, A0-A2 do not warp references.
    assert tuned_overrides(best, load_config("A1", "tiny")) == []
    assert tuned_overrides(best, load_config("A2", "tiny")) == overrides[:1]
    assert tuned_overrides(tmp_path / "missing.yaml") == []


@pytest.mark.slow  # the 4-trial study
def test_optuna_cli_reads_the_journal(parallel_study):
    optuna_cli = Path(sys.executable).parent / "optuna"
    cmd = [
        str(optuna_cli),
        "trials",
        "--storage",
        str(parallel_study / "optuna.journal"),
        "--storage-class",
        "JournalFileBackend",
        "--study-name",
        STUDY,
        "-f",
        "json",
    ]
    rows = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    assert sorted(r["number"] for r in rows) == [0, 1, 2, 3]


@pytest.mark.slow  # the 4-trial study
def test_other_config_refuses_to_continue_the_study(parallel_study, in_study, capsys):
    assert cli_main([*TUNE, "--set", "tune.epochs=1", "--out", str(parallel_study)]) == 2
    assert "was run with another configuration" in capsys.readouterr().err
    assert len(load(parallel_study).trials) == 4


def test_the_baselines_settings_are_not_part_of_a_studys_configuration():
    """A trial trains the method, never a GAN baseline: a longer baseline schedule keeps the study going."""
    from linebridge.tuning.objective import fingerprint

    cfg = load_config("A5", "tiny")
    space = cfg["tune"]["space"]
    longer = load_config("A5", "tiny", ["baselines.pix2pix.epochs=99"])
    assert fingerprint(cfg, space) == fingerprint(longer, space)
    assert fingerprint(cfg, space) != fingerprint(load_config("A5", "tiny", ["train.lr=1e-3"]), space)


@pytest.mark.slow  # a study, killed and run again
def test_kill9_then_resume_keeps_earlier_trials(in_study, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "linebridge.cli", *TUNE, "--trials", "2", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=in_study, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    before: list[optuna.trial.FrozenTrial] = []
    while proc.poll() is None and time.time() < deadline:
        if (out / "optuna.journal").exists():
            study = load(out)
            before = finished(study)
            running = study.get_trials(states=(TrialState.RUNNING,))
            if before and running and "mlflow_run_id" in running[0].user_attrs:  # inside its training
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    study = load(out)
    killed = study.get_trials(states=(TrialState.RUNNING,))
    assert before and len(killed) == 1 and len(finished(study)) < 2, "killed mid-trial after at least one finished"

    assert cli_main([*TUNE, "--trials", "2", "--out", str(out)]) == 0
    study = load(out)
    assert len(finished(study)) == 2
    after = {t.number: t for t in study.trials}
    for trial in before:  # kept as they were
        assert after[trial.number].params == trial.params and after[trial.number].value == trial.value
    lost = after[killed[0].number]
    assert lost.state == TrialState.FAIL
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == lost.number]
    assert len(retried) == 1 and retried[0].state in FINISHED and retried[0].params == lost.params
    client = mlflow_client(tmp_path / "mlflow.db")
    assert client.get_run(lost.user_attrs["mlflow_run_id"]).info.status == "KILLED"
    parents = {client.get_run(t.user_attrs["mlflow_run_id"]).data.tags["mlflow.parentRunId"] for t in study.trials}
    assert parents == {study.user_attrs["mlflow_run_id"]}, "the restarted run continues the same parent run"


@pytest.mark.slow  # a study
def test_failed_trial_is_recorded_and_the_study_goes_on(in_study, tmp_path, monkeypatch):
    import linebridge.bbdm.train as T

    real = T.diffusion_loss
    calls = {"n": 0}

    def nan_in_first_trial(*args, **kwargs):
        loss, parts = real(*args, **kwargs)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 1:
                return loss * float("nan"), parts
        return loss, parts

    monkeypatch.setattr(T, "diffusion_loss", nan_in_first_trial)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"  # the RDB path: heartbeats, stale-trial retries
    assert cli_main([*TUNE, "--trials", "2", "--storage", storage, "--out", str(tmp_path / "rdb")]) == 0
    study = load(tmp_path, storage)
    assert [t.state for t in study.trials][0] == TrialState.FAIL
    assert (
        study.trials[0].user_attrs["error"].startswith("TrainingDiverged")
        and "nan" in study.trials[0].user_attrs["error"]
    )
    assert len(finished(study)) == 2 and len(study.trials) == 3
    run = mlflow_client(tmp_path / "mlflow.db").get_run(study.trials[0].user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["optuna_state"] == "FAIL"
    assert study_summary(storage, STUDY)["counts"]["FAIL"] == 1


@pytest.mark.slow  # three studies
def test_one_worker_is_reproducible_and_a_finished_study_reruns_nothing(in_study, tmp_path):
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        assert cli_main([*TUNE, "--trials", "2", "--out", str(out), "--no-mlflow"]) == 0
    a, b = (load(out).trials for out in outs)
    assert [(t.params, t.value, t.state) for t in a] == [(t.params, t.value, t.state) for t in b]
    assert (outs[0] / "best_params.yaml").read_bytes() == (outs[1] / "best_params.yaml").read_bytes()

    summary = (outs[0] / "tune.json").read_bytes()
    assert cli_main([*TUNE, "--trials", "2", "--out", str(outs[0]), "--no-mlflow"]) == 0
    assert len(load(outs[0]).trials) == 2 and (outs[0] / "tune.json").read_bytes() == summary


@pytest.mark.slow  # a study
def test_pruned_trials_count_and_one_complete_trial_gives_an_importances_note(in_study, tmp_path, monkeypatch):
    import linebridge.tuning.study as tune_module

    calls = {"n": 0}

    def worse_every_epoch(self, path):  # the judge's values rise call by call: trials 1 and 2 lose at epoch 1
        calls["n"] += 1
        return {"objective": float(calls["n"])}

    monkeypatch.setattr(tune_module.ValidationJudge, "__call__", worse_every_epoch)
    out = tmp_path / "pruned"
    assert (
        cli_main(
            [
                *TUNE,
                "--trials",
                "3",
                "--set",
                "tune.pruner_startup_trials=1",
                "--set",
                "tune.pruner_first_epoch=1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    study = load(out)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.PRUNED]
    assert study.trials[1].intermediate_values == {1: 3.0}
    client = mlflow_client(tmp_path / "mlflow.db")
    assert client.get_run(study.trials[1].user_attrs["mlflow_run_id"]).info.status == "KILLED"
    summary = json.loads((out / "tune.json").read_text())
    # the objective is the last epoch's value: trial 0 scored 1.0 after epoch 1 and 2.0 after epoch 2
    assert summary["best_value"] == 2.0 and summary["importances"] == {} and "at least 2" in summary["importances_note"]
    assert (out / "tune_importances.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # a study
def test_a_trial_is_never_pruned_after_its_last_epoch(in_study, tmp_path, monkeypatch):
    """Pruning at the last epoch would discard a trial whose budget is already spent: with pruning allowed only
    there (first epoch 2 of 2), every trial completes although each is worse than the one before."""
    import linebridge.tuning.study as tune_module

    calls = {"n": 0}

    def worse_every_epoch(self, path):
        calls["n"] += 1
        return {"objective": float(calls["n"])}

    monkeypatch.setattr(tune_module.ValidationJudge, "__call__", worse_every_epoch)
    out = tmp_path / "last"
    args = ["--trials", "3", "--set", "tune.pruner_startup_trials=1", "--set", "tune.pruner_first_epoch=2"]
    assert cli_main([*TUNE, *args, "--out", str(out)]) == 0
    assert [t.state for t in load(out).trials] == [TrialState.COMPLETE] * 3


@pytest.mark.slow  # the 4-trial study and an optuna-dashboard server
def test_optuna_dashboard_serves_the_study(parallel_study):
    """The README's `optuna-dashboard` command, for real: it serves the journal the study wrote."""
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dashboard = Path(sys.executable).parent / "optuna-dashboard"
    cmd = [str(dashboard), str(parallel_study / "optuna.journal"), "--storage-class", "JournalFileStorage"]
    proc = subprocess.Popen([*cmd, "--host", "127.0.0.1", "--port", str(port), "--quiet"])
    try:
        deadline, body = time.time() + 60, ""
        while time.time() < deadline and not body:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                    body = response.read().decode()
            except OSError:
                time.sleep(0.5)
        studies = json.loads(body)["study_summaries"]
        assert [s["study_name"] for s in studies] == [STUDY]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
