"""The report's figures: sample grid, failure cases, loss curves, metric bars (bytes depend on
the data only)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from linebridge.core.io import save_with
from linebridge.data.splits import GRID_ITEMS, spread
from linebridge.report.fmt import LABELS
from linebridge.report.read import (
    eval_file,
    read_history,
    read_per_image,
    seed_summary,
    train_file,
)
from linebridge.report.study import arm_runs, seed0


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "linebridge"
    return plt


def _save(fig, path: Path) -> None:
    """Atomically, without the software tag (so the bytes depend on the data only)."""
    save_with(path, lambda tmp: fig.savefig(tmp, dpi=100, metadata={"Software": None}))


def sample_columns(root: Path, shown: dict[str, str], prepared: Path, protocol: str) -> dict[str, list] | None:
    """line art | reference | each shown run's outputs | ground truth for GRID_ITEMS evaluated items of a protocol.

    The items are those evaluate saved: `spread` over the ids of an evaluated run's CSV (every run evaluated the same
    items in the same order). None when the prepared data or every evaluation is missing.
    """
    from PIL import Image

    ids = next((list(t) for run in shown.values() if (t := read_per_image(eval_file(root, run, protocol, "csv")))), [])
    table = prepared / "protocols" / f"{protocol}.csv"
    if not ids or not table.exists():
        return None
    by_id = {r["id"]: r for r in csv.DictReader(table.open())}
    rows = [by_id[ids[i]] for i in spread(len(ids), GRID_ITEMS)]
    cols = {
        "line art": [Image.open(prepared / "line" / f"{r['gt']}.png").convert("RGB") for r in rows],
        "reference": [Image.open(prepared / "protocols" / protocol / "ref" / f"{r['id']}.png") for r in rows],
    }
    for label, run in shown.items():
        strip = eval_file(root, run, protocol, "outputs.png")
        if strip.exists():
            img = Image.open(strip).convert("RGB")
            side = img.height
            cols[label] = [img.crop((i * side, 0, (i + 1) * side, side)) for i in range(len(rows))]
    cols["ground truth"] = [Image.open(prepared / "colour" / f"{r['gt']}.png").convert("RGB") for r in rows]
    return cols


def image_grid(blocks: list[tuple[list[str], dict[str, list]]], path: Path, pad: float = 0.0) -> None:
    """A grid of images written to `path`: blocks of rows stacked, each (row labels, column title → images)."""
    plt = _pyplot()
    ncols, nrows = max(len(c) for _, c in blocks), sum(len(labels) for labels, _ in blocks)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * 1.1 + pad, nrows * 1.1 + 0.6 - pad), squeeze=False)
    r0 = 0
    for labels, cols in blocks:
        for j, (title, images) in enumerate(cols.items()):
            for i, image in enumerate(images):
                axes[r0 + i][j].imshow(image.convert("RGB"))
            axes[r0][j].set_title(title, fontsize=7)
        for i, label in enumerate(labels):
            if label:
                axes[r0 + i][0].set_ylabel(label, fontsize=7)
        r0 += len(labels)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def samples_figure(root: Path, shown: dict[str, str], prepared: Path, path: Path) -> bool:
    """samples.png: self and cross_gt items, one column per arm's first-seed run; False when nothing to show."""
    panels = [(p, c) for p in ("self", "cross_gt") if (c := sample_columns(root, shown, prepared, p))]
    if not panels:
        return False
    image_grid([([p] + [""] * (len(next(iter(c.values()))) - 1), c) for p, c in panels], path)
    return True


def failures_figure(columns: dict[str, list] | None, labels: list[str], path: Path) -> bool:
    """failures.png: one labelled row per item, one column per kind of image (line art, reference, …); False, and
    nothing written, without images."""
    if not columns or not labels:
        return False
    image_grid([(labels, columns)], path, pad=0.3)
    return True


def loss_figure(root: Path, shown: dict[str, str], path: Path) -> None:
    """loss_curves.png: validation loss per epoch of each arm's first-seed run and the baselines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, run in shown.items():
        history = read_history(train_file(root, run, "csv"))
        if history:
            ax.plot([h["epoch"] for h in history], [h["val_loss"] for h in history], marker="o", ms=3, label=label)
    ax.set_xlabel("epoch"), ax.set_ylabel("validation loss"), ax.set_yscale("log"), ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    ax.set_title("Validation loss per epoch, first seed (BBDM: EMA weights; GANs: L1)")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def bars_figure(root: Path, runs: dict[str, list[str]], path: Path) -> None:
    """metric_bars.png: each arm's seed mean with ± seed SD error bars on four headline metrics."""
    plt = _pyplot()
    shown = [("self", "psnr"), ("self", "ssim"), ("cross_gt", "delta_e_tone"), ("self", "edge_iou")]
    fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.6))
    for ax, (protocol, metric) in zip(axes, shown):
        stats = {arm: s for arm, names in runs.items() if (s := seed_summary(root, names, protocol, metric))}
        means = [s[0] for s in stats.values()]
        errs = [0.0 if np.isnan(s[1]) else s[1] for s in stats.values()]
        ax.bar(range(len(stats)), means, yerr=errs, capsize=3, color="tab:blue")
        ax.set_xticks(range(len(stats)), list(stats), rotation=60, fontsize=8)
        ax.set_title(f"{LABELS[metric]} ({protocol})", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def figures(root: Path, study: dict[str, Any], prepared: Path) -> dict[str, bool]:
    """Write every figure; returns which of the optional ones (samples) exist now."""
    fig_dir = root / "reports" / "figures"
    runs, shown = arm_runs(study), seed0(study)
    loss_figure(root, shown, fig_dir / "loss_curves.png")
    bars_figure(root, runs, fig_dir / "metric_bars.png")
    return {
        "samples": samples_figure(root, shown, prepared, fig_dir / "samples.png"),
    }
