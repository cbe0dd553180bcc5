"""`linebridge bench`: how fast training and sampling run here, against what the machine can do.

Every speed-up is measured against the code path it replaced, in the same run: each
measurement times a "before" and an "after" variant, interleaved repeat by repeat so
that drift in the machine's speed hits both alike, and reports medians after warm-up.

- matmul peak: a dense fp32 matmul (2048³; bf16 8192³ on a GPU), the practical ceiling;
- training step at the default config (batch of train.batch_size) and at the paper
  config's real shapes (256², the paper network; batch 1 on a CPU, where one step takes
  tens of seconds): the whole loop body — reference (TPS + jitter), loss, backward, clip,
  AdamW, EMA — with FLOPs from torch.utils.flop_counter and GFLOP/s as a share of the peak;
- sampling seconds per image at 200, 50 and 20 sampler steps (default config).

    before  contiguous NCHW tensors, AdamW looping over parameters, a host sync per step
    after   params.yaml `perf`: channels_last, fused AdamW, host syncs every CHECK_EVERY steps
    +compile  `after` under torch.compile (with --compile; the first call compiles)

`--gpu-check` is the GPU speed check (benchmarks/gpu_check.sh): it trains the paper config for a few
hundred steps in bf16 and reports images/s and model FLOPs utilisation (see gpu_check).
It imports neither kornia, mlflow nor the data stack, so it runs on a bare PyTorch image.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from linebridge.bbdm.sampling import build_bridge
from linebridge.bbdm.train import EMA, autocast, diffusion_loss, make_optimizer, train_step
from linebridge.bbdm.unet import build_model, use_channels_last
from linebridge.core.config import Config, load_config, repo_root
from linebridge.core.io import write_json
from linebridge.core.tracking import git_commit
from linebridge.data.batches import reference_for

SAMPLING_STEPS = (200, 50, 20)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds of each call; every round times each function once, in turn (drift hits all alike)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def interleaved_medians(
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: int, device: torch.device
) -> dict[str, float]:
    return {name: statistics.median(ts) for name, ts in interleaved_times(fns, repeats, warmup, device).items()}


def matmul_peak(device: torch.device, repeats: int = 10) -> tuple[float, str]:
    """GFLOP/s of a square matmul in the dtype training computes in (fp32 on CPU, bf16 on GPU).

    The fastest of `repeats` products: the ceiling is what the machine can do, and a
    median would let a moment of contention (another process, a slow core) lower it.
    """
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (2048, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    fastest = min(interleaved_times({"mm": lambda: a @ b}, repeats, 3, device)["mm"])
    return 2 * n**3 / fastest / 1e9, f"{str(dtype).removeprefix('torch.')} {n}³"


def synthetic_batch(cfg: Config, batch: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the shapes of a training batch (the bench needs no dataset)."""
    g = torch.Generator().manual_seed(seed)
    s = cfg["data"]["image_size"]
    out = {
        "GT": torch.rand(batch, 3, s, s, generator=g) * 2 - 1,
        "lineart": torch.rand(batch, 1, s, s, generator=g) * 2 - 1,
    }
    return {k: v.to(device) for k, v in out.items()}


