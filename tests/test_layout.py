"""The code's shape: import layers, lint, and DVC stages that depend on all the code they run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from linebridge.cli import COMMANDS
from linebridge.core.config import load_config

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


def test_no_stage_but_power_and_the_report_waits_on_every_run():
    """Each run trains and is evaluated in its own chain: no stage but `power` and the report depends on the whole
    outputs/train or metrics/eval folder or on the list of runs, so adding a run leaves every other stage as it was."""
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        for stage in repo.index.stages:
            if stage.addressing == "report" or not stage.cmd:
                continue
            deps = {d.def_path for d in stage.deps}
            params = {key for dep in stage.deps if hasattr(dep, "params") for key in dep.params}
            assert not deps & {"outputs/train", "metrics/eval", "metrics/train"} or stage.addressing == "power", stage
            assert not params & {"study", "study.runs"}, stage.addressing


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


def test_the_environment_is_the_one_the_study_ran_with():
    """`make setup` installs with constraints.txt: a package at another version (kornia 0.9.2's TPS warp, say) gives
    other prepared bytes, and a fresh clone's study would no longer be up to date."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    pins = [Requirement(line) for line in (REPO / "constraints.txt").read_text().splitlines() if "==" in line]
    assert any(pin.name == "kornia" for pin in pins) and any(pin.name == "torch" for pin in pins)
    wrong = []
    for pin in pins:
        try:
            installed = version(pin.name)
        except PackageNotFoundError:
            installed = "not installed"
        if installed not in pin.specifier:
            wrong.append(f"{pin.name}: {installed}, constraints.txt says {pin.specifier}")
    assert not wrong, "run `make clean-venv setup`: " + "; ".join(wrong)
