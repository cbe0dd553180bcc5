"""`linebridge repro`: stage families, the ETA, the clock format; two stages at once on a real DVC repo of trivial
stages, and a killed run that goes on next time.

The command also runs the whole tiny study in tests/test_pipeline.py (slow)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from linebridge.repro import (
    AT_ONCE_GAIN,
    DEFAULT_GUESS,
    FIRST_GUESS,
    clock,
    dag,
    eta,
    family,
    to_run,
    topological,
)


def test_family_is_the_stage_name_before_the_at():
    assert family("train@A5-s0") == "train" and family("train-baseline@scft") == "train-baseline"
    assert family("prepare") == "prepare"


def test_eta_uses_this_sittings_mean_per_family_else_the_first_guess():
    stages = ["train@A0-s1", "train@A0-s2", "evaluate@A0-s1", "report", "release"]
    assert eta(stages, {}) == pytest.approx(2 * FIRST_GUESS["train"] + FIRST_GUESS["evaluate"] + 60 + DEFAULT_GUESS)
    took = {"train": [100.0, 300.0], "evaluate": [10.0]}
    assert eta(stages, took) == pytest.approx(2 * 200.0 + 10.0 + FIRST_GUESS["report"] + DEFAULT_GUESS)


def test_clock_reads_minutes_then_hours():
    assert clock(0) == "0 min" and clock(89) == "1 min" and clock(3599) == "1 h 00 min" and clock(13500) == "3 h 45 min"


def test_stages_run_after_the_stages_they_depend_on():
    dot = "\n".join(
        ["strict digraph {", '"data.dvc";', '"prepare";', '"train@A0-s0";', '"evaluate@A0-s0";', '"report";']
        + ['"data.dvc" -> "prepare";', '"evaluate@A0-s0" -> "report";', '"train@A0-s0" -> "evaluate@A0-s0";']
        + ['"prepare" -> "train@A0-s0";', "}"]
    )
    before = dag(dot)
    assert before == {
        "prepare": set(),
        "train@A0-s0": {"prepare"},
        "evaluate@A0-s0": {"train@A0-s0"},
        "report": {"evaluate@A0-s0"},
    }
    assert topological(before) == ["prepare", "train@A0-s0", "evaluate@A0-s0", "report"]


def test_eta_at_two_jobs_shares_the_machine():
    """Two at once: a first guess (one at a time) stretches by 2 / the measured gain; the total is split between
    the jobs; times measured this sitting (already at two at once) are used as they are."""
    stages = ["train@A0-s1", "train@A0-s2"]
    assert eta(stages, {}, jobs=2) == pytest.approx(2 * FIRST_GUESS["train"] / AT_ONCE_GAIN)
    assert eta(stages, {"train": [500.0]}, jobs=2) == pytest.approx(500.0)


def test_a_clone_runs_what_changed_and_what_it_needs_of_the_stages_whose_data_it_lacks():
    """`dvc status` as a fresh clone of a study stopped part-way sees it (the shapes DVC 3 prints): recorded stages
    lack their cached outputs and the outputs they read; A5-s1 was never run. It runs A5-s1 and its evaluation, the
    report after them, and prepare and train@A5-s0 again because those read their outputs; train@A0-s0 and the
    evaluations already recorded stay done."""
    before = {
        "prepare": set(),
        "train@A0-s0": {"prepare"},
        "train@A5-s0": {"prepare"},
        "train@A5-s1": {"prepare"},
        "evaluate@A0-s0": {"train@A0-s0", "prepare"},
        "evaluate@A5-s0": {"train@A5-s0", "prepare"},
        "evaluate@A5-s1": {"train@A5-s1", "prepare"},
        "report": {"evaluate@A0-s0", "evaluate@A5-s0", "evaluate@A5-s1", "train@A5-s0", "prepare"},
    }
    lacks = [{"changed deps": {"outputs/prepared": "deleted"}}, {"changed outs": {"outputs/train/X": "not in cache"}}]
    status = {
        "prepare": [{"changed outs": {"outputs/prepared": "not in cache"}}],
        "train@A0-s0": lacks,
        "train@A5-s0": lacks,
        "train@A5-s1": [
            {"changed deps": {"outputs/prepared": "deleted"}},
            {"changed outs": {"outputs/train": "deleted"}},
        ],
        "evaluate@A0-s0": [{"changed deps": {"outputs/prepared": "deleted", "outputs/train/A0-s0": "deleted"}}],
        "evaluate@A5-s0": [{"changed deps": {"outputs/prepared": "deleted", "outputs/train/A5-s0": "deleted"}}],
        "evaluate@A5-s1": [{"changed outs": {"metrics/eval/A5-s1": "deleted"}}, "changed command"],
        "report": [{"changed deps": {"metrics/eval": "modified"}}],
    }
    recorded = set(before) - {"train@A5-s1", "evaluate@A5-s1"}
    assert to_run(before, status, recorded) == ["prepare", "train@A5-s0", "train@A5-s1", "evaluate@A5-s1", "report"]
    finished = {**status, "train@A5-s1": lacks, "evaluate@A5-s1": status["evaluate@A5-s0"]}
    del finished["report"]
    assert to_run(before, finished, set(before)) == []  # a finished study: nothing to do
    changed = {**finished, "train@A0-s0": [{"changed deps": {"params.yaml": {"train": "modified"}}}]}
    assert to_run(before, changed, set(before)) == ["prepare", "train@A0-s0", "train@A5-s0", "evaluate@A0-s0", "report"]


def dvc_repo(root: Path) -> Path:
    """A git + DVC repo with stages a and b (independent, 3 s each) and c after both; params.yaml marks the root."""
    dvc = str(Path(sys.executable).parent / "dvc")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([dvc, "init", "-q"], cwd=root, check=True)
    (root / "params.yaml").write_text("x: 1\n")
    stage = "    cmd: sleep 3 && echo {0} > {0}.txt\n    outs: [{0}.txt]\n"
    (root / "dvc.yaml").write_text(
        "stages:\n  a:\n"
        + stage.format("a")
        + "  b:\n"
        + stage.format("b")
        + "  c:\n    cmd: cat a.txt b.txt > c.txt\n    deps: [a.txt, b.txt]\n    outs: [c.txt]\n"
    )
    return root


@pytest.mark.slow
def test_two_stages_at_once_each_after_what_it_waits_for(tmp_path, monkeypatch):
    """Real DVC: a and b run side by side (the whole study takes less than their sum), c after both, every stage
    in dvc.lock; a second run has nothing to do."""
    root = dvc_repo(tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    t0 = time.perf_counter()
    said = subprocess.run(["linebridge", "repro", "--jobs", "2"], cwd=root, env=env, capture_output=True, text=True)
    assert said.returncode == 0, said.stdout + said.stderr
    assert time.perf_counter() - t0 < 6 + 10  # a and b at once: 3 s, not 6, plus DVC's own seconds
    assert (root / "c.txt").read_text() == "a\nb\n"
    assert said.stdout.index("] c —") > max(said.stdout.index("a done"), said.stdout.index("b done"))
    assert set(yaml.safe_load((root / "dvc.lock").read_text())["stages"]) == {"a", "b", "c"}
    again = subprocess.run(["linebridge", "repro"], cwd=root, env=env, capture_output=True, text=True)
    assert "up to date: nothing to run" in again.stdout


@pytest.mark.slow
def test_killed_it_stops_its_stages_and_goes_on_next_time(tmp_path):
    root = dvc_repo(tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.Popen(["linebridge", "repro"], cwd=root, env=env, stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (root / "outputs" / "repro" / "b.log").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted: a, b stopped" in out, out
    lock = yaml.safe_load((root / "dvc.lock").read_text()) if (root / "dvc.lock").exists() else {}
    assert not lock.get("stages") and not (root / "c.txt").exists(), lock
    said = subprocess.run(["linebridge", "repro"], cwd=root, env=env, capture_output=True, text=True)
    assert said.returncode == 0 and (root / "c.txt").read_text() == "a\nb\n", said.stdout


@pytest.mark.slow
def test_a_fresh_clone_goes_on_without_redoing_what_was_recorded(tmp_path):
    """Real DVC and git: a clone (no DVC cache) of a finished study has nothing to run; once c's command changes,
    it runs c and, since c reads a.txt and b.txt which the clone lacks, a and b again first."""
    root = tmp_path / "first"
    root.mkdir()
    dvc_repo(root)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    assert subprocess.run(["linebridge", "repro"], cwd=root, env=env, capture_output=True).returncode == 0
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "study"], cwd=root, check=True)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(root), str(clone)], check=True)
    said = subprocess.run(["linebridge", "repro"], cwd=clone, env=env, capture_output=True, text=True)
    assert "up to date: nothing to run" in said.stdout, said.stdout + said.stderr
    dvc_yaml = clone / "dvc.yaml"
    dvc_yaml.write_text(dvc_yaml.read_text().replace("cat a.txt b.txt > c.txt", "cat b.txt a.txt > c.txt"))
    said = subprocess.run(["linebridge", "repro"], cwd=clone, env=env, capture_output=True, text=True)
    assert said.returncode == 0, said.stdout + said.stderr
    assert "3 stages to run" in said.stdout and (clone / "c.txt").read_text() == "b\na\n", said.stdout
