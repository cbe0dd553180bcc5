"""Beyond one machine: Optuna workers on a real PostgreSQL server, MLflow through a real tracking server.

Both servers are started here from the machine's packages (PostgreSQL from Debian's
`postgresql`, installed by .ci/run when missing; `mlflow server` from the venv) on
loopback ports, and stopped afterwards. (DDP under torchrun is in test_train.py.)
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from linebridge.cli import main as cli_main

pytestmark = pytest.mark.slow  # starts PostgreSQL and `mlflow server`


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
    study = optuna.load_study(study_name="A3-tiny", storage=postgres)
    finished = [
        t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]
    assert len(finished) == 4
    assert len({t.user_attrs.get("pid") for t in study.trials}) == 2, "both workers ran trials"
    assert (tmp_path / "tune").exists()


@pytest.fixture(scope="module")
def mlflow_server():
    """`mlflow server` with a sqlite backend and a served artifact store, on a loopback port."""
    folder = Path(tempfile.mkdtemp(prefix="linebridge-mlflow-"))
    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.Popen(
        [
            str(mlflow),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{folder / 'mlflow.db'}",
            "--artifacts-destination",
            str(folder / "artifacts"),
            "--workers",
            "1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def ready() -> bool:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200
        except OSError:
            return False

    try:
        wait_for(ready, 180, "mlflow server")
        yield f"http://127.0.0.1:{port}", folder
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)
        shutil.rmtree(folder, ignore_errors=True)


def test_training_logs_through_tracking_server(in_study, mlflow_server, tmp_path, monkeypatch):
    import mlflow

    url, folder = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    out = tmp_path / "served"
    assert cli_main(["train", "--experiment", "A0", "--profile", "tiny", "--out", str(out)]) == 0
    client = mlflow.MlflowClient(url)
    run = client.get_run((out / "mlflow_run_id").read_text().strip())
    assert run.data.tags["experiment_id"] == "A0" and "val_loss" in run.data.metrics
    assert [a.path for a in client.list_artifacts(run.info.run_id, "samples")] == [
        "samples/epoch_001.png",
        "samples/epoch_002.png",
    ]
    assert list((folder / "artifacts").rglob("epoch_002.png")), "the artifact went to the server's store"
