"""Write reports/ablation.md (and its figures) from the pipeline's committed results.

Every number here is read from a file a pipeline stage or side study wrote (metrics/train, metrics/eval,
metrics/curve, metrics/sweep, metrics/tune.json, metrics/objectives.json); nothing is computed from memory or typed
in. Missing inputs become "not run" lines with the reason, never numbers, with one exception: the null control. It
is the check that the contrast test does not find effects in training noise, so when it fails or cannot run the report
is still written, with a loud line, and `main` returns 1 so `dvc repro` stops.

BBDM arms are trained with several seeds; a run is named ARM-sSEED. Arms are summarised by the mean over their seeds
± the seed-to-seed standard deviation, and the pre-declared contrasts treat seeds (paired across arms) and drawing
groups as the units of inference (`stats.seed_group_contrast`), with Holm's correction over the primary contrasts.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from linebridge.config import RUN_NAME, UserError, load_config, read_yaml, repo_root, run_name, study_runs
from linebridge.data.datasets import ProtocolDataset
from linebridge.data.splits import GRID_ITEMS, PROTOCOLS, spread
from linebridge.evaluation.stats import format_p, holm, null_control, seed_group_contrast
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
ARM_DESCRIPTIONS = (
    "A0 = original BBDM (line art only); A1 = + reference cross-attention; A2 = + edge-aware loss; "
    "A3 = + TPS references (full method); A4 = A3 with the reference concatenated; "
    "A5 = A3 trained with same-skin-tone references taken from other training drawings; "
    "A3r = A3 again with different float rounding (the null-control twin); "
    "A3old = A3 under the previous training recipe (batch 16, no shared colour jitter, no tone-region weight, "
    "uniform timesteps). "
    "Pix2Pix sees only the line art; SCFT uses the reference. "
    "`copy-lineart` / `copy-reference` / `reference-with-lines` are trivial outputs that calibrate the scale. "
    "ControlNet: **not run** — it needs Stable Diffusion + ControlNet weights and a GPU."
)

GroupLookup = Callable[[str], dict[str, str]]  # protocol → {item id: drawing group}


class NotRun(Exception):
    """An input the section needs is missing or unusable; the message (the reason) goes into the report."""


# ---------------------------------------------------------------- the study's runs


def arm_seeds(study: dict[str, Any]) -> dict[str, list[int]]:
    """Training seeds of each seeded (BBDM) arm, read off the run list `config.study_runs` builds (ARM-sSEED)."""
    seeds: dict[str, list[int]] = {}
    for run in study_runs(study):
        match = RUN_NAME.match(run)
        seeds.setdefault(match["arm"], []).append(int(match["seed"]))
    return seeds


def arm_runs(study: dict[str, Any]) -> dict[str, list[str]]:
    """Every arm's run names in report order: seeded arms as ARM-sSEED, baselines and trivial outputs as themselves."""
    runs = {arm: [run_name(arm, s) for s in seeds] for arm, seeds in arm_seeds(study).items()}
    runs.update({name: [name] for name in [*study["baselines"], *study["trivial"]]})
    return runs


def seed0(study: dict[str, Any]) -> dict[str, str]:
    """Arm → the run the figures show: the first-seed run of seeded arms, the only run of baselines."""
    first = study["seeds"][0]
    shown = {arm: run_name(arm, first) for arm, seeds in arm_seeds(study).items() if first in seeds}
    return {**shown, **{name: name for name in study["baselines"]}}


# ---------------------------------------------------------------- reading the stages' files


def read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def read_per_image(path: Path) -> dict[str, dict[str, float]]:
    """id → {metric: value} from an evaluate per-image CSV (columns: id, then one per metric)."""
    if not path.exists():
        return {}
    with path.open() as fh:
        return {row.pop("id"): {k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)}


def read_history(path: Path) -> list[dict[str, float | None]]:
    """A training history CSV as numbers; `wall_s` (cumulative seconds) is None in files written before it existed."""
    if not path.exists():
        return []
    with path.open() as fh:
        return [{"wall_s": None, **{k: float(v) if v else None for k, v in r.items()}} for r in csv.DictReader(fh)]


def eval_file(root: Path, run: str, protocol: str, suffix: str = "json") -> Path:
    return root / "metrics" / "eval" / run / f"{protocol}.{suffix}"


def run_mean(root: Path, run: str, protocol: str, metric: str) -> float | None:
    """One run's summary value of a metric (image mean, or a set metric's value); None when absent or unavailable."""
    res = read_json(eval_file(root, run, protocol))
    v = res and res["metrics"].get(metric)
    if not v or v.get("unavailable"):
        return None
    x = v.get("mean", v.get("value"))
    return None if x is None or np.isnan(x) else float(x)


def seed_summary(root: Path, runs: list[str], protocol: str, metric: str) -> tuple[float, float, int] | None:
    """Mean over an arm's runs of each run's value, the seed SD (NaN with one run) and how many runs had the value.

    Each seed weighs the same, as in the contrasts; the SD is the run-to-run spread a single run would have.
    """
    values = [v for run in runs if (v := run_mean(root, run, protocol, metric)) is not None]
    if not values:
        return None
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    return float(np.mean(values)), sd, len(values)


def rel(root: Path, path: Path) -> str:
    """A path as messages show it: relative to the study root when it is inside it."""
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def prepared_groups(prepared: Path) -> GroupLookup:
    """The drawing group of every item of a test protocol, from the prepared data (read once per protocol)."""
    cache: dict[str, dict[str, str]] = {}

    def lookup(protocol: str) -> dict[str, str]:
        if protocol not in cache:
            try:
                ds = ProtocolDataset(prepared, protocol)
            except UserError as err:
                raise NotRun(f"the item groups are unknown: {err}") from None
            cache[protocol] = dict(zip(ds.ids, ds.groups))
        return cache[protocol]

    return lookup


