"""Other line styles: every arm scored on the test items with their line art re-drawn, and the method's checks.

The evaluation writes, beside each in-style protocol, `PROTOCOL-STYLE` for each style of
`linebridge.data.styles.STYLE_PROTOCOLS` (metrics/eval/RUN/cross_gt-thick.json, self-filled.csv, …): the same items,
the same ground truth, the line art in another style. A style is *seen* by a run trained with that style's family
(`PROTOCOL_FAMILY`) in `augment.line_styles`, *unseen* otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from linebridge.core.config import ConfigError, load_config
from linebridge.data.styles import DARK, PROTOCOL_FAMILY, STROKE_SCALE, STYLE_PROTOCOLS, STYLED
from linebridge.report.fmt import show, table
from linebridge.report.read import eval_file, read_json, read_per_image, seed_summary
from linebridge.report.study import arm_seeds

# In style and in each style on the same pixels: off the lines of the drawing and of every style (`_common`).
TONE = ("cross_gt", "delta_e_tone_common")  # colour transfer: the skin-tone region, from another drawing's reference
INTERIOR = ("self", "delta_e_interior_common")  # the drawing's fills
SLOPE = "slope"  # printed with 3 decimals, as fmt.show prints metrics it has no rule for
LIGHTNESS = ("tone_lightness", "tone_lightness_gt")  # cross_gt: mean L* over the tone region, output and truth


def protocol_name(protocol: str, style: str | None) -> str:
    """'cross_gt' in style (None), 'cross_gt-thick' in an unseen style."""
    return protocol if style is None else f"{protocol}-{style}"


def lightness_slope(path: Path) -> float | None:
    """OLS slope of the output's skin lightness on the ground truth's over one run's cross_gt items (a per-image CSV).

    1 when the output's skin follows the ground truth's tone fully, 0 when it ignores it. Items with a NaN in either
    column (no tone region) are left out; None without the columns, with fewer than two items or no spread in x.
    """
    rows = [(r[LIGHTNESS[1]], r[LIGHTNESS[0]]) for r in read_per_image(path).values() if set(LIGHTNESS) <= r.keys()]
    return ols_slope(*np.array(rows, dtype=float).reshape(-1, 2).T)


def ols_slope(x: np.ndarray, y: np.ndarray) -> float | None:
    """OLS slope of y on x over the pairs without a NaN; None with fewer than two or no spread in x."""
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if len(x) < 2 or np.ptp(x) == 0:
        return None
    dx = x - x.mean()
    return float(dx @ (y - y.mean()) / (dx @ dx))


def seed_slope(root: Path, names: list[str], style: str | None) -> float | None:
    """The skin-lightness slope of each run, averaged over the runs that have it (each seed weighs the same)."""
    protocol = protocol_name(TONE[0], style)
    slopes = [s for n in names if (s := lightness_slope(eval_file(root, n, protocol, "csv"))) is not None]
    return float(np.mean(slopes)) if slopes else None


def arm_scores(root: Path, names: list[str], style: str | None) -> dict[str, Any]:
    """An arm's seed means in one style (None = in style): tone ΔE00, interior ΔE00, slope; which protocols ran."""
    cross, own = protocol_name(TONE[0], style), protocol_name(INTERIOR[0], style)

    def mean(protocol: str, metric: str) -> float | None:
        summary = seed_summary(root, names, protocol, metric)
        return None if summary is None else summary[0]

    return {
        "tone": mean(cross, TONE[1]),
        "interior": mean(own, INTERIOR[1]),
        "slope": seed_slope(root, names, style),
        "cross_ran": any(eval_file(root, n, cross).exists() for n in names),
        "self_ran": any(eval_file(root, n, own).exists() for n in names),
    }


def every_style_ran(root: Path, run: str) -> bool:
    """Whether a run has been evaluated on both styled protocols (self, cross_gt) of every style."""
    return all(eval_file(root, run, protocol_name(p, s)).exists() for s in STYLE_PROTOCOLS for p in STYLED)


def ratio(value: float | None, base: float | None) -> float | None:
    return None if value is None or base is None or base == 0 else value / base


def cell(x: float | None, ran: bool, kind: str) -> str:
    """'not run' when the evaluation is missing, '—' when it ran without the value, else the value."""
    if not ran:
        return "not run"
    if kind == "ratio":
        return "—" if x is None else f"{x:.2f}×"
    return show(x, kind)


def seen_styles(root: Path, arm: str) -> tuple[str, dict[str, bool]]:
    """How an arm's training config re-draws line art (in words), and for each style whether it is seen."""
    styles = load_config(arm, None, [], root=root)["augment"]["line_styles"]
    families = list(styles["families"]) if styles["share"] > 0 else []
    seen = {style: PROTOCOL_FAMILY[style] in families for style in STYLE_PROTOCOLS}
    if not families:
        return "trained on the line art as drawn (no style augmentation)", seen
    return f"trained with families {', '.join(families)} (share {styles['share']:g})", seen


