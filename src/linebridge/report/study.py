"""The study the report describes: params.yaml's validated `study`, its runs, and each arm's description."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from linebridge.core.config import RUN_NAME, ConfigError, read_yaml, run_name, study_runs
from linebridge.core.schema import Study, problems


def load_study(root: Path) -> dict[str, Any]:
    """params.yaml's `study` section, as written, after checking it against `schema.Study`."""
    study = read_yaml(root / "params.yaml").get("study")
    if not isinstance(study, dict):
        raise ConfigError(f"{root / 'params.yaml'}: no `study` section")
    bad = problems(study, Study, "study.")
    if bad:
        raise ConfigError(f"{root / 'params.yaml'}: invalid study:\n  " + "\n  ".join(bad))
    return study


def arm_seeds(study: dict[str, Any]) -> dict[str, list[int]]:
    """Training seeds of each seeded (BBDM) arm, read off the run list `config.study_runs` builds (ARM-sSEED)."""
    seeds: dict[str, list[int]] = {}
    for run in study_runs(study):
        match = RUN_NAME.match(run)
        seeds.setdefault(match["arm"], []).append(int(match["seed"]))
    return seeds


def arm_runs(study: dict[str, Any]) -> dict[str, list[str]]:
    """Every arm's run names in report order: seeded arms as ARM-sSEED, baselines and trivial outputs as themselves."""
    runs = {arm: [run_name(arm, s) for s in seeds] for arm, seeds in arm_seeds(study).items()}
    runs.update({name: [name] for name in [*study["baselines"], *study["trivial"]]})
    return runs


def seed0(study: dict[str, Any]) -> dict[str, str]:
    """Arm → the run the figures show: the lowest-seed run of seeded arms, the only run of baselines."""
    shown = {arm: run_name(arm, min(seeds)) for arm, seeds in arm_seeds(study).items()}
    return {**shown, **{name: name for name in study["baselines"]}}


def description(root: Path, arm: str) -> str:
    """An arm's `description:` in experiments/ARM.yaml, the one place it is written."""
    path = root / "experiments" / f"{arm}.yaml"
    if not path.exists():
        return f"no experiments/{arm}.yaml"
    return str(read_yaml(path).get("description") or f"no description in experiments/{arm}.yaml")
