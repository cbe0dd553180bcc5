"""The report itself: its front matter and headline, the sections in order, and the `linebridge report` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from linebridge.core.config import MODEL_CARD, RELEASED, load_config, repo_root, run_name, study_runs
from linebridge.core.io import write_atomic
from linebridge.core.tracking import git_commit
from linebridge.data.splits import GRID_ITEMS
from linebridge.report.contrasts import (
    direction,
    null_section,
    power_section,
    primary_contrasts,
    primary_section,
    question_line,
    questions_summary,
    secondary_section,
    verdict_word,
)
from linebridge.report.failures import FIGURE, PAGE, failure_cases, failures_link, failures_page, row_labels
from linebridge.report.figures import failures_figure, figures
from linebridge.report.fmt import LABELS
from linebridge.report.read import GroupLookup, eval_file, prepared_groups, read_json
from linebridge.report.side import objectives_section, sweep_section, tune_section
from linebridge.report.study import arm_runs, arm_seeds, load_study
from linebridge.report.styles import style_section
from linebridge.report.tables import arm_descriptions, arm_table, protocol_tables
from linebridge.report.targets import (
    TRANSFER,
    method_lines,
    target_lines,
    target_rows,
    target_summary,
    targets_section,
    truth_checks,
)
from linebridge.report.training import capped_text, convergence_section, efficiency_section, training_table

# The headline block sits between these lines; README.md carries a copy of it, which `main` updates
# (tests/test_report.py compares them).
HEADLINE_START = "<!-- headline:start -->"
HEADLINE_END = "<!-- headline:end -->"


def headline_block(text: str) -> str | None:
    """The text between the headline markers (markers included), None when the text has no complete block."""
    start, end = text.find(HEADLINE_START), text.find(HEADLINE_END)
    return text[start : end + len(HEADLINE_END)] if 0 <= start < end else None


def summary(study: dict[str, Any], targets: list[dict], primary: list[dict], caveats: list[str]) -> str:
    """The report's opening sentences, from the results: how many targets the method met (each missed one by how
    much), each primary question's verdict, and what weakens them (a null control that failed, runs at the cap)."""
    text = f"**Summary.** {target_summary(targets, study['method'])} {questions_summary(primary, study['alpha'])}"
    return " ".join([text, *caveats])


def evaluated_seeds(root: Path, study: dict[str, Any], arm: str) -> str:
    """'seeds 0, 1, 2, 3', or 'seeds 0, 1 (2 of the 4 planned evaluated)' while the study is part-way."""
    seeds = arm_seeds(study)[arm]
    done = [s for s in seeds if eval_file(root, run_name(arm, s), "self").exists()]
    text = f"seeds {', '.join(map(str, done)) or 'none'}"
    return text if len(done) == len(seeds) else f"{text} ({len(done)} of the {len(seeds)} planned evaluated)"


def headline(
    root: Path, cfg: dict[str, Any], study: dict[str, Any], targets: list[dict], primary: list[dict], caveats: list[str]
) -> list[str]:
    """The numbers a reader wants first: the summary sentences, then the method's targets (seed means) and each
    primary question's verdict one per line."""
    method = study["method"]
    return [
        HEADLINE_START,
        summary(study, targets, primary, caveats),
        "",
        f"**Targets** of the method {method} (`study.method`), mean over its {evaluated_seeds(root, study, method)} "
        f"(test split, profile `{cfg['profile']}`):",
        "",
        *target_lines(targets),
        "",
        f"**Pre-declared questions**, b − a [95 % CI], Holm over the {len(primary)} at α = {study['alpha']}:",
        "",
        *(f"- {question_line(row)}" for row in primary),
        "",
        HEADLINE_END,
    ]


def header(root: Path, cfg: dict[str, Any], study: dict[str, Any], info: dict[str, Any]) -> list[str]:
    """Where the numbers come from: commit, profile, seeds per arm, data and the evaluated subset."""
    by_seeds: dict[tuple[int, ...], list[str]] = {}
    for arm, seeds in arm_seeds(study).items():
        by_seeds.setdefault(tuple(seeds), []).append(arm)
    seed_text = "; ".join(f"{', '.join(arms)}: seeds {', '.join(map(str, s))}" for s, arms in by_seeds.items())
    return [
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
        "",
        released_line(root, study),
    ]


def released_line(root: Path, study: dict[str, Any]) -> str:
    """Where the method's released weights and their model card are (the release stage), or that they are not."""
    if not (root / MODEL_CARD).exists():
        return f"**Released weights**: not run (no {MODEL_CARD}; the release stage writes it)."
    return (
        f"**Released weights**: {study['method']}-s0's EMA weights, `{RELEASED}` ([model card](../{MODEL_CARD})): "
        "`linebridge colorize` and the demo use them when no checkpoint is given; `make verify` re-scores them."
    )


