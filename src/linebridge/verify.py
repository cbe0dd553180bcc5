"""`linebridge verify` (`make verify`): re-score the released weights on the test protocols and compare with the study.

The weights (weights/linebridge.safetensors, `linebridge release`) name the run they come from; this samples the test
protocols with the study's sampler (params.yaml `eval`) and compares each headline metric with what the study's
evaluation of that run wrote (metrics/eval/RUN/), within TOLERANCE: CPU kernels differ across machines in the last
digits, not more. Exit 1 when a metric is out of tolerance.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from linebridge.core.config import RELEASED, UserError, load_config, repo_root
from linebridge.release import headline

# protocol → headline metrics compared, and how far apart a re-score may be (absolute)
VERIFIED = {"self": ("psnr", "ssim", "delta_e", "tint_rate"), "cross_gt": ("delta_e", "delta_e_tone")}
TOLERANCE = {"psnr": 0.05, "ssim": 0.001, "delta_e": 0.05, "delta_e_tone": 0.05, "tint_rate": 0.002}


def verify(root: Path) -> list[str]:
    """Re-score the released weights; one line per compared metric, the failures listed first (empty: none)."""
    from linebridge.core import checkpoint
    from linebridge.evaluation.evaluate import evaluate
    from linebridge.inference import Sampler

    weights = root / RELEASED
    run = checkpoint.load(weights)["released"]["run"]
    expected = headline(root, run)
    missing = [p for p in VERIFIED if p not in expected]
    if missing:
        raise UserError(f"metrics/eval/{run}/: no {', '.join(missing)}.json to compare with; run the study first")
    cfg = load_config(None)
    with tempfile.TemporaryDirectory() as tmp:
        results = evaluate(run, weights, cfg, Path(tmp), Sampler.from_eval(cfg["eval"]), protocols=tuple(VERIFIED))
    failed, passed = [], []
    for protocol, names in VERIFIED.items():
        for name in names:
            got, want = results[protocol]["metrics"][name]["mean"], expected[protocol][name]
            line = f"{protocol}.{name}: {got:.4f} against {want:.4f} (tolerance {TOLERANCE[name]})"
            (passed if abs(got - want) <= TOLERANCE[name] else failed).append(line)
    return [*(f"FAILED {x}" for x in failed), *(f"ok {x}" for x in passed)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options: the weights at weights/linebridge.safetensors against the study's numbers


def main(args: argparse.Namespace) -> int:
    lines = verify(repo_root())
    print("\n".join(lines))
    return 1 if any(line.startswith("FAILED") for line in lines) else 0
