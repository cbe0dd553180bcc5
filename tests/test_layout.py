"""The code's shape: import layers, lint, and DVC stages that depend on all the code they run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from linebridge.cli import COMMANDS
from linebridge.config import load_config

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
TRAINERS = {"bbdm": "linebridge.bbdm.train", "pix2pix": "linebridge.baselines.gan", "scft": "linebridge.baselines.gan"}


def module_file(module: str) -> Path:
    path = SRC / Path(*module.split("."))
    return (path / "__init__.py") if path.is_dir() else path.with_suffix(".py")


def command_module(cmd: str) -> str:
    """The module whose code a stage's `linebridge COMMAND …` runs (train: the family's trainer)."""
    words = cmd.split()
    assert words[0] == "linebridge", cmd
    if words[1] == "train":
        experiment = words[words.index("--experiment") + 1]
        return TRAINERS[load_config(experiment, None, [], root=REPO)["model"]["family"]]
    return dict((name, module) for name, module, _ in COMMANDS)[words[1]]


def stages() -> list[tuple[str, str, list[str]]]:
    """(stage name, cmd, deps) of every stage of dvc.yaml, foreach and matrix resolved by DVC itself."""
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        return [(s.addressing, s.cmd, [d.def_path for d in s.deps]) for s in repo.index.stages if s.cmd]


@pytest.mark.parametrize("stage", stages(), ids=lambda s: s[0])
def test_stage_deps_cover_the_modules_its_command_imports(stage):
    name, cmd, deps = stage
    graph = grimp.build_graph("linebridge")  # every import, including those inside functions
    module = command_module(cmd)
    needed = {module, *graph.find_upstream_modules(module)} - {"linebridge"}
    covered = [REPO / d for d in deps]
    missing = sorted(m for m in needed if not any(module_file(m) == c or c in module_file(m).parents for c in covered))
    assert not missing, f"stage {name} runs code it does not depend on: {missing}"


def test_sweep_scores_every_study_seed():
    """The sampler is chosen on the mean over A3's training seeds (its runs in study.runs): the stage re-runs when
    they change and runs after every training run."""
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        stage = next(s for s in repo.index.stages if s.addressing == "sweep")
        params = {key for dep in stage.deps if hasattr(dep, "params") for key in dep.params}
        deps = [d.def_path for d in stage.deps]
        trains = [s for s in repo.index.stages if s.addressing.startswith("train@")]
    assert stage.cmd.split()[-1] == "--seeds" and "study.runs" in params
    assert all(any(Path(o.def_path).is_relative_to(d) for d in deps for o in t.outs) for t in trains)


def test_import_layers_and_no_cycles():
    """import-linter's contracts in pyproject.toml: layers point one way, siblings import no cycle."""
    proc = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_ruff_lint_and_format():
    ruff = str(Path(sys.executable).parent / "ruff")
    for args in (["check"], ["format", "--check"]):
        paths = ["src", "tests", "benchmarks", "docs", "notebooks"]
        proc = subprocess.run([ruff, *args, *paths], cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout[-3000:]
