"""`linebridge repro` (what `make repro` runs): `dvc repro`, stage by stage, `--jobs` at once, with progress and an ETA.

The stages still to run are those `dvc status` lists and everything downstream of them; a stage starts once every
stage it depends on (`dvc dag`) has finished. A stage whose only change is data this clone lacks (its dvc.lock entry
committed by the sitting that ran it, its checkpoints in that sitting's DVC cache) counts as done, as under
`dvc repro --allow-missing`, unless a stage to run reads its outputs: then it runs again before that stage, and
after every other stage ready by then, since a sitting stopped sooner would lose it with its clone. So a fresh clone of
a study stopped part-way goes on with the runs still to do, and one of a finished study has nothing to do. (A stage
run again this way gives the same bytes on the same machine; where it does not, what reads its outputs runs again
in a second round, as `dvc repro` would.)

Each stage runs as its own `dvc repro --single-item STAGE`, so DVC records
it in dvc.lock the moment it finishes: a killed study loses at most the stages in progress (and a training stage
resumes from its last epoch). DVC unlocks the repository while a stage's command runs, so several of these run at
once; each gets cores / jobs threads ($OMP_NUM_THREADS). On the developers' 2-core machine two 1-thread trainings
at once finish 1.33 × the trainings an hour of one 2-thread training (`metrics/throughput.json`), hence the
default of 2. Each stage's output goes to outputs/repro/STAGE.log; the terminal gets one line per stage started,
with how many are done, the time so far and an estimate of the time left: a stage's expected time is the mean of
the stages of its family (train, evaluate, ...) recorded at as many at once, else the family's estimate below,
divided among the jobs. The record is metrics/repro.json, committed with dvc.lock: every stage's seconds (those of
the interrupted attempts it went on from included; those of attempts lost with another clone apart, as `lost_s`)
and, summed over the sittings that ran the study, its from-scratch time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from linebridge.core.config import RUN_NAME, UserError, repo_root
from linebridge.core.io import write_json

# Seconds a stage of each family takes on the developers' 2-core machine, one at a time, before this sitting has
# timed one. train: a BBDM run stopped by the convergence rule (25–40 epochs; two at once, the method's runs took
# 1,655–2,739 s each, metrics/tune.json); train-baseline: Pix2Pix's 48 and SCFT's 40 epochs; the rest from the
# committed study's stage times.
FIRST_GUESS = {"train": 1450.0, "train-baseline": 800.0, "evaluate": 60.0, "report": 60.0, "power": 120.0}
DEFAULT_GUESS = 30.0
JOBS = 2  # stages at once by default: the measured best on 2 cores (module docstring) ...
AT_ONCE_GAIN = 1.33  # ... and the trainings an hour it gains over one at a time
LOG_DIR = "outputs/repro"
# Each stage's seconds as `make repro` ran it (committed with dvc.lock): the ETA's first guesses, and the study's
# from-scratch time summed over the sittings that ran it.
RECORD = "metrics/repro.json"
ROUNDS = 3  # passes over the pending stages: a stage run again for missing outputs may change what reads them


def family(stage: str) -> str:
    """'train@A5-s0' → 'train'; 'prepare' → 'prepare'."""
    return stage.split("@", 1)[0]


def seed_of(stage: str) -> int:
    """'train@A5-s2' → 2; 0 for a stage that is not a run's. Trainings start seed by seed, so a study stopped
    part-way has every arm at nearly the same number of seeds."""
    match = RUN_NAME.match(stage.split("@", 1)[-1])
    return int(match["seed"]) if match else 0


def dvc_out(dvc: str, *args: str) -> str:
    out = subprocess.run([dvc, *args], capture_output=True, text=True, cwd=repo_root())
    if out.returncode != 0:
        raise UserError(f"`dvc {' '.join(args)}` failed: {out.stderr.strip()[-500:]}")
    return out.stdout


def dag(dot: str) -> dict[str, set[str]]:
    """Each stage of `dvc dag --dot` output → the stages it depends on directly; the .dvc-tracked data files,
    which are no stages, left out."""
    nodes = re.findall(r'^"([^"]+)";$', dot, flags=re.M)
    edges = re.findall(r'^"([^"]+)" -> "([^"]+)";$', dot, flags=re.M)
    before: dict[str, set[str]] = {n: set() for n in nodes}
    for a, b in edges:
        before.setdefault(b, set()).add(a)
        before.setdefault(a, set())
    return {n: {a for a in deps if not a.endswith(".dvc")} for n, deps in before.items() if not n.endswith(".dvc")}


def topological(before: dict[str, set[str]]) -> list[str]:
    """The stages, each after every stage it depends on (ties: DVC's order)."""
    order: list[str] = []
    while len(order) < len(before):
        ready = [n for n in before if n not in order and before[n] <= set(order)]
        if not ready:
            raise UserError("`dvc dag` has a cycle")
        order += ready
    return order


MISSING = ("not in cache", "deleted")  # how `dvc status` names a file this clone lacks
OUTS, DEPS = "changed outs", "changed deps"


def missing(reasons: list, kind: str) -> set[str]:
    """The paths of `kind` (OUTS or DEPS) that a stage's `dvc status` reasons name as absent from this clone."""
    return {path for r in reasons if isinstance(r, dict) for path, v in r.get(kind, {}).items() if v in MISSING}


def overlaps(a: str, b: str) -> bool:
    """Whether two repo paths are the same or one is a folder holding the other."""
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def lacks_only_data(reasons: list, upstream: set[str]) -> bool:
    """Whether a recorded stage's `dvc status` reasons all name files this clone lacks: outputs not in its cache, and
    dependencies that are outputs (`upstream`) its upstream stages lack. Nothing it computes has changed then; a
    deleted source file or a changed param, command or file is a change."""
    for reason in reasons:
        if not isinstance(reason, dict):  # "changed command", "always changed"
            return False
        for kind, files in reason.items():
            if kind not in (OUTS, DEPS) or any(v not in MISSING for v in files.values()):
                return False  # a params dict, "modified", "new"
            if kind == DEPS and not all(any(overlaps(path, out) for out in upstream) for path in files):
                return False
    return True


def to_run(before: dict[str, set[str]], status: dict[str, list], recorded: set[str]) -> tuple[list[str], set[str]]:
    """The stages to run, in order: those changed (never recorded in dvc.lock, or changed in more than missing
    data), everything downstream of them, and each recorded stage whose outputs this clone lacks where a stage to
    run reads them (the prepared data, a checkpoint), and so on upstream. Files, not stages, decide the last: a
    stage that reads only the committed metrics of a training does not bring back its checkpoint. Also returned:
    those last stages, run again only to bring back outputs (the scheduler starts them as late as it can)."""
    order = topological(before)
    lacks = {stage: missing(status.get(stage, []), OUTS) for stage in order}
    run = set()
    for stage in order:
        if stage not in status:
            continue
        upstream = {out for up in before[stage] for out in lacks[up]}
        if stage not in recorded or not lacks_only_data(status[stage], upstream):
            run.add(stage)
    for stage in order:  # close over the downstream stages
        if before[stage] & run:
            run.add(stage)
    restore: set[str] = set()
    for stage in reversed(order):  # and over the upstream ones with outputs a stage to run needs
        if stage in run or stage in restore:
            needs = missing(status.get(stage, []), DEPS)
            ups = {up for up in before[stage] if any(overlaps(out, path) for out in lacks[up] for path in needs)}
            restore |= ups - run
    return [stage for stage in order if stage in run | restore], restore


class Plan(NamedTuple):
    """What a round of `linebridge repro` runs."""

    waits: dict[str, set[str]]  # each stage still to run → those of them it waits for (empty: up to date)
    restore: frozenset[str] = frozenset()  # stages run again only to bring back outputs this clone lacks
    resumes: frozenset[str] = frozenset()  # stages that go on from an earlier attempt's output


def pending(dvc: str) -> Plan:
    """The stages still to run (`to_run`), in an order DVC can run them."""
    before = dag(dvc_out(dvc, "dag", "--dot"))
    status = json.loads(dvc_out(dvc, "status", "--json") or "{}")
    lock = repo_root() / "dvc.lock"
    recorded = set((yaml.safe_load(lock.read_text()) or {}).get("stages", {})) if lock.exists() else set()
    stages, restore = to_run(before, status, recorded)
    waits = {stage: before[stage] & set(stages) for stage in stages}
    return Plan(waits, frozenset(restore), resumable(stages))


def resumable(stages: list[str]) -> frozenset[str]:
    """The `stages` with a persistent output in this clone (a training's checkpoint folder): they go on from an
    earlier attempt, whose seconds count towards theirs. Any other stage starts over, and an attempt interrupted in
    another clone is time lost, not part of the stage's."""
    from dvc.repo import Repo

    with Repo(str(repo_root())) as repo:
        return frozenset(
            name
            for name in stages
            for stage in repo.stage.collect(name)
            for out in stage.outs
            if out.persist and out.exists
        )


def read_record(root: Path) -> dict[str, Any]:
    path = root / RECORD
    return json.loads(path.read_text()) if path.exists() else {"stages": {}}


def recorded_times(record: dict[str, Any], jobs: int) -> dict[str, list[float]]:
    """Family → the recorded seconds of its stages that ran `jobs` at once."""
    took: dict[str, list[float]] = {}
    for stage, entry in record["stages"].items():
        if "seconds" in entry and entry.get("at_once") == jobs:
            took.setdefault(family(stage), []).append(entry["seconds"])
    return took


def from_scratch(record: dict[str, Any]) -> float:
    """The study's wall time from scratch: each stage's seconds over the stages it shared the machine with."""
    return sum(e["seconds"] / e.get("at_once", 1) for e in record["stages"].values() if "seconds" in e)


def eta(stages: list[str], took: dict[str, list[float]], jobs: int = 1) -> float:
    """Seconds the `stages` still to run should take, `jobs` at once: the mean time of each family's stages
    recorded at as many at once (this sitting's and those in metrics/repro.json), else its first guess stretched by
    sharing the machine."""
    shared = jobs / AT_ONCE_GAIN if jobs > 1 else 1.0  # a stage's time beside others per second alone
    total = 0.0
    for stage in stages:
        times = took.get(family(stage))
        total += sum(times) / len(times) if times else FIRST_GUESS.get(family(stage), DEFAULT_GUESS) * shared
    return total / jobs


def clock(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dvc", default="dvc", help="the dvc executable (default: the one on PATH)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=JOBS,
        help=f"stages at once, each with cores / jobs threads (default {JOBS}: the measured best on 2 cores; "
        "1 = one stage at a time with every core)",
    )


def open_tracking_store() -> None:
    """Create the MLflow store (its tables) now: stages that start at once would race to create the same SQLite
    schema."""
    import mlflow

    from linebridge.core.tracking import tracking_uri

    mlflow.MlflowClient(tracking_uri()).search_experiments(max_results=1)


class Scheduler:
    """Runs the pending stages, `jobs` at once, each after the stages it waits for; prints progress."""

    def __init__(self, dvc: str, plan: Plan, jobs: int, env: dict[str, str]) -> None:
        self.dvc, self.waits, self.restore, self.resumes, self.jobs, self.env = dvc, *plan, jobs, env
        self.todo, self.done, self.failed = list(plan.waits), set(), []
        self.running: dict[str, tuple[subprocess.Popen, float, Path]] = {}
        self.record = read_record(repo_root())
        self.took = recorded_times(self.record, jobs)
        self.logs = repo_root() / LOG_DIR
        self.start_time = time.perf_counter()

    def run(self) -> int:
        self.logs.mkdir(parents=True, exist_ok=True)
        while self.todo or self.running:
            ready = [s for s in self.todo if self.waits[s] <= self.done and not self.failed]
            ready.sort(key=self.priority)
            for stage in ready[: self.jobs - len(self.running)]:
                self.launch(stage)
            if not self.running:
                break  # what is left waits on a failed stage
            time.sleep(0.5)
            self.reap()
        if self.failed:
            print(f"{len(self.done)} stages recorded, {', '.join(self.failed)} failed: fix it and run again to go on")
            return 1
        print(f"{len(self.waits)} stages ran in {clock(time.perf_counter() - self.start_time)}", flush=True)
        return 0

    def priority(self, stage: str) -> tuple[bool, bool, int]:
        """Which ready stage starts first. A run's evaluation before the next training, so each run's chain is
        complete as soon as it can be; trainings seed by seed. A stage run again only to bring back outputs this
        clone lacks (the method's checkpoint, which the release reads) last: a sitting stopped before the stages
        that need it then loses no time on it, since a fresh clone would lack it again."""
        return stage in self.restore, family(stage).startswith("train"), seed_of(stage)

    def launch(self, stage: str) -> None:
        self.todo.remove(stage)
        if stage not in self.resumes:
            self.lose_earlier_attempts(stage)
        left = clock(eta(self.todo + [stage] + list(self.running), self.took, self.jobs))
        elapsed = clock(time.perf_counter() - self.start_time)
        count = f"[{len(self.done) + len(self.running) + 1}/{len(self.waits)}]"
        print(f"{count} {stage} — {elapsed} so far, about {left} to go", flush=True)
        log = self.logs / f"{stage}.log"
        cmd = [self.dvc, "--wait-for-lock", "repro", "--single-item", stage]  # DVC locks briefly around each stage
        with log.open("w") as fh:
            proc = subprocess.Popen(  # a process group of its own: `stop` interrupts the stage's command too
                cmd,
                cwd=repo_root(),
                env=self.env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=interruptible,
            )
        self.running[stage] = (proc, time.perf_counter(), log)

    def reap(self) -> None:
        for stage, (proc, t0, log) in list(self.running.items()):
            if proc.poll() is None:
                continue
            del self.running[stage]
            if proc.returncode == 0:
                self.done.add(stage)
                seconds = self.note(stage, time.perf_counter() - t0, finished=True)
                self.took.setdefault(family(stage), []).append(seconds)
                print(f"    {stage} done in {clock(seconds)}", flush=True)
            else:
                self.failed.append(stage)
                tail = log.read_text(errors="replace").strip().splitlines()[-15:]
                print(f"{stage} failed (exit {proc.returncode}); last lines of {log}:", *tail, sep="\n  ", flush=True)

    def lose_earlier_attempts(self, stage: str) -> None:
        """A stage that starts over: the seconds of its interrupted attempts become `lost_s`, which the from-scratch
        time leaves out (a clone that lacks their checkpoint cannot go on from them)."""
        entry = self.record["stages"].get(stage, {})
        if "interrupted_s" in entry:
            entry["lost_s"] = round(entry.get("lost_s", 0.0) + entry.pop("interrupted_s"), 1)

    def note(self, stage: str, seconds: float, finished: bool) -> float:
        """Record a stage's seconds in metrics/repro.json: those of a finished stage (with the interrupted attempts
        it went on from), or those of an interrupted attempt."""
        entry = self.record["stages"].setdefault(stage, {})
        spent = seconds + entry.pop("interrupted_s", 0.0)
        if finished:
            lost = {"lost_s": entry["lost_s"]} if "lost_s" in entry else {}
            entry.clear()
            entry.update(seconds=round(spent, 1), at_once=self.jobs, threads=int(self.env["OMP_NUM_THREADS"]), **lost)
            entry.update(host=platform.node(), date=datetime.date.today().isoformat())
        else:
            entry["interrupted_s"] = round(spent, 1)
        self.record["from_scratch_s"] = round(from_scratch(self.record), 1)
        write_json(repo_root() / RECORD, self.record)
        return spent

    def stop(self) -> int:
        """Ctrl-C or `kill`: interrupt the stages in progress (each resumes next time) and wait for them."""
        for signum in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut short the recording below
            signal.signal(signum, signal.SIG_IGN)
        print("stopping the stages in progress and recording their time; this takes up to a minute", flush=True)
        for proc, _, _ in self.running.values():
            os.killpg(proc.pid, signal.SIGINT)  # DVC and the stage's command, as Ctrl-C in a terminal would
        for stage, (proc, t0, _) in self.running.items():
            proc.wait()
            self.note(stage, time.perf_counter() - t0, finished=False)
        stopped = ", ".join(self.running) or "no stage"
        print(f"interrupted: {stopped} stopped, {len(self.done)} stages recorded; run again to go on", flush=True)
        return 130


def interruptible() -> None:
    """In a stage's process, before DVC starts: Ctrl-C (SIGINT) back to its default. A shell without job control
    (a script, `sh -c`, a command over ssh) starts `make repro &` with SIGINT ignored, and an ignored signal stays
    ignored in every child, so without this `stop` could not interrupt the stages of a study started that way."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    dvc = shutil.which(args.dvc) or args.dvc
    plan = pending(dvc)
    if not plan.waits:
        print("the study is up to date: nothing to run")
        return 0
    if args.jobs > 1:
        open_tracking_store()
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // args.jobs))  # yours if set
    signal.signal(signal.SIGTERM, interrupt)  # `kill` stops the stages in progress like Ctrl-C
    started = time.perf_counter()
    for _ in range(ROUNDS):
        scheduler = Scheduler(dvc, plan, args.jobs, {**os.environ, "OMP_NUM_THREADS": threads})
        print(f"{len(plan.waits)} stages to run, {args.jobs} at once ({threads} threads each); logs in {LOG_DIR}/")
        try:
            code = scheduler.run()
            plan = pending(dvc) if code == 0 else Plan({})
        except KeyboardInterrupt:
            return scheduler.stop()
        if not plan.waits:
            if code == 0:
                print(f"the study is up to date after {clock(time.perf_counter() - started)}")
            return code
        print(
            f"a stage run again for missing outputs wrote other bytes: {len(plan.waits)} stages that read them follow"
        )
    raise UserError(f"the study was still not up to date after {ROUNDS} rounds; see `dvc status`")
