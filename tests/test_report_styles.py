"""The report's unseen-line-style section on test_report's synthetic study tree: known values in, known cells out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from linebridge.report.assemble import build_report
from linebridge.report.read import eval_file
from linebridge.report.study import arm_runs
from linebridge.report.styles import lightness_slope, method_checks, seen_lines, style_section
from test_report import IDS, lookup, set_study, tree, write_eval  # noqa: F401 (tree: a fixture)

N = len(IDS)
GT_LIGHTNESS = np.linspace(30.0, 80.0, N)
NAN_ROWS = [3, 17]  # items without a tone region: NaN lightness, left out of the slope


def lightness(slope: float, intercept: float) -> dict[str, np.ndarray]:
    """cross_gt lightness columns whose output is exactly slope · truth + intercept, with a few NaN items."""
    gt, out = GT_LIGHTNESS.copy(), slope * GT_LIGHTNESS + intercept
    gt[NAN_ROWS[0]] = np.nan
    out[NAN_ROWS[1]] = np.nan
    return {"tone_lightness": out, "tone_lightness_gt": gt}


def write_style(root: Path, run: str, style: str | None, tone: float, interior: float, slope: float) -> None:
    """metrics/eval/RUN/{self,cross_gt}[-STYLE].{csv,json} with constant ΔE00 columns and a known lightness slope."""
    suffix = "" if style is None else f"-{style}"
    write_eval(
        root,
        run,
        {
            f"cross_gt{suffix}": {"delta_e_tone_common": np.full(N, tone), **lightness(slope, 10.0)},
            f"self{suffix}": {"delta_e_interior_common": np.full(N, interior)},
        },
    )


# The method (A3) per seed: in style, thick (every check met), filled (every check missed), extracted (met, but
# copy-reference was not evaluated on it).
METHOD = {
    None: {"tone": [8.0, 8.0, 8.0], "interior": [4.0, 4.0, 4.0], "slope": [0.9, 0.9, 0.9]},
    "thick": {"tone": [8.5, 9.0, 9.5], "interior": [4.2, 4.4, 4.6], "slope": [0.6, 0.7, 0.8]},
    "filled": {"tone": [10.5, 11.0, 11.5], "interior": [5.0, 5.2, 5.4], "slope": [0.4, 0.5, 0.6]},
    "extracted": {"tone": [9.6, 9.6, 9.6], "interior": [4.0, 4.0, 4.0], "slope": [0.8, 0.8, 0.8]},
}
COPIED = {"thick": 12.0, "filled": 10.0}  # copy-reference's tone ΔE00 on each style


@pytest.fixture
def styled(tree: Path) -> Path:  # noqa: F811
    """The test_report tree with copy-reference in the study, the method's style evaluations and copy-reference's."""
    set_study(tree, trivial=["copy-lineart", "copy-reference"])
    for style, values in METHOD.items():
        for seed in (0, 1, 2):
            write_style(tree, f"A3-s{seed}", style, *(values[k][seed] for k in ("tone", "interior", "slope")))
    for style, tone in COPIED.items():
        write_style(tree, "copy-reference", style, tone, 20.0, 0.0)
    return tree


def study(root: Path) -> dict:
    return yaml.safe_load((root / "params.yaml").read_text())["study"]


def rows(lines: list[str]) -> dict[str, list[list[str]]]:
    """Table rows by their first cell (one per table the row appears in), cells stripped."""
    out: dict[str, list[list[str]]] = {}
    for line in lines:
        if line.startswith("| ") and not line.startswith("| arm"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            out.setdefault(cells[0], []).append(cells[1:])
    return out


def test_the_slope_is_the_least_squares_slope_without_the_nan_items(tmp_path):
    write_eval(tmp_path, "run", {"cross_gt": lightness(0.5, 10.0)})  # output = 0.5 · truth + 10
    assert lightness_slope(eval_file(tmp_path, "run", "cross_gt", "csv")) == pytest.approx(0.5, abs=1e-6)
    noisy = lightness(-0.25, 60.0)
    noisy["tone_lightness"] += np.random.default_rng(0).normal(0, 3.0, N)
    write_eval(tmp_path, "noisy", {"cross_gt": noisy})
    keep = [k for k in range(N) if k not in NAN_ROWS]
    x, y = (np.array([float(f"{v:.6g}") for v in noisy[c][keep]]) for c in ("tone_lightness_gt", "tone_lightness"))
    expected = np.polyfit(x, y, 1)[0]
    assert lightness_slope(eval_file(tmp_path, "noisy", "cross_gt", "csv")) == pytest.approx(expected)
    assert expected == pytest.approx(-0.25, abs=0.1)
    write_eval(tmp_path, "flat", {"cross_gt": {"tone_lightness": np.ones(N), "tone_lightness_gt": np.ones(N)}})
    assert lightness_slope(eval_file(tmp_path, "flat", "cross_gt", "csv")) is None  # no spread in the truth
    assert lightness_slope(tmp_path / "missing.csv") is None


def test_tables_give_seed_means_ratios_and_slopes(styled):
    lines = style_section(styled, study(styled), arm_runs(study(styled)))
    tone, other = rows(lines)["A3"]
    # in style 8.00; thick 9.00 (1.125 ×); filled 11.00 (1.375 ×); extracted 9.60 (1.2 ×)
    assert tone == ["3/3", "8.00", "9.00", "1.12×", "11.00", "1.38×", "9.60", "1.20×"]
    # slopes 0.9, 0.7, 0.5, 0.8 (seed means of per-run slopes); interior 4.0 → 4.4 (1.1 ×), 5.2 (1.3 ×), 4.0
    assert other[:4] == ["0.900", "0.700", "0.500", "0.800"]
    assert other[4:] == ["4.00", "4.40", "1.10×", "5.20", "1.30×", "4.00", "1.00×"]
    copied_tone, _ = rows(lines)["copy-reference"]
    assert copied_tone[:6] == ["0/1", "not run", "12.00", "—", "10.00", "—"]  # no in-style run: no ratio


def test_missing_evaluations_give_not_run_cells(styled):
    lines = style_section(styled, study(styled), arm_runs(study(styled)))
    tone, other = rows(lines)["A0"]  # evaluated in style only (the test_report tree)
    assert tone[0] == "0/3" and tone[1] != "not run" and tone[2:] == ["not run"] * 6
    assert other[0] == "—"  # in style ran, but its CSV has no lightness columns
    assert other[1:4] == ["not run"] * 3 and other[5:] == ["not run"] * 6
    (styled / "metrics" / "eval" / "A3-s2" / "cross_gt-filled.json").unlink()
    (styled / "metrics" / "eval" / "A3-s2" / "cross_gt-filled.csv").unlink()
    tone, other = rows(style_section(styled, study(styled), arm_runs(study(styled))))["A3"]
    assert tone[:5] == ["2/3", "8.00", "9.00", "1.12×", "10.75"] and other[2] == "0.450"  # the two seeds left


def test_the_method_checklist_reads_met_and_missed(styled):
    checks = method_checks(styled, study(styled), arm_runs(study(styled)))
    text = "\n".join(checks)
    assert checks[0] == "- **thick** (seen for A3):"  # params.yaml trains every family: each style is seen
    assert checks[1:5] == [
        "  - tone ΔE00 below copy-reference's: 9.00 vs 12.00 → **met**",
        "  - tone ΔE00 ≤ 1.25 × in style: 9.00 vs 1.25 × 8.00 = 10.00 → **met**",
        "  - skin-lightness slope ≥ 0.6: 0.700 → **met**",
        "  - interior ΔE00 ≤ 1.2 × in style: 4.40 vs 1.2 × 4.00 = 4.80 → **met**",
    ]
    assert checks[5:10] == [
        "- **filled** (seen for A3):",
        "  - tone ΔE00 below copy-reference's: 11.00 vs 10.00 → **missed**",
        "  - tone ΔE00 ≤ 1.25 × in style: 11.00 vs 1.25 × 8.00 = 10.00 → **missed**",
        "  - skin-lightness slope ≥ 0.6: 0.500 → **missed**",
        "  - interior ΔE00 ≤ 1.2 × in style: 5.20 vs 1.2 × 4.00 = 4.80 → **missed**",
    ]
    assert checks[10:] == [
        "- **extracted** (seen for A3):",
        "  - tone ΔE00 below copy-reference's: 9.60 vs — → **not run**",  # copy-reference has no extracted files
        "  - tone ΔE00 ≤ 1.25 × in style: 9.60 vs 1.25 × 8.00 = 10.00 → **met**",
        "  - skin-lightness slope ≥ 0.6: 0.800 → **met**",
        "  - interior ΔE00 ≤ 1.2 × in style: 4.00 vs 1.2 × 4.00 = 4.80 → **met**",
    ]
    assert text.count("**missed**") == 4 and text.count("**not run**") == 1


def test_seen_and_unseen_come_from_each_arms_training_config(styled):
    a4 = yaml.safe_load((styled / "experiments" / "A4.yaml").read_text())
    a4["augment"] = {"line_styles": {"share": 0.5, "families": ["width", "extract", "blur"]}}
    (styled / "experiments" / "A4.yaml").write_text(yaml.safe_dump(a4))
    a3 = yaml.safe_load((styled / "experiments" / "A3.yaml").read_text())
    a3["augment"] = {"line_styles": {"share": 0.0, "families": ["fill"]}}  # families listed, but share 0: none drawn
    (styled / "experiments" / "A3.yaml").write_text(yaml.safe_dump(a3))
    lines = {line.split(":")[0]: line for line in seen_lines(styled, study(styled))}
    assert lines["- A4"] == (
        "- A4: trained with families width, extract, blur (share 0.5) → thick *seen*, filled *unseen*, "
        "extracted *seen*."
    )
    assert lines["- A3"] == (
        "- A3: trained on the line art as drawn (no style augmentation) → thick *unseen*, filled *unseen*, "
        "extracted *unseen*."
    )
    assert set(lines) == {"- A0", "- A3", "- A4", "- A1", "- A2", "- pix2pix"}  # BBDM arms, then the baselines
    set_study(styled, method="A4", reference_arm="A3")
    checks = method_checks(styled, study(styled), arm_runs(study(styled)))
    assert [c for c in checks if c.startswith("- **")] == [
        "- **thick** (seen for A4):",
        "- **filled** (unseen for A4):",
        "- **extracted** (seen for A4):",
    ]
    assert sum(c.endswith("→ **not run**") for c in checks) == 12  # A4 has no unseen-style evaluation


def test_the_report_has_the_section_after_the_protocol_tables(styled):
    text, _ = build_report(styled, groups=lookup)
    start = text.index("## Other line styles")
    assert text.index("## All metrics by protocol") < start < text.index("## Convergence")
    assert "| A3 | 3/3 | 8.00 | 9.00 | 1.12× | 11.00 | 1.38× | 9.60 | 1.20× |" in text
    assert "| A0 | 0/3 |" in text and "| not run | not run | not run | not run | not run | not run |" in text
    assert "### Checks for the method (A3, seed means)" in text