def seen_lines(root: Path, study: dict[str, Any]) -> list[str]:
    """One line per BBDM arm: the families it trained with, and which styles are seen or unseen for it."""
    out = []
    for arm in arm_seeds(study):
        try:
            how, seen = seen_styles(root, arm)
        except ConfigError as err:
            out.append(f"- {arm}: its training config cannot be read ({err}); seen/unseen not known.")
            continue
        verdicts = ", ".join(f"{s} *{'seen' if seen[s] else 'unseen'}*" for s in STYLE_PROTOCOLS)
        out.append(f"- {arm}: {how} → {verdicts}.")
    for name in study["baselines"]:  # only BBDM training applies `augment.line_styles`
        out.append(f"- {name}: trained on the line art as drawn (a baseline) → every style *unseen*.")
    return out


def verdict(value: float | None, op: str, threshold: float | None) -> str:
    """'met' or 'missed' (value below / at most / at least the threshold), 'not run' when either is missing."""
    if value is None or threshold is None:
        return "not run"
    passed = {"<": value < threshold, "<=": value <= threshold, ">=": value >= threshold}[op]
    return "met" if passed else "missed"


def scaled(factor: float, base: float | None) -> float | None:
    return None if base is None else factor * base


def method_checks(root: Path, study: dict[str, Any], runs: dict[str, list[str]]) -> list[str]:
    """The method on each style: tone below copy-reference's, tone and interior near in style, slope high enough."""
    method, checks_of = study["method"], study["style_checks"]
    below, max_tone, min_slope, max_interior = (
        checks_of["below"],
        checks_of["max_tone_ratio"],
        checks_of["min_slope"],
        checks_of["max_interior_ratio"],
    )
    names = runs.get(method, [])
    home = arm_scores(root, names, None)
    copied = runs.get(below, [below])
    try:
        seen = seen_styles(root, method)[1]
    except ConfigError:
        seen = {}
    tone_max, interior_max = scaled(max_tone, home["tone"]), scaled(max_interior, home["interior"])
    out = []
    for style in STYLE_PROTOCOLS:
        mine = arm_scores(root, names, style)
        theirs = arm_scores(root, copied, style)["tone"]
        tone, interior, slope = (
            show(mine["tone"], TONE[1]),
            show(mine["interior"], INTERIOR[1]),
            show(mine["slope"], SLOPE),
        )
        status = {True: "seen", False: "unseen"}.get(seen.get(style), "seen/unseen not known")
        checks = [
            (
                f"tone ΔE00 below {below}'s",
                f"{tone} vs {show(theirs, TONE[1])}",
                verdict(mine["tone"], "<", theirs),
            ),
            (
                f"tone ΔE00 ≤ {max_tone:g} × in style",
                f"{tone} vs {max_tone:g} × {show(home['tone'], TONE[1])} = {show(tone_max, TONE[1])}",
                verdict(mine["tone"], "<=", tone_max),
            ),
            (f"skin-lightness slope ≥ {min_slope:g}", slope, verdict(mine["slope"], ">=", min_slope)),
            (
                f"interior ΔE00 ≤ {max_interior:g} × in style",
                f"{interior} vs {max_interior:g} × {show(home['interior'], INTERIOR[1])} = "
                f"{show(interior_max, INTERIOR[1])}",
                verdict(mine["interior"], "<=", interior_max),
            ),
        ]
        out.append(f"- **{style}** ({status} for {method}):")
        out += [f"  - {label}: {numbers} → **{result}**" for label, numbers, result in checks]
    return out


