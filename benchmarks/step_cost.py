"""What one training step costs, per arm and network option: the cost-per-step lever of learning faster.

Times the whole loop body (`bench.LoopStep`: reference with TPS + jitter, loss, backward, clip, AdamW, EMA) on
synthetic batches for A0 and A5 under each variant below, interleaved repeat by repeat (`bench.interleaved_times`,
so drift in the machine's speed hits all alike), and records images per second, FLOPs per image and the share of
the machine's fp32 matmul peak. Run it with nothing else on the machine:

    python benchmarks/step_cost.py [--repeats 20] [--out metrics/learning-faster/step_cost.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import torch

from linebridge.bench import LoopStep, interleaved_times, matmul_peak, model_flops_per_step, synthetic_batch
from linebridge.core.config import load_config
from linebridge.core.io import write_json
from linebridge.core.tracking import git_commit
from linebridge.data.batches import reference_for

# variant → overrides of params.yaml (batch size set per variant)
VARIANTS = {
    "8 heads × 32, batch 8 (the recipe before)": ["model.heads=8", "train.batch_size=8"],
    "8 heads × 32, batch 16": ["model.heads=8", "train.batch_size=16"],
    "2 heads × 32, batch 8": ["model.heads=2", "train.batch_size=8"],
    "2 heads × 32, batch 16 (the study's)": ["model.heads=2", "train.batch_size=16"],
    "2 heads × 32, batch 32": ["model.heads=2", "train.batch_size=32"],
}
ARMS = ("A0", "A5")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default="metrics/learning-faster/step_cost.json")
    args = parser.parse_args()
    device = torch.device("cpu")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 0) or os.cpu_count() or 1)
    peak, peak_kind = matmul_peak(device)
    steps, meta = {}, {}
    for arm in ARMS:
        for name, sets in VARIANTS.items():
            cfg = load_config(f"{arm}-s0", overrides=sets)
            batch = synthetic_batch(cfg, cfg["train"]["batch_size"], device)
            step = LoopStep(cfg, batch, "after", device)
            ref = reference_for(batch["GT"], cfg)
            flops = model_flops_per_step(step.net, cfg, batch, ref)
            steps[(arm, name)] = step
            meta[(arm, name)] = (cfg["train"]["batch_size"], flops)
    times = interleaved_times({f"{a}|{n}": s for (a, n), s in steps.items()}, args.repeats, 3, device)
    rows = []
    for (arm, name), (size, flops) in meta.items():
        seconds = statistics.median(times[f"{arm}|{name}"])
        rows.append(
            {
                "arm": arm,
                "variant": name,
                "batch": size,
                "seconds_per_step": round(seconds, 5),
                "images_per_s": round(size / seconds, 1),
                "gflop_per_image": round(flops / size / 1e9, 3),
                "fraction_of_matmul_peak": round(flops / seconds / 1e9 / peak, 3),
            }
        )
    record = {
        "commit": git_commit(short=True),
        "command": " ".join(["python benchmarks/step_cost.py", *sys.argv[1:]]),
        "threads": torch.get_num_threads(),
        "matmul_peak": peak_kind,
        "matmul_peak_gflop_per_s": round(peak, 1),
        "repeats": args.repeats,
        "rows": rows,
    }
    write_json(Path(args.out), record)
    for r in rows:
        print(
            f"{r['arm']} {r['variant']:45s} {r['images_per_s']:7.1f} img/s  {r['fraction_of_matmul_peak']:.2f} of peak"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
