"""The pre-declared contrasts: per-image data paired by seed, Holm over the primary ones, verdicts, the null control.

Seeds (paired across arms) and drawing groups are the units of inference (`stats.seed_group_contrast`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from linebridge.core.config import run_name
from linebridge.evaluation.power import markdown
from linebridge.evaluation.stats import format_p, holm, null_control, seed_group_contrast
from linebridge.report.fmt import HIGHER_IS_BETTER, LABELS, effect, effect_ci, interval, metric_name, table
from linebridge.report.read import GroupLookup, NotRun, eval_file, read_json, read_per_image, rel
from linebridge.report.study import arm_seeds

REFERENCES = {"behrens_fisher": "Behrens–Fisher", "min_df": "minimum df"}


def contrast_data(
    root: Path, study: dict[str, Any], groups: GroupLookup, a: str, b: str, spec: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, list[int]]:
    """Per-image values of arms a and b, [seeds, images], rows paired by seed, the images' line drawings and their
    reference drawings (None where every reference is the line drawing itself, as on the self protocol).

    The seeds are those both arms have; the images are those every one of these runs evaluated (sorted by id), so
    the contrast compares the same images in the same order. Raises NotRun naming every missing file.
    """
    seeds_of = arm_seeds(study)
    for arm in (a, b):
        if arm not in seeds_of:
            raise NotRun(f"{arm} is not a seeded arm of the study")
    seeds = [s for s in seeds_of[a] if s in seeds_of[b]]
    if not seeds:
        raise NotRun(f"{a} and {b} share no training seed")
    xa, xb, lines, refs = runs_data(
        root, groups, [run_name(a, s) for s in seeds], [run_name(b, s) for s in seeds], spec, f"{a} and {b}"
    )
    return xa, xb, lines, refs, seeds


def runs_data(
    root: Path, groups: GroupLookup, runs_a: list[str], runs_b: list[str], spec: str, what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Per-image values of two lists of runs on `spec`, [runs, images], on the images every run evaluated (sorted
    by id), with their line and reference drawings (None on self); a NotRun naming what is missing."""
    protocol, metric = spec.split(".")
    paths = [eval_file(root, run, protocol, "csv") for run in (*runs_a, *runs_b)]
    missing = [rel(root, p) for p in paths if not p.exists()]
    if missing:
        raise NotRun("missing " + ", ".join(missing))
    tables = [read_per_image(p) for p in paths]
    ids = sorted(set.intersection(*(set(t) for t in tables)))
    if not ids:
        raise NotRun(f"the runs of {what} have no {protocol} item in common")
    if any(metric not in t[ids[0]] for t in tables):
        raise NotRun(f"{metric} is not in every run's {protocol}.csv")
    lookup = groups(protocol)
    unknown = [i for i in ids if i not in lookup]
    if unknown:
        raise NotRun(f"{len(unknown)} evaluated items are not in the prepared {protocol} protocol; re-run evaluate")
    values = np.array([[t[i][metric] for i in ids] for t in tables])
    lines, refs = (np.array(x) for x in zip(*(lookup[i] for i in ids)))
    return values[: len(runs_a)], values[len(runs_a) :], lines, None if np.array_equal(lines, refs) else refs


def contrast(
    root: Path, study: dict[str, Any], groups: GroupLookup, a: str, b: str, spec: str, margin: float | None = None
) -> dict[str, Any]:
    """b − a on one metric, paired by seed: {a, b, metric, margin, seeds, result, other[, tost]} or {…, reason}.

    `result` is the test under study.verdict_reference, `other` under the other reference distribution; with a
    margin, `tost` holds the (1 − 2α) interval of the two one-sided tests of equivalence under the verdict's one.
    """
    row: dict[str, Any] = {"a": a, "b": b, "metric": spec, "margin": margin}
    try:
        xa, xb, lines, refs, seeds = contrast_data(root, study, groups, a, b, spec)
    except NotRun as err:
        return {**row, "reason": str(err)}
    chosen = study["verdict_reference"]
    other = next(m for m in REFERENCES if m != chosen)

    def test(method: str, **kw) -> dict[str, Any]:
        return seed_group_contrast(xa, xb, lines, paired=True, method=method, ref_groups=refs, **kw)

    row.update(seeds=seeds, result=test(chosen), other=test(other, n_boot=0))
    if margin is not None:
        row["tost"] = test(chosen, n_boot=0, level=1 - 2 * study["alpha"])
    return row


def _at_floor(res: dict[str, Any]) -> bool:
    return bool(res["p_value"] <= res["p_floor"] * (1 + 1e-9))