# ---------------------------------------------------------------- formatting


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


def fmt(value: dict[str, Any] | None, metric: str) -> str:
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


def units(row: dict[str, Any]) -> str:
    """The data behind a contrast: seeds × images (drawing groups)."""
    res = row["result"]
    return f"{res['n_seeds']} seeds × {res['n_images']} images ({res['n_groups']} groups)"


def seed_spread(row: dict[str, Any], metric: str) -> str:
    """Per-seed effects and their SD: how much a single-seed comparison would move."""
    res = row["result"]
    per_seed = ", ".join(
        f"s{s} {effect(e, metric)}" for s, e in zip(row["seeds"], res["seed_effects"] or [], strict=False)
    )
    return f"{per_seed}; SD {effect(res['seed_sd'], metric).lstrip('+')}"


def subset_rule(max_per_group: int) -> str:
    """How the evaluated items were chosen (eval.max_per_group), in words."""
    if not max_per_group:
        return "every item"
    return (
        f"every cross_gt triple, and for self and cross_random the items group-stratified with "
        f"k = {max_per_group} (at most {max_per_group} variants of each drawing)"
    )


# ---------------------------------------------------------------- contrasts


def contrast_data(
    root: Path, study: dict[str, Any], groups: GroupLookup, a: str, b: str, spec: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """Per-image values of arms a and b, [seeds, images], rows paired by seed, and the images' groups.

    The seeds are those both arms have; the images are those every one of these runs evaluated (sorted by id), so
    the contrast compares the same images in the same order. Raises NotRun naming every missing file.
    """
    protocol, metric = spec.split(".")
    seeds_of = arm_seeds(study)
    for arm in (a, b):
        if arm not in seeds_of:
            raise NotRun(f"{arm} is not a seeded arm of the study")
    seeds = [s for s in seeds_of[a] if s in seeds_of[b]]
    if not seeds:
        raise NotRun(f"{a} and {b} share no training seed")
    paths = [eval_file(root, run_name(arm, s), protocol, "csv") for arm in (a, b) for s in seeds]
    missing = [rel(root, p) for p in paths if not p.exists()]
    if missing:
        raise NotRun("missing " + ", ".join(missing))
    tables = [read_per_image(p) for p in paths]
    ids = sorted(set.intersection(*(set(t) for t in tables)))
    if not ids:
        raise NotRun(f"the runs of {a} and {b} have no {protocol} item in common")
    if any(metric not in t[ids[0]] for t in tables):
        raise NotRun(f"{metric} is not in every run's {protocol}.csv")
    lookup = groups(protocol)
    unknown = [i for i in ids if i not in lookup]
    if unknown:
        raise NotRun(f"{len(unknown)} evaluated items are not in the prepared {protocol} protocol; re-run evaluate")
    values = np.array([[t[i][metric] for i in ids] for t in tables])
    return values[: len(seeds)], values[len(seeds) :], np.array([lookup[i] for i in ids]), seeds


def contrast(root: Path, study: dict[str, Any], groups: GroupLookup, a: str, b: str, spec: str) -> dict[str, Any]:
    """b − a on one metric, paired by seed: {a, b, metric, seeds, result} or {a, b, metric, reason}."""
    row: dict[str, Any] = {"a": a, "b": b, "metric": spec}
    try:
        xa, xb, g, seeds = contrast_data(root, study, groups, a, b, spec)
    except NotRun as err:
        return {**row, "reason": str(err)}
    return {**row, "seeds": seeds, "result": seed_group_contrast(xa, xb, g, paired=True)}


def _at_floor(res: dict[str, Any]) -> bool:
    return bool(res["p_value"] <= res["p_floor"] * (1 + 1e-9))


def adjust_holm(rows: list[dict[str, Any]]) -> None:
    """Holm-adjusted p over all computed contrasts together, into row['p_holm'] (and 'p_holm_bound').

    A p at the method's floor is only an upper bound, so Holm runs twice — with such p as given and as 0 — and an
    adjusted value that depends on a floored p is marked as a bound ("≤"); the verdict uses the upper value.
    """
    done = {str(i): r["result"] for i, r in enumerate(rows) if "result" in r}
    upper = holm({k: res["p_value"] for k, res in done.items()})
    lower = holm({k: 0.0 if _at_floor(res) else res["p_value"] for k, res in done.items()})
    for k in done:
        rows[int(k)]["p_holm"] = upper[k]
        rows[int(k)]["p_holm_bound"] = bool(lower[k] < upper[k])


def primary_contrasts(root: Path, study: dict[str, Any], groups: GroupLookup) -> list[dict[str, Any]]:
    """The pre-declared contrasts (study.contrasts) with Holm over them and a verdict at study.alpha."""
    rows = [contrast(root, study, groups, c["a"], c["b"], c["metric"]) for c in study["contrasts"]]
    adjust_holm(rows)
    for row in rows:
        if "result" in row:
            row["significant"] = bool(row["p_holm"] < study["alpha"])
    return rows


def verdict(row: dict[str, Any]) -> str:
    """The contrast in plain words: which way b moves the metric, whether that is better, and whether it counts."""
    res, (protocol, metric) = row["result"], row["metric"].split(".")
    change = res["effect"]
    if np.isnan(change):
        return f"{row['b']} − {row['a']}: no finite values to compare"
    moves = "raises" if change > 0 else "lowers" if change < 0 else "leaves unchanged"
    name = LABELS.get(metric, metric).rstrip("↑↓")
    what = (
        f"{row['b']} {moves} {protocol} {name} by {effect(abs(change), metric).lstrip('+')} against {row['a']} "
        f"(95 % CI {interval(res, metric)})"
    )
    if not row["significant"]:
        return f"{what}: **no significant difference** after Holm"
    better = (change > 0) == HIGHER_IS_BETTER[metric]
    direction = "higher" if HIGHER_IS_BETTER[metric] else "lower"
    return f"{what}: **{'better' if better else 'worse'}** ({direction} is better), significant after Holm"


def holm_text(row: dict[str, Any]) -> str:
    p = row["p_holm"]
    return format_p(p, p) if row["p_holm_bound"] else format_p(p)


def primary_section(rows: list[dict[str, Any]], alpha: float) -> list[str]:
    """Table and verdicts of the pre-declared contrasts."""
    lines = [
        "| question (b − a) | metric | units | b − a [95 % CI] | p | Holm p | per-seed effects; seed SD |",
        "|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for row in rows:
        head = f"| {row['b']} − {row['a']} | {metric_name(row['metric'])} "
        if "reason" in row:
            lines.append(head + f"| not run: {row['reason']} | | | | |")
            verdicts.append(f"- {row['b']} − {row['a']}: not run ({row['reason']}).")
            continue
        res, metric = row["result"], row["metric"].split(".")[1]
        lines.append(
            head + f"| {units(row)} | {effect_ci(res, metric)} | {format_p(res['p_value'], res['p_floor'])} "
            f"| {holm_text(row)} | {seed_spread(row, metric)} |"
        )
        verdicts.append(f"- {verdict(row)}.")
    return lines + ["", *verdicts, "", _contrast_method(alpha)]


def _contrast_method(alpha: float) -> str:
    return (
        "Each contrast pairs the two arms' runs by training seed and compares them on the same test images; the "
        "interval and p treat seeds and drawing groups (the variants of one drawing) as the units "
        "(`stats.seed_group_contrast`, Behrens–Fisher reference distribution over the seed and group variance "
        f"components). Holm's correction runs over the primary contrasts together at α = {alpha}; p at the method's "
        "floor is printed as “≤ …”. With one seed the seed variance cannot be estimated and the interval is "
        "conditional on the trained models."
    )


def secondary_section(root: Path, study: dict[str, Any], groups: GroupLookup) -> list[str]:
    """The same contrasts on the secondary metrics: effect and interval only, deliberately without a verdict."""
    lines = [
        "| contrast (b − a) | metric | units | b − a [95 % CI] | seed SD |",
        "|---|---|---|---|---|",
    ]
    for c in study["contrasts"]:
        for spec in study["secondary"]:
            row = contrast(root, study, groups, c["a"], c["b"], spec)
            head = f"| {c['b']} − {c['a']} | {metric_name(spec)} "
            if "reason" in row:
                lines.append(head + f"| not run: {row['reason']} | | |")
                continue
            metric = spec.split(".")[1]
            res = row["result"]
            lines.append(
                head + f"| {units(row)} | {effect_ci(res, metric)} | {effect(res['seed_sd'], metric).lstrip('+')} |"
            )
    return lines + ["", "Descriptive only: **no verdict** is drawn from these rows (no test, no correction)."]


def null_section(root: Path, study: dict[str, Any], groups: GroupLookup) -> tuple[list[str], str | None]:
    """The null control (two arms that differ only in float rounding, paired by seed): lines and an error or None.

    It must find nothing. If it finds a difference (p < alpha) or cannot run, the contrasts above are not
    trustworthy, so the error goes back to `main`, which fails the stage.
    """
    spec = study.get("null_control")
    if not spec:
        return ["No null control is declared in `params.yaml` (study.null_control)."], None
    a, b, metric = spec["a"], spec["b"], spec["metric"]
    title = f"{b} − {a} on {metric_name(metric)}"
    try:
        xa, xb, g, seeds = contrast_data(root, study, groups, a, b, metric)
    except NotRun as err:
        msg = f"the null control {title} cannot run: {err}"
        return [f"**NULL CONTROL NOT RUN — {msg}.** The contrasts above are unchecked."], msg
    res = null_control(xa, xb, g, paired=True, alpha=study["alpha"])
    row = {"a": a, "b": b, "metric": metric, "seeds": seeds, "result": res}
    name = metric.split(".")[1]
    numbers = (
        f"{title}: {effect_ci(res, name)}, p = {format_p(res['p_value'], res['p_floor'])}, {units(row)}; "
        f"per seed {seed_spread(row, name)}"
    )
    if res["holds"]:
        return [f"Holds: {numbers}. No difference at α = {study['alpha']}, as there should be none."], None
    msg = f"the null control FAILED: {numbers} (p < α = {study['alpha']})"
    return [
        f"**⚠ NULL CONTROL FAILED — {numbers}.** Two runs that differ only in float rounding test as different, so "
        "the test finds effects in training noise and the verdicts above cannot be trusted as stated."
    ], msg


# ---------------------------------------------------------------- arm tables and targets


def arm_table(root: Path, runs: dict[str, list[str]]) -> list[str]:
    """Every arm: mean over its seeds ± seed SD of the headline metrics, and how many runs were found."""
    lines = [
        "| arm | runs | " + " | ".join(f"{p} {LABELS[m]}" for p, m in ARM_COLUMNS) + " |",
        "|" + "---|" * (len(ARM_COLUMNS) + 2),
    ]
    for arm, names in runs.items():
        cells = [mean_sd(seed_summary(root, names, p, m), m) for p, m in ARM_COLUMNS]
        found = sum(eval_file(root, n, "self").exists() for n in names)
        lines.append(f"| {arm} | {found}/{len(names)} | " + " | ".join(cells) + " |")
    return lines + [
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
        lines += [f"### {PROTOCOL_TITLES[protocol]}", ""]
        lines += ["| arm | runs | n | " + " | ".join(LABELS[c] for c in cols) + " |", "|" + "---|" * (len(cols) + 3)]
        for arm, names in runs.items():
            results = [r for n in names if (r := read_json(eval_file(root, n, protocol)))]
            if not results:
                lines.append(f"| {arm} | 0/{len(names)} | — | " + " | ".join("not run" for _ in cols) + " |")
                continue
            reasons.update(_unavailable(results, cols))
            n = ", ".join(sorted({str(r["n_images"]) for r in results}))
            cells = [_cell(root, names, protocol, c, results) for c in cols]
            lines.append(f"| {arm} | {len(results)}/{len(names)} | {n} | " + " | ".join(cells) + " |")
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


def target_rows(root: Path, runs: dict[str, list[str]]) -> list[tuple[str, str, str, float | None, float | None]]:
    """(target, metric, comparison, A3's seed mean, threshold) for each target of the full method."""

    def mean(arm: str, protocol: str, metric: str) -> float | None:
        s = seed_summary(root, runs.get(arm, []), protocol, metric)
        return None if s is None else s[0]

    tone = mean("A3", "cross_gt", "delta_e_tone")
    a0, p2p, scft = (mean(arm, "cross_gt", "delta_e_tone") for arm in ("A0", "pix2pix", "scft"))
    return [
        ("self PSNR ≥ 23 dB", "psnr", "≥", mean("A3", "self", "psnr"), 23.0),
        ("self SSIM ≥ 0.88", "ssim", "≥", mean("A3", "self", "ssim"), 0.88),
        ("cross_gt tone ΔE00 ≤ 12", "delta_e_tone", "≤", tone, 12.0),
        ("cross_gt tone ΔE00 ≤ 0.7 × A0's", "delta_e_tone", "≤", tone, None if a0 is None else 0.7 * a0),
        ("cross_gt tone ΔE00 below Pix2Pix's", "delta_e_tone", "<", tone, p2p),
        ("cross_gt tone ΔE00 below SCFT's", "delta_e_tone", "<", tone, scft),
        ("self tint rate ≤ 10 %", "tint_rate", "≤", mean("A3", "self", "tint_rate"), 0.10),
    ]


def targets_section(root: Path, runs: dict[str, list[str]]) -> list[str]:
    """A3 (mean over its seeds) against each target: measured, threshold, met or missed by how much."""
    lines = ["| target | A3 (seed mean) | threshold | result |", "|---|---|---|---|"]
    for label, metric, op, value, threshold in target_rows(root, runs):
        if value is None or threshold is None:
            lines.append(f"| {label} | {show(value, metric)} | {show(threshold, metric)} | not run |")
            continue
        met = {"≥": value >= threshold, "≤": value <= threshold, "<": value < threshold}[op]
        gap = abs(value - threshold)
        result = "met" if met else f"missed by {show(gap, metric).replace('%', 'pp')}"
        lines.append(f"| {label} | {show(value, metric)} | {show(threshold, metric)} | {result} |")
    return lines


def truth_checks(root: Path, runs: dict[str, list[str]]) -> list[str]:
    """The 'does it learn?' checks (A3 against A0 and the trivial outputs, seed means), stated plainly either way."""

    def mean(arm: str, protocol: str, metric: str) -> float | None:
        s = seed_summary(root, runs.get(arm, [arm]), protocol, metric)
        return None if s is None else s[0]

    out = []
    a3, a0 = mean("A3", "cross_gt", "delta_e_tone"), mean("A0", "cross_gt", "delta_e_tone")
    if a3 is not None and a0 is not None:
        out.append(
            f"- Cross-reference colour transfer: A3 tone-region ΔE00 {a3:.2f} vs A0 {a0:.2f} (seed means) → **"
            f"{'A3 lower (transfers colour)' if a3 < a0 else 'A3 NOT lower: the reference is not transferring colour'}"
            "**."
        )
    for metric in ("psnr", "ssim"):
        a3v = mean("A3", "self", metric)
        trivial = {m: v for m in TRIVIAL_LABELS if (v := mean(m, "self", metric)) is not None}
        if a3v is None or not trivial:
            continue
        beats = all(a3v > v for v in trivial.values())
        against = ", ".join(f"{TRIVIAL_LABELS[m]} {v:.3f}" for m, v in trivial.items())
        out.append(
            f"- Self-reference {LABELS[metric]}: A3 {a3v:.3f} (seed mean) vs {against} → "
            f"**{'A3 beats every trivial output' if beats else 'A3 does NOT beat every trivial output'}**."
        )
    return out or ["- not available: the evaluations of A0, A3 and the trivial outputs have not run."]


# ---------------------------------------------------------------- training, convergence, learning efficiency


def convergence_value(history: list[dict[str, Any]]) -> float | None:
    """Relative fall of validation loss over the last quarter of the steps; None with fewer than two epochs.

    The earlier point is the history row whose step is closest to 0.75 × the final step, but at least one epoch
    before the last: (val_loss there − final val_loss) / val_loss there. A run still improving by more than
    study.convergence_gain over its last quarter would have gained from more steps.
    """
    if len(history) < 2:
        return None
    final = history[-1]
    target = 0.75 * final["step"]
    there = min(history[:-1], key=lambda r: abs(r["step"] - target))
    return (there["val_loss"] - final["val_loss"]) / there["val_loss"]


def training_minutes(summary: dict[str, Any] | None, history: list[dict[str, Any]]) -> float | None:
    """Training time of a run: the summary's wall time, else the history's last cumulative wall_s (if recorded)."""
    if summary and summary.get("wall_time_s") is not None:
        return summary["wall_time_s"] / 60
    if history and history[-1].get("wall_s") is not None:
        return history[-1]["wall_s"] / 60
    return None


def convergence_section(root: Path, study: dict[str, Any]) -> list[str]:
    """For every BBDM run: steps, epochs, best epoch, the convergence rule's value and its yes/no."""
    gain = study["convergence_gain"]
    lines = [
        "| run | steps | epochs | best epoch | val-loss fall, last quarter | converged | training minutes |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in study_runs(study):
        summary = read_json(root / "metrics" / "train" / f"{run}.json")
        history = read_history(root / "metrics" / "train" / f"{run}.csv")
        if summary is None and not history:
            lines.append(f"| {run} | not run | | | | | |")
            continue
        value = convergence_value(history)
        minutes = training_minutes(summary, history)
        steps = summary["steps"] if summary else int(history[-1]["step"])
        epochs = summary["epochs_run"] if summary else len(history)
        best = summary["best_epoch"] if summary else "—"
        shown = "— (fewer than two epochs)" if value is None else f"{100 * value:.1f} %"
        converged = "—" if value is None else ("yes" if value < gain else "no")
        lines.append(
            f"| {run} | {steps} | {epochs} | {best} | {shown} | {converged} "
            f"| {'—' if minutes is None else f'{minutes:.1f}'} |"
        )
    return lines + [
        "",
        f"Converged: the validation loss fell by less than {100 * gain:g} % of its value over the last quarter of "
        "the run's steps (from the epoch whose step is closest to 75 % of the final step, at least one epoch before "
        "the last, to the end).",
    ]


def training_table(root: Path, names: list[str]) -> list[str]:
    """Per run: how long it trained and where its best checkpoint is."""
    lines = [
        "| run | epochs | steps | best epoch | best val loss | stopped early | train images | wall time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in names:
        s = read_json(root / "metrics" / "train" / f"{m}.json")
        if s is None:
            lines.append(f"| {m} | not run | | | | | | |")
            continue
        lines.append(
            f"| {m} | {s['epochs_run']} | {s['steps']} | {s['best_epoch']} | {s['best_val_loss']:.4f} "
            f"| {s['stopped_early']} | {s.get('train_images', '—')} | {s['wall_time_s'] / 60:.1f} min |"
        )
    return lines + [
        "",
        "BBDM rows: validation loss = L_diff + λ_edge·L_edge on the EMA weights (5 fixed timesteps per image), so "
        "rows with and without the edge term are not on one scale; GAN rows: validation L1 of the generator.",
    ]


def curve_rows(root: Path, run: str) -> list[dict[str, Any]]:
    """A run's validation curve with training minutes per row (from the curve, else the training history's wall_s)."""
    curve = read_json(root / "metrics" / "curve" / f"{run}.json")
    if curve is None:
        return []
    walls = {int(h["epoch"]): h["wall_s"] for h in read_history(root / "metrics" / "train" / f"{run}.csv")}
    rows = []
    for r in curve["rows"]:
        wall = r.get("wall_s") if r.get("wall_s") is not None else walls.get(int(r["epoch"]))
        rows.append({**r, "minutes": None if wall is None else wall / 60})
    return rows


def efficiency_curves(root: Path, study: dict[str, Any]) -> dict[str, tuple[str, list[dict[str, Any]]]]:
    """recipe label → (run, its validation curve rows) for the new recipe (A3) and the old one."""
    first = study["seeds"][0]
    return {
        "new recipe": (run_name("A3", first), curve_rows(root, run_name("A3", first))),
        "old recipe": (run_name(study["old_recipe"], first), curve_rows(root, run_name(study["old_recipe"], first))),
    }


def efficiency_section(curves: dict[str, tuple[str, list[dict[str, Any]]]]) -> list[str]:
    """Validation quality against training time for the two recipes, one row per epoch checkpoint."""
    lines = [
        "| recipe | run | epoch | training minutes | val PSNR↑ | val ΔE00 tone↓ | val tint↓ |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, (run, rows) in curves.items():
        if not rows:
            lines.append(f"| {label} | {run} | not run (no metrics/curve/{run}.json) | | | | |")
        for r in rows:
            minutes = "—" if r["minutes"] is None else f"{r['minutes']:.1f}"
            lines.append(
                f"| {label} | {run} | {r['epoch']} | {minutes} | {show(r.get('psnr'), 'psnr')} "
                f"| {show(r.get('delta_e_tone'), 'delta_e_tone')} | {show(r.get('tint_rate'), 'tint_rate')} |"
            )
    return lines + [
        "",
        "Validation split, the checkpoint saved at the end of each epoch; minutes = cumulative training time then.",
    ]


# ---------------------------------------------------------------- sampler choice and tuning


SWEEP_METRICS = ["psnr", "ssim", "delta_e", "delta_e_tone", "tint_rate"]


def sweep_cell(value: Any, metric: str) -> str:
    """A sweep value: a plain mean, or a bootstrapped {mean, low, high}; '—' when the row lacks the metric."""
    return fmt(value, metric) if isinstance(value, dict) else show(value, metric)


def checkpoint_text(sweep: dict[str, Any]) -> str:
    """Which checkpoints the sweep scored: several (its rows are their means) or one."""
    paths = sweep.get("checkpoints") or [sweep.get("checkpoint")]
    if len(paths) == 1:
        return f"Checkpoint `{paths[0]}`"
    return f"Means over the checkpoints {', '.join(f'`{p}`' for p in paths)} (the arm's training seeds)"


def sweep_section(root: Path, study: dict[str, Any]) -> list[str]:
    """The validation sweep (steps × sampler × weights) and the setting chosen from it for the test evaluations."""
    s = read_json(root / "metrics" / "sweep" / "sweep.json")
    if s is None:
        return ["not run (no metrics/sweep/sweep.json)."]
    lines = [
        "| steps | sampler | weights | s / image | " + " | ".join(LABELS[m] for m in SWEEP_METRICS) + " | n |",
        "|" + "---|" * (len(SWEEP_METRICS) + 5),
    ]
    for r in s["rows"]:
        m, n = r["metrics"], r["n_images"]
        n = ", ".join(f"{k} {v}" for k, v in n.items()) if isinstance(n, dict) else n
        lines.append(
            f"| {r['steps']} | {r['sampler']} | {r.get('weights', 'ema')} | {r['seconds_per_image']:.3f} | "
            + " | ".join(sweep_cell(m.get(k), k) for k in SWEEP_METRICS)
            + f" | {n} |"
        )
    lines += [
        "",
        f"{checkpoint_text(s)} on the {s.get('split', 'val')} split (tone ΔE00 on its cross_gt items, "
        "the rest on its self items); means over the items. 'eta=1' is BBDM's ancestral sampler; 'deterministic' is "
        "the DDIM-style ODE. Seconds are wall time on this machine, which varies with its load.",
        "",
    ]
    return lines + choice_lines(root, study)


def choice_lines(root: Path, study: dict[str, Any]) -> list[str]:
    """The chosen sampler setting, its rule, and whether every BBDM test evaluation used it."""
    path = root / "metrics" / "sweep" / "choice.yaml"
    if not path.exists():
        return ["Chosen setting: not run (no metrics/sweep/choice.yaml)."]
    choice = read_yaml(path)
    e = choice["eval"]
    lines = [
        f"**Chosen**: {e['sample_step']} steps, η = {e['eta']}, deterministic = {e['deterministic']}, "
        f"{e['weights']} weights — rule: {choice.get('rule', 'not recorded')}. The test split was evaluated once, "
        "with this setting, after it was chosen on the validation split."
    ]
    other = [run for run in study_runs(study) if _sampler_differs(root, run, e)]
    if other:
        lines.append(
            f"**Not evaluated with it**: {', '.join(other)} (their metrics/eval JSON records another setting)."
        )
    return lines


def _sampler_differs(root: Path, run: str, chosen: dict[str, Any]) -> bool:
    res = read_json(eval_file(root, run, "self"))
    if res is None or not res.get("sampler"):
        return False
    sampler = res["sampler"]
    return (
        sampler.get("steps") != chosen["sample_step"]
        or bool(sampler.get("deterministic")) != bool(chosen["deterministic"])
        or res.get("weights") != chosen["weights"]
    )


def tune_section(root: Path) -> list[str]:
    """The Optuna study (`make tune`, not a stage): its judge, budget, best trial and whether it was adopted."""
    s = read_json(root / "metrics" / "tune.json")
    if s is None:
        return ["The Optuna study has not run (`make tune`)."]
    if "objective" not in s:
        return [
            "The committed `metrics/tune.json` comes from an earlier study whose judge was a validation loss that "
            "contains λ_edge itself; it carries no signal and its values are not used. Rerun with `make tune`."
        ]
    budget = s.get("trial_budget", {})
    images = budget.get("max_train_images") or "all"
    lines = [
        f"- judge: {s['objective']}; sampler {s.get('sampler')}",
        f"- trials (multi-fidelity): {budget.get('epochs', '?')} epochs on {images} training images each, the "
        "recipe's schedule squeezed into them; " + ", ".join(f"{k} {v}" for k, v in s["counts"].items()),
        f"- best trial {s['best_trial']}: objective {s['best_value']:.3f} at "
        + ", ".join(f"`{k}` = {v:.3g}" for k, v in s["best_params"].items()),
    ]
    choice = root / "metrics" / "sweep" / "choice.yaml"
    chosen = read_yaml(choice)["eval"] if choice.exists() else None
    if chosen is not None and s.get("sampler") not in (None, chosen):
        lines.append(
            f"- **tuned an earlier configuration**: its sampler is not this study's choice ({chosen}); commit "
            f"{s.get('commit', 'not recorded')}. `make tune` reruns it on the current one"
        )
    if s.get("importances"):
        shares = ", ".join(f"`{k}` {v:.2f}" for k, v in s["importances"].items())
        lines.append(f"- importances (fANOVA, seeded): {shares}")
    check = s.get("confirm")
    if check:
        per_seed = "; ".join(
            f"seed {seed}: default {d['objective']:.3f}, tuned {t['objective']:.3f}"
            for seed, d, t in zip(check["seeds"], check["default"], check["tuned"])
        )
        outcome = (
            "**adopted**: the study trains with the tuned values (`tuned/best_params.yaml`)."
            if check["adopted"]
            else "**not adopted**: the study keeps the defaults."
        )
        lines += [
            f"- confirmation at the full recipe ({per_seed}): {check['verdict']}",
            f"- rule: {check['rule']} → {outcome}",
        ]
    else:
        lines.append("- confirmation runs: not finished; the study keeps the defaults.")
    for fig in ("tune_history.png", "tune_importances.png"):
        if (root / "reports" / "figures" / fig).exists():
            lines += ["", f"![{fig}](figures/{fig})"]
    return lines


def objectives_section(root: Path) -> list[str]:
    """grad / noise / ysubx at equal budget (`make objectives`, not a stage): validation, mean and per seed."""
    s = read_json(root / "metrics" / "objectives.json")
    if s is None:
        return ["Not run (`make objectives`, ~20 minutes): no `metrics/objectives.json`."]
    seeds = sorted({r["seed"] for r in s["runs"]})
    items = ", ".join(f"{p} {n}" for p, n in s["validation_items"].items())
    sampler = s["sampler"]
    kind = "deterministic" if sampler["deterministic"] else f"η = {sampler['eta']:g}"
    commit = s["commit"] if s["commit"] == "unknown" else s["commit"][:7] + ("-dirty" if "dirty" in s["commit"] else "")

    def per_seed(objective: str, step: int, key: str, fmt: str) -> str:
        values = [
            score[key]
            for r in s["runs"]
            if r["objective"] == objective
            for score in r["scores"]
            if score["sample_step"] == step
        ]
        return ", ".join(format(v, fmt) for v in values)

    lines = [
        f"The full method ({s['experiment']}) trained once per objective and seed (seeds "
        f"{', '.join(map(str, seeds))}), everything else equal ({s['recipe']['epochs']} epochs of batch "
        f"{s['recipe']['batch_size']}); scored on validation ({items}), {kind}, {sampler['weights']} weights "
        f"(sampler from {s['sampler_from']}; the sweep chose it on grad checkpoints); commit {commit}, profile "
        f"{s['profile']}. Mean over the seeds, each seed in brackets; training minutes are the step loop's.",
        "",
        "| objective | sampler steps | PSNR↑ | SSIM↑ | ΔE00↓ | tint↓ | ΔE00 tone↓ | training min |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in s["means"]:
        o, n = m["objective"], m["sample_step"]
        lines.append(
            f"| {o} | {n} | {m['psnr']:.2f} ({per_seed(o, n, 'psnr', '.2f')}) | {m['ssim']:.3f} | "
            f"{m['delta_e']:.2f} | {100 * m['tint_rate']:.1f} % | {m['delta_e_tone']:.2f} "
            f"({per_seed(o, n, 'delta_e_tone', '.2f')}) | {m['train_seconds'] / 60:.1f} |"
        )
    return lines + [
        "",
        "Each objective gives its own estimate x̂ of the target (`BrownianBridge.predict_target`), and the L1 and "
        "edge losses are taken on what it predicts. An output error reaches x̂ one to one for grad and ysubx, and "
        "multiplied by √δ_t / (1 − m_t) for noise: ~45× at the first sampler step.",
    ]


# ---------------------------------------------------------------- figures


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
        "line art": [Image.open(prepared / "line" / f"{r['id']}.png").convert("RGB") for r in rows],
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


def samples_figure(root: Path, shown: dict[str, str], prepared: Path, path: Path) -> bool:
    """samples.png: self and cross_gt items, one column per arm's first-seed run; False when nothing to show."""
    panels = [(p, c) for p in ("self", "cross_gt") if (c := sample_columns(root, shown, prepared, p))]
    if not panels:
        return False
    plt = _pyplot()
    ncols, nrows = max(len(c) for _, c in panels), sum(len(next(iter(c.values()))) for _, c in panels)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * 1.1, nrows * 1.1 + 0.6), squeeze=False)
    r0 = 0
    for protocol, cols in panels:
        n = len(next(iter(cols.values())))
        for j, (title, images) in enumerate(cols.items()):
            for i in range(n):
                axes[r0 + i][j].imshow(images[i].convert("RGB"))
            axes[r0][j].set_title(title, fontsize=7)
        axes[r0][0].set_ylabel(protocol, fontsize=7)
        r0 += n
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True


def loss_figure(root: Path, shown: dict[str, str], path: Path) -> None:
    """loss_curves.png: validation loss per epoch of each arm's first-seed run and the baselines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, run in shown.items():
        history = read_history(root / "metrics" / "train" / f"{run}.csv")
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


def efficiency_figure(curves: dict[str, tuple[str, list[dict[str, Any]]]], path: Path) -> bool:
    """learning_efficiency.png: val PSNR and val tone ΔE00 against training minutes, both recipes."""
    if not any(rows for _, rows in curves.values()):
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, metric in zip(axes, ("psnr", "delta_e_tone")):
        for label, (run, rows) in curves.items():
            points = [(r["minutes"], r[metric]) for r in rows if r["minutes"] is not None and r.get(metric) is not None]
            if points:
                ax.plot(*zip(*points), marker="o", ms=3, label=f"{label} ({run})")
        ax.set_xlabel("training minutes"), ax.set_title(f"validation {LABELS[metric]}", fontsize=9)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True


def figures(root: Path, study: dict[str, Any], prepared: Path, curves: dict) -> dict[str, bool]:
    """Write every figure; returns which of the optional ones (samples, learning efficiency) exist now."""
    fig_dir = root / "reports" / "figures"
    runs, shown = arm_runs(study), seed0(study)
    loss_figure(root, shown, fig_dir / "loss_curves.png")
    bars_figure(root, runs, fig_dir / "metric_bars.png")
    return {
        "samples": samples_figure(root, shown, prepared, fig_dir / "samples.png"),
        "efficiency": efficiency_figure(curves, fig_dir / "learning_efficiency.png"),
    }


# ---------------------------------------------------------------- the report


def header(root: Path, cfg: dict[str, Any], study: dict[str, Any], info: dict[str, Any]) -> list[str]:
    """Where the numbers come from: commit, profile, seeds per arm, data and the evaluated subset."""
    seed_text = "; ".join(
        f"{', '.join(arms)}: seeds {', '.join(map(str, seeds))}"
        for arms, seeds in (
            (study["arms"], study["seeds"]),
            (study["minor_arms"], study["minor_seeds"]),
            ([study["old_recipe"]], study["seeds"][:1]),
        )
    )
    return [
        "# linebridge — ablation report",
        "",
        "Written by the `report` stage of `dvc repro` (`make repro`) from files the other stages wrote; "
        f"code at commit `{git_commit(root, short=True)}` (the commit before the one that records these results), "
        f"profile `{cfg['profile']}` ({cfg['data']['image_size']}² images, "
        f"U-Net {cfg['model']['model_channels']} channels × {cfg['model']['channel_mult']}, "
        f"batch {cfg['train']['batch_size']}, {cfg['train']['epochs']} epochs max). "
        "Configuration: `params.yaml` + `experiments/ARM.yaml`; a run ARM-sSEED is that arm trained with that seed; "
        "the resolved configuration of every run is logged in MLflow (`mlflow ui --backend-store-uri sqlite:///mlflow.db`).",
        "",
        data_line(cfg, info),
        "",
        f"**Seeds**: {seed_text}; baselines ({', '.join(study['baselines'])}) and trivial outputs: one run each. "
        "Training seeds and drawing groups are the units of inference; arm summaries are seed means ± seed SD.",
    ]


def data_line(cfg: dict[str, Any], info: dict[str, Any]) -> str:
    """The prepared data's splits and protocol sizes (from its info.json) and the rule that chose the test items."""
    rule = f"evaluated on {subset_rule(cfg['eval']['max_per_group'])}."
    if not info:
        return f"**Data**: not run (no {cfg['data']['prepared_dir']}/info.json); {rule}"
    splits = ", ".join(f"{k} {v['images']} images / {v['groups']} groups" for k, v in sorted(info["splits"].items()))
    protocols = ", ".join(f"{k} {v}" for k, v in sorted(info.get("protocols", {}).items()))
    return (
        f"**Data**: OpenMoji line art / colour pairs at {info.get('image_size', '?')}², split by base emoji: "
        f"{splits}. Test protocols: {protocols} items; {rule}"
    )


def build_report(root: Path, groups: GroupLookup | None = None) -> tuple[str, list[str]]:
    """The report's text and the errors that must fail the stage (a null control that failed or could not run).

    `groups` gives the drawing group of each test item (default: from the prepared data); tests pass their own.
    """
    cfg = load_config(None, None, [], root=root)
    study = read_yaml(root / "params.yaml")["study"]
    prepared = root / cfg["data"]["prepared_dir"]
    groups = groups or prepared_groups(prepared)
    info = read_json(prepared / "info.json") or {}
    runs = arm_runs(study)
    curves = efficiency_curves(root, study)
    made = figures(root, study, prepared, curves)
    primary = primary_contrasts(root, study, groups)
    null_lines, null_error = null_section(root, study, groups)
    tables, reasons = protocol_tables(root, runs)
    lines = [
        *header(root, cfg, study, info),
        "",
        "## Pre-declared questions",
        "",
        *primary_section(primary, study["alpha"]),
        "",
        "### Null control",
        "",
        *null_lines,
        "",
        "## Secondary metrics (no verdict)",
        "",
        *secondary_section(root, study, groups),
        "",
        "## Results by arm",
        "",
        ARM_DESCRIPTIONS,
        "",
        *arm_table(root, runs),
        "",
        "## Targets for the full method (A3)",
        "",
        *targets_section(root, runs),
        "",
        "## Does it learn? (checked automatically)",
        "",
        *truth_checks(root, runs),
        "",
        "## All metrics by protocol",
        "",
        *tables,
    ]
    if reasons:
        lines += ["¹ Unavailable metrics:", ""] + [f"- {LABELS[k]}: {v}" for k, v in sorted(reasons.items())] + [""]
    lines += definitions() + [
        "## Convergence",
        "",
        *convergence_section(root, study),
        "",
        "## Learning efficiency (new against old training recipe)",
        "",
        *efficiency_section(curves),
        "",
        *(["![learning efficiency](figures/learning_efficiency.png)", ""] if made["efficiency"] else []),
        "## Objectives at equal budget",
        "",
        *objectives_section(root),
        "",
        "## Sampler choice (validation split)",
        "",
        *sweep_section(root, study),
        "",
        "## Training",
        "",
        *training_table(root, [*study_runs(study), *study["baselines"]]),
        "",
        "![loss curves](figures/loss_curves.png)",
        "",
        "## Optuna study (λ_edge, TPS strength)",
        "",
        *tune_section(root),
        "",
        *figures_section(made["samples"]),
        *closing(),
    ]
    return "\n".join(lines), [null_error] if null_error else []


def definitions() -> list[str]:
    from linebridge.evaluation.metrics import EDGE_IOU_DEFINITION

    return [
        f"**Edge IoU**: {EDGE_IOU_DEFINITION}",
        "",
        "**ΔE00**: mean CIEDE2000 colour difference per image (CIELAB via kornia, D65); "
        "*tone* = only the pixels where the skin-tone variants of the emoji differ "
        "(the region a reference's skin colour should reach). **Tint rate**: the share of an image's background "
        "pixels with ΔE00 > 3 (visibly tinted), in %.",
        "",
    ]


def figures_section(samples: bool) -> list[str]:
    lines = ["## Figures", ""]
    if samples:
        lines += [
            "![samples](figures/samples.png)",
            "",
            f"Rows: {GRID_ITEMS} items spread evenly over each of the self-reference and cross-reference-with-ground-"
            "truth protocols; columns: line art, reference, each arm's first-seed run, ground truth.",
            "",
        ]
    else:
        lines += ["Sample grid: not run (no prepared data or no evaluated run).", ""]
    return lines + ["![metric bars](figures/metric_bars.png)", "", "Seed means ± seed SD.", ""]


def closing() -> list[str]:
    return [
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="reports/ablation.md", help="report path (relative to the repository root)")


def main(args: argparse.Namespace) -> int:
    """Write the report; exit 1 (after writing it) when the null control failed or could not run."""
    root = repo_root()
    text, errors = build_report(root)
    out = root / args.out
    write_atomic(out, text)
    print(f"wrote {out}")
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if errors else 0
