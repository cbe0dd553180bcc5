"""Two torchrun "nodes" on loopback train the same model as one node with two processes.

Each node is its own `torchrun --nnodes 2 --nproc_per_node 1` agent. They find each other through
torchrun's c10d rendezvous (the store hosted by the first agent on the endpoint) or, in the static
form, through the master's address and each node's rank, and train over gloo, exactly as two machines
would with the first machine's address in place of 127.0.0.1. Same global batch, same ranks' slices,
same all-reduce: the result must be that of `torchrun --standalone --nproc_per_node 2`, under
test_train.py's DDP check. Not bit for bit: a node's one process takes all the machine's cores for its
kernels where the one-node run gives each process half, and other thread counts sum in another order
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

from linebridge.core import checkpoint

pytestmark = pytest.mark.slow  # torchrun: three agents, four processes

TORCHRUN = str(Path(sys.executable).parent / "torchrun")
TRAIN = ["-m", "linebridge.cli", "train", "--experiment", "A3", "--profile", "tiny", "--no-mlflow"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def val_losses(out: Path) -> list[float]:
    return [float(r["val_loss"]) for r in csv.DictReader((out / "history.csv").open())]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("DVC_ROOT", "WORLD_SIZE", "RANK", "LOCAL_RANK")}


@pytest.fixture(scope="module")
def one_node(tiny_study, tmp_path_factory) -> Path:
    """`torchrun --standalone --nproc_per_node 2`: the single-node run the two-node runs must equal."""
    out = tmp_path_factory.mktemp("one-node") / "A3"
    cmd = [TORCHRUN, "--standalone", "--nproc_per_node", "2", *TRAIN, "--out", str(out)]
    proc = subprocess.run(cmd, cwd=tiny_study, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.parametrize("rendezvous", ["c10d", "static"])
def test_two_nodes_equal_one_node_with_two_processes(tiny_study, one_node, tmp_path, rendezvous):
    """c10d: every node the same command, ranks from the rendezvous; static: the master's address and a node rank."""
    two_nodes, port = tmp_path / "A3", free_port()  # on two machines: the first machine's address, not 127.0.0.1
    if rendezvous == "c10d":
        rdzv = ["--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", f"lb-{os.getpid()}"]
        per_node = [rdzv, rdzv]
    else:
        master = ["--master_addr", "127.0.0.1", "--master_port", str(port)]
        per_node = [[*master, "--node_rank", str(rank)] for rank in (0, 1)]
    nodes = [
        subprocess.Popen(
            [TORCHRUN, "--nnodes", "2", "--nproc_per_node", "1", *flags, *TRAIN, "--out", str(two_nodes)],
            cwd=tiny_study,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for flags in per_node
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
        print(f"{rendezvous} {name}: two nodes vs one node, max |Δw| = {diff:.2e}")
        assert diff < 2e-3, name
    assert val_losses(two_nodes) == pytest.approx(val_losses(one_node), rel=1e-3)
