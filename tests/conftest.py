"""Shared fixtures: a real, tiny study root (OpenMoji subset prepared at the `tiny` profile), one tiny trained
model for the tests that only read one, and helpers (the experiment ids and the study's arms, read from the repo)."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch
import yaml

if TYPE_CHECKING:
    from linebridge.core.runs import Paths

REPO = Path(__file__).resolve().parents[1]
QUIET_TOOLS = {"MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1"}


@pytest.fixture(scope="session", autouse=True)
def quiet_tools() -> Iterator[None]:
    """No telemetry from MLflow or DVC during the tests (a value the developer set is kept); undone at the end."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in QUIET_TOOLS.items():
            if name not in os.environ:
                mp.setenv(name, value)
        yield


def make_root(folder: Path) -> Path:
    """A study root: copies of params.yaml and experiments/ (config lookups start there)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "params.yaml", folder / "params.yaml")
    shutil.copytree(REPO / "experiments", folder / "experiments", dirs_exist_ok=True)
    return folder


def experiments() -> list[str]:
    """Every experiment id, as experiments/*.yaml defines them (arms, baselines, twins): tests loop over these, so a
    new experiment file is covered without editing a test."""
    return sorted(p.stem for p in (REPO / "experiments").glob("*.yaml"))


def study_params() -> dict[str, Any]:
    """The `study` section of params.yaml: which arms, seeds and baselines `dvc repro` runs."""
    return yaml.safe_load((REPO / "params.yaml").read_text())["study"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _same_state(a: Any, b: Any) -> bool:
    """Exact equality of two checkpoint trees (tensors bit for bit, values by ==)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    return a == b


@pytest.fixture(scope="session")
def repo() -> Path:
    """The repository root (params.yaml, experiments/, src/)."""
    return REPO


@pytest.fixture
def study_root(tmp_path) -> Path:
    """A fresh, empty study root (params.yaml and experiments/ only) under this test's tmp_path."""
    return make_root(tmp_path / "root")


@pytest.fixture(scope="session")
def sha() -> Callable[[Path], str]:
    """`sha(path)`: the SHA-256 of a file's bytes."""
    return _sha


@pytest.fixture(scope="session")
def same_state() -> Callable[[Any, Any], bool]:
    """`same_state(a, b)`: exact equality of two checkpoint trees."""
    return _same_state


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> Path:
    """A root with data/openmoji fetched and outputs/prepared rendered at the tiny profile."""
    from linebridge.core.config import load_config
    from linebridge.data.openmoji import fetch
    from linebridge.data.prepare import prepare

    root = make_root(tmp_path_factory.mktemp("tiny_study"))
    fetch(root / "data" / "openmoji")
    cfg = load_config(None, "tiny", [], root=root)
    old = os.getcwd()
    os.chdir(root)
    try:
        prepare(cfg, root=root, contact_sheet=None)
    finally:
        os.chdir(old)
    return root


@pytest.fixture
def in_study(tiny_study, monkeypatch, tmp_path) -> Path:
    """Run inside the tiny study root with a fresh MLflow sqlite store per test."""
    monkeypatch.chdir(tiny_study)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tiny_study


def _tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): _sha(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_study, tmp_path_factory) -> Iterator[Paths]:
    """One tiny-profile A3 training (its default 2 epochs, no MLflow), shared by every test that only reads a trained
    model: a `runs.Paths` (.out, .best, .last, .metrics, .history). Tests that check training itself (determinism,
    resume, divergence, logging) train their own. A test that changes these files must copy them first; the session
    checks at its end that nothing did."""
    from linebridge.cli import main as cli_main
    from linebridge.core.runs import Paths

    paths = Paths.for_experiment("A3", tmp_path_factory.mktemp("tiny_checkpoint") / "A3")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tiny_study)
        mp.delenv("DVC_ROOT", raising=False)
        args = ["train", "--experiment", "A3", "--profile", "tiny", "--no-mlflow", "--out", str(paths.out)]
        assert cli_main(args) == 0
    before = _tree(paths.out)
    yield paths
    assert _tree(paths.out) == before, f"a test changed the shared checkpoint in {paths.out}: copy it first"
