"""The study spread over machines through DVC's own machinery: a shared remote, git, `dvc repro` of a share.

A tiny-profile study is committed to a bare git repo ("origin") with a local-directory DVC remote
("shared"; on a cluster an object store or an SSH path). Clones A and B play two machines. The plan
comes from `dvc dag` alone (no stage names): phases, each published in full before the next starts
(the data preparation; then every run's chain of training and evaluation, dealt out run by run; then
what reads every run's results), and in each phase a share per machine. A machine runs its share
with `dvc repro --pull --allow-missing SHARE` (it pulls only the inputs of the stages it runs) and
publishes it as docs/scaling-out.md tells a user to:

    dvc push                                    # its outputs to the shared remote
    git restore --staged --worktree dvc.lock    # drop its own lock edits: two machines' new entries
    git pull --rebase --autostash               #   edit the same region of one YAML file and conflict
    dvc commit -f SHARE                         # re-record its stages' entries beside the others'
    git add dvc.lock metrics reports && git commit && git push

Clone C then pulls and must run the report stage alone. Clone D runs the whole `dvc repro` by
itself, for the wall time and for the numbers, which the fan-out must reproduce byte for byte.
"""

from __future__ import annotations

import json
import os
import re
import resource
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from study_repo import make_study, sh, tool_env

pytestmark = pytest.mark.slow  # the whole tiny study twice (fanned out and in one clone)

REPO = Path(__file__).resolve().parents[1]
MACHINES = ("A", "B")


