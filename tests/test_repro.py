"""`linebridge repro`: stage families, the ETA, the clock format; two stages at once on a real DVC repo of trivial
stages, and a killed run that goes on next time.

The command also runs the whole tiny study in tests/test_pipeline.py (slow)."""

from __future__ import annotations

import json
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
    Plan,
    Scheduler,
    clock,
    dag,
    eta,
    family,
    from_scratch,
    recorded_times,
    seed_of,
    to_run,
    topological,
)


def test_family_is_the_stage_name_before_the_at():
    assert family("train@A5-s0") == "train" and family("train-baseline@scft") == "train-baseline"
    assert family("prepare") == "prepare"
    assert seed_of("train@A5-s2") == 2 and seed_of("evaluate@A0-s1") == 1 and seed_of("train-baseline@scft") == 0


def test_eta_uses_this_sittings_mean_per_family_else_the_first_guess():
    stages = ["train@A0-s1", "train@A0-s2", "evaluate@A0-s1", "report", "release"]
    assert eta(stages, {}) == pytest.approx(2 * FIRST_GUESS["train"] + FIRST_GUESS["evaluate"] + 60 + DEFAULT_GUESS)
    took = {"train": [100.0, 300.0], "evaluate": [10.0]}
    assert eta(stages, took) == pytest.approx(2 * 200.0 + 10.0 + FIRST_GUESS["report"] + DEFAULT_GUESS)


def test_the_record_gives_first_guesses_at_as_many_at_once_and_the_from_scratch_time():
    record = {
        "stages": {
            "train@A0-s0": {"seconds": 1000.0, "at_once": 2},
            "train@A0-s1": {"seconds": 1200.0, "at_once": 2},
            "train@A3-s0": {"seconds": 700.0, "at_once": 1},
            "evaluate@A0-s0": {"seconds": 60.0, "at_once": 2},
            "train@A3-s1": {"interrupted_s": 300.0},  # killed part-way: no time of its own yet
        }
    }
    assert recorded_times(record, 2) == {"train": [1000.0, 1200.0], "evaluate": [60.0]}
    assert recorded_times(record, 1) == {"train": [700.0]}
    assert from_scratch(record) == pytest.approx((1000 + 1200 + 60) / 2 + 700)


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


def clone_status(seeds: dict[str, bool]) -> tuple[dict[str, set[str]], dict[str, list]]:
    """The DAG and `dvc status` (the shapes DVC 3 prints) of a study as a fresh clone sees it: prepare, then per run
    train and evaluate; the report reads every evaluation, the trainings' committed metrics (a folder, so DVC links
    it to every training) and one checkpoint. `seeds`: run → recorded in dvc.lock (else never run)."""
    prep = "outputs/prepared"
    before = {"prepare": set()}
    status = {"prepare": [{"changed outs": {prep: "not in cache"}}]}
    for run, recorded in seeds.items():
        ckpt = f"outputs/train/{run}"
        before |= {f"train@{run}": {"prepare"}, f"evaluate@{run}": {f"train@{run}", "prepare"}}
        status[f"train@{run}"] = [{"changed deps": {prep: "deleted"}}, {"changed outs": {ckpt: "not in cache"}}]
        evaluate = [{"changed deps": {prep: "deleted", ckpt: "deleted"}}]
        status[f"evaluate@{run}"] = (
            evaluate if recorded else [*evaluate, {"changed outs": {f"metrics/eval/{run}": "deleted"}}]
        )
        if not recorded:
            status[f"train@{run}"][1] = {"changed outs": {ckpt: "deleted"}}
    before["report"] = {stage for stage in before if stage != "prepare"} | {"prepare"}
    status["report"] = [
        {"changed deps": {"metrics/eval": "modified", prep: "deleted", "outputs/train/A5-s0": "deleted"}}
    ]
    return before, status


def test_a_clone_runs_what_changed_and_what_it_needs_of_the_stages_whose_data_it_lacks():
    """A clone of a study stopped part-way (A5-s1 never ran): it runs A5-s1's chain and the report after it, and
    prepare and train@A5-s0 again first because those stages read their outputs; train@A0-s0, linked to the report
    only by the committed metrics it wrote, and the recorded evaluations stay done."""
    before, status = clone_status({"A0-s0": True, "A5-s0": True, "A5-s1": False})
    recorded = set(before) - {"train@A5-s1", "evaluate@A5-s1"}
    stages, restore = to_run(before, status, recorded)
    assert stages == ["prepare", "train@A5-s0", "train@A5-s1", "evaluate@A5-s1", "report"]
    assert restore == {"prepare", "train@A5-s0"}


def test_a_stage_run_again_only_for_its_outputs_starts_after_the_new_work():
    """Of the stages ready at once, evaluations first, then trainings seed by seed; a training run again only to
    bring back a checkpoint this clone lacks waits until every new training has started."""
    waits = {s: set() for s in ("train@A5-s0", "train@A0-s2", "evaluate@A0-s1", "train@A0-s1", "train@A3-s1")}
    scheduler = Scheduler("dvc", Plan(waits, restore=frozenset({"train@A5-s0"})), 2, {})
    assert sorted(waits, key=scheduler.priority) == [
        "evaluate@A0-s1",
        "train@A0-s1",
        "train@A3-s1",
        "train@A0-s2",
        "train@A5-s0",
    ]


