"""Reading the files the pipeline stages wrote: evaluations, training histories, the sampler choice, item groups."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from linebridge.core.config import read_yaml

GroupLookup = Callable[[str], dict[str, tuple[str, str]]]  # protocol → {item id: (line drawing, reference drawing)}


class NotRun(Exception):
    """An input the section needs is missing or unusable; the message (the reason) goes into the report."""


def read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def read_choice(root: Path) -> dict[str, Any] | None:
    """The last `evaluate --sweep`'s recorded choice (metrics/sweep/choice.yaml), None before it has run."""
    path = root / "metrics" / "sweep" / "choice.yaml"
    return read_yaml(path) if path.exists() else None


def read_per_image(path: Path) -> dict[str, dict[str, float]]:
    """id → {metric: value} from an evaluate per-image CSV (columns: id, then one per metric)."""
    if not path.exists():
        return {}
    with path.open() as fh:
        return {row.pop("id"): {k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)}


def read_history(path: Path) -> list[dict[str, float | None]]:
    """A training history CSV as numbers; `wall_s` (cumulative seconds) is None in files written before it existed."""
    if not path.exists():
        return []
    with path.open() as fh:
        return [{"wall_s": None, **{k: float(v) if v else None for k, v in r.items()}} for r in csv.DictReader(fh)]


def eval_file(root: Path, run: str, protocol: str, suffix: str = "json") -> Path:
    return root / "metrics" / "eval" / run / f"{protocol}.{suffix}"


def train_file(root: Path, run: str, suffix: str) -> Path:
    """metrics/train/RUN.json (the training summary) or RUN.csv (the per-epoch history)."""
    return root / "metrics" / "train" / f"{run}.{suffix}"


def run_mean(root: Path, run: str, protocol: str, metric: str) -> float | None:
    """One run's summary value of a metric (image mean, or a set metric's value); None when absent or unavailable."""
    res = read_json(eval_file(root, run, protocol))
    v = res and res["metrics"].get(metric)
    if not v or v.get("unavailable"):
        return None
    x = v.get("mean", v.get("value"))
    return None if x is None or np.isnan(x) else float(x)


def seed_summary(root: Path, runs: list[str], protocol: str, metric: str) -> tuple[float, float, int] | None:
    """Mean over an arm's runs of each run's value, the seed SD (NaN with one run) and how many runs had the value.

    Each seed weighs the same, as in the contrasts; the SD is the run-to-run spread a single run would have.
    """
    values = [v for run in runs if (v := run_mean(root, run, protocol, metric)) is not None]
    if not values:
        return None
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    return float(np.mean(values)), sd, len(values)


def seed_mean(root: Path, runs: dict[str, list[str]], arm: str, spec: str) -> float | None:
    """An arm's seed mean on PROTOCOL.METRIC; None when the arm is not in `runs` or none of its runs has the value."""
    protocol, metric = spec.split(".")
    summary = seed_summary(root, runs.get(arm, []), protocol, metric)
    return None if summary is None else summary[0]


def rel(root: Path, path: Path) -> str:
    """A path as messages show it: relative to the study root when it is inside it."""
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def prepared_groups(prepared: Path) -> GroupLookup:
    """The line drawing and the reference drawing of every item of a test protocol, from the prepared protocol table
    (`protocols/PROTOCOL.csv`, read once per protocol)."""
    cache: dict[str, dict[str, tuple[str, str]]] = {}

    def lookup(protocol: str) -> dict[str, tuple[str, str]]:
        if protocol not in cache:
            table = prepared / "protocols" / f"{protocol}.csv"
            if not table.exists():
                raise NotRun(f"the item groups are unknown: {table} is missing; run `linebridge prepare`")
            with table.open(newline="") as fh:
                cache[protocol] = {r["id"]: (r["group"], r["ref_group"]) for r in csv.DictReader(fh)}
        return cache[protocol]

    return lookup
