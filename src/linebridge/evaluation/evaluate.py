"""Evaluate one model on the fixed test protocols and write honest numbers.

For each protocol — `self` (reference = fixed TPS-warped ground truth), `cross_gt`
(a different emoji in the same skin tone; ΔE on the tone region says whether colour
was transferred) and `cross_random` (no ground truth: distribution metrics and Edge IoU
against the line art's own colour image only) — it samples every test item with a fixed
seed and writes metrics/eval/NAME/PROTOCOL.{json,csv,png}. Metrics whose weights are
absent are written as unavailable with the reason, never as numbers.

Each of self and cross_gt runs again with the line art in every unseen style (`PROTOCOL-STYLE`, e.g.
cross_gt-thick: `data.styles`), the ground truth unchanged; the `_common` metrics score in-style and styled line
art on the same pixels (off the lines of the drawing and of every style).

Besides trained checkpoints, three trivial "models" calibrate the scale: `copy-lineart`
(the line art itself), `copy-reference` (the reference unchanged) and `reference-with-lines`
(the reference with the line art drawn over it: on self, what copying the warped target
and keeping the lines already scores).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from torch import Tensor
from tqdm.auto import tqdm

from linebridge.core.config import (
    UserError,
    add_config_arguments,
    load_config,
    read_yaml,
    repo_root,
    run_name,
    split_run_name,
)
from linebridge.core.io import save_with, write_atomic, write_json
from linebridge.core.runs import save_sample_grid
from linebridge.core.tracking import log_results
from linebridge.data.datasets import ProtocolDataset
from linebridge.data.splits import GRID_ITEMS, PROTOCOLS, spread
from linebridge.data.styles import STYLE_PROTOCOLS, STYLED
from linebridge.evaluation import metrics as M
from linebridge.evaluation.stats import bootstrap_ci

if TYPE_CHECKING:
    from linebridge.inference import Colorizer, Sampler

TRIVIAL = ("copy-lineart", "copy-reference", "reference-with-lines")
PSNR_CAP = 60.0  # dB: an output identical to its ground truth (e.g. copy-lineart on a black symbol) would be +inf


def stratified(groups: list[str], per_group: int) -> list[int]:
    """Indices of at most `per_group` items of each group, the first ones in protocol order (0 = all)."""
    taken: dict[str, int] = {}
    keep = []
    for i, group in enumerate(groups):
        if not per_group or taken.get(group, 0) < per_group:
            taken[group] = taken.get(group, 0) + 1
            keep.append(i)
    return keep


def style_protocols() -> tuple[str, ...]:
    """`PROTOCOL-STYLE` names of the unseen-style protocols (self-thick, cross_gt-thick, …)."""
    return tuple(f"{p}-{style}" for style in STYLE_PROTOCOLS for p in STYLED)


def load_protocol(
    prepared_dir: Path, protocol: str, max_per_group: int = 0, limit: int = 0, split: str = "test"
) -> dict[str, Any]:
    """One protocol's items as stacked tensors: every cross_gt triple; self and cross_random
    group-stratified (at most `max_per_group` variants of each drawing), so no drawing with
    many variants dominates; `limit` then keeps items spread evenly over them (the sweep's
    budget on the validation split). `PROTOCOL-STYLE` is the protocol with the line art in an unseen style."""
    protocol, _, style = protocol.partition("-")
    ds = ProtocolDataset(prepared_dir, protocol, split, style or None)
    keep = stratified(ds.groups, 0 if protocol == "cross_gt" else max_per_group)
    items = [ds[keep[i]] for i in (spread(len(keep), limit) if limit and limit < len(keep) else range(len(keep)))]
    return {
        key: torch.stack(values) if isinstance(values[0], Tensor) else values
        for key, values in ((k, [it[k] for it in items]) for k in items[0])
    }


def per_image_metrics(fake: Tensor, data: dict[str, Any], protocol: str) -> dict[str, Any]:
    """Per-image values (tensors [N]) or an `unavailable` dict for each metric."""
    gt = data["GT"]
    line = torch.minimum(data["lineart"], data["line_thin"])  # in an unseen style: both drawings' lines left out
    protocol = protocol.partition("-")[0]
    values: dict[str, Any] = {"edge_iou": M.edge_iou(fake, gt)}
    if protocol != "cross_random":
        values["psnr"] = M.psnr(fake, gt).clamp(max=PSNR_CAP)
        values["ssim"] = M.ssim(fake, gt)
        values["delta_e"] = M.colour_error(fake, gt)
        values["lpips"] = M.try_metric(M.lpips, fake, gt)
        values.update(M.regional_colour_error(fake, gt, line))
    if protocol == "cross_gt":
        values["delta_e_tone"] = M.colour_error(fake, gt, mask=data["mask"])
    if protocol != "cross_random":  # in style and every unseen style on the same pixels: off every style's lines
        off_lines = data["line_all"] >= 0
        values["delta_e_interior_common"] = M.regional_colour_error(fake, gt, data["line_all"])["delta_e_interior"]
    if protocol == "cross_gt":
        common = data["mask"] * off_lines
        values["delta_e_tone_common"] = M.colour_error(fake, gt, mask=common)
        values["tone_lightness"] = M.masked_lightness(fake, common)  # its slope on the next across items: the
        values["tone_lightness_gt"] = M.masked_lightness(gt, common)  # report's "does the skin follow the tone?"
    return values


def set_metrics(fake: Tensor, real: Tensor) -> dict[str, Any]:
    """Distribution metrics between the generated set and the ground-truth set."""
    return {
        "swd": M.swd(real, fake)["mean"],
        "fid": M.try_metric(M.fid, real, fake),
        "kid": M.try_metric(M.kid, real, fake),
    }


def summarise(per_image: dict[str, Any], sets: dict[str, Any], seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in per_image.items():
        out[name] = value if isinstance(value, dict) else bootstrap_ci(value.double().numpy(), seed=seed)
    for name, value in sets.items():
        out[name] = value if isinstance(value, dict) else {"value": float(value), "n": None}
    return out


def write_csv(path: Path, ids: list[str], per_image: dict[str, Any]) -> None:
    cols = [k for k, v in per_image.items() if not isinstance(v, dict)]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", *cols])
    for i, item in enumerate(ids):
        w.writerow([item, *(f"{per_image[c][i].item():.6g}" for c in cols)])
    write_atomic(path, buf.getvalue())


def save_grid(path: Path, data: dict[str, Any], fake: Tensor, n: int = 16) -> None:
    """line art | reference | output | ground truth, one row per item, items spread over the set."""
    k = spread(fake.shape[0], n)
    save_sample_grid(path, data["lineart"][k], data["ref"][k], fake[k], data["GT"][k])


def shown_path(checkpoint: Path | None) -> str | None:
    """A checkpoint path as the results record it: relative to the repo root, so they do not depend on the clone."""
    if checkpoint is None:
        return None
    return str(checkpoint.relative_to(repo_root())) if checkpoint.is_relative_to(repo_root()) else str(checkpoint)


def generate(name: str, data: dict[str, Any], colorizer, seed: int) -> Tensor:
    if name == "copy-lineart":
        return data["lineart"].expand(-1, 3, -1, -1).clone()
    if name == "copy-reference":
        return data["ref"].clone()
    if name == "reference-with-lines":  # dark lines (-1) over the reference; white (1) leaves it as it is
        return torch.minimum(data["ref"], data["lineart"].expand(-1, 3, -1, -1))
    return colorizer(data["lineart"], data["ref"], seed)


def evaluate(
    name: str,
    checkpoint: Path | None,
    cfg: dict[str, Any],
    out_dir: Path,
    sampler: Sampler,
    protocols: tuple[str, ...] = PROTOCOLS + style_protocols(),
) -> dict[str, Any]:
    """Sample and score each protocol; writes PROTOCOL.json/.csv/.png into out_dir."""
    from linebridge.evaluation.metrics import EDGE_IOU_DEFINITION
    from linebridge.inference import load_colorizer

    ec = cfg["eval"]
    colorizer, sampled = None, False  # sampled: a BBDM model, whose sampler settings and weights are recorded
    if name not in TRIVIAL:
        colorizer, model_cfg = load_colorizer(checkpoint, sampler)
        sampled = model_cfg["model"]["family"] == "bbdm"
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for protocol in protocols:
        data = load_protocol(Path(repo_root() / cfg["data"]["prepared_dir"]), protocol, ec["max_per_group"])
        t0 = time.perf_counter()
        fake = generate(name, data, colorizer, cfg["seed"])
        seconds = time.perf_counter() - t0
        per_image = per_image_metrics(fake, data, protocol)
        result = {
            "model": name,
            "checkpoint": shown_path(checkpoint),
            "weights": sampler.weights if sampled else None,  # GANs keep no EMA
            "protocol": protocol,
            "sampler": {
                "steps": sampler.steps,
                "eta": sampler.eta,
                "deterministic": sampler.deterministic,
                "seed": cfg["seed"],
            }
            if sampled
            else None,
            "n_images": len(data["id"]),
            "metrics": summarise(per_image, set_metrics(fake, data["GT"]), cfg["seed"]),
            "edge_iou_definition": EDGE_IOU_DEFINITION,
        }
        timing = {"seconds_per_image": seconds / len(data["id"])}
        write_json(out_dir / f"{protocol}.json", result)
        write_json(out_dir / f"{protocol}.timing.json", timing)
        write_csv(out_dir / f"{protocol}.csv", data["id"], per_image)
        save_grid(out_dir / f"{protocol}.png", data, fake)
        save_outputs(out_dir / f"{protocol}.outputs.png", fake)
        results[protocol] = {**result, **timing}
    return results


def save_outputs(path: Path, fake: Tensor, n: int = GRID_ITEMS) -> None:
    """The outputs of items `spread(len(fake), n)` side by side, no padding.

    The report's cross-model grid reads them back.
    """
    from torchvision.utils import save_image

    k = spread(fake.shape[0], n)
    save_with(path, lambda tmp: save_image((fake[k] + 1) / 2, tmp, nrow=len(k), padding=0))


VAL_PROTOCOLS = ("self", "cross_gt")  # the protocols with a ground truth, on the validation split


def validation_quality(fn, data: dict[str, dict[str, Any]], seed: int) -> dict[str, float]:
    """Mean validation metrics of a colorizer: self PSNR/SSIM/ΔE00/tint and cross_gt tone ΔE00."""
    values = {}
    for protocol, items in data.items():
        per_image = per_image_metrics(fn(items["lineart"], items["ref"], seed), items, protocol)
        names = ("psnr", "ssim", "delta_e", "tint_rate") if protocol == "self" else ("delta_e_tone",)
        values.update({k: float(per_image[k].double().nanmean()) for k in names})
    return values


def study_colorizer(path: Path, ec: dict[str, Any]) -> Colorizer:
    """The colorizer of the checkpoint at `path` under the sampler of eval section `ec` (params.yaml `eval`)."""
    from linebridge.inference import Sampler, load_colorizer

    return load_colorizer(path, Sampler.from_eval(ec))[0]


def study_quality(path: Path, cfg: dict[str, Any], data: dict[str, dict[str, Any]]) -> dict[str, float]:
    """`validation_quality` of the checkpoint at `path` under the study's sampler (cfg's eval section)."""
    return validation_quality(study_colorizer(path, cfg["eval"]), data, cfg["seed"])


def validation_sets(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """eval.sweep_images group-stratified items of each validation protocol (the same for every setting)."""
    ec, prepared = cfg["eval"], Path(repo_root() / cfg["data"]["prepared_dir"])
    return {p: load_protocol(prepared, p, ec["max_per_group"], ec["sweep_images"], split="val") for p in VAL_PROTOCOLS}


def sweep(checkpoints: list[Path], cfg: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Choose the sampler on the validation split: steps × {η = 1, deterministic} × {EMA, raw weights}.

    Every setting is scored on each checkpoint (the training seeds of one arm) and the scores
    are averaged: one seed's lucky setting (raw weights that happen to be good on seed 0) must
    not decide for all. Writes OUT/sweep.json (every row, with the per-checkpoint values) and
    OUT/choice.yaml (the setting with the highest mean validation self PSNR; ties go to fewer
    steps): a record, copied by hand into params.yaml `eval`, which every test evaluation reads,
    so the test split is evaluated once, with a setting it did not choose.
    """
    from linebridge.inference import Sampler, load_colorizer

    ec = cfg["eval"]
    data = validation_sets(cfg)
    n_items = sum(len(d["id"]) for d in data.values())
    rows = []
    for weights in ("ema", "raw"):
        for steps in ec["sweep_steps"]:
            for deterministic in (False, True):
                per_checkpoint, seconds = [], 0.0
                for checkpoint in checkpoints:
                    fn, _ = load_colorizer(checkpoint, Sampler(steps, deterministic, 1.0, weights))
                    t0 = time.perf_counter()
                    per_checkpoint.append(validation_quality(fn, data, cfg["seed"]))
                    seconds += (time.perf_counter() - t0) / n_items
                quality = {k: sum(q[k] for q in per_checkpoint) / len(per_checkpoint) for k in per_checkpoint[0]}
                rows.append(
                    {
                        "weights": weights,
                        "steps": steps,
                        "deterministic": deterministic,
                        "sampler": "deterministic (ODE)" if deterministic else "eta=1 (ancestral)",
                        "seconds_per_image": seconds / len(checkpoints),
                        "n_images": {p: len(d["id"]) for p, d in data.items()},
                        "metrics": quality,
                        "per_checkpoint": per_checkpoint,
                    }
                )
                print(
                    f"{weights:>3} {steps:>4} steps {rows[-1]['sampler']:<20} "
                    f"{rows[-1]['seconds_per_image'] * 1000:7.1f} ms/image  "
                    f"PSNR {quality['psnr']:.2f}  tone ΔE {quality['delta_e_tone']:.2f}",
                    flush=True,
                )
    best = max(rows, key=lambda r: (round(r["metrics"]["psnr"], 2), -r["steps"]))
    shown = [shown_path(c) for c in checkpoints]
    write_json(out_dir / "sweep.json", {"checkpoints": shown, "split": "val", "rows": rows})
    over = f" (the mean over {len(checkpoints)} checkpoints)" if len(checkpoints) > 1 else ""
    choice = {
        "eval": {
            "sample_step": best["steps"],
            "eta": 1.0,
            "deterministic": best["deterministic"],
            "weights": best["weights"],
        },
        "rule": f"highest mean validation self PSNR{over} (0.01 dB), ties to fewer steps; "
        f"{best['metrics']['psnr']:.2f} dB on {best['n_images']['self']} validation items",
    }
    write_atomic(out_dir / "choice.yaml", yaml.safe_dump(choice, sort_keys=False))
    return choice


