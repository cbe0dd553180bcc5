"""Write reports/ablation.md (and its figures) from the pipeline's committed results.

Every number here is read from a file a pipeline stage wrote (metrics/train, metrics/eval,
metrics/sweep, metrics/tune.json); nothing is computed from memory or typed in. Missing
inputs become "not run" rows with the reason, never numbers.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from linebridge.config import load_config, repo_root
from linebridge.data.splits import GRID_ITEMS, PROTOCOLS, spread
from linebridge.evaluation.stats import paired_bootstrap
from linebridge.io import save_with, write_atomic
from linebridge.tracking import git_commit

HIGHER_IS_BETTER = {
    "psnr": True,
    "ssim": True,
    "lpips": False,
    "edge_iou": True,
    "delta_e": False,
    "delta_e_tone": False,
    "delta_e_background": False,
    "delta_e_lines": False,
    "delta_e_interior": False,
    "tint_rate": False,
    "swd": False,
    "fid": False,
    "kid": False,
}
LABELS = {
    "psnr": "PSNR↑",
    "ssim": "SSIM↑",
    "lpips": "LPIPS↓",
    "edge_iou": "Edge IoU↑",
    "delta_e": "ΔE00↓",
    "delta_e_tone": "ΔE00 tone↓",
    "delta_e_background": "ΔE00 bg↓",
    "delta_e_lines": "ΔE00 lines↓",
    "delta_e_interior": "ΔE00 interior↓",
    "tint_rate": "tint↓",
    "swd": "SWD↓",
    "fid": "FID↓",
    "kid": "KID↓",
}
REGIONAL = ["delta_e_background", "delta_e_lines", "delta_e_interior", "tint_rate"]
# The trivial outputs that calibrate the scale (evaluate.TRIVIAL), as the checks name them.
TRIVIAL_LABELS = {
    "copy-lineart": "line art",
    "copy-reference": "copied reference",
    "reference-with-lines": "reference with the lines drawn on",
}
COLUMNS = {
    "self": ["psnr", "ssim", "lpips", "edge_iou", "delta_e", *REGIONAL, "swd", "fid", "kid"],
    "cross_gt": ["psnr", "ssim", "lpips", "edge_iou", "delta_e", "delta_e_tone", *REGIONAL, "swd", "fid", "kid"],
    "cross_random": ["edge_iou", "swd", "fid", "kid"],
}
PROTOCOL_TITLES = {
    "self": "Self-reference (reference = fixed TPS-warped ground truth)",
    "cross_gt": "Cross-reference with ground truth (reference = another test emoji in the same skin tone)",
    "cross_random": (
        "Cross-reference, random (no ground truth: distribution metrics and Edge IoU against the line art's own "
        "colour image)"
    ),
}
CHAIN = [
    ("A0", "A1", "reference cross-attention"),
    ("A1", "A2", "edge-aware loss"),
    ("A2", "A3", "TPS augmentation"),
    ("A3", "A4", "concat instead of cross-attention"),
]
GAIN_METRICS = ["psnr", "ssim", "edge_iou", "delta_e", "delta_e_tone"]


def read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def read_per_image(path: Path) -> dict[str, dict[str, float]]:
    """id → {metric: value} from an evaluate per-image CSV."""
    if not path.exists():
        return {}
    with path.open() as fh:
        return {row.pop("id"): {k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)}


def fmt(value: dict[str, Any] | None, metric: str) -> str:
    """'mean [low, high]' for a bootstrapped metric, the value of a set metric, or 'n/a'."""
    if value is None:
        return "—"
    if value.get("unavailable"):
        return "n/a¹"
    digits = 2 if metric == "psnr" or metric == "fid" or metric.startswith("delta_e") else 3
    if "mean" in value:
        if value["mean"] is None or np.isnan(value["mean"]):
            return "—"
        return f"{value['mean']:.{digits}f} [{value['low']:.{digits}f}, {value['high']:.{digits}f}]"
    return f"{value['value']:.{digits + 1}f}"


def subset_rule(max_per_group: int) -> str:
    """How the evaluated items were chosen (eval.max_per_group), in words."""
    if not max_per_group:
        return "every item"
    return f"every cross_gt triple, and at most {max_per_group} variants of each drawing for self and cross_random"


def ablation_tables(root: Path, models: list[str]) -> tuple[list[str], dict[str, str]]:
    """One markdown table per protocol; also collects the reasons of unavailable metrics."""
    lines: list[str] = []
    reasons: dict[str, str] = {}
    for protocol in PROTOCOLS:
        cols = COLUMNS[protocol]
        lines += [f"### {PROTOCOL_TITLES[protocol]}", ""]
        n_values = set()
        header = "| model | n | " + " | ".join(LABELS[c] for c in cols) + " |"
        lines += [header, "|" + "---|" * (len(cols) + 2)]
        for model in models:
            res = read_json(root / "metrics" / "eval" / model / f"{protocol}.json")
            if res is None:
                lines.append(f"| {model} | — | " + " | ".join("not run" for _ in cols) + " |")
                continue
            n_values.add(res["n_images"])
            for c in cols:
                v = res["metrics"].get(c)
                if v and v.get("unavailable"):
                    reasons[c] = f"{v['reason']} {v.get('how_to_fix', '')}".strip()
            lines.append(
                f"| {model} | {res['n_images']} | " + " | ".join(fmt(res["metrics"].get(c), c) for c in cols) + " |"
            )
        lines += [
            "",
            f"Mean [95 % bootstrap interval over test images]; set metrics (SWD, FID, KID) are single values. "
            f"Images per model: {', '.join(map(str, sorted(n_values))) or '—'}.",
            "",
        ]
    return lines, reasons


def gains(root: Path) -> list[str]:
    """Paired bootstrap over the same test images for each added module."""
    lines = [
        "| change | protocol | metric | mean difference (new − old) [95 % CI] | p | n | significant |",
        "|---|---|---|---|---|---|---|",
    ]
    for old, new, what in CHAIN:
        for protocol in ("self", "cross_gt"):
            a = read_per_image(root / "metrics" / "eval" / old / f"{protocol}.csv")
            b = read_per_image(root / "metrics" / "eval" / new / f"{protocol}.csv")
            if not a or not b:
                lines.append(f"| {old}→{new} ({what}) | {protocol} | — | not run | | | |")
                continue
            ids = sorted(set(a) & set(b))
            if not ids:
                lines.append(f"| {old}→{new} ({what}) | {protocol} | — | no common test items | | | |")
                continue
            for metric in GAIN_METRICS:
                if metric not in a[ids[0]] or metric not in b[ids[0]]:
                    continue
                r = paired_bootstrap(np.array([a[i][metric] for i in ids]), np.array([b[i][metric] for i in ids]))
                better = (r["mean_diff"] > 0) == HIGHER_IS_BETTER[metric]
                sig = "yes" if r["p_value"] < 0.05 else "no"
                verdict = f"{sig} ({'better' if better else 'worse'})" if sig == "yes" else "no"
                lines.append(
                    f"| {old}→{new} ({what}) | {protocol} | {LABELS[metric]} "
                    f"| {r['mean_diff']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}] "
                    f"| {r['p_value']:.3g} | {r['n']} | {verdict} |"
                )
    return lines


def truth_checks(root: Path) -> list[str]:
    """The 'does it learn?' checks (A3 against A0 and the trivial outputs), stated plainly either way."""

    def mean(model: str, protocol: str, metric: str) -> float | None:
        res = read_json(root / "metrics" / "eval" / model / f"{protocol}.json")
        v = res and res["metrics"].get(metric)
        return v["mean"] if v and "mean" in v else None

    out = []
    a3, a0 = mean("A3", "cross_gt", "delta_e_tone"), mean("A0", "cross_gt", "delta_e_tone")
    if a3 is not None and a0 is not None:
        out.append(
            f"- Cross-reference colour transfer: A3 tone-region ΔE00 {a3:.2f} vs A0 {a0:.2f} → **"
            f"{'A3 lower (transfers colour)' if a3 < a0 else 'A3 NOT lower: the reference is not transferring colour'}"
            "**."
        )
    for metric in ("psnr", "ssim"):
        a3v = mean("A3", "self", metric)
        trivial = {m: mean(m, "self", metric) for m in TRIVIAL_LABELS}
        trivial = {m: v for m, v in trivial.items() if v is not None}
        if a3v is None or not trivial:
            continue
        beats = all(a3v > v for v in trivial.values())
        against = ", ".join(f"{TRIVIAL_LABELS[m]} {v:.3f}" for m, v in trivial.items())
        out.append(
            f"- Self-reference {LABELS[metric]}: A3 {a3v:.3f} vs {against} → "
            f"**{'A3 beats every trivial output' if beats else 'A3 does NOT beat every trivial output'}**."
        )
    return out or ["- not available: the evaluations of A0, A3 and the trivial outputs have not run."]


def training_table(root: Path, models: list[str]) -> list[str]:
    lines = [
        "| model | epochs | steps | best epoch | best val loss | stopped early | train images | wall time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in models:
        s = read_json(root / "metrics" / "train" / f"{m}.json")
        if s is None:
            lines.append(f"| {m} | not run | | | | | | |")
            continue
        lines.append(
            f"| {m} | {s['epochs_run']} | {s['steps']} | {s['best_epoch']} | {s['best_val_loss']:.4f} "
            f"| {s['stopped_early']} "
            f"| {s['train_images']} | {s['wall_time_s'] / 60:.1f} min |"
        )
    return lines + [
        "",
        "BBDM rows: validation loss = L_diff + λ_edge·L_edge on the EMA weights (5 fixed timesteps per image), so "
        "rows with and without the edge term are not on one scale; GAN rows: validation L1 of the generator.",
    ]


def sweep_table(root: Path) -> list[str]:
    s = read_json(root / "metrics" / "sweep" / "sweep.json")
    if s is None:
        return ["not run."]
    lines = [
        "| steps | sampler | s / image | PSNR↑ | SSIM↑ | ΔE00↓ | Edge IoU↑ | n |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in s["rows"]:
        m = r["metrics"]
        lines.append(
            f"| {r['steps']} | {r['sampler']} | {r['seconds_per_image']:.3f} "
            f"| {fmt(m['psnr'], 'psnr')} | {fmt(m['ssim'], 'ssim')} "
            f"| {fmt(m['delta_e'], 'delta_e')} | {fmt(m['edge_iou'], 'edge_iou')} | {r['n_images']} |"
        )
    return lines + [
        "",
        f"A3 (EMA) on the first {s['rows'][0]['n_images']} self-reference items. 'eta=1' is BBDM's ancestral sampler; "
        "'deterministic' is the DDIM-style ODE (σ → 0 inside the square root as well). "
        "Seconds are wall time on this machine, which varies with its load.",
    ]


def ema_table(root: Path) -> list[str]:
    lines = ["| weights | protocol | PSNR↑ | SSIM↑ | ΔE00↓ | Edge IoU↑ |", "|---|---|---|---|---|---|"]
    for label, name in (("EMA", "A3"), ("raw", "A3-raw")):
        for protocol in ("self", "cross_gt"):
            res = read_json(root / "metrics" / "eval" / name / f"{protocol}.json")
            if res is None:
                lines.append(f"| {label} | {protocol} | not run | | | |")
                continue
            m = res["metrics"]
            lines.append(
                f"| {label} | {protocol} | {fmt(m['psnr'], 'psnr')} | {fmt(m['ssim'], 'ssim')} "
                f"| {fmt(m['delta_e'], 'delta_e')} | {fmt(m['edge_iou'], 'edge_iou')} |"
            )
    return lines


def tune_section(root: Path) -> list[str]:
    s = read_json(root / "metrics" / "tune.json")
    if s is None:
        return ["The Optuna study has not run in this pipeline (`linebridge tune`)."]
    lines = [
        f"- best validation loss {s['best_value']:.4f} at "
        + ", ".join(f"`{k}` = {v:.3g}" for k, v in s["best_params"].items()),
        "- trials: " + ", ".join(f"{k} {v}" for k, v in s["counts"].items()),
    ]
    if s.get("importances"):
        lines.append("- importances: " + ", ".join(f"`{k}` {v:.2f}" for k, v in s["importances"].items()))
    for fig in ("tune_history.png", "tune_importances.png"):
        if (root / "reports" / "figures" / fig).exists():
            lines += ["", f"![{fig}](figures/{fig})"]
    return lines


def figures(root: Path, models: list[str], prepared: Path) -> None:
    """samples.png (line art | reference | each model | ground truth), loss curves, metric bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    fig_dir = root / "reports" / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    plt.rcParams["svg.hashsalt"] = "linebridge"

    # sample grid: rows = items (spread over the evaluated set, as evaluate saved them),
    # columns = line art | reference | models | GT

    panels = []
    for protocol in ("self", "cross_gt"):
        rows = list(csv.DictReader((prepared / "protocols" / f"{protocol}.csv").open()))
        evaluated = [read_json(root / "metrics" / "eval" / m / f"{protocol}.json") for m in models]
        count = next((e["n_images"] for e in evaluated if e), len(rows))
        rows = [rows[i] for i in spread(count, GRID_ITEMS)]
        cols = {
            "line art": [Image.open(prepared / "line" / f"{r['id']}.png").convert("RGB") for r in rows],
            "reference": [
                Image.open(prepared / "protocols" / protocol / "ref" / f"{r['id']}.png").convert("RGB") for r in rows
            ],
        }
        for m in models:
            strip = root / "metrics" / "eval" / m / f"{protocol}.outputs.png"
            if strip.exists():
                img = Image.open(strip).convert("RGB")
                side = img.height
                cols[m] = [img.crop((i * side, 0, (i + 1) * side, side)) for i in range(len(rows))]
        cols["ground truth"] = [Image.open(prepared / "colour" / f"{r['gt']}.png").convert("RGB") for r in rows]
        panels.append((protocol, cols, len(rows)))
    ncols = max(len(c) for _, c, _ in panels)
    nrows = sum(n for _, _, n in panels)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * 1.1, nrows * 1.1 + 0.6), squeeze=False)
    r0 = 0
    for protocol, cols, n in panels:
        for j, (title, images) in enumerate(cols.items()):
            for i in range(n):
                ax = axes[r0 + i][j]
                ax.imshow(images[i])
                if r0 + i == 0 or i == 0:
                    ax.set_title(title if i == 0 else "", fontsize=7)
        for i in range(n):
            axes[r0 + i][0].set_ylabel(protocol if i == 0 else "", fontsize=7)
        r0 += n
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    save_with(fig_dir / "samples.png", lambda tmp: fig.savefig(tmp, dpi=100, metadata={"Software": None}))
    plt.close(fig)

    # loss curves
    fig, ax = plt.subplots(figsize=(7, 4))
    for m in models:
        path = root / "metrics" / "train" / f"{m}.csv"
        if path.exists():
            rows = list(csv.DictReader(path.open()))
            ax.plot([int(r["epoch"]) for r in rows], [float(r["val_loss"]) for r in rows], marker="o", ms=3, label=m)
    (
        ax.set_xlabel("epoch"),
        ax.set_ylabel("validation loss"),
        ax.set_yscale("log"),
        ax.legend(fontsize=8),
        ax.grid(alpha=0.3),
    )
    ax.set_title("Validation loss per epoch (BBDM: EMA weights; GANs: L1)")
    fig.tight_layout()
    save_with(fig_dir / "loss_curves.png", lambda tmp: fig.savefig(tmp, dpi=100, metadata={"Software": None}))
    plt.close(fig)

    # metric bars with intervals
    shown = [("self", "psnr"), ("self", "ssim"), ("cross_gt", "delta_e_tone"), ("self", "edge_iou")]
    fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.6))
    everyone = models + list(TRIVIAL_LABELS)
    for ax, (protocol, metric) in zip(axes, shown):
        names, means, errs = [], [], [[], []]
        for m in everyone:
            res = read_json(root / "metrics" / "eval" / m / f"{protocol}.json")
            v = res and res["metrics"].get(metric)
            if v and "mean" in v:
                names.append(m), means.append(v["mean"])
                errs[0].append(v["mean"] - v["low"]), errs[1].append(v["high"] - v["mean"])
        ax.bar(range(len(names)), means, yerr=errs, capsize=3, color="tab:blue")
        ax.set_xticks(range(len(names)), names, rotation=60, fontsize=8)
        ax.set_title(f"{LABELS[metric]} ({protocol})", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_with(fig_dir / "metric_bars.png", lambda tmp: fig.savefig(tmp, dpi=100, metadata={"Software": None}))
    plt.close(fig)


def build_report(root: Path) -> str:
    cfg = load_config(None, None, [], root=root)
    study = _study(root)
    models = [*study["experiments"], *study["baselines"]]
    prepared = root / cfg["data"]["prepared_dir"]
    info = read_json(prepared / "info.json") or {}
    figures(root, models, prepared)
    tables, reasons = ablation_tables(root, models + list(study["trivial"]))
    splits = info.get("splits", {})
    lines = [
        "# linebridge — ablation report",
        "",
        "Written by the `report` stage of `dvc repro` (`make repro`) from files the other stages wrote; "
        f"code at commit `{git_commit(root, short=True)}` (the commit before the one that records these results), "
        f"profile `{cfg['profile']}` "
        f"({cfg['data']['image_size']}² images, "
        f"U-Net {cfg['model']['model_channels']} channels × {cfg['model']['channel_mult']}, "
        f"batch {cfg['train']['batch_size']}, {cfg['train']['epochs']} epochs max). "
        "Configuration: `params.yaml` + `experiments/ID.yaml`; "
        "the resolved configuration of every run is logged in MLflow (`mlflow ui --backend-store-uri sqlite:///mlflow.db`).",
        "",
        f"**Data**: OpenMoji line art / colour pairs at {info.get('image_size', '?')}², split by base emoji: "
        + ", ".join(f"{k} {v['images']} images / {v['groups']} groups" for k, v in sorted(splits.items()))
        + ". Test protocols: "
        + ", ".join(f"{k} {v}" for k, v in sorted(info.get("protocols", {}).items()))
        + f" items; evaluated on {subset_rule(cfg['eval']['max_per_group'])}. "
        f"**Seeds**: one training seed ({cfg['seed']}) per model; sampling seed {cfg['seed']}. "
        "Intervals are over test images only, not over training seeds, so they understate run-to-run variation.",
        "",
        "## Does it learn? (checked automatically)",
        "",
        *truth_checks(root),
        "",
        "## Ablation table",
        "",
        "A0 = original BBDM (line art only); A1 = + reference cross-attention; A2 = + edge-aware loss; "
        "A3 = + TPS references (full method); A4 = A3 with the reference concatenated. "
        "Pix2Pix sees only the line art; SCFT uses the reference. "
        "`copy-lineart` / `copy-reference` / `reference-with-lines` are trivial outputs that calibrate the scale. "
        "ControlNet: **not run** — it needs Stable Diffusion + ControlNet weights and a GPU, "
        "neither of which this machine has.",
        "",
        *tables,
    ]
    if reasons:
        lines += ["¹ Unavailable metrics:", ""] + [f"- {LABELS[k]}: {v}" for k, v in sorted(reasons.items())] + [""]
    from linebridge.evaluation.metrics import EDGE_IOU_DEFINITION

    lines += [
        f"**Edge IoU**: {EDGE_IOU_DEFINITION}",
        "",
        "**ΔE00**: mean CIEDE2000 colour difference per image (CIELAB via kornia, D65); "
        "*tone* = only the pixels where the skin-tone variants of the emoji differ "
        "(the region a reference's skin colour should reach).",
        "",
        "## Gain of each module (paired bootstrap over the same test images)",
        "",
        *gains(root),
        "",
        "## Sampling steps",
        "",
        *sweep_table(root),
        "",
        "## EMA against raw weights (A3)",
        "",
        *ema_table(root),
        "",
        "## Training",
        "",
        *training_table(root, models),
        "",
        "![loss curves](figures/loss_curves.png)",
        "",
        "## Optuna study (λ_edge, TPS strength)",
        "",
        *tune_section(root),
        "",
        "## Figures",
        "",
        "![samples](figures/samples.png)",
        "",
        f"Rows: {GRID_ITEMS} items spread evenly over each of the self-reference and cross-reference-with-ground-truth "
        "protocols; "
        "columns: line art, reference, each model's output, ground truth.",
        "",
        "![metric bars](figures/metric_bars.png)",
        "",
        "## Reproduce",
        "",
        "```bash",
        "make repro                       # = linebridge data fetch && dvc repro",
        "dvc exp run -S train.epochs=20   # change one thing and run again",
        "```",
        "",
        "## Attribution",
        "",
        "All emojis designed by OpenMoji – the open-source emoji and icon project. License: CC BY-SA 4.0 "
        "(https://openmoji.org). "
        "The rendered line art, colour images and references derived from them are shared under the same licence.",
        "",
    ]
    return "\n".join(lines)


def _study(root: Path) -> dict[str, Any]:
    from linebridge.config import read_yaml

    return read_yaml(root / "params.yaml")["study"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="reports/ablation.md", help="report path (relative to the repository root)")


def main(args: argparse.Namespace) -> int:
    root = repo_root()
    text = build_report(root)
    out = root / args.out
    write_atomic(out, text)
    print(f"wrote {out}")
    return 0
