"""The results tables: every arm on the headline metrics, and every metric of each test protocol, by arm."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from linebridge.data.splits import PROTOCOLS
from linebridge.report.fmt import LABELS, mean_sd, table
from linebridge.report.read import eval_file, read_json, seed_summary
from linebridge.report.study import description

REGIONAL = ["delta_e_background", "delta_e_lines", "delta_e_interior", "tint_rate"]
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
# The per-arm summary: (protocol, metric) columns.
ARM_COLUMNS = [
    ("self", "psnr"),
    ("self", "ssim"),
    ("self", "delta_e"),
    ("self", "delta_e_background"),
    ("self", "delta_e_lines"),
    ("self", "delta_e_interior"),
    ("self", "tint_rate"),
    ("cross_gt", "delta_e"),
    ("cross_gt", "delta_e_tone"),
    ("self", "edge_iou"),
]


def arm_descriptions(root: Path, study: dict[str, Any], runs: dict[str, list[str]]) -> str:
    """What each row of the tables is: the experiments' descriptions, then the trivial outputs."""

    def role(arm: str) -> str:
        if arm == study["method"]:
            return " (**the method this study proposes**, `study.method`)"
        original = "full method" in description(root, arm)
        return " — the original design's, not the method this study proposes" if original else ""

    described = "; ".join(f"{arm} = {description(root, arm)}{role(arm)}" for arm in runs if arm not in study["trivial"])
    trivial = " / ".join(f"`{name}`" for name in study["trivial"])
    return (
        f"{described}. "
        + (f"{trivial} are trivial outputs that calibrate the scale. " if trivial else "")
        + "ControlNet: **not run** — it needs Stable Diffusion + ControlNet weights and a GPU."
    )


def arm_table(root: Path, runs: dict[str, list[str]]) -> list[str]:
    """Every arm: mean over its seeds ± seed SD of the headline metrics, and how many runs were found."""
    rows = []
    for arm, names in runs.items():
        found = sum(eval_file(root, n, "self").exists() for n in names)
        cells = [mean_sd(seed_summary(root, names, p, m), m) for p, m in ARM_COLUMNS]
        rows.append([arm, f"{found}/{len(names)}", *cells])
    return [
        *table(["arm", "runs", *(f"{p} {LABELS[m]}" for p, m in ARM_COLUMNS)], rows),
        "",
        "Mean over the arm's training seeds ± the seed-to-seed SD of the run means (one run: no SD); "
        "runs = evaluated runs / planned runs. Tint rate in %.",
    ]


def protocol_tables(root: Path, runs: dict[str, list[str]]) -> tuple[list[str], dict[str, str]]:
    """One table per protocol, by arm (seed mean ± SD); also collects the reasons of unavailable metrics."""
    lines: list[str] = []
    reasons: dict[str, str] = {}
    for protocol in PROTOCOLS:
        cols = COLUMNS[protocol]
        rows = []
        for arm, names in runs.items():
            results = [r for n in names if (r := read_json(eval_file(root, n, protocol)))]
            if not results:
                rows.append([arm, f"0/{len(names)}", "—", *["not run"] * len(cols)])
                continue
            reasons.update(_unavailable(results, cols))
            n = ", ".join(sorted({str(r["n_images"]) for r in results}))
            cells = [_cell(root, names, protocol, c, results) for c in cols]
            rows.append([arm, f"{len(results)}/{len(names)}", n, *cells])
        lines += [
            f"### {PROTOCOL_TITLES[protocol]}",
            "",
            *table(["arm", "runs", "n", *(LABELS[c] for c in cols)], rows),
        ]
        lines += ["", "Mean over seeds ± seed SD; set metrics (SWD, FID, KID) are one value per run.", ""]
    return lines, reasons


def _cell(root: Path, names: list[str], protocol: str, metric: str, results: list[dict[str, Any]]) -> str:
    if all(r["metrics"].get(metric, {}).get("unavailable") for r in results):
        return "n/a¹"
    summary = seed_summary(root, names, protocol, metric)
    return "—" if summary is None else mean_sd(summary, metric)


def _unavailable(results: list[dict[str, Any]], cols: list[str]) -> dict[str, str]:
    out = {}
    for res in results:
        for c in cols:
            v = res["metrics"].get(c)
            if v and v.get("unavailable"):
                out[c] = f"{v['reason']} {v.get('how_to_fix', '')}".strip()
    return out