def adjust_holm(rows: list[dict[str, Any]], key: str = "result") -> None:
    """Holm-adjusted p of row[key] over all computed contrasts together, into row[key]['p_holm'] (and 'p_holm_bound').

    A p at the method's floor is only an upper bound, so Holm runs twice — with such p as given and as 0 — and an
    adjusted value that depends on a floored p is marked as a bound ("≤"); the verdict uses the upper value.
    """
    done = {str(i): r[key] for i, r in enumerate(rows) if key in r}
    upper = holm({k: res["p_value"] for k, res in done.items()})
    lower = holm({k: 0.0 if _at_floor(res) else res["p_value"] for k, res in done.items()})
    for k, res in done.items():
        res["p_holm"] = upper[k]
        res["p_holm_bound"] = bool(lower[k] < upper[k])


def primary_contrasts(root: Path, study: dict[str, Any], groups: GroupLookup) -> list[dict[str, Any]]:
    """The primary questions (study.primary) with Holm over them under both references and a verdict at α."""
    rows = [contrast(root, study, groups, c["a"], c["b"], c["metric"], c["margin"]) for c in study["primary"]]
    for key in ("result", "other"):
        adjust_holm(rows, key)
    for row in rows:
        if "result" in row:
            row["significant"] = bool(row["result"]["p_holm"] < study["alpha"])
            tost = row["tost"]
            row["equivalent"] = bool(-row["margin"] < tost["low"] and tost["high"] < row["margin"])
    return rows


def direction(row: dict[str, Any]) -> tuple[str, str]:
    """Whether a contrast's b is 'better' or 'worse' than its a, and the rule: '(lower is better)'."""
    metric = row["metric"].split(".")[1]
    better = (row["result"]["effect"] > 0) == HIGHER_IS_BETTER[metric]
    return "better" if better else "worse", f"({'higher' if HIGHER_IS_BETTER[metric] else 'lower'} is better)"


def verdict_word(row: dict[str, Any]) -> str:
    """A primary question's verdict in a word: 'significant' after Holm; otherwise 'within ± MARGIN' when the
    equivalence interval lies inside the margin, else 'inconclusive'; 'not run' or 'no finite values to compare'
    where there is nothing to judge."""
    if "reason" in row:
        return "not run"
    if np.isnan(row["result"]["effect"]):
        return "no finite values to compare"
    if row["significant"]:
        return "significant"
    margin = effect(row["margin"], row["metric"].split(".")[1]).lstrip("+")
    return f"within ± {margin}" if row["equivalent"] else "inconclusive"


def outcome(row: dict[str, Any]) -> str:
    """A primary question's verdict in a few words: better or worse when significant after Holm, else its
    `verdict_word` (within ± margin, inconclusive)."""
    word = verdict_word(row)
    return " ".join(direction(row)) if word == "significant" else word


def verdict(row: dict[str, Any]) -> str:
    """The question in plain words: which way b moves the metric, whether that is better, and whether it counts."""
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
    if row["significant"]:
        word, rule = direction(row)
        return f"{what}: **{word}** {rule}, significant after Holm"
    tost = f"{interval(row['tost'], metric)}"
    if row["equivalent"]:
        return f"{what}: not significant, and its 90 % interval {tost} lies **within ± {row['margin']:g}**"
    return f"{what}: not significant, and its 90 % interval {tost} reaches past ± {row['margin']:g}: **inconclusive**"


def holm_text(res: dict[str, Any]) -> str:
    p = res["p_holm"]
    return format_p(p, p) if res["p_holm_bound"] else format_p(p)


def question_line(row: dict[str, Any]) -> str:
    """One primary question in one line: b − a, metric, effect [CI], Holm p under both references and the verdict."""
    head = f"{row['b']} − {row['a']}, {metric_name(row['metric'])}"
    if "reason" in row:
        return f"{head}: not run ({row['reason']})"
    other = REFERENCES[row["other"]["method"]]
    return (
        f"{head}: {effect_ci(row['result'], row['metric'].split('.')[1])}, Holm p {holm_text(row['result'])} "
        f"({other}: {holm_text(row['other'])}) → {outcome(row)}"
    )


def question_summary(row: dict[str, Any]) -> str:
    """One primary question as the summary states it: 'A5 − A0 on cross_gt ΔE00 tone is **significant** (A5 better
    by 2.27)', '… is **within ± 1.00**', '… is **inconclusive**', '… was **not run**'."""
    head = f"{row['b']} − {row['a']} on {metric_name(row['metric']).rstrip('↑↓')}"
    word = verdict_word(row)
    if word == "significant":
        size = effect(abs(row["result"]["effect"]), row["metric"].split(".")[1]).lstrip("+")
        return f"{head} is **significant** ({row['b']} {direction(row)[0]} by {size})"
    if word == "not run":
        return f"{head} was **not run**"
    if word.startswith("no finite"):
        return f"{head} has **{word}**"
    return f"{head} is **{word}**"