def style_section(root: Path, study: dict[str, Any], runs: dict[str, list[str]]) -> list[str]:
    """Every arm on the unseen-style protocols against in style (seed means), which styles each BBDM arm trained
    with, and the method's checks. A missing evaluation gives 'not run' cells."""
    tone_rows, other_rows = [], []
    for arm, names in runs.items():
        home, *styled = (arm_scores(root, names, s) for s in (None, *STYLE_PROTOCOLS))
        done = sum(every_style_ran(root, n) for n in names)
        tone_rows.append([arm, f"{done}/{len(names)}", cell(home["tone"], home["cross_ran"], TONE[1])])
        other_rows.append([arm, *(cell(sc["slope"], sc["cross_ran"], SLOPE) for sc in (home, *styled))])
        other_rows[-1].append(cell(home["interior"], home["self_ran"], INTERIOR[1]))
        for sc in styled:
            tone_rows[-1] += [
                cell(sc["tone"], sc["cross_ran"], TONE[1]),
                cell(ratio(sc["tone"], home["tone"]), sc["cross_ran"], "ratio"),
            ]
            other_rows[-1] += [
                cell(sc["interior"], sc["self_ran"], INTERIOR[1]),
                cell(ratio(sc["interior"], home["interior"]), sc["self_ran"], "ratio"),
            ]
    tone_header = ["arm", "runs", "in style", *(h for s in STYLE_PROTOCOLS for h in (s, f"{s} ratio"))]
    other_header = ["arm", "slope in style", *(f"slope {s}" for s in STYLE_PROTOCOLS), "interior in style"]
    other_header += [h for s in STYLE_PROTOCOLS for h in (f"interior {s}", f"{s} ratio")]
    return [
        "The same test items with their line art re-drawn in another style: "
        f"*thick* = strokes {STROKE_SCALE:g} × as wide, rendered from the SVG; *filled* = areas whose colour is dark "
        f"(luminance below {DARK:g}) inked black; *extracted* = lines taken from the colour image by XDoG instead of "
        "the artist's. The ground truth keeps its thin lines, so the scores leave the lines of both drawings out: "
        "tone ΔE00 on cross_gt's skin-tone region, and colour error on the interior and the background.",
        "",
        "**Which styles each arm saw in training** (a style is *seen* when its family is among the arm's "
        "`augment.line_styles.families` and the share is above 0):",
        "",
        *seen_lines(root, study),
        "",
        "### Colour transfer in each style (cross_gt ΔE00 tone↓)",
        "",
        *table(tone_header, tone_rows),
        "",
        "Seed means; ratio = the style's value / the arm's in-style value (1 = nothing lost); "
        "runs = runs evaluated on every style / planned runs.",
        "",
        "### Skin lightness and interior colour in each style",
        "",
        *table(other_header, other_rows),
        "",
        "Slope↑: the OLS slope of the output's mean CIELAB L* over the tone region on the ground truth's, over the "
        "cross_gt items (items without a tone region left out), per run, then averaged over seeds: 1 = the skin "
        "follows the reference's lightness, 0 = it ignores it. Interior↓: self ΔE00 over the drawing's interior "
        "(seed means); ratio as above.",
        "",
        f"### Checks for the method ({study['method']}, seed means)",
        "",
        *method_checks(root, study, runs),
        "",
        "### Before line-style augmentation, and each family left out (models outside the study, seed 0)",
        "",
        *outside_section(root),
    ]


# Models trained outside the study and scored by benchmarks/line_styles.py, test split first (report only).
OUTSIDE = ("metrics/line-styles/test.json", "metrics/line-styles/val.json")


def outside_cell(scores: dict[str, Any], style: str, unseen: bool) -> str:
    """'tone (ratio) / slope / interior (ratio)' of one style; italics when the model did not train on its family."""
    home, x = scores["in style"], scores[style]

    def part(key: str, kind: str) -> str:
        value = show(x[key], kind)
        return value if style == "in style" else f"{value} ({cell(ratio(x[key], home[key]), True, 'ratio')})"

    text = f"{part('tone', TONE[1])} / {show(x['slope'], SLOPE)} / {part('interior', INTERIOR[1])}"
    return f"*{text}*" if unseen else text


def outside_section(root: Path) -> list[str]:
    """The previous recipe (no line-style augmentation) and the leave-one-family-out models, as
    benchmarks/line_styles.py scored them: one seed each, on the test split where it has been run."""
    out = []
    for rel in OUTSIDE:
        record = read_json(root / rel)
        if record is None:
            continue
        rows = []
        for name, model in record["models"].items():
            seen = model.get("seen", {})
            styles = model.get("line_styles", {})
            families = ", ".join(styles.get("families", [])) if styles.get("share", 0) > 0 else "none"
            scores = model["scores"]
            rows.append(
                [name, "—" if name == "copy-reference" else families, show(scores["in style"].get("psnr"), "psnr")]
                + [outside_cell(scores, "in style", False)]
                + [outside_cell(scores, st, name != "copy-reference" and not seen.get(st)) for st in STYLE_PROTOCOLS]
            )
        items = f"{record['items']} items per protocol" if record.get("items") else "every item of each protocol"
        out += [
            f"`{rel}` ({record['split']} split, {items}; each model's recipe is in the file):",
            "",
            *table(["model", "families trained on", "self PSNR↑", "in style", *STYLE_PROTOCOLS], rows),
            "",
        ]
    if not out:
        return ["Not run: `python benchmarks/line_styles.py --split test --runs NAME=FOLDER ...` writes them."]
    return out + [
        "Cells: cross_gt tone ΔE00↓ (ratio to in style) / skin-lightness slope↑ / self interior ΔE00↓ (ratio), on the "
        "same pixels as above; *italics*: a style whose family the model did not train on (unseen). `before-24ep` "
        "is the recipe before line-style augmentation; the study's arms train with every family "
        "(`augment.line_styles`), so for them the styles above are seen through their families, drawn by another "
        "hand (the `thick` protocol is rendered from the SVG, the `width` family from the rendered line art: eroded "
        "grey until commit 1be01e1, drawn solid since). The models here were chosen on the validation split; their "
        "test rows are for reading only.",
    ]