def model_flops_per_step(net: nn.Module, cfg: Config, batch: dict[str, torch.Tensor], ref: torch.Tensor) -> float:
    """FLOPs of the network's forward + backward on one batch (torch.utils.flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    bridge = build_bridge(cfg).to(ref.device)
    t = torch.randint(0, bridge.num_timesteps, (ref.shape[0],), device=ref.device)
    counter = FlopCounterMode(display=False)
    with counter, autocast(ref.device):
        loss, _ = diffusion_loss(net, bridge, batch, ref, cfg, t, torch.randn_like(ref))
        loss.backward()
    net.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


class LoopStep:
    """One body of the training loop (reference, timesteps, noise, train_step, EMA) for one variant.

    `make_ref(gt)` makes the reference (default: the training one, TPS + jitter).
    """

    def __init__(
        self,
        cfg: Config,
        batch: dict[str, torch.Tensor],
        variant: str,
        device: torch.device,
        make_ref: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        torch.manual_seed(0)
        self.cfg, self.batch, self.variant = cfg, batch, variant
        self.make_ref = make_ref or (lambda gt: reference_for(gt, cfg))
        self.before = variant == "before"
        net = build_model(cfg).to(device)
        self.net = net if self.before else use_channels_last(net, cfg)
        self.model = torch.compile(self.net) if variant == "+compile" else self.net
        self.bridge = build_bridge(cfg).to(device)
        self.opt = make_optimizer(self.net, cfg, fused=False if self.before else None)
        self.ema = EMA(self.net, cfg["train"]["ema_rate"], 0)
        self.step = 0
        self.first_loss: torch.Tensor | None = None
        self.last_loss: torch.Tensor | None = None

    def __call__(self) -> None:
        gt = self.batch["GT"]
        t = torch.randint(0, self.bridge.num_timesteps, (gt.shape[0],), device=gt.device)
        loss = train_step(
            self.model,
            self.net,
            self.bridge,
            self.opt,
            self.batch,
            self.make_ref(gt),
            t,
            torch.randn_like(gt),
            self.cfg,
        )
        if self.before:
            bool(torch.isfinite(loss))  # the per-step NaN check the loop used to make
        self.step += 1
        self.ema.update(self.net, self.step)
        self.first_loss = loss if self.first_loss is None else self.first_loss
        self.last_loss = loss


def train_step_bench(
    profile: str | None,
    variants: list[str],
    repeats: int,
    warmup: int,
    device: torch.device,
    batch_size: int | None = None,
    one_at_a_time: bool = False,
) -> list[dict[str, Any]]:
    """Loop-step timings per variant. `one_at_a_time` builds and times the variants in turn
    instead of interleaved (the paper network, its optimiser and EMA take ~6 GB each)."""
    cfg = load_config("A3", profile)
    b = batch_size or cfg["train"]["batch_size"]
    batch = synthetic_batch(cfg, b, device)
    flops = model_flops_per_step(build_model(cfg).to(device), cfg, batch, reference_for(batch["GT"], cfg))
    if one_at_a_time:
        medians = {
            v: interleaved_medians({v: LoopStep(cfg, batch, v, device)}, repeats, warmup, device)[v] for v in variants
        }
    else:
        medians = interleaved_medians({v: LoopStep(cfg, batch, v, device) for v in variants}, repeats, warmup, device)
    return [
        {
            "profile": cfg["profile"],
            "variant": v,
            "image_size": cfg["data"]["image_size"],
            "batch": b,
            "seconds_per_step": sec,
            "images_per_s": b / sec,
            "gflop_per_step": flops / 1e9,
            "gflop_per_s": flops / sec / 1e9,
        }
        for v, sec in medians.items()
    ]


def sampling_bench(
    profile: str | None, variants: list[str], repeats: int, batch: int, device: torch.device
) -> list[dict[str, Any]]:
    """Seconds per image of the bridge sampler (bbdm.sampling.colorize) at each of SAMPLING_STEPS."""
    from linebridge.bbdm.sampling import colorize

    cfg = load_config("A3", profile)
    torch.manual_seed(0)
    base = build_model(cfg).eval().to(device)
    nets = {"before": base}
    if "after" in variants:
        import copy

        nets["after"] = use_channels_last(copy.deepcopy(base), cfg)
    bridge = build_bridge(cfg).to(device)
    data = synthetic_batch(cfg, batch, device)
    line, ref = data["lineart"], data["GT"]
    rows = []
    for steps in SAMPLING_STEPS:
        fns = {
            v: (lambda net=net: colorize(net, bridge, line, ref, steps, batch_size=batch)) for v, net in nets.items()
        }
        medians = interleaved_medians(fns, repeats if steps < 200 else max(1, repeats - 1), 1, device)
        rows += [
            {"variant": v, "steps": steps, "batch": batch, "seconds_per_image": sec / batch}
            for v, sec in medians.items()
        ]
    return rows


def gpu_check(
    profile: str | None, steps: int, batch_size: int | None, compile_net: bool, device: torch.device
) -> dict[str, Any]:
    """Train the paper config `steps` steps in bf16 on synthetic data: images/s and model FLOPs utilisation.

    MFU = model FLOPs per step (forward + backward, flop_counter) / step time / the bf16
    matmul peak measured in the same run. The first fifth of the steps (at least 5) are
    warm-up (cuDNN autotuning, compilation) and not timed. The reference is the real
    TPS + jitter one when kornia is installed, else the target itself (recorded).
    """
    cfg = load_config("A3", profile)
    b = batch_size or cfg["train"]["batch_size"]
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    peak, peak_what = matmul_peak(device)
    batch = synthetic_batch(cfg, b, device)
    try:
        ref_kind, make_ref = "TPS + colour jitter (kornia)", lambda gt: reference_for(gt, cfg)
        make_ref(batch["GT"])
    except ImportError:
        ref_kind, make_ref = "the target itself (kornia not installed)", lambda gt: gt
    flops = model_flops_per_step(build_model(cfg).to(device), cfg, batch, make_ref(batch["GT"]))
    loop = LoopStep(cfg, batch, "+compile" if compile_net else "after", device, make_ref)
    warmup = max(5, steps // 5)
    from tqdm.auto import tqdm

    for i in tqdm(range(steps), desc="gpu check", unit="step"):
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
        loop()
    sync(device)
    seconds = (time.perf_counter() - t0) / (steps - warmup)
    first, last = float(loop.first_loss), float(loop.last_loss)
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "profile": cfg["profile"],
        "image_size": cfg["data"]["image_size"],
        "batch": b,
        "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
        "compile": compile_net,
        "channels_last": cfg["perf"]["channels_last"],
        "reference": ref_kind,
        "steps": steps,
        "timed_steps": steps - warmup,
        "seconds_per_step": seconds,
        "images_per_s": b / seconds,
        "gflop_per_step": flops / 1e9,
        "matmul_peak": peak_what,
        "matmul_peak_gflop_per_s": peak,
        "model_flops_utilisation": flops / seconds / 1e9 / peak,
        "loss_first_step": first,
        "loss_last_step": last,
        "max_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="metrics/bench.json", help="JSON output (relative to the repository root)")
    parser.add_argument(
        "--repeats", type=int, default=10, help="timed repeats per measurement (paper config and sampling: fewer)"
    )
    parser.add_argument(
        "--skip-paper",
        action="store_true",
        help="skip the paper-config training step (tens of seconds per step on a CPU)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time the default-config step under torch.compile (compiles first: ~1.5 min on 2 cores)",
    )
    parser.add_argument("--sampling-batch", type=int, default=32, help="images per sampler batch")
    parser.add_argument(
        "--gpu-check",
        action="store_true",
        help=(
            "instead: train the paper config in bf16 for --steps steps and report images/s and MFU "
            "(needs CUDA unless --device cpu)"
        ),
    )
    parser.add_argument("--steps", type=int, default=300, help="--gpu-check: training steps (a fifth are warm-up)")
    parser.add_argument(
        "--batch", type=int, default=None, help="--gpu-check: batch size (default: the profile's train.batch_size)"
    )
    parser.add_argument(
        "--profile",
        default=None,
        help="params.yaml profile of the main measurements (default: the CPU profile; --gpu-check: paper)",
    )
    parser.add_argument(
        "--device", default="cuda", help="--gpu-check: torch device (cpu only to try the command on a small profile)"
    )


def print_table(result: dict[str, Any]) -> None:
    print(
        f"matmul peak ({result['matmul_peak']}): {result['matmul_peak_gflop_per_s']:.1f} GFLOP/s, "
        f"{result['threads']} threads"
    )
    print(
        f"{'profile':<8} {'variant':<9} {'size':>5} {'batch':>5} {'s/step':>8} {'img/s':>7} "
        f"{'GFLOP/step':>11} {'GFLOP/s':>8} {'of peak':>8}"
    )
    for r in result["train_step"]:
        print(
            f"{r['profile']:<8} {r['variant']:<9} {r['image_size']:>5} {r['batch']:>5} "
            f"{r['seconds_per_step']:>8.3f} {r['images_per_s']:>7.2f} "
            f"{r['gflop_per_step']:>11.1f} {r['gflop_per_s']:>8.1f} {r['fraction_of_matmul_peak']:>8.0%}"
        )
    print(f"{'sampling':<8} {'variant':<9} {'steps':>5} {'ms/image':>9} {'vs 200 steps':>13}")
    for r in result["sampling"]:
        print(
            f"{'':<8} {r['variant']:<9} {r['steps']:>5} {r['seconds_per_image'] * 1000:>9.1f} "
            f"{r['speedup_vs_200']:>12.1f}×"
        )


def main(args: argparse.Namespace) -> int:
    torch.set_num_threads(os.cpu_count() or 1)
    out = Path(args.out) if Path(args.out).is_absolute() else repo_root() / args.out
    if args.gpu_check:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            print(
                "linebridge bench --gpu-check: no CUDA device here. Run it on a GPU machine "
                "(benchmarks/gpu_check.sh), or add --device cpu --profile tiny to try the command."
            )
            return 2
        result = gpu_check(args.profile or "paper", args.steps, args.batch, args.compile, device)
    else:
        device = torch.device("cpu")
        first_peak, peak_what = matmul_peak(device)
        variants = ["before", "after"] + (["+compile"] if args.compile else [])
        train_rows = train_step_bench(args.profile, variants, args.repeats, 3, device)
        if not args.skip_paper:
            train_rows += train_step_bench(
                "paper", ["before", "after"], max(2, args.repeats // 4), 1, device, batch_size=1, one_at_a_time=True
            )
        last_peak = matmul_peak(device)[0]  # measured at both ends of the run; the higher is the ceiling
        peak = max(first_peak, last_peak)
        for row in train_rows:
            row["fraction_of_matmul_peak"] = row["gflop_per_s"] / peak
        sample_rows = sampling_bench(
            args.profile, ["before", "after"], max(2, args.repeats // 3), args.sampling_batch, device
        )
        at200 = {r["variant"]: r["seconds_per_image"] for r in sample_rows if r["steps"] == 200}
        for r in sample_rows:
            r["speedup_vs_200"] = at200[r["variant"]] / r["seconds_per_image"]
        result = {
            "threads": torch.get_num_threads(),
            "device": "cpu",
            "torch": torch.__version__,
            "matmul_peak": peak_what,
            "matmul_peak_gflop_per_s": peak,
            "matmul_peak_first_last": [first_peak, last_peak],
            "train_step": train_rows,
            "sampling": sample_rows,
        }
    result["commit"] = git_commit()  # on a copy without .git (a GPU machine): $LINEBRIDGE_COMMIT or "unknown"
    write_json(out, result)
    if args.gpu_check:
        for key, value in result.items():
            print(f"{key:<26} {value:.4g}" if isinstance(value, float) else f"{key:<26} {value}")
    else:
        print_table(result)
    print(f"wrote {out}")
    return 0