def questions_summary(rows: list[dict[str, Any]], alpha: float) -> str:
    """The primary questions' verdicts in one sentence, in their declared order."""
    if not rows:
        return "No primary questions are declared (params.yaml `study.primary`)."
    holm = f"Holm over {len(rows)} at α = {alpha}"
    return f"Pre-declared questions ({holm}): " + "; ".join(question_summary(row) for row in rows) + "."


def units(row: dict[str, Any]) -> str:
    """The data behind a contrast: seeds × images (line drawings; reference drawings where they are crossed)."""
    res = row["result"]
    drawings = f"{res['n_groups']} drawings" + (
        f" × {res['n_ref_groups']} reference drawings" if "n_ref_groups" in res else ""
    )
    return f"{res['n_seeds']} seeds × {res['n_images']} images ({drawings})"


def seed_spread(row: dict[str, Any], metric: str) -> str:
    """Per-seed effects and their SD: how much a single-seed comparison would move."""
    res = row["result"]
    per_seed = ", ".join(
        f"s{s} {effect(e, metric)}" for s, e in zip(row["seeds"], res["seed_effects"] or [], strict=False)
    )
    return f"{per_seed}; SD {effect(res['seed_sd'], metric).lstrip('+')}"


def _p_df(res: dict[str, Any]) -> str:
    p = format_p(res["p_value"], res["p_floor"])
    return p if np.isnan(res["df"]) else f"{p} (df {res['df']:.0f})"


def primary_section(rows: list[dict[str, Any]], study: dict[str, Any]) -> list[str]:
    """Table and verdicts of the primary questions, under both reference distributions."""
    chosen = study["verdict_reference"]
    other = REFERENCES[next(m for m in REFERENCES if m != chosen)]
    cells, verdicts = [], []
    for row in rows:
        head = [f"{row['b']} − {row['a']}", metric_name(row["metric"])]
        if "reason" in row:
            cells.append([*head, f"not run: {row['reason']}"])
            verdicts.append(f"- {row['b']} − {row['a']}: not run ({row['reason']}).")
            continue
        res, metric = row["result"], row["metric"].split(".")[1]
        cells.append(
            [*head, units(row), effect_ci(res, metric), _p_df(res), holm_text(res), _p_df(row["other"])]
            + [holm_text(row["other"]), f"{interval(row['tost'], metric)} vs ± {row['margin']:g}", outcome(row)]
            + [seed_spread(row, metric)]
        )
        verdicts.append(f"- {verdict(row)}.")
    header = ["question (b − a)", "metric", "units", "b − a [95 % CI]", "p", "Holm p", f"p, {other}"]
    header += [f"Holm p, {other}", "90 % CI vs margin", "verdict", "per-seed effects; seed SD"]
    return [*table(header, cells), "", *verdicts, "", _contrast_method(study)]


def _contrast_method(study: dict[str, Any]) -> str:
    chosen = study["verdict_reference"]
    other = REFERENCES[next(m for m in REFERENCES if m != chosen)]
    return (
        "Each question pairs the two arms' runs by training seed and compares them on the same test images; the "
        "interval and p treat seeds, line drawings and (on the cross-reference protocols) reference drawings as the "
        "units, the drawings as crossed clusters (`stats.seed_group_contrast`). Verdicts use the "
        f"{REFERENCES[chosen]} reference distribution (`study.verdict_reference`); the {other} one is printed beside "
        f"it. Holm's correction runs over the {len(study['primary'])} primary questions at α = {study['alpha']}; p "
        "at the method's floor is printed as “≤ …”. A question that is not significant reads “within ± margin” when "
        "the 90 % interval (two one-sided tests at α) lies inside its declared margin, else “inconclusive”."
    )


