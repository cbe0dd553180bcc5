"""Two torchrun "nodes" on loopback train the same model as one node with two processes.

Each node is its own `torchrun --nnodes 2 --nproc_per_node 1` agent; they find each other through
torchrun's c10d rendezvous (the store hosted by the first agent on the endpoint) and train over gloo,
exactly as two machines would with the endpoint set to the first machine's address. Same global batch,
same ranks' slices, same all-reduce: the result must be that of `torchrun --standalone --nproc_per_node 2`,
under test_train.py's DDP check. Not bit for bit: a node's one process takes all the machine's cores for
its kernels where the one-node run gives each process half, and other thread counts sum in another order
(the weights differ by ~1e-7 here).
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from linebridge import checkpoint

pytestmark = pytest.mark.slow  # torchrun: three agents, four processes

TORCHRUN = str(Path(sys.executable).parent / "torchrun")
TRAIN = ["-m", "linebridge.cli", "train", "--experiment", "A3", "--profile", "tiny", "--no-mlflow"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def val_losses(out: Path) -> list[float]:
    return [float(r["val_loss"]) for r in csv.DictReader((out / "history.csv").open())]


def test_two_nodes_equal_one_node_with_two_processes(in_study, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DVC_ROOT", "WORLD_SIZE", "RANK", "LOCAL_RANK")}
    one_node, two_nodes = tmp_path / "one-node", tmp_path / "two-nodes"
    proc = subprocess.run(
        [TORCHRUN, "--standalone", "--nproc_per_node", "2", *TRAIN, "--out", str(one_node)],
        cwd=in_study,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    endpoint = f"127.0.0.1:{free_port()}"  # on two machines: the first machine's address, reachable from the second
    rdzv = ["--rdzv_backend", "c10d", "--rdzv_endpoint", endpoint, "--rdzv_id", f"linebridge-{os.getpid()}"]
    nodes = [
        subprocess.Popen(
            [TORCHRUN, "--nnodes", "2", "--nproc_per_node", "1", *rdzv, *TRAIN, "--out", str(two_nodes)],
            cwd=in_study,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for node in nodes:
        _, err = node.communicate(timeout=300)
        assert node.returncode == 0, err[-3000:]

    summary = json.loads((two_nodes / "metrics.json").read_text())
    assert summary["processes"] == 2  # and train() raised if the ranks' weights differed
    # test_train.py's tolerance: AdamW moves a weight by up to ~lr per step whatever its gradient, so float
    # reduction-order differences can grow to O(lr · steps) on near-zero gradients.
    for name in ("last.pt", "best.pt"):
        a, b = checkpoint.load(two_nodes / name), checkpoint.load(one_node / name)
        diff = max((a["model"][k] - b["model"][k]).abs().max().item() for k in b["model"])
        print(f"{name}: two nodes vs one node, max |Δw| = {diff:.2e}")
        assert diff < 2e-3, name
    assert val_losses(two_nodes) == pytest.approx(val_losses(one_node), rel=1e-3)