def subset_rule(max_per_group: int) -> str:
    """How the evaluated items were chosen (eval.max_per_group), in words."""
    if not max_per_group:
        return "every item"
    return (
        f"every cross_gt triple, and for self and cross_random the items group-stratified with "
        f"k = {max_per_group} (at most {max_per_group} variants of each drawing)"
    )


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
    study = load_study(root)
    prepared = root / cfg["data"]["prepared_dir"]
    groups = groups or prepared_groups(prepared)
    info = read_json(prepared / "info.json") or {}
    runs = arm_runs(study)
    made = figures(root, study, prepared)
    cases = write_failures(root, cfg, study, prepared)
    primary = primary_contrasts(root, study, groups)
    null_lines, null_error = null_section(root, study, groups)
    tables, reasons = protocol_tables(root, runs)
    targets = target_rows(root, study, runs)
    gain, min_epochs = cfg["train"]["convergence_gain"], cfg["train"]["min_epochs"]
    caveats = [c for c in (capped_text(root, study_runs(study), gain, min_epochs), null_error) if c]
    if null_error:
        caveats[-1] = f"**{null_error[0].upper()}{null_error[1:]}**: the verdicts above cannot be trusted as stated."
    lines = [
        "# linebridge — ablation report",
        "",
        *headline(root, cfg, study, targets, primary, caveats),
        "",
        *samples_section(made["samples"]),
        failures_link(cases),
        "",
        *header(root, cfg, study, info),
        "",
        *method_lines(root, study, runs),
        "",
        "## Pre-declared questions",
        "",
        *primary_section(primary, study),
        "",
        "### Null control",
        "",
        *null_lines,
        "",
        "### Size and power of the test at this design",
        "",
        *power_section(root, study),
        "",
        "## Secondary metrics (no verdict)",
        "",
        *secondary_section(root, study, groups),
        "",
        "## Results by arm",
        "",
        arm_descriptions(root, study, runs),
        "",
        *arm_table(root, runs),
        "",
        f"## Targets for the method ({study['method']})",
        "",
        *targets_section(targets, study["method"]),
        "",
        "## Does it learn? (checked automatically)",
        "",
        *truth_checks(root, study, runs, transfer_test(study, primary)),
        "",
        "## All metrics by protocol",
        "",
        *tables,
    ]
    if reasons:
        lines += ["¹ Unavailable metrics:", ""] + [f"- {LABELS[k]}: {v}" for k, v in sorted(reasons.items())] + [""]
    lines += definitions() + [
        "## Other line styles",
        "",
        *style_section(root, study, runs),
        "",
        "## Convergence",
        "",
        *convergence_section(root, study, gain, min_epochs),
        "",
        "## Learning efficiency (time to convergence)",
        "",
        *efficiency_section(root),
        "",
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
        *figures_section(),
        *closing(),
    ]
    return "\n".join(lines), [null_error] if null_error else []


def transfer_test(study: dict[str, Any], primary: list[dict]) -> tuple[str, bool] | None:
    """The primary question of the method against the reference arm on colour transfer: its line and whether it
    found the method significantly better; None when no such question is declared."""
    for row in primary:
        if (row["a"], row["b"], row["metric"]) == (study["reference_arm"], study["method"], TRANSFER):
            better = "reason" not in row and verdict_word(row) == "significant" and direction(row)[0] == "better"
            return question_line(row), better
    return None


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


def samples_section(samples: bool) -> list[str]:
    """The sample grid, shown right after the summary."""
    if not samples:
        return ["Sample grid: not run (no prepared data or no evaluated run).", ""]
    return [
        "![samples](figures/samples.png)",
        "",
        f"Rows: {GRID_ITEMS} items spread evenly over each of the self-reference and cross-reference-with-ground-"
        "truth protocols; columns: line art, reference, each arm's first-seed run, ground truth.",
        "",
    ]


def write_failures(root: Path, cfg: dict[str, Any], study: dict[str, Any], prepared: Path) -> dict[str, Any]:
    """reports/failures.md and its figure (the method's worst cross_gt items); returns what they show."""
    cases = failure_cases(root, cfg, study, prepared)
    reports = root / "reports"
    shown = failures_figure(cases["columns"], row_labels(cases), reports / FIGURE)
    write_atomic(reports / PAGE, "\n".join(failures_page(cases, shown, cfg)))
    return cases


def figures_section() -> list[str]:
    return ["## Figures", "", "![metric bars](figures/metric_bars.png)", "", "Seed means ± seed SD.", ""]


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


def sync_readme(readme: Path, block: str | None) -> bool:
    """Put the report's headline block into README.md in place of its own (both between the headline markers), so
    the README's numbers are the report's; False when either has no block or nothing changed."""
    text = readme.read_text() if readme.exists() else ""
    old = headline_block(text)
    if block is None or old is None or old == block:
        return False
    write_atomic(readme, text.replace(old, block))
    return True


def main(args: argparse.Namespace) -> int:
    """Write the report and the README's copy of its headline; exit 1 (after writing them) when the null control
    failed or could not run."""
    root = repo_root()
    text, errors = build_report(root)
    out = root / args.out
    write_atomic(out, text)
    print(f"wrote {out}")
    if args.out == "reports/ablation.md" and sync_readme(root / "README.md", headline_block(text)):
        print(f"updated the headline block of {root / 'README.md'}")
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if errors else 0