def secondary_section(root: Path, study: dict[str, Any], groups: GroupLookup) -> list[str]:
    """The secondary questions on their metric and every question on the secondary metrics: effect and interval
    only, deliberately without a verdict."""
    questions = [(c, [c["metric"]]) for c in study["secondary"]["contrasts"]]
    questions += [(c, []) for c in study["primary"]]
    cells = []
    for c, own in questions:
        for spec in [*own, *study["secondary"]["metrics"]]:
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
    """The seed-split null control: one arm's training seeds in two halves, compared like two arms (unpaired: the
    halves share no seed). Same config, same data: there is no effect to find. Lines and an error or None.

    If it finds a difference (p < alpha) or cannot run, the contrasts above are not trustworthy, so the error goes
    back to `main`, which fails the stage. It is tested under study.verdict_reference; with two seeds a half it has
    few degrees of freedom, printed from the minimum-df reference beside it. The size rows of the size-and-power
    table check the paired test's calibration at this design.
    """
    spec = study.get("null_control")
    if not spec:
        return ["No null control is declared in `params.yaml` (study.null_control)."], None
    arm, metric = spec["arm"], spec["metric"]
    seeds = arm_seeds(study).get(arm, [])
    half = len(seeds) // 2
    first, second = seeds[:half], seeds[half : 2 * half]
    title = f"{arm} seeds {', '.join(map(str, second))} − seeds {', '.join(map(str, first))} on {metric_name(metric)}"
    try:
        if half < 2:  # one seed a side leaves the seed variance unestimated: training noise would test as an effect
            raise NotRun(f"{arm} has {len(seeds)} seed(s); the split needs two or more a half (4 seeds)")
        runs_a, runs_b = [run_name(arm, s) for s in first], [run_name(arm, s) for s in second]
        xa, xb, g, refs = runs_data(root, groups, runs_a, runs_b, metric, f"{arm}'s two halves")
    except NotRun as err:
        msg = f"the null control {title} cannot run: {err}"
        return [f"**NULL CONTROL NOT RUN — {msg}.** The contrasts above are unchecked."], msg
    chosen = study["verdict_reference"]
    res = null_control(xa, xb, g, paired=False, alpha=study["alpha"], ref_groups=refs, method=chosen)
    # Behrens–Fisher has no single df; the minimum-df reference's is the one that shows how little there is.
    df = null_control(xa, xb, g, paired=False, alpha=study["alpha"], ref_groups=refs, method="min_df", n_boot=0)
    row = {"a": arm, "b": arm, "metric": metric, "seeds": second, "result": res}
    name = metric.split(".")[1]
    numbers = (
        f"{title}: {effect_ci(res, name)}, p = {_p_df(res)} ({REFERENCES[chosen]}; minimum df: p = {_p_df(df)}), "
        f"{units(row)}"
    )
    if res["holds"]:
        return [f"Holds: {numbers}. No difference at α = {study['alpha']}, as there should be none."], None
    msg = f"the null control FAILED: {numbers} (p < α = {study['alpha']})"
    return [
        f"**⚠ NULL CONTROL FAILED — {numbers}.** Two halves of one arm's seeds test as different, so the test finds "
        "effects in training noise and the verdicts above cannot be trusted as stated."
    ], msg


def power_section(root: Path, study: dict[str, Any]) -> list[str]:
    """The size-and-power table of this study's own design and noise (metrics/power/study.json, the power stage).

    Its size rows check the paired test's calibration at this design (a size far from α makes every verdict
    suspect); its power rows say what a null verdict can mean. Each question names the seed count it actually has.
    """
    seeds_of = arm_seeds(study)
    record = read_json(root / "metrics" / "power" / "study.json")
    if record is None:
        return ["Not run: no metrics/power/study.json (`linebridge power --out metrics/power/study.json`)."]
    lines = [
        f"{record['n_sims']} simulated studies per row, each with this study's items (line and reference drawings) and "
        "the noise components estimated from its runs; size = share rejected at α with no true effect (should be "
        f"{100 * record['alpha']:.0f} %), power = share rejected when the true effect is the margin, at α and at "
        f"α / {record['n_primaries']} (Holm's strictest step); within ± margin = share whose 90 % interval lies "
        "inside the margin when there is no effect.",
    ]
    for q in record["questions"]:
        if "not_run" in q:
            lines += ["", f"**{q['b']} − {q['a']}** on {metric_name(q['metric'])}: not run ({q['not_run']})."]
            continue
        c = q["components"]
        lines += [
            "",
            f"**{q['b']} − {q['a']}** on {metric_name(q['metric'])}, margin ± {q['margin']:g}; components (variance): "
            + ", ".join(f"{k} {v:.3g}" for k, v in c.items())
            + f"; design: {q['design']['items']} items, {q['design']['line_drawings']} line drawings, "
            f"{q['design']['reference_drawings']} reference drawings.",
            "",
            markdown(q["rows"]),
            "",
            f"This study pairs {len(set(seeds_of.get(q['a'], [])) & set(seeds_of.get(q['b'], [])))} seeds for "
            "this question: read the rows with that many seeds.",
        ]
    return lines