def curve(run_dir: Path, cfg: dict[str, Any], out_path: Path) -> list[dict[str, Any]]:
    """Validation quality of each kept epoch (epochs/epoch_NNN.pt) at the study's sampler: quality per minute."""
    from linebridge.core import checkpoint as ckpt_io

    ec = cfg["eval"]
    paths = sorted((run_dir / "epochs").glob("epoch_*.pt"))
    if not paths:
        raise UserError(f"{run_dir}/epochs: no epoch checkpoints; train with --set train.keep_epochs=true")
    timing = run_dir / "timing.json"
    walls = json.loads(timing.read_text()).get("epoch_wall_s", []) if timing.exists() else []
    data = validation_sets(cfg)
    rows = []
    for path in tqdm(paths, desc=f"curve {run_dir.name}", unit="epoch"):
        state = ckpt_io.load(path, kind=None)
        wall = walls[state["epoch"] - 1] if len(walls) >= state["epoch"] else None
        quality = study_quality(path, cfg, data)
        rows.append({"epoch": state["epoch"], "step": state["step"], "wall_s": wall, **quality})
    sampler = {k: ec[k] for k in ("sample_step", "eta", "deterministic", "weights")}
    write_json(out_path, {"run": run_dir.name, "split": "val", "sampler": sampler, "rows": rows})
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--experiment",
        required=True,
        help=f"run (A3, A3-s1, pix2pix, ...: outputs/train/ID) or a trivial model: {', '.join(TRIVIAL)}",
    )
    add_config_arguments(parser)
    parser.add_argument("--checkpoint", default=None, help="checkpoint (default outputs/train/ID/best.pt)")
    parser.add_argument("--weights", choices=["ema", "raw"], default=None, help="EMA or raw weights (eval.weights)")
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default eval.sample_step)")
    parser.add_argument("--eta", type=float, default=None, help="BBDM eta (scales the sampler noise)")
    parser.add_argument(
        "--deterministic",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="DDIM-style deterministic sampler (default eval.deterministic)",
    )
    parser.add_argument("--out", default=None, help="output folder (default metrics/eval/NAME)")
    parser.add_argument("--no-mlflow", action="store_true", help="do not add the test metrics to its MLflow run")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="*",
        default=None,
        metavar="N",
        help="with --sweep: score every setting on these training seeds of the experiment's arm "
        "(outputs/train/ARM-sN) and choose on their mean; without numbers: the arm's runs in params.yaml study.runs",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--sweep",
        action="store_true",
        help="instead: choose the sampler on the validation split (eval.sweep_steps × {eta=1, deterministic} × "
        "{ema, raw}) → OUT/sweep.json and OUT/choice.yaml",
    )
    mode.add_argument(
        "--curve",
        action="store_true",
        help="instead: validation quality of each kept epoch checkpoint (train.keep_epochs) → OUT/NAME.json",
    )


