"""Beyond one machine: Optuna workers on a real PostgreSQL server.

The server is started here from Debian's `postgresql` (installed by .ci/run when missing) on a
loopback port, and stopped afterwards. DDP under torchrun is in test_train.py and test_multinode.py,
the MLflow tracking server with served artifacts in test_mlflow_server.py.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from linebridge.cli import main as cli_main

pytestmark = pytest.mark.slow  # starts PostgreSQL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, seconds: float, what: str) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise TimeoutError(f"{what} did not come up within {seconds:.0f} s")


def pg_binary(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name)]
    if not found[-1]:
        raise RuntimeError(f"PostgreSQL's {name} is not installed: `apt-get install postgresql` (.ci/run does this)")
    return found[-1]


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL cluster on a loopback port; yields its SQLAlchemy URL."""
    as_root = os.geteuid() == 0
    run_as = ["runuser", "-u", "postgres", "--"] if as_root else []
    folder = Path(tempfile.mkdtemp(prefix="linebridge-pg-"))
    if as_root:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()
    subprocess.run(
        [*run_as, pg_binary("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    server = subprocess.Popen(
        [
            *run_as,
            pg_binary("postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(folder),
            "-c",
            "listen_addresses=127.0.0.1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def ready() -> bool:
        return (
            subprocess.run(
                [pg_binary("pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True
            ).returncode
            == 0
        )

    try:
        wait_for(ready, 60, "PostgreSQL")
        subprocess.run(
            [pg_binary("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "optuna"], check=True
        )
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/optuna"
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(folder, ignore_errors=True)


def test_optuna_workers_on_postgresql(in_study, postgres, tmp_path):
    import optuna

    code = cli_main(
        [
            "tune",
            "--profile",
            "tiny",
            "--storage",
            postgres,
            "--workers",
            "2",
            "--trials",
            "4",
            "--out",
            str(tmp_path / "tune"),
            "--no-mlflow",
        ]
    )
    assert code == 0
    study = optuna.load_study(study_name="A5-tiny", storage=postgres)  # the method (study.method), tiny profile
    finished = [
        t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]
    assert len(finished) == 4
    assert len({t.user_attrs.get("pid") for t in study.trials}) == 2, "both workers ran trials"
    assert (tmp_path / "tune").exists()
