"""Shared fixtures: a real, tiny study root (OpenMoji subset prepared at the `tiny` profile)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def make_root(folder: Path) -> Path:
    """A study root: copies of params.yaml and experiments/ (config lookups start there)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "params.yaml", folder / "params.yaml")
    shutil.copytree(REPO / "experiments", folder / "experiments", dirs_exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> Path:
    """A root with data/openmoji fetched and outputs/prepared rendered at the tiny profile."""
    from linebridge.config import load_config
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