def main(args: argparse.Namespace) -> int:
    name = args.experiment
    cfg = load_config(None if name in TRIVIAL else name, args.profile, args.overrides)
    ckpt = None if name in TRIVIAL else Path(args.checkpoint or repo_root() / "outputs" / "train" / name / "best.pt")
    if (args.sweep or args.curve) and ckpt is None:
        raise UserError(f"--sweep and --curve compare sampler settings; {name} is a trivial output with no sampler")
    if args.seeds is not None and not args.sweep:
        raise UserError("--seeds only goes with --sweep (it averages the sweep over training seeds)")
    if args.sweep:
        checkpoints = [ckpt]
        if args.seeds is not None:
            arm = split_run_name(name, repo_root())[0]
            runs = read_yaml(repo_root() / "params.yaml")["study"]["runs"]  # ARM-sSEED → ARM
            seeds = args.seeds or [split_run_name(run, repo_root())[1] for run, of in runs.items() if of == arm]
            checkpoints = [repo_root() / "outputs" / "train" / run_name(arm, s) / "best.pt" for s in seeds]
            missing = [str(c) for c in checkpoints if not c.exists()]
            if missing:
                raise UserError(f"--seeds: no checkpoint {', '.join(missing)}; train those runs first")
        sweep(checkpoints, cfg, Path(args.out or repo_root() / "metrics" / "sweep"))
        return 0
    if args.curve:
        curve(ckpt.parent, cfg, Path(args.out or repo_root() / "metrics" / "curve") / f"{name}.json")
        return 0
    from linebridge.inference import Sampler

    flags = {"steps": args.steps, "eta": args.eta, "deterministic": args.deterministic, "weights": args.weights}
    sampler = replace(Sampler.from_eval(cfg["eval"]), **{k: v for k, v in flags.items() if v is not None})
    label = name if args.weights != "raw" else f"{name}-raw"
    out = Path(args.out) if args.out else repo_root() / "metrics" / "eval" / label
    results = evaluate(name, ckpt, cfg, out, sampler)
    for protocol, res in results.items():
        shown = {
            k: (f"{v['mean']:.4f}" if "mean" in v else ("n/a" if v.get("unavailable") else f"{v['value']:.4f}"))
            for k, v in res["metrics"].items()
        }
        print(protocol, res["n_images"], shown)
    given = (("steps", args.steps), ("eta", args.eta), ("weights", args.weights))
    one_off = [f"--{k} {v}" for k, v in given if v is not None]
    one_off += [f"--deterministic={args.deterministic}"] * (args.deterministic is not None)
    one_off += [f"--set {o}" for o in args.overrides]
    one_off += [f"--checkpoint {ckpt}"] * (ckpt is not None and ckpt.name != "best.pt")
    if ckpt is None or args.no_mlflow:
        pass
    elif one_off:  # the run's test metrics are those of the study's settings; a one-off must not replace them
        print(f"not logged to MLflow: a one-off evaluation ({' '.join(one_off)})")
    else:
        log_results(ckpt, results, "test")
    return 0
