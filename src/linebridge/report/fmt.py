"""How the report prints numbers and tables: one formatting rule per metric, one Markdown table builder."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

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


def table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    """A Markdown table's lines; a row shorter than the header (a 'not run' row) gets empty cells at the end."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [*row, *[""] * (len(header) - len(row))]
        lines.append("|" + "".join(f" {c} |" if c else " |" for c in cells))
    return lines


def digits(metric: str) -> int:
    return 2 if metric in ("psnr", "fid") or metric.startswith("delta_e") else 3


def show(x: float | None, metric: str, signed: bool = False, extra: int = 0) -> str:
    """One value as the tables print it: tint rate (a fraction in the files) in %, ΔE/PSNR/FID to 2 decimals, else 3.

    `signed` for differences; `extra` decimals for effects, which are smaller than the values they compare.
    """
    if x is None or np.isnan(x):
        return "—"
    sign = "+" if signed else ""
    if metric == "tint_rate":
        return f"{100 * x:{sign}.{1 + extra}f} {'pp' if signed else '%'}"
    return f"{x:{sign}.{digits(metric) + extra}f}"


def bootstrapped(value: dict[str, Any] | None, metric: str) -> str:
    """'mean [low, high]' of a bootstrapped metric (the mean alone without an interval), a set metric's value, 'n/a'."""
    if value is None:
        return "—"
    if value.get("unavailable"):
        return "n/a¹"
    if "mean" in value:
        if value["mean"] is None or np.isnan(value["mean"]):
            return "—"
        if "low" not in value:
            return show(value["mean"], metric)
        return f"{show(value['mean'], metric)} [{show(value['low'], metric)}, {show(value['high'], metric)}]"
    return f"{value['value']:.{digits(metric) + 1}f}"


def mean_sd(summary: tuple[float, float, int] | None, metric: str) -> str:
    """'mean ± seed SD' (just the mean for a single run), or 'not run'."""
    if summary is None:
        return "not run"
    mean, sd, _ = summary
    return show(mean, metric) + ("" if np.isnan(sd) else f" ± {show(sd, metric)}")


def minutes(m: float | None) -> str:
    return "—" if m is None else f"{m:.1f}"


def metric_name(spec: str) -> str:
    """'cross_gt.delta_e_tone' → 'cross_gt ΔE00 tone↓' (with the direction arrow)."""
    protocol, metric = spec.split(".")
    return f"{protocol} {LABELS.get(metric, metric)}"


def effect(x: float, metric: str) -> str:
    """A signed difference, one decimal finer than the values for 3-decimal metrics (SSIM, Edge IoU, tint)."""
    return show(x, metric, signed=True, extra=int(digits(metric) == 3))


def interval(res: dict[str, Any], metric: str) -> str:
    return f"[{effect(res['low'], metric)}, {effect(res['high'], metric)}]"


def effect_ci(res: dict[str, Any], metric: str) -> str:
    """'effect [low, high]' of a contrast."""
    return f"{effect(res['effect'], metric)} {interval(res, metric)}"


def and_list(items: Iterable[str]) -> str:
    """'a', 'a and b', 'a, b and c': items as a sentence lists them."""
    items = list(items)
    return " and ".join([", ".join(items[:-1]), items[-1]] if len(items) > 2 else items)


def plural(n: int, noun: str) -> str:
    """'1 target', '2 targets'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