def ran(dvc_output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", dvc_output))


def small_runs(study: dict) -> dict[str, str]:
    """The study's runs that its other settings name: the first two seeds of the method (its null control splits
    them) and the first seed of the reference arm. The GAN baselines and the trivial rows stay (the method's targets
    name them)."""
    named = {study["method"], study["reference_arm"]}
    runs: dict[str, str] = {}
    for run, arm in study["runs"].items():
        taken = list(runs.values()).count(arm)
        if arm in named and taken < (2 if arm == study["method"] else 1):
            runs[run] = arm
    return runs


def rounds(stages: list[str], upstream: dict[str, set[str]]) -> list[list[str]]:
    """The stages by round: each one round after the longest chain of stages it depends on."""
    depth: dict[str, int] = {}

    def level(stage: str) -> int:
        if stage not in depth:
            depth[stage] = 1 + max((level(u) for u in upstream[stage]), default=-1)
        return depth[stage]

    out: list[list[str]] = [[] for _ in range(1 + max(level(s) for s in stages))]
    for stage in stages:
        out[level(stage)].append(stage)
    return out


def plan(clone: Path, env: dict[str, str]) -> list[dict[str, list[str]]]:
    """Who runs what, phase by phase ({machine: stages}); a phase is published in full before the next starts.

    From `dvc dag`'s edges, no stage names: a stage goes to the machine that runs its upstream stages of the same
    phase (a run's evaluation follows its training there), the others are dealt out in turn. A phase ends around a
    round of one stage, which everything after it waits for (the data preparation, a stage reading every run's
    results), and before a stage whose upstream stages of the phase ran on both machines.
    """
    stages = sh(["dvc", "stage", "list", "--name-only"], clone, env).split()
    edges = re.findall(r'"([^"]+)" -> "([^"]+)"', sh(["dvc", "dag", "--dot"], clone, env))
    upstream = {s: {a for a, b in edges if b == s and a in stages} for s in stages}
    phases: list[dict[str, list[str]]] = []
    owner: dict[str, str] = {}  # this phase's stages → machine

    def close() -> None:
        if owner:
            phases.append({m: [s for s in owner if owner[s] == m] for m in MACHINES if m in owner.values()})
            owner.clear()

    def machines(stage: str) -> set[str]:
        return {owner[u] for u in upstream[stage] if u in owner}

    for round_ in rounds(stages, upstream):
        if len(round_) == 1 or any(len(machines(s)) > 1 for s in round_):
            close()
        for i, stage in enumerate(round_):
            mine = machines(stage)
            owner[stage] = mine.pop() if mine else MACHINES[i % len(MACHINES)]
        if len(round_) == 1:
            close()
    close()
    return phases


class Clock:
    """Wall seconds, and CPU seconds of the commands run meanwhile (with their children), since it was made; the
    CPU seconds hold on a shared machine, where other work stretches the wall time."""

    def __init__(self) -> None:
        self.wall, self.cpu, self.load = time.perf_counter(), self.cpu_now(), os.getloadavg()[0]

    @staticmethod
    def cpu_now() -> float:
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        return used.ru_utime + used.ru_stime

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, self.cpu_now() - self.cpu


def run_share(clone: Path, share: list[str], env: dict[str, str]) -> tuple[float, float]:
    """One machine's turn: its stages, then its data to the remote and its results and lock entries to origin."""
    clock = Clock()
    sh(["git", "pull", "-q", "--rebase"], clone, env)
    out = sh(["dvc", "repro", "--pull", "--allow-missing", *share], clone, env)
    assert ran(out) == set(share), f"{clone.name} ran {sorted(ran(out))}, its share is {share}"
    sh(["dvc", "push", "-q"], clone, env)
    if sh(["git", "ls-files", "dvc.lock"], clone, env):
        sh(["git", "restore", "--staged", "--worktree", "dvc.lock"], clone, env)
    else:  # the study's first share: origin has no dvc.lock yet
        (clone / "dvc.lock").unlink()
    sh(["git", "pull", "-q", "--rebase", "--autostash"], clone, env)
    sh(["dvc", "commit", "-q", "-f", *share], clone, env)
    published = [p for p in ("dvc.lock", "metrics", "reports", "weights") if (clone / p).exists()]  # git-tracked outs
    sh(["git", "add", *published], clone, env)
    sh(["git", "commit", "-qm", f"{clone.name}: {' '.join(share)}"], clone, env)
    sh(["git", "push", "-q", "origin", "main"], clone, env)
    return clock.read()


def without_wall_times(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_wall_times(v) for k, v in value.items() if "wall" not in k}
    return [without_wall_times(v) for v in value] if isinstance(value, list) else value


def results(clone: Path) -> dict[str, Any]:
    """Every file of numbers the stages wrote (*.timing.json aside), JSON less its wall times. A clone's folder is
    written as CLONE: the power stage's notes name the folder it read, which is the machine's own."""
    out: dict[str, Any] = {}
    for p in sorted((clone / "metrics").rglob("*")):
        if p.suffix in (".csv", ".yaml"):
            out[p.relative_to(clone).as_posix()] = p.read_bytes()
        elif p.suffix == ".json" and not p.name.endswith(".timing.json"):
            text = re.sub(re.escape(str(clone.parent)) + r"/[A-Z]\b", "CLONE", p.read_text())
            out[p.relative_to(clone).as_posix()] = without_wall_times(json.loads(text))
    return out


@pytest.fixture(scope="module")
def fanout(tmp_path_factory) -> dict:
    top = tmp_path_factory.mktemp("fanout")
    env = tool_env()  # each machine its local mlflow.db

    setup, origin = top / "setup", top / "origin.git"
    setup.mkdir()
    make_study(setup, env, small_runs(yaml.safe_load((REPO / "params.yaml").read_text())["study"]), null_control=None)
    sh(["linebridge", "data", "fetch"], setup, env)  # the raw data, once, into the shared remote
    sh(["dvc", "remote", "add", "-d", "shared", str(top / "remote")], setup, env)
    sh(["dvc", "push", "-q"], setup, env)
    sh(["git", "commit", "-qm", "shared DVC remote", ".dvc/config"], setup, env)
    sh(["git", "init", "-q", "--bare", "-b", "main", str(origin)], top, env)
    sh(["git", "push", "-q", str(origin), "main"], setup, env)

    def clone(name: str) -> Path:
        sh(["git", "clone", "-q", str(origin), name], top, env)
        return top / name

    clock = Clock()  # one machine, the whole study, from the study's first commit
    d = clone("D")
    sh(["dvc", "pull", "-q", "data.dvc"], d, env)  # nothing else is in the remote yet
    alone_out = sh(["dvc", "repro"], d, env)
    alone, alone_load = clock.read(), clock.load

    c = clone("C")  # the report machine, cloned before the others' work
    clock = Clock()
    machines = {name: clone(name) for name in MACHINES}
    phases = plan(machines["A"], env)
    spent = {name: [0.0, 0.0] for name in MACHINES}
    at_once = 0.0
    for phase in phases[:-1]:  # the last, the report, is clone C's
        shares = {name: run_share(machines[name], share, env) for name, share in phase.items()}
        for name, (wall, cpu) in shares.items():
            spent[name][0] += wall
            spent[name][1] += cpu
        at_once += max(wall for wall, _ in shares.values())  # the machines at once: a phase lasts its longest share
    fanned, fanned_load = clock.read(), clock.load

    clock = Clock()
    sh(["git", "pull", "-q"], c, env)
    sh(["dvc", "pull", "-q"], c, env)
    report_out = sh(["dvc", "repro"], c, env)
    report = clock.read()

    counts = " | ".join(", ".join(f"{m} {len(share)}" for m, share in phase.items()) for phase in phases)
    each = " + ".join(f"{m} {wall:.0f} s ({cpu:.0f} s CPU)" for m, (wall, cpu) in spent.items())
    print(
        f"\nstages per phase and machine: {counts}\n"
        f"one clone, everything (clone, dvc pull of the data, dvc repro): {alone[0]:.0f} s wall, "
        f"{alone[1]:.0f} s CPU (load {alone_load:.1f} at the start)\n"
        f"fan-out, A then B: {each}; {fanned[0]:.0f} s wall, {fanned[1]:.0f} s CPU with the clones "
        f"(load {fanned_load:.1f}); ~{at_once:.0f} s on two machines at once\n"
        f"report machine (git pull, dvc pull, dvc repro): {report[0]:.0f} s wall, {report[1]:.0f} s CPU"
    )
    return {"phases": phases, "c": c, "d": d, "report_out": report_out, "alone_out": alone_out, "env": env}


def test_each_machine_ran_its_share_and_the_report_machine_only_the_report(fanout):
    phases, out = fanout["phases"], fanout["report_out"]
    (last,) = phases[-1].values()
    assert len(last) == 1, "one last stage: the report"
    assert any(len(phase) == len(MACHINES) for phase in phases), "some phase is dealt out between the machines"
    assert "Running stage 'train" not in out and "Running stage 'evaluate" not in out
    assert ran(out) == set(last)
    assert (fanout["c"] / "reports" / "ablation.md").stat().st_size > 1000
    status = sh(["dvc", "status"], fanout["c"], fanout["env"])
    assert "changed" not in status.replace("didn't change", ""), status


def test_fan_out_reproduces_the_one_clone_numbers(fanout):
    c, d = fanout["c"], fanout["d"]
    assert ran(fanout["alone_out"]) == {s for phase in fanout["phases"] for share in phase.values() for s in share}
    fanned, alone = results(c), results(d)
    assert len(fanned) > 10 and fanned.keys() == alone.keys()
    assert [k for k in fanned if fanned[k] != alone[k]] == []
