"""Our U-Net against BBDM's own (xuekt98/BBDM's `UNetModel`) at matched shapes: time per step and where it goes.

    python benchmarks/bbdm_unet_compare.py --bbdm PATH/TO/BBDM [--batch 8] [--out metrics/bbdm_unet_compare_b8.json]

PATH/TO/BBDM is a checkout of https://github.com/xuekt98/BBDM (not vendored here); its
U-Net imports einops and omegaconf, so install them where this runs (e.g. `pip install
--target DIR einops omegaconf` and put DIR on PYTHONPATH). Not part of the study or the tests.

Both networks get the same inputs: x_t and the line art concatenated (4 channels in, 3
out), a timestep, and an 8×8 map of 64-dimensional reference tokens as the cross-attention context
(random; the reference encoder is outside the comparison). Matched: widths 32·(1, 2, 2),
one res block per level, attention with cross-attention at the 8×8 maps, 8 heads,
scale-shift time conditioning, channels-last weights. One step = forward, MSE loss, backward, fused AdamW, timed
interleaved (medians). Then torch.profiler lists the ops that take each network's time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from linebridge.bbdm.info import count_parameters
from linebridge.bbdm.unet import build_model
from linebridge.bench import interleaved_medians, matmul_peak
from linebridge.core.config import load_config
from linebridge.core.tracking import git_commit

# The network before the options of docs/network-options.md: GroupNorm(32) (instance norm at 32 channels),
# additive time embedding, no zero init, self-attention only at 8×8, cross-attention at the bottleneck to 2×2 tokens.
EARLIER = [
    "model.norm_groups=32", "model.zero_init=false", "model.scale_shift=false", "model.use_spatial_transformer=false",
    "model.reference_downsample=16", "model.reference_positions=false",
]  # fmt: skip


def bbdm_unet(root: Path, cfg: dict) -> nn.Module:
    """BBDM's UNetModel with our default's shapes (its GroupNorm32 is 32 groups: instance norm at 32 channels)."""
    sys.path.insert(0, str(root))
    try:
        from model.BrownianBridge.base.modules.diffusionmodules.openaimodel import UNetModel
    except ImportError as err:
        raise SystemExit(f"--bbdm {root}: cannot import BBDM's UNetModel ({err}); see the docstring") from None
    m, size = cfg["model"], cfg["data"]["image_size"]
    return UNetModel(
        image_size=size,
        in_channels=4,
        model_channels=m["model_channels"],
        out_channels=3,
        num_res_blocks=m["num_res_blocks"],
        attention_resolutions=[size // s for s in m["attention_sizes"]],  # BBDM counts downsample factors
        channel_mult=tuple(m["channel_mult"]),
        num_heads=m["heads"],
        use_scale_shift_norm=True,
        use_spatial_transformer=True,
        context_dim=m["context_dim"],
        condition_key="nocond",
    )


def step_fn(net: nn.Module, call, target: torch.Tensor):
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=True)

    def step() -> None:
        loss = F.mse_loss(call(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def flops(call) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        call().square().mean().backward()
    return float(counter.get_total_flops())


def top_ops(step, n: int = 12) -> list[dict]:
    """The ops with the most self CPU time over 10 steps (ms per step)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(10):
            step()
    rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:n]
    return [{"op": e.key, "ms_per_step": e.self_cpu_time_total / 1e4, "calls_per_step": e.count / 10} for e in rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bbdm", type=Path, required=True, help="a checkout of github.com/xuekt98/BBDM")
    parser.add_argument("--batch", type=int, default=8, help="images per step (default: the CPU profile's 8)")
    parser.add_argument("--repeats", type=int, default=30, help="timed steps per network (default 30)")
    parser.add_argument("--out", type=Path, help="also write the results here as JSON")
    args = parser.parse_args()
    if not (args.bbdm / "model" / "BrownianBridge").is_dir():
        raise SystemExit(f"--bbdm {args.bbdm}: no model/BrownianBridge/ there; clone github.com/xuekt98/BBDM first")

    torch.manual_seed(0)
    cfg = load_config("A3")
    size, b = cfg["data"]["image_size"], args.batch
    x, line = torch.randn(b, 3, size, size), torch.randn(b, 1, size, size)
    t = torch.randint(0, 1000, (b,))
    grid = size // cfg["model"]["reference_downsample"]
    ctx_map = torch.randn(b, cfg["model"]["context_dim"], grid, grid)  # BBDM's attention flattens a map itself
    ctx = ctx_map.flatten(2).transpose(1, 2)
    target = torch.randn(b, 3, size, size)
    xin = torch.cat([x, line], dim=1)

    earlier = build_model(load_config("A3", overrides=EARLIER))
    bbdm = bbdm_unet(args.bbdm, cfg)
    nets = {
        "ours (default: GroupNorm 8 groups)": build_model(cfg),
        "ours, GroupNorm 32 groups": build_model(load_config("A3", overrides=["model.norm_groups=32"])),
        "BBDM UNetModel (GroupNorm 32 groups)": bbdm,
        "ours, the earlier default network": earlier,
    }
    for net in nets.values():  # the training loop's layout (perf.channels_last) for all of them
        net.to(memory_format=torch.channels_last)
    calls = {name: (lambda n=net: n(x, t, line, context=ctx)) for name, net in nets.items()}
    calls["BBDM UNetModel (GroupNorm 32 groups)"] = lambda: bbdm(xin, t, ctx_map)
    # the earlier encoder's stride 16 gives 2×2 tokens at 32²
    calls["ours, the earlier default network"] = lambda: earlier(x, t, line, context=ctx[:, : (size // 16) ** 2])
    steps = {name: step_fn(nets[name], calls[name], target) for name in nets}
    peak, _ = matmul_peak(torch.device("cpu"))
    medians = interleaved_medians(steps, args.repeats, 5, torch.device("cpu"))
    result = {"commit": git_commit(), "batch": b, "image_size": size, "torch": torch.__version__}
    result |= {"matmul_peak_gflops": peak, "nets": {}}
    for name, net in nets.items():
        f = flops(calls[name])
        result["nets"][name] = {
            "params": count_parameters(net),
            "s_per_step": medians[name],
            "gflop_per_step_fwd_bwd": f / 1e9,
            "of_peak": f / medians[name] / 1e9 / peak,
            "top_ops": top_ops(steps[name]),
        }
    for name, r in result["nets"].items():
        print(
            f"{name}: {r['params']:,} params, {r['s_per_step'] * 1e3:.1f} ms/step, "
            f"{r['gflop_per_step_fwd_bwd']:.2f} GFLOP fwd+bwd, {100 * r['of_peak']:.0f} % of {peak:.0f} GFLOP/s"
        )
        for op in r["top_ops"][:8]:
            print(f"    {op['op']:<40} {op['ms_per_step']:7.2f} ms  ×{op['calls_per_step']:.0f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
