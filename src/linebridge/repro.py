"""`linebridge repro` (what `make repro` runs): `dvc repro`, one stage at a time, with progress and an ETA.

The stages still to run are those `dvc status` lists and everything downstream of them, in the order of
`dvc dag` (each after the stages it depends on); each then runs alone
(`dvc repro --single-item STAGE`), so DVC records it in dvc.lock the moment it finishes: a killed study loses at
most the stage in progress (and a training stage resumes from its last epoch). Before each stage the command
prints how many are done, the time so far and an estimate of the time left: a stage's expected time is the mean
of the stages of its family (train, evaluate, ...) finished in this sitting, else the family's estimate below.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import time

from linebridge.core.config import UserError, repo_root

# Seconds a stage of each family takes on the developers' 2-core machine before this sitting has timed one
# (train: a convergence-stopped BBDM run; the rest from the committed study's stage times).
FIRST_GUESS = {"train": 600.0, "train-baseline": 300.0, "evaluate": 60.0, "report": 60.0, "power": 120.0}
DEFAULT_GUESS = 30.0


def family(stage: str) -> str:
    """'train@A5-s0' → 'train'; 'prepare' → 'prepare'."""
    return stage.split("@", 1)[0]


def dvc_out(dvc: str, *args: str) -> str:
    out = subprocess.run([dvc, *args], capture_output=True, text=True, cwd=repo_root())
    if out.returncode != 0:
        raise UserError(f"`dvc {' '.join(args)}` failed: {out.stderr.strip()[-500:]}")
    return out.stdout


def topological(dot: str) -> list[str]:
    """The stages of `dvc dag --dot` output, each after every stage it depends on (ties: DVC's order); the
    .dvc-tracked data files, which are no stages, left out."""
    nodes = re.findall(r'^"([^"]+)";$', dot, flags=re.M)
    edges = re.findall(r'^"([^"]+)" -> "([^"]+)";$', dot, flags=re.M)
    before: dict[str, set[str]] = {n: set() for n in nodes}
    for a, b in edges:
        before.setdefault(b, set()).add(a)
        before.setdefault(a, set())
    order: list[str] = []
    while len(order) < len(before):
        ready = [n for n in before if n not in order and before[n] <= set(order)]
        if not ready:
            raise UserError("`dvc dag` has a cycle")
        order += ready
    return [n for n in order if not n.endswith(".dvc")]


def pending(dvc: str) -> list[str]:
    """The stages still to run, in an order DVC can run them: those `dvc status` lists, and everything downstream of
    them (empty when the study is up to date)."""
    dot = dvc_out(dvc, "dag", "--dot")
    order = topological(dot)
    changed = set(json.loads(dvc_out(dvc, "status", "--json") or "{}"))
    edges = re.findall(r'^"([^"]+)" -> "([^"]+)";$', dot, flags=re.M)
    for _ in order:  # close over the downstream stages
        changed |= {b for a, b in edges if a in changed}
    return [stage for stage in order if stage in changed]


def eta(stages: list[str], took: dict[str, list[float]]) -> float:
    """Seconds the `stages` still to run should take, from this sitting's times per family or the first guesses."""
    total = 0.0
    for stage in stages:
        times = took.get(family(stage))
        total += sum(times) / len(times) if times else FIRST_GUESS.get(family(stage), DEFAULT_GUESS)
    return total


def clock(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dvc", default="dvc", help="the dvc executable (default: the one on PATH)")


def main(args: argparse.Namespace) -> int:
    dvc = shutil.which(args.dvc) or args.dvc
    stages = pending(dvc)
    if not stages:
        print("the study is up to date: nothing to run")
        return 0
    took: dict[str, list[float]] = {}
    start = time.perf_counter()
    for k, stage in enumerate(stages):
        elapsed = time.perf_counter() - start
        print(
            f"[{k + 1}/{len(stages)}] {stage} — {clock(elapsed)} so far, about {clock(eta(stages[k:], took))} to go",
            flush=True,
        )
        t0 = time.perf_counter()
        done = subprocess.run([dvc, "repro", "--single-item", stage], cwd=repo_root())
        if done.returncode != 0:
            print(f"{stage} failed (exit {done.returncode}); the stages before it are recorded: run again to go on")
            return done.returncode
        took.setdefault(family(stage), []).append(time.perf_counter() - t0)
    print(f"the study is up to date after {clock(time.perf_counter() - start)} ({len(stages)} stages)")
    return 0
