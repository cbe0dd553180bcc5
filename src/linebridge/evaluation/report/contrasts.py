"""The pre-declared contrasts: per-image data paired by seed, Holm over the primary ones, verdicts, the null control.

Seeds (paired across arms) and drawing groups are the units of inference (`stats.seed_group_contrast`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from linebridge.config import run_name
from linebridge.evaluation.report.fmt import HIGHER_IS_BETTER, LABELS, effect, effect_ci, interval, metric_name, table
from linebridge.evaluation.report.read import GroupLookup, NotRun, eval_file, read_per_image, rel
from linebridge.evaluation.report.study import arm_seeds
from linebridge.evaluation.stats import format_p, holm, null_control, seed_group_contrast


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


def direction(row: dict[str, Any]) -> tuple[str, str]:
    """Whether a contrast's b is 'better' or 'worse' than its a, and the rule: '(lower is better)'."""
    metric = row["metric"].split(".")[1]
    better = (row["result"]["effect"] > 0) == HIGHER_IS_BETTER[metric]
    return "better" if better else "worse", f"({'higher' if HIGHER_IS_BETTER[metric] else 'lower'} is better)"


def outcome(row: dict[str, Any]) -> str:
    """A computed primary contrast's verdict in a few words: better or worse only when significant after Holm."""
    if np.isnan(row["result"]["effect"]):
        return "no finite values to compare"
    return " ".join(direction(row)) if row["significant"] else "no significant difference"


def verdict(row: dict[str, Any]) -> str:
    """The contrast in plain words: which way b moves the metric, whether that is better, and whether it counts."""
    res, (protocol, metric) = row["result"], row["metric"].split(".")
    change = res["effect"]
    if np.isnan(change):
        return f"{row['b']} − {row['a']}: {outcome(row)}"
    moves = "raises" if change > 0 else "lowers" if change < 0 else "leaves unchanged"
    name = LABELS.get(metric, metric).rstrip("↑↓")
    what = (
        f"{row['b']} {moves} {protocol} {name} by {effect(abs(change), metric).lstrip('+')} against {row['a']} "
        f"(95 % CI {interval(res, metric)})"
    )
    if not row["significant"]:
        return f"{what}: **{outcome(row)}** after Holm"
    word, rule = direction(row)
    return f"{what}: **{word}** {rule}, significant after Holm"


def holm_text(row: dict[str, Any]) -> str:
    p = row["p_holm"]
    return format_p(p, p) if row["p_holm_bound"] else format_p(p)


def question_line(row: dict[str, Any]) -> str:
    """One primary contrast in one line: b − a, metric, effect [CI], Holm p and the verdict (or why it did not run)."""
    head = f"{row['b']} − {row['a']}, {metric_name(row['metric'])}"
    if "reason" in row:
        return f"{head}: not run ({row['reason']})"
    return f"{head}: {effect_ci(row['result'], row['metric'].split('.')[1])}, Holm p {holm_text(row)} → {outcome(row)}"


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


def primary_section(rows: list[dict[str, Any]], alpha: float) -> list[str]:
    """Table and verdicts of the pre-declared contrasts."""
    cells, verdicts = [], []
    for row in rows:
        head = [f"{row['b']} − {row['a']}", metric_name(row["metric"])]
        if "reason" in row:
            cells.append([*head, f"not run: {row['reason']}"])
            verdicts.append(f"- {row['b']} − {row['a']}: not run ({row['reason']}).")
            continue
        res, metric = row["result"], row["metric"].split(".")[1]
        p = format_p(res["p_value"], res["p_floor"])
        cells.append([*head, units(row), effect_ci(res, metric), p, holm_text(row), seed_spread(row, metric)])
        verdicts.append(f"- {verdict(row)}.")
    header = ["question (b − a)", "metric", "units", "b − a [95 % CI]", "p", "Holm p", "per-seed effects; seed SD"]
    return [*table(header, cells), "", *verdicts, "", _contrast_method(alpha)]


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
    cells = []
    for c in study["contrasts"]:
        for spec in study["secondary"]:
            row = contrast(root, study, groups, c["a"], c["b"], spec)
            head = [f"{c['b']} − {c['a']}", metric_name(spec)]
            if "reason" in row:
                cells.append([*head, f"not run: {row['reason']}"])
                continue
            metric, res = spec.split(".")[1], row["result"]
            cells.append([*head, units(row), effect_ci(res, metric), effect(res["seed_sd"], metric).lstrip("+")])
    header = ["contrast (b − a)", "metric", "units", "b − a [95 % CI]", "seed SD"]
    return [
        *table(header, cells),
        "",
        "Descriptive only: **no verdict** is drawn from these rows (no test, no correction).",
    ]


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
