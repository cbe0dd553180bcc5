"""Training: determinism, kill -9 and resume, corrupted checkpoints, NaN, MLflow logging."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from linebridge.bbdm.losses import region_weighted_l1
from linebridge.bbdm.train import train, training_timesteps
from linebridge.cli import main as cli_main
from linebridge.core import checkpoint
from linebridge.core.config import load_config
from linebridge.core.runs import Paths, TrainingDiverged

EPOCHS = ["--set", "train.epochs=3"]


def run_train(out: Path, *extra: str) -> int:
    return cli_main(
        ["train", "--experiment", "A3", "--profile", "tiny", "--no-mlflow", "--out", str(out), *EPOCHS, *extra]
    )


@pytest.fixture(scope="module")
def reference_run(tiny_study, tmp_path_factory) -> Path:
    """An uninterrupted 3-epoch tiny A3 run that the other tests compare against."""
    out = tmp_path_factory.mktemp("ref") / "A3"
    old = os.getcwd()
    os.chdir(tiny_study)
    try:
        assert run_train(out) == 0
    finally:
        os.chdir(old)
    return out


def test_same_seed_same_checkpoint_bytes(in_study, reference_run, tmp_path, sha):
    assert run_train(tmp_path / "again") == 0
    for name in ("last.pt", "best.pt", "history.csv"):
        assert sha(tmp_path / "again" / name) == sha(reference_run / name), name


def test_other_seed_differs(in_study, reference_run, tmp_path, sha):
    assert run_train(tmp_path / "seed1", "--set", "seed=1") == 0
    assert sha(tmp_path / "seed1" / "last.pt") != sha(reference_run / "last.pt")


def test_recipe_options_train_deterministically(in_study, reference_run, tmp_path, sha):
    """Same-tone references, the tone-region weight and high-t draws: a run that replays byte for byte."""
    recipe = ["--set", "augment.reference_source=same_tone", "--set", "loss.tone_weight=5"]
    recipe += ["--set", "train.t_high_share=0.5"]
    assert run_train(tmp_path / "a", *recipe) == 0 and run_train(tmp_path / "b", *recipe) == 0
    assert sha(tmp_path / "a" / "last.pt") == sha(tmp_path / "b" / "last.pt")
    assert sha(tmp_path / "a" / "last.pt") != sha(reference_run / "last.pt")


def test_region_weighted_l1_counts_the_region_weight_times():
    pred, target = torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)
    region = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    assert region_weighted_l1(pred, target, region, 5.0).item() == pytest.approx((5 + 1 + 1 + 1) / 4)
    assert region_weighted_l1(pred, target, region, 1.0).item() == F.l1_loss(pred, target).item()


def test_training_timesteps_uniform_or_weighted_to_the_line_art_end():
    torch.manual_seed(0)
    plain = torch.randint(0, 1000, (64,))
    torch.manual_seed(0)
    assert torch.equal(training_timesteps(64, 1000, 0.0), plain)  # share 0: the uniform stream, unchanged
    t = training_timesteps(40000, 1000, 0.5)
    assert 0 <= t.min() and t.max() <= 999
    assert (t >= 900).float().mean().item() == pytest.approx(0.5 + 0.5 * 0.1, abs=0.01)


def test_kill9_then_resume_gives_same_weights(in_study, reference_run, tmp_path, same_state):
    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "linebridge.cli",
        "train",
        "--experiment",
        "A3",
        "--profile",
        "tiny",
        "--no-mlflow",
        "--out",
        str(out),
        *EPOCHS,
    ]
    proc = subprocess.Popen(cmd, cwd=in_study, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (out / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # somewhere inside epoch 2: mid-batch, mid-validation or mid-write
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = checkpoint.load(out / "last.pt")["epoch"]
    assert killed_at < 3, "the run finished before it could be killed; the test proves nothing"
    assert run_train(out, "--resume") == 0
    # Same weights, EMA, optimiser, scheduler and RNG state, bit for bit. (The files' bytes can
    # differ: a state that went through torch.load serialises its storages in another layout.)
    for name in ("last.pt", "best.pt"):
        assert same_state(checkpoint.load(out / name), checkpoint.load(reference_run / name)), name
    assert (out / "history.csv").read_text() == (reference_run / "history.csv").read_text()


def test_corrupted_checkpoint_is_a_clear_error(in_study, reference_run, tmp_path, capsys):
    out = tmp_path / "corrupt"
    out.mkdir()
    data = (reference_run / "last.pt").read_bytes()
    (out / "last.pt").write_bytes(data[: len(data) // 2])
    assert run_train(out, "--resume") == 2
    err = capsys.readouterr().err
    assert "truncated or corrupted" in err and str(out / "last.pt") in err


def test_checkpoint_loading_refuses_pickled_objects(tmp_path):
    bad = tmp_path / "evil.pt"
    torch.save({"kind": checkpoint.BBDM_KIND, "payload": Path("x")}, bad)
    with pytest.raises(checkpoint.CheckpointError, match="disallowed|not a linebridge"):
        checkpoint.load(bad)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(checkpoint.CheckpointError, match="expected 'linebridge-bbdm'"):
        checkpoint.load(other)


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(in_study, tmp_path, monkeypatch):
    import linebridge.bbdm.train as T

    real = T.diffusion_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        loss, parts = real(*args, **kwargs)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 6:  # step 6: inside epoch 2 (4 steps per epoch at the tiny profile)
                return loss * float("nan"), parts
        return loss, parts

    monkeypatch.setattr(T, "diffusion_loss", poisoned)
    cfg = load_config("A3", "tiny", ["train.epochs=3"])
    paths = Paths.for_experiment("A3", tmp_path / "nan")
    with pytest.raises(TrainingDiverged, match="at step 6"):
        train(cfg, paths, log_mlflow=False, progress=False)
    state = checkpoint.load(paths.out / "last.pt")
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_training_logs_to_mlflow(in_study, tmp_path):
    import mlflow

    out = tmp_path / "logged"
    assert cli_main(["train", "--experiment", "A1", "--profile", "tiny", "--out", str(out)]) == 0
    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    run_id = (out / "mlflow_run_id").read_text().strip()
    run = client.get_run(run_id)
    assert run.data.params["model.reference"] == "cross_attention"
    assert run.data.tags["experiment_id"] == "A1" and run.data.tags["git_commit"]
    history = client.get_metric_history(run_id, "val_loss")
    assert [m.step for m in history] == [1, 2]
    artifacts = [a.path for a in client.list_artifacts(run_id, "samples")]
    assert artifacts == ["samples/epoch_001.png", "samples/epoch_002.png"]
    assert run.info.status == "FINISHED"


@pytest.mark.slow  # torchrun: two processes
def test_torchrun_ddp_matches_single_process(in_study, reference_run, tmp_path):
    """2 CPU processes (gloo), global batch 4 = 2 × 2: ranks agree, and the result matches one process.

    Tolerance: AdamW moves each weight by at most ~lr per step whatever the gradient's size, so
    float reduction-order differences can grow to O(lr · steps) = 1e-4 · 12 on near-zero gradients;
    we require max |Δw| < 2e-3 and validation losses equal to 1e-3 relative.
    """
    import csv

    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [
        str(torchrun),
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "linebridge.cli",
        "train",
        "--experiment",
        "A3",
        "--profile",
        "tiny",
        "--no-mlflow",
        "--out",
        str(out),
        *EPOCHS,
    ]
    proc = subprocess.run(cmd, cwd=in_study, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = __import__("json").loads((out / "metrics.json").read_text())
    assert summary["processes"] == 2  # and train() raised if the ranks' weights differed
    ddp, single = checkpoint.load(out / "last.pt"), checkpoint.load(reference_run / "last.pt")
    diff = max((ddp["model"][k] - single["model"][k]).abs().max().item() for k in single["model"])
    assert diff < 2e-3
    rows = lambda p: [float(r["val_loss"]) for r in csv.DictReader((p / "history.csv").open())]  # noqa: E731
    assert rows(out) == pytest.approx(rows(reference_run), rel=1e-3)


def test_convergence_stop_then_longer_cap_replays_an_unstopped_run(in_study, tmp_path, sha, same_state):
    """A run stopped by the rule and resumed under a longer cap, without the stop, ends in the same state as a run
    that trained that long in one go: the schedule follows train.decay_epochs, not the cap, so the stop keys change
    no step (the time-to-convergence benchmark's "2 × past the stop")."""
    import json

    decay = ["--set", "train.decay_epochs=3"]
    stop = ["--set", "train.stop_at_convergence=true", "--set", "train.convergence_gain=10"]
    stop += ["--set", "train.min_epochs=2", "--set", "train.epochs=5"]
    assert run_train(tmp_path / "stopped", *decay, *stop) == 0  # a gain of 10 (1000 %) holds at every check
    summary = json.loads((tmp_path / "stopped" / "metrics.json").read_text())
    assert summary["epochs_run"] == 3 and summary["converged"]  # held at epochs 2 and 3: two ends in a row
    longer = ["--set", "train.epochs=4", "--set", "train.stop_at_convergence=false"]
    assert run_train(tmp_path / "stopped", *decay, *longer, "--resume") == 0
    assert run_train(tmp_path / "straight", *decay, *longer) == 0
    stopped, straight = (checkpoint.load(tmp_path / d / "last.pt", kind=None) for d in ("stopped", "straight"))
    assert same_state(stopped, straight)
    assert sha(tmp_path / "stopped" / "history.csv") == sha(tmp_path / "straight" / "history.csv")


def test_a_resume_under_settings_that_stop_earlier_starts_afresh(in_study, tmp_path, capsys):
    assert run_train(tmp_path / "run", "--set", "train.epochs=3") == 0
    capsys.readouterr()
    assert run_train(tmp_path / "run", "--set", "train.epochs=2", "--resume") == 0
    assert "these settings stop at epoch 2" in capsys.readouterr().out


def test_the_schedule_warms_up_decays_over_decay_epochs_then_holds_the_floor():
    from linebridge.bbdm.train import make_scheduler

    sets = ["train.warmup_steps=2", "train.lr=1e-3", "train.lr_min=1e-4", "train.decay_epochs=2", "train.epochs=9"]
    cfg = load_config("A3", "tiny", sets)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg["train"]["lr"])
    sched = make_scheduler(opt, cfg, steps_per_epoch=3)  # 6 steps of schedule: 2 warm-up, a cosine over 4
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    cosine = [1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(5)]
    assert lrs == pytest.approx([5e-4, 1e-3, *cosine[:4], 1e-4, 1e-4, 1e-4, 1e-4])
