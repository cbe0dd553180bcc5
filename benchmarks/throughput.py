"""Study throughput on this machine: one training with every core, or several at once with a share each?

Trains the same short run (default: A0-s0, one epoch on the first 1,024 training images, no MLflow)
first alone with all the cores, then N copies at once with OMP_NUM_THREADS = cores / N each, and
compares images per second of wall time. Run it with nothing else on the machine:

    python benchmarks/throughput.py [--experiment A0-s0] [--images 1024] [--at-once 2] [--out metrics/throughput.json]

The JSON records the commit, the command, the machine's core count and both wall times.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def train(experiment: str, images: int, out: Path, threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "linebridge.cli", "train", "--experiment", experiment, "--no-mlflow"]
    cmd += ["--out", str(out), "--set", "train.epochs=1", "--set", f"train.max_train_images={images}"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def timed(procs: list[subprocess.Popen]) -> float:
    start = time.perf_counter()
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"a training failed (exit {p.returncode}): run it by hand to see why")
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="A0-s0")
    parser.add_argument("--images", type=int, default=1024, help="training images of the one epoch")
    parser.add_argument("--at-once", type=int, default=2, help="trainings at once in the second measurement")
    parser.add_argument("--out", default="metrics/throughput.json")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        alone = timed([train(args.experiment, args.images, Path(tmp) / "alone", cores)])
        share = max(1, cores // args.at_once)
        runs = [train(args.experiment, args.images, Path(tmp) / f"at-once-{i}", share) for i in range(args.at_once)]
        together = timed(runs)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    record = {
        "commit": commit,
        "command": " ".join(["python benchmarks/throughput.py", *sys.argv[1:]]),
        "cores": cores,
        "experiment": args.experiment,
        "images_per_training": args.images,
        "alone": {"trainings": 1, "threads_each": cores, "wall_s": round(alone, 1)},
        "at_once": {"trainings": args.at_once, "threads_each": share, "wall_s": round(together, 1)},
        "speedup": round(args.at_once * alone / together, 3),  # trainings per second, at once against one by one
    }
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