def test_a_clone_of_a_finished_study_has_nothing_to_run_until_something_changes():
    before, status = clone_status({"A0-s0": True, "A5-s0": True})
    del status["report"]
    assert to_run(before, status, set(before)) == ([], set())
    changed = {**status, "train@A0-s0": [{"changed deps": {"params.yaml": {"train": "modified"}}}]}
    assert to_run(before, changed, set(before))[0] == ["prepare", "train@A0-s0", "evaluate@A0-s0", "report"]
    gone = {**status, "evaluate@A0-s0": [{"changed deps": {"src/linebridge/evaluation": "deleted"}}]}
    assert to_run(before, gone, set(before))[0] == ["evaluate@A0-s0", "report"]  # a deleted source is a change ...
    assert to_run(before, gone, set(before) - {"report"})[0] == ["evaluate@A0-s0", "report"]  # ... a new stage runs


def dvc_repo(root: Path, seconds: int = 3) -> Path:
    """A git + DVC repo with stages a and b (independent, `seconds` each) and c after both; params.yaml marks the
    root. a keeps a persistent folder (a.state), as a training keeps its checkpoints, so an interrupted a goes on
    from it; b starts over."""
    dvc = str(Path(sys.executable).parent / "dvc")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([dvc, "init", "-q"], cwd=root, check=True)
    (root / "params.yaml").write_text("x: 1\n")
    # each stage notes when its command starts and ends (X.start, X.end), then writes its output; interrupted, it
    # takes 2 s to stop, as a training saving its checkpoint does
    stage = "    cmd: trap 'sleep 2; exit 130' INT; "
    stage += f"date +%s.%N > {{0}}.start && sleep {seconds} && date +%s.%N > {{0}}.end && echo {{0}} > {{0}}.txt\n"
    stage += "    outs: [{0}.txt{1}]\n"
    (root / "dvc.yaml").write_text(
        "stages:\n  a:\n"
        + stage.format("a", ", {a.state: {persist: true}}").replace("cmd: ", "cmd: mkdir -p a.state; ")
        + "  b:\n"
        + stage.format("b", "")
        + "  c:\n    cmd: cat a.txt b.txt > c.txt\n    deps: [a.txt, b.txt]\n    outs: [c.txt]\n"
    )
    return root


@pytest.mark.slow
def test_two_stages_at_once_each_after_what_it_waits_for(tmp_path, monkeypatch):
    """Real DVC: a and b run side by side (their commands' clocks overlap), c after both, every stage
    in dvc.lock; a second run has nothing to do."""
    root = dvc_repo(tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    said = subprocess.run(["linebridge", "repro", "--jobs", "2"], cwd=root, env=env, capture_output=True, text=True)
    assert said.returncode == 0, said.stdout + said.stderr
    at = {f"{x}.{e}": float((root / f"{x}.{e}").read_text()) for x in "ab" for e in ("start", "end")}
    assert at["a.start"] < at["b.end"] and at["b.start"] < at["a.end"], at  # a and b ran at the same time
    assert (root / "c.txt").read_text() == "a\nb\n"
    assert said.stdout.index("] c —") > max(said.stdout.index("a done"), said.stdout.index("b done"))
    assert set(yaml.safe_load((root / "dvc.lock").read_text())["stages"]) == {"a", "b", "c"}
    record = json.loads((root / "metrics" / "repro.json").read_text())
    assert set(record["stages"]) == {"a", "b", "c"} and all(e["at_once"] == 2 for e in record["stages"].values())
    assert record["stages"]["a"]["seconds"] >= 3 and record["stages"]["a"]["threads"] >= 1
    assert record["from_scratch_s"] == pytest.approx(sum(e["seconds"] for e in record["stages"].values()) / 2, abs=0.1)
    again = subprocess.run(["linebridge", "repro"], cwd=root, env=env, capture_output=True, text=True)
    assert "up to date: nothing to run" in again.stdout


@pytest.mark.slow
def test_killed_it_stops_its_stages_and_goes_on_next_time(tmp_path):
    root = dvc_repo(tmp_path, seconds=10)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.Popen(  # as a script's `make repro &` starts it: SIGINT ignored
        ["linebridge", "repro"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    deadline = time.time() + 60
    while not ((root / "a.start").exists() and (root / "b.start").exists()) and time.time() < deadline:
        time.sleep(0.2)  # until both stages' commands run
    proc.send_signal(signal.SIGTERM)
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)  # an impatient second kill while the stages stop must not cut short the recording
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted: a, b stopped" in out, out
    lock = yaml.safe_load((root / "dvc.lock").read_text()) if (root / "dvc.lock").exists() else {}
    assert not lock.get("stages") and not (root / "c.txt").exists(), lock
    interrupted = json.loads((root / "metrics" / "repro.json").read_text())["stages"]
    assert set(interrupted) == {"a", "b"} and all(e["interrupted_s"] > 0 for e in interrupted.values())
    said = subprocess.run(["linebridge", "repro"], cwd=root, env=env, capture_output=True, text=True)
    assert said.returncode == 0 and (root / "c.txt").read_text() == "a\nb\n", said.stdout
    stages = json.loads((root / "metrics" / "repro.json").read_text())["stages"]
    # a went on from its a.state: both attempts are its time; b started over: its first attempt was time lost
    assert stages["a"]["seconds"] >= 10 + interrupted["a"]["interrupted_s"] and "lost_s" not in stages["a"]
    assert stages["b"]["seconds"] >= 10
    assert stages["b"]["lost_s"] == interrupted["b"]["interrupted_s"]
    assert not any("interrupted_s" in e for e in stages.values())


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
