"""Where a run's cross_gt tone error comes from (a diagnostic of a finished study; not a pipeline stage).

    PYTHONPATH=src python docs/tone_gap.py STUDY_ROOT RUN [RUN ...]      e.g. A3-s0 A0-s0

Each RUN (outputs/train/RUN/best.pt) colours the test cross_gt triples with the study's
sampler (params.yaml `eval`), and the tone region is scored four ways:

- tone ΔE00: the report's number (reference = another drawing in the same skin tone);
- with the ground truth as its own reference (aligned, exact colours): the floor of this
  network and sampler when the reference leaves nothing to look for;
- with the output's mean colour over the tone region moved onto the ground truth's: what is
  left when the skin colour is right on average (shading, edges);
- L* slope: the least-squares slope of the output's mean tone-region L* on the ground
  truth's, over the triples, for both references (1: lightness carried over; 0: ignored).

The first line is a flat fill of the tone region with the ground truth's own mean colour.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from linebridge.core.config import UserError, load_config
from linebridge.evaluation import metrics as M
from linebridge.evaluation.evaluate import load_protocol, study_colorizer

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("root", type=Path, help="a study root after `dvc repro` (outputs/train, outputs/prepared)")
parser.add_argument("runs", nargs="+", help="run names under outputs/train/")
args = parser.parse_args()

try:
    data = load_protocol(args.root / "outputs" / "prepared", "cross_gt")
except UserError as err:
    sys.exit(f"tone_gap.py: {err}")
gt, ref, mask, line = data["GT"], data["ref"], data["mask"], data["lineart"]
inside = mask.reshape(len(gt), 1, -1) > 0.5
ec = load_config(None, None, [], root=args.root)["eval"]


def region_mean(images: torch.Tensor) -> torch.Tensor:
    """Mean over the tone region of each image, per channel: [B, C]."""
    x, w = images.reshape(len(images), images.shape[1], -1), inside.to(images.dtype)
    return (x * w).sum(-1) / w.sum(-1).clamp(min=1)


def tone(images: torch.Tensor) -> float:
    return float(M.colour_error(images, gt, mask=mask).nanmean())


def lightness_slope(images: torch.Tensor) -> float:
    out, truth = region_mean(M.rgb_to_lab(images))[:, 0], region_mean(M.rgb_to_lab(gt))[:, 0]
    truth = truth - truth.mean()
    return float((truth * (out - out.mean())).sum() / (truth * truth).sum())


def move_mean_onto_truth(images: torch.Tensor) -> torch.Tensor:
    shift = (region_mean(gt) - region_mean(images))[:, :, None] * inside
    return (images.reshape(len(images), 3, -1) + shift).reshape(images.shape).clamp(-1, 1)


flat = torch.where(inside, region_mean(gt)[:, :, None], gt.reshape(len(gt), 3, -1)).reshape(gt.shape)
print(f"{len(gt)} test cross_gt triples; flat fill at the ground truth's own mean: tone ΔE00 {tone(flat):.2f}")
print("run | tone ΔE00 | GT as reference | mean colour moved onto GT's | L* slope (cross_gt / GT as reference)")
for run in args.runs:
    try:
        fn = study_colorizer(args.root / "outputs" / "train" / run / "best.pt", ec)
    except UserError as err:
        sys.exit(f"tone_gap.py: {err}")
    with torch.no_grad():
        cross = torch.cat([fn(line[i : i + 64], ref[i : i + 64], 0) for i in range(0, len(gt), 64)])
        oracle = torch.cat([fn(line[i : i + 64], gt[i : i + 64], 0) for i in range(0, len(gt), 64)])
    print(
        f"{run} | {tone(cross):.2f} | {tone(oracle):.2f} | {tone(move_mean_onto_truth(cross)):.2f} | "
        f"{lightness_slope(cross):.2f} / {lightness_slope(oracle):.2f}"
    )
