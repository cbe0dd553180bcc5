"""`linebridge bench`: how fast training and sampling run here, against what the machine can do.

Measures, with medians of several timed repeats after warm-up:
- a dense fp32 matmul (2048³) → the machine's practical GFLOP/s peak, in the same run;
- a training step (forward + backward + AdamW) of the A3 network at the default CPU
  config and at the paper config's real shapes (256², batch 8; on a CPU this is slow, so
  it gets fewer repeats), its FLOPs from torch.utils.flop_counter, and the achieved
  GFLOP/s as a fraction of the matmul peak;
- sampling seconds per image at 200, 50 and 20 sampler steps (default config, batch 64).
Writes JSON (default metrics/bench.json) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from linebridge.config import load_config, repo_root
from linebridge.models import build_model
from linebridge.train import build_bridge, diffusion_loss


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n³ fp32 matmul: the practical ceiling the model is compared with."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / median_seconds(lambda: a @ b, repeats) / 1e9


def train_step_bench(profile: str | None, repeats: int) -> dict[str, Any]:
    from torch.utils.flop_counter import FlopCounterMode

    cfg = load_config("A3", profile)
    net, bridge = build_model(cfg), build_bridge(cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg["train"]["lr"])
    b, s = cfg["train"]["batch_size"], cfg["data"]["image_size"]
    g = torch.Generator().manual_seed(0)
    batch = {"GT": torch.rand(b, 3, s, s, generator=g) * 2 - 1, "lineart": torch.rand(b, 1, s, s, generator=g) * 2 - 1}
    ref = torch.rand(b, 3, s, s, generator=g) * 2 - 1
    t = torch.randint(0, bridge.num_timesteps, (b,), generator=g)
    noise = torch.randn(b, 3, s, s, generator=g)

    def step() -> None:
        loss, _ = diffusion_loss(net, bridge, batch, ref, cfg, t, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    counter = FlopCounterMode(display=False)
    with counter:
        loss, _ = diffusion_loss(net, bridge, batch, ref, cfg, t, noise)
        loss.backward()
    flops = counter.get_total_flops()
    seconds = median_seconds(step, repeats, warmup=1 if profile == "paper" else 3)
    return {"profile": cfg["profile"], "image_size": s, "batch": b, "seconds_per_step": seconds, "images_per_s": b / seconds,
            "gflop_per_step": flops / 1e9, "gflop_per_s": flops / seconds / 1e9}


def sampling_bench(steps_list: list[int], n: int = 64) -> list[dict[str, Any]]:
    from linebridge.inference import colorize

    cfg = load_config("A3")
    net, bridge = build_model(cfg).eval(), build_bridge(cfg)
    s = cfg["data"]["image_size"]
    line, ref = torch.rand(n, 1, s, s) * 2 - 1, torch.rand(n, 3, s, s) * 2 - 1
    rows = []
    for steps in steps_list:
        seconds = median_seconds(lambda: colorize(net, bridge, line, ref, steps, batch_size=n), repeats=3, warmup=1)
        rows.append({"steps": steps, "batch": n, "seconds_per_image": seconds / n})
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="metrics/bench.json", help="JSON output (relative to the repository root)")
    parser.add_argument("--repeats", type=int, default=10, help="timed repeats per measurement (paper config: a third)")
    parser.add_argument("--skip-paper", action="store_true", help="skip the paper-config training step (slow on a CPU)")


def main(args: argparse.Namespace) -> int:
    import os

    torch.set_num_threads(os.cpu_count() or 1)
    peak = matmul_peak()
    train_rows = [train_step_bench(None, args.repeats)]
    if not args.skip_paper:
        train_rows.append(train_step_bench("paper", max(1, args.repeats // 3)))
    for row in train_rows:
        row["fraction_of_matmul_peak"] = row["gflop_per_s"] / peak
    sample_rows = sampling_bench([200, 50, 20])
    result = {"threads": torch.get_num_threads(), "device": "cpu", "matmul_peak_gflop_per_s": peak,
              "train_step": train_rows, "sampling": sample_rows}
    out = repo_root() / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"dense fp32 matmul peak: {peak:.1f} GFLOP/s ({result['threads']} threads)")
    print(f"{'profile':<8} {'size':>5} {'batch':>5} {'s/step':>8} {'img/s':>7} {'GFLOP/step':>11} {'GFLOP/s':>8} {'of peak':>8}")
    for r in train_rows:
        print(f"{r['profile']:<8} {r['image_size']:>5} {r['batch']:>5} {r['seconds_per_step']:>8.3f} {r['images_per_s']:>7.1f} "
              f"{r['gflop_per_step']:>11.1f} {r['gflop_per_s']:>8.1f} {r['fraction_of_matmul_peak']:>8.0%}")
    for r in sample_rows:
        print(f"sampling {r['steps']:>3} steps: {r['seconds_per_image'] * 1000:.1f} ms/image (batch {r['batch']})")
    return 0
