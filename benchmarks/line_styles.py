"""Line-style augmentation on the validation split: in-style quality and each unseen style, per trained model.

Scores the EMA weights of each given training folder (its last epoch: where the convergence rule stopped it) under
the study's sampler (params.yaml `eval`) on `--val-items` validation items of `self` and `cross_gt`, with the line
art as drawn and in each style of `data.styles.STYLE_PROTOCOLS` (thick, filled, extracted), and pasting the
reference (copy-reference) as the bar to beat. Per model and style it records what the report's "Unseen line
styles" section shows on the test split: cross_gt tone ΔE00 and self interior ΔE00 on the pixels off every style's
lines, the slope of the output's skin lightness on the ground truth's; in style also self PSNR / SSIM / tint and
cross_gt tone ΔE00 (the in-style quality the augmentation must not cost). The augmentation each model trained with
(`augment.line_styles` of its checkpoint) is recorded beside it: a style is unseen only by a model trained without
its family (`data.styles.PROTOCOL_FAMILY`).

    python benchmarks/line_styles.py --runs none=outputs/explore/cos24 all=outputs/explore/cos24sty \\
        --out metrics/line-styles/val.json

`--split test` scores the same way on the study's test items (every item `linebridge evaluate` scores) into
metrics/line-styles/test.json: for the report only, never to choose. It gives the models trained outside the study
(the recipe before line-style augmentation, each family left out) numbers beside the study's own on the test split.

Resumable: a model already in the JSON is not scored again (`--again` re-scores).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from linebridge.core import checkpoint as ckpt_io
from linebridge.core.config import UserError, declared_method, load_config, repo_root
from linebridge.core.io import write_json
from linebridge.core.tracking import git_commit
from linebridge.data.styles import PROTOCOL_FAMILY, STYLE_PROTOCOLS
from linebridge.evaluation.evaluate import generate, load_protocol, per_image_metrics, study_colorizer
from linebridge.report.styles import INTERIOR, LIGHTNESS, TONE, ols_slope

IN_STYLE = ("psnr", "ssim", "tint_rate")  # self, in style only


def score(name: str, colorizer, data: dict[str, dict[str, Any]], seed: int) -> dict[str, Any]:
    """Per style (`in style` first): tone, interior, slope; in style also self PSNR / SSIM / tint and cross_gt tone."""
    out: dict[str, Any] = {}
    for style in ("in style", *STYLE_PROTOCOLS):
        suffix = "" if style == "in style" else f"-{style}"
        cross, own = data[f"cross_gt{suffix}"], data[f"self{suffix}"]
        c = per_image_metrics(generate(name, cross, colorizer, seed), cross, "cross_gt")
        row = {
            "tone": float(c[TONE[1]].double().nanmean()),
            "slope": ols_slope(c[LIGHTNESS[1]].numpy(), c[LIGHTNESS[0]].numpy()),
        }
        s = per_image_metrics(generate(name, own, colorizer, seed), own, "self")
        row["interior"] = float(s[INTERIOR[1]].double().nanmean())
        if style == "in style":
            row["delta_e_tone"] = float(c["delta_e_tone"].double().nanmean())
            row.update({k: float(s[k].double().nanmean()) for k in IN_STYLE})
        out[style] = {k: None if v is None else round(v, 4) for k, v in row.items()}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, help="NAME=TRAINING_FOLDER (its last.pt is scored)")
    parser.add_argument(
        "--split", choices=["val", "test"], default="val", help="val (to choose) or test (to report; every item)"
    )
    parser.add_argument("--val-items", type=int, default=160, help="validation items per protocol (--split val)")
    parser.add_argument("--out", help="default: metrics/line-styles/SPLIT.json")
    parser.add_argument("--again", action="store_true", help="re-score models already in the JSON")
    args = parser.parse_args()
    root = repo_root()
    cfg = load_config(declared_method())
    out = root / (args.out or f"metrics/line-styles/{args.split}.json")
    items = args.val_items if args.split == "val" else 0  # 0: every item the study's evaluation scores
    record = (
        json.loads(out.read_text())
        if out.exists()
        else {"split": args.split, "items": items, "sampler": cfg["eval"], "models": {}}
    )
    if (record["split"], record["items"], record["sampler"]) != (args.split, items, cfg["eval"]):
        raise UserError(
            f"{out} was scored on the {record['split']} split, {record['items'] or 'every'} items per protocol, with "
            f"sampler {record['sampler']}; this call would use {args.split}, {items or 'every'} and {cfg['eval']}: "
            "match them or pass another --out"
        )
    prepared = root / cfg["data"]["prepared_dir"]
    names = [f"{p}{s}" for s in ("", *(f"-{x}" for x in STYLE_PROTOCOLS)) for p in ("self", "cross_gt")]
    data = {n: load_protocol(prepared, n, cfg["eval"]["max_per_group"], items, split=args.split) for n in names}
    if "copy-reference" not in record["models"] or args.again:
        record["models"]["copy-reference"] = {"scores": score("copy-reference", None, data, cfg["seed"])}
    for spec in args.runs:
        name, _, folder = spec.partition("=")
        if name in record["models"] and not args.again:
            continue
        path = root / folder / "last.pt"
        state = ckpt_io.load(path, kind=None)
        styles = state["config"]["augment"]["line_styles"]
        seen = {s: styles["share"] > 0 and PROTOCOL_FAMILY[s] in styles["families"] for s in STYLE_PROTOCOLS}
        record["models"][name] = {
            "folder": folder,
            "epoch": state["epoch"],
            "line_styles": styles,
            "seen": seen,
            "scores": score(name, study_colorizer(path, cfg["eval"]), data, cfg["seed"]),
        }
        record["models"][name]["scored_at"] = git_commit(short=True)
        write_json(out, record)
        print(name, record["models"][name]["scores"], flush=True)
    write_json(out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
