"""A real `mlflow server` that serves artifacts: what one machine trains and evaluates, another reads back.

The server (sqlite backend, `--serve-artifacts` into a local folder) runs on a loopback port. A tiny
training and its evaluation log to it through MLFLOW_TRACKING_URI alone; then a separate Python
process, started in an empty directory that shares nothing with the training but the server's URL,
downloads the checkpoint and the sample grids and reads the test metrics, as a second machine would.
"""

from __future__ import annotations

import json
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

pytestmark = pytest.mark.slow  # starts `mlflow server`

READ_BACK = """
import json, sys
import mlflow
from mlflow.artifacts import download_artifacts
from linebridge.core import checkpoint

run_id = sys.argv[1]
best = download_artifacts(run_id=run_id, artifact_path="checkpoint/best.pt", dst_path="got")
samples = download_artifacts(run_id=run_id, artifact_path="samples", dst_path="got")
state = checkpoint.load(best)  # a usable model: the same loader `linebridge evaluate` uses
run = mlflow.MlflowClient().get_run(run_id)
print(json.dumps({
    "best": best,
    "epoch": state["epoch"],
    "samples": sorted(p.name for p in __import__("pathlib").Path(samples).iterdir()),
    "metrics": run.data.metrics,
}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served_mlflow():
    """`mlflow server --serve-artifacts` (sqlite backend) on a loopback port; yields its URL and its folder."""
    folder = Path(tempfile.mkdtemp(prefix="linebridge-mlflow-served-"))
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}"]
    cmd += ["--artifacts-destination", str(folder / "artifacts"), "--serve-artifacts", "--workers", "1"]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    log = (folder / "server.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return urllib.request.urlopen(f"{url}/health", timeout=2).status == 200
        except OSError:
            return False

    try:
        deadline = time.time() + 180
        while not ready():
            assert proc.poll() is None, (folder / "server.log").read_text()[-3000:]
            assert time.time() < deadline, "mlflow server did not come up within 180 s"
            time.sleep(0.5)
        yield url, folder
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def test_checkpoint_samples_and_test_metrics_reach_the_server(in_study, served_mlflow, tmp_path, monkeypatch):
    url, folder = served_mlflow
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    out, evaluated = tmp_path / "run", tmp_path / "eval"
    assert cli_main(["train", "--experiment", "A3", "--profile", "tiny", "--out", str(out)]) == 0
    run_id = (out / "mlflow_run_id").read_text().strip()
    args = ["evaluate", "--experiment", "A3", "--profile", "tiny", "--checkpoint", str(out / "best.pt")]
    assert cli_main([*args, "--out", str(evaluated)]) == 0
    stored = list((folder / "artifacts").rglob("best.pt"))
    assert len(stored) == 1, "the checkpoint went to the server's artifact folder"

    elsewhere = tmp_path / "elsewhere"  # another working directory and process: only the URL is shared
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("DVC_ROOT", "MLFLOW_ARTIFACT_URI")}
    env["MLFLOW_TRACKING_URI"] = url
    proc = subprocess.run(
        [sys.executable, "-c", READ_BACK, run_id], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])

    assert Path(got["best"]).is_relative_to(elsewhere)
    assert Path(got["best"]).read_bytes() == (out / "best.pt").read_bytes()
    assert got["samples"] == sorted(p.name for p in (out / "samples").iterdir()) == ["epoch_001.png", "epoch_002.png"]
    assert "best_val_loss" in got["metrics"] and "val_loss" in got["metrics"]
    for protocol in ("self", "cross_gt"):  # every test metric that evaluate wrote, as logged on the training run
        written = json.loads((evaluated / f"{protocol}.json").read_text())["metrics"]
        means = {k: v["mean"] for k, v in written.items() if v.get("mean") is not None and v["mean"] == v["mean"]}
        assert means, protocol
        for metric, mean in means.items():
            assert got["metrics"][f"test/{protocol}/{metric}"] == pytest.approx(mean, rel=1e-12), metric
