"""The ablation report on a small synthetic metrics tree: contrasts, Holm, the null control, convergence, gaps."""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from linebridge.core.config import ConfigError, run_name
from linebridge.core.runs import convergence_value
from linebridge.evaluation.stats import format_p, holm, seed_group_contrast
from linebridge.report import assemble, fmt
from linebridge.report.assemble import HEADLINE_END, HEADLINE_START, build_report, headline_block, main
from linebridge.report.contrasts import primary_contrasts, question_line
from linebridge.report.side import tune_section
from linebridge.report.study import arm_runs, arm_seeds, load_study
from linebridge.report.targets import target_rows, targets_section
from linebridge.report.training import convergence_section

REPO = Path(__file__).resolve().parents[1]

GROUPS = [f"g{g:02d}" for g in range(12) for _ in range(3)]  # 12 drawings, 3 variants each
IDS = [f"{g}-{k}" for g, k in zip(GROUPS, [0, 1, 2] * 12)]  # already in sorted order
REFS = [GROUPS[(k * 5 + 7) % len(GROUPS)] for k in range(len(GROUPS))]  # cross_gt: reference drawings, crossed
LOOKUP = {"self": {i: (g, g) for i, g in zip(IDS, GROUPS)}, "cross_gt": dict(zip(IDS, zip(GROUPS, REFS)))}
METRICS = {
    "self": ["psnr", "ssim", "delta_e", "delta_e_background", "delta_e_lines", "delta_e_interior", "tint_rate"],
    "cross_gt": ["psnr", "ssim", "delta_e", "delta_e_tone", "tint_rate"],
}
STUDY = {
    "runs": {
        **{f"{arm}-s{seed}": arm for arm in ("A0", "A3", "A4") for seed in (0, 1, 2)},
        **{f"A1-s{seed}": "A1" for seed in (0, 1, 2, 3)},
        "A2-s0": "A2",
    },
    "baselines": ["pix2pix"],
    "trivial": ["copy-lineart"],
    "primary": [
        {"a": "A0", "b": "A3", "metric": "cross_gt.delta_e_tone", "margin": 1.0},
        {"a": "A3", "b": "A4", "metric": "cross_gt.delta_e_tone", "margin": 1.0},
        {"a": "A0", "b": "A4", "metric": "self.psnr", "margin": 0.5},
    ],
    "secondary": {"contrasts": [{"a": "A2", "b": "A3", "metric": "self.psnr"}], "metrics": ["self.ssim"]},
    "verdict_reference": "behrens_fisher",
    "power_seeds": [3, 4],
    "power_sims": 20,
    "null_control": {"arm": "A1", "metric": "cross_gt.delta_e_tone"},  # seeds 0, 1 against seeds 2, 3
    "alpha": 0.05,
    "method": "A3",
    "reference_arm": "A0",
    "targets": [
        {"metric": "self.psnr", "op": ">=", "value": 23},
        {"metric": "cross_gt.delta_e_tone", "op": "<=", "value": 12},
        {"metric": "cross_gt.delta_e_tone", "op": "<=", "value": 0.7, "of": "A0"},
        {"metric": "cross_gt.delta_e_tone", "op": "<", "value": 1, "of": "pix2pix"},
    ],
    "style_checks": {"below": "copy-reference", "max_tone_ratio": 1.25, "min_slope": 0.6, "max_interior_ratio": 1.2},
}
SHIFT = {"A0": 10.0, "A3": -3.0, "A4": -2.9, "A1": -3.0, "A2": -1.0, "pix2pix": 1.0, "copy-lineart": 5.0}


def lookup(protocol: str) -> dict[str, tuple[str, str]]:
    return LOOKUP[protocol]


def values(arm: str, seed: int, protocol: str, metric: str) -> np.ndarray:
    """Per-image values: a drawing effect, an arm shift, a seed effect and image noise (fixed by the arguments)."""
    rng = np.random.default_rng([ord(c) for c in protocol + metric] + [seed])
    group_effect = np.repeat(rng.normal(0, 1.0, 12), 3)
    noise = np.random.default_rng([ord(c) for c in arm + protocol + metric] + [seed]).normal(0, 0.5, len(IDS))
    base = {"psnr": 20.0, "ssim": 0.8, "tint_rate": 0.2, "delta_e_tone": 12.0}.get(metric, 15.0)
    scale = {"ssim": 0.01, "tint_rate": 0.01}.get(metric, 1.0)
    return base + scale * (group_effect + SHIFT[arm] + 0.3 * seed + noise)


def write_eval(root: Path, run: str, data: dict[str, dict[str, np.ndarray]]) -> None:
    """metrics/eval/RUN/PROTOCOL.{csv,json} as evaluate writes them."""
    folder = root / "metrics" / "eval" / run
    folder.mkdir(parents=True, exist_ok=True)
    for protocol, table in data.items():
        with (folder / f"{protocol}.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["id", *table])
            w.writerows([i, *(f"{table[m][k]:.6g}" for m in table)] for k, i in enumerate(IDS))
        summary = {m: {"mean": float(np.mean(v)), "low": 0.0, "high": 0.0, "n": len(v)} for m, v in table.items()}
        (folder / f"{protocol}.json").write_text(json.dumps({"n_images": len(IDS), "metrics": summary}))


def run_values(arm: str, seed: int) -> dict[str, dict[str, np.ndarray]]:
    return {p: {m: values(arm, seed, p, m) for m in ms} for p, ms in METRICS.items()}


@pytest.fixture
def tree(study_root: Path) -> Path:
    """A study root whose params.yaml has the small study above and whose every run has been evaluated."""
    params = yaml.safe_load((study_root / "params.yaml").read_text())
    params["study"] = STUDY
    (study_root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for arm, seeds in arm_seeds(STUDY).items():
        for seed in seeds:
            write_eval(study_root, run_name(arm, seed), run_values(arm, seed))
    for name in STUDY["baselines"] + STUDY["trivial"]:
        write_eval(study_root, name, run_values(name, 0))
    return study_root


def matrix(arm: str, seeds: list[int], spec: str) -> np.ndarray:
    protocol, metric = spec.split(".")
    return np.array([[float(f"{x:.6g}") for x in values(arm, s, protocol, metric)] for s in seeds])


def test_contrast_numbers_equal_a_direct_seed_group_contrast(tree):
    rows = primary_contrasts(tree, STUDY, lookup)
    for row, spec in zip(rows, STUDY["primary"]):
        crossed = spec["metric"].startswith("cross_gt")  # reference drawings differ from the line drawings there
        a, b = (matrix(arm, [0, 1, 2], spec["metric"]) for arm in (spec["a"], spec["b"]))
        refs = REFS if crossed else None
        expected = seed_group_contrast(a, b, GROUPS, ref_groups=refs)
        min_df = seed_group_contrast(a, b, GROUPS, ref_groups=refs, method="min_df", n_boot=0)
        got = row["result"]
        for key in ("effect", "low", "high", "p_value", "seed_sd"):
            assert got[key] == pytest.approx(expected[key]), key
            assert row["other"][key] == pytest.approx(min_df[key]), key
        assert got["seed_effects"] == pytest.approx(expected["seed_effects"])
        assert (got["n_seeds"], got["n_images"], got["n_groups"]) == (3, 36, 12)
        assert got.get("n_ref_groups") == (12 if crossed else None)
    text, errors = build_report(tree, groups=lookup)
    assert not errors
    first = rows[0]
    assert fmt.effect_ci(first["result"], "delta_e_tone") in text
    assert "3 seeds × 36 images (12 drawings × 12 reference drawings)" in text
    assert "3 seeds × 36 images (12 drawings)" in text
    assert "A3 lowers cross_gt ΔE00 tone by" in text
    assert "per-seed effects; seed SD" in text and "s0 " in text


def test_holm_runs_over_the_primary_contrasts_together(tree):
    rows = primary_contrasts(tree, STUDY, lookup)
    for key in ("result", "other"):  # Holm under each reference distribution on its own
        adjusted = holm({str(i): r[key]["p_value"] for i, r in enumerate(rows)})
        for i, row in enumerate(rows):
            assert row[key]["p_holm"] == pytest.approx(adjusted[str(i)])
            assert row[key]["p_holm"] >= row[key]["p_value"]
    for row in rows:
        assert row["significant"] == (row["result"]["p_holm"] < STUDY["alpha"])
    # A0 → A3 moves tone ΔE00 by 13 (far beyond the noise): p sits at the method's floor and prints as a bound.
    big = rows[0]
    assert big["result"]["p_value"] == big["result"]["p_floor"] and big["significant"]
    text, _ = build_report(tree, groups=lookup)
    assert format_p(big["result"]["p_value"], big["result"]["p_floor"]).startswith("≤")
    assert f"| {format_p(big['result']['p_holm'], big['result']['p_holm'])} |" in text
    assert "significant after Holm" in text


def test_a_null_pair_that_is_identical_holds(tree):
    for seed in (0, 1):  # the two halves of A1's seeds: the same numbers
        write_eval(tree, f"A1-s{seed + 2}", run_values("A1", seed))
    text, errors = build_report(tree, groups=lookup)
    assert errors == []
    assert "Holds: A1 seeds 2, 3 − seeds 0, 1 on cross_gt ΔE00 tone↓: +0.00 [-2.98, +2.98], p = 1.00" in text
    assert re.search(r"\(Behrens–Fisher; minimum df: p = 1\.00 \(df \d+\)\)", text)  # its few df, printed
    assert "NULL CONTROL FAILED" not in text


def test_a_failing_null_control_fails_main_after_writing_the_report(tree, monkeypatch, capsys):
    for seed in (0, 1):  # one half of A1's seeds: the other half, 10 ΔE00 worse on every image
        data = run_values("A1", seed)
        data["cross_gt"]["delta_e_tone"] = data["cross_gt"]["delta_e_tone"] + 10.0
        write_eval(tree, f"A1-s{seed + 2}", data)
    monkeypatch.setenv("DVC_ROOT", str(tree))
    monkeypatch.setattr(assemble, "prepared_groups", lambda prepared: lookup)
    assert main(argparse.Namespace(out="reports/ablation.md")) == 1
    assert "null control FAILED" in capsys.readouterr().err
    assert "⚠ NULL CONTROL FAILED" in (tree / "reports" / "ablation.md").read_text()


def test_missing_null_control_runs_fail_main_naming_the_files(tree, monkeypatch, capsys):
    (tree / "metrics" / "eval" / "A1-s3" / "cross_gt.csv").unlink()
    monkeypatch.setenv("DVC_ROOT", str(tree))
    monkeypatch.setattr(assemble, "prepared_groups", lambda prepared: lookup)
    assert main(argparse.Namespace(out="reports/ablation.md")) == 1
    assert "metrics/eval/A1-s3/cross_gt.csv" in capsys.readouterr().err
    assert "NULL CONTROL NOT RUN" in (tree / "reports" / "ablation.md").read_text()


def test_missing_files_give_not_run_lines(tree):
    (tree / "metrics" / "eval" / "A4-s2" / "cross_gt.csv").unlink()
    text, errors = build_report(tree, groups=lookup)
    assert not errors  # the null control does not need A4
    assert "| A4 − A3 | cross_gt ΔE00 tone↓ | not run: missing metrics/eval/A4-s2/cross_gt.csv |" in text
    rows = primary_contrasts(tree, STUDY, lookup)
    assert "result" not in rows[1] and len([r for r in rows if "p_holm" in r.get("result", {})]) == 2  # what ran
    for line in (
        "not run (no metrics/sweep/sweep.json).",
        "| A3-s0 | not run |",
        "Not run (no metrics/convergence.json): `python benchmarks/convergence.py` writes it.",
        "Sample grid: not run",
    ):
        assert line in text, line


def test_convergence_value_on_a_known_history():
    history = [{"step": s, "val_loss": v} for s, v in ((100, 1.0), (200, 0.8), (300, 0.5), (400, 0.495))]
    assert convergence_value(history) == pytest.approx(0.01)  # from step 300 (= 0.75 × 400) to the end
    two = [{"step": 100, "val_loss": 1.0}, {"step": 200, "val_loss": 0.9}]
    assert convergence_value(two) == pytest.approx(0.1)  # the earlier point is at least one epoch back
    assert convergence_value(two[:1]) is None


def write_training(root: Path, run: str, val: list[float], wall: bool = True, summary: bool = True) -> None:
    folder = root / "metrics" / "train"
    folder.mkdir(parents=True, exist_ok=True)
    header = ["epoch", "step", "train_loss", "val_loss", "lr", *(["wall_s"] if wall else [])]
    rows = [[e + 1, 100 * (e + 1), 1.0, v, 1e-4, *([30.0 * (e + 1)] if wall else [])] for e, v in enumerate(val)]
    (folder / f"{run}.csv").write_text("\n".join(",".join(map(str, r)) for r in [header, *rows]) + "\n")
    if summary:
        s = {"best_val_loss": min(val), "best_epoch": int(np.argmin(val)) + 1, "epochs_run": len(val)}
        s |= {"steps": 100 * len(val), "stopped_early": False, "wall_time_s": 600.0, "train_images": 10}
        (folder / f"{run}.json").write_text(json.dumps(s))


def test_convergence_table_and_old_history_files(tree):
    write_training(tree, "A0-s0", [1.0, 0.8, 0.5, 0.495, 0.494])  # 1.0 %, then 0.2 %: two ends in a row, converged
    write_training(tree, "A1-s0", [1.0, 0.8, 0.5, 0.495])  # 1 % at the last end only: not yet
    write_training(tree, "A3-s0", [1.0, 0.8, 0.5, 0.45], wall=False)  # 10 %: not converged; history without wall_s
    write_training(tree, "A4-s0", [1.0, 0.9], wall=False, summary=False)  # no summary, no wall time anywhere
    lines = convergence_section(tree, STUDY, 0.02, 2)
    row = {line.split("|")[1].strip(): line for line in lines if line.startswith("| ")}
    assert row["A0-s0"] == "| A0-s0 | 500 | 5 | 5 | 0.2 % | yes | rule | 10.0 |"
    assert row["A1-s0"] == "| A1-s0 | 400 | 4 | 4 | 1.0 % | no | **cap (4)** | 10.0 |"
    assert row["A3-s0"] == "| A3-s0 | 400 | 4 | 4 | 10.0 % | no | **cap (4)** | 10.0 |"
    assert row["A4-s0"] == "| A4-s0 | 200 | 2 | — | 10.0 % | no | — | — |"
    assert row["A4-s1"] == "| A4-s1 | not run | | | | | | |"
    capped = "Not every run converged by the rule: A3-s0 (4 epochs) and A1-s0 (4 epochs) ran to the cap without it."
    assert f"**{capped}**" in lines
    text, _ = build_report(tree, groups=lookup)
    assert capped in headline_block(text)  # the summary says it too


def test_a_runs_own_converged_flag_decides_what_stopped_it(tree):
    """The training summary's `converged` is the rule as the run applied it; the history decides only without it."""
    write_training(tree, "A0-s0", [1.0, 0.8, 0.5, 0.495, 0.494])  # the history alone would read as converged
    summary = json.loads((tree / "metrics" / "train" / "A0-s0.json").read_text())
    (tree / "metrics" / "train" / "A0-s0.json").write_text(json.dumps(summary | {"converged": False}))
    row = [line for line in convergence_section(tree, STUDY, 0.02, 2) if line.startswith("| A0-s0 |")]
    assert row[0].endswith("| **cap (5)** | 10.0 |")


def test_sweep_choice_and_targets(tree):
    sweep = {
        "checkpoint": "outputs/train/A3-s0/best.pt",
        "split": "val",
        "rows": [
            {"steps": 20, "sampler": "eta=1 (ancestral)", "weights": w, "seconds_per_image": 0.1, "n_images": 8}
            | {"metrics": {"psnr": {"mean": 20.0, "low": 19.0, "high": 21.0}, "delta_e": {"mean": 9.0}}}
            for w in ("ema", "raw")
        ],
    }
    (tree / "metrics" / "sweep").mkdir(parents=True)
    (tree / "metrics" / "sweep" / "sweep.json").write_text(json.dumps(sweep))
    choice = {"eval": {"sample_step": 20, "eta": 1.0, "deterministic": True, "weights": "ema"}, "rule": "best PSNR"}
    (tree / "metrics" / "sweep" / "choice.yaml").write_text(yaml.safe_dump(choice))
    text, _ = build_report(tree, groups=lookup)
    assert "| 20 | eta=1 (ancestral) | raw | 0.100 | 20.00 [19.00, 21.00] | — | 9.00 | — | — | 8 |" in text
    # the study's sampler is params.yaml eval (2 deterministic steps, EMA); the sweep's other choice is flagged
    assert "**The study's sampler** (params.yaml `eval`): 2 steps, η = 1.0, deterministic = True, ema weights" in text
    assert "The sweep above chose 20 steps, η = 1.0, deterministic = True, ema weights (rule: best PSNR)" in text
    assert "**not the study's sampler**" in text
    (tree / "metrics" / "eval" / "pix2pix" / "cross_gt.json").unlink()  # the run a target compares with: missing
    rows = target_rows(tree, STUDY, arm_runs(STUDY))
    targets = {line.split("|")[1].strip(): line for line in targets_section(rows, "A3") if line.startswith("|")}
    a3_psnr = np.mean([values("A3", s, "self", "psnr").mean() for s in (0, 1, 2)])  # ≈ 20 − 3 + 0.3
    assert targets["self PSNR ≥ 23"].endswith(f"| missed by {23 - a3_psnr:.2f} |")
    assert targets["cross_gt ΔE00 tone ≤ 12"].endswith("| met |")  # ≈ 12 − 3 + 0.3
    assert targets["cross_gt ΔE00 tone ≤ 0.7 × A0's"].endswith("| met |")  # A0 ≈ 12 + 10 + 0.3
    assert targets["cross_gt ΔE00 tone below pix2pix's"].endswith("| not run |")  # pix2pix's evaluation is missing
    assert "| A1 | 4/4 |" in text and "| A2 | 1/1 |" in text


def test_without_prepared_data_the_contrasts_are_not_run_and_the_null_control_fails_the_stage(tree):
    text, errors = build_report(tree)  # default group lookup: the prepared data, absent here
    assert "| A3 − A0 | cross_gt ΔE00 tone↓ | not run: the item groups are unknown:" in text
    assert len(errors) == 1 and "cannot run" in errors[0]
    assert "**Data**: not run" in text


def test_a_tune_from_another_configuration_is_flagged(tree):
    """`make tune` is not a stage: when its sampler is not the study's choice, the report says so."""
    (tree / "metrics" / "sweep").mkdir(parents=True, exist_ok=True)
    chosen = {"sample_step": 2, "eta": 1.0, "deterministic": True, "weights": "ema"}
    (tree / "metrics" / "sweep" / "choice.yaml").write_text(yaml.safe_dump({"eval": chosen}))
    tune = {"objective": "judge", "sampler": dict(chosen), "counts": {"COMPLETE": 2}, "best_trial": 1}
    tune |= {"best_value": 1.0, "best_params": {"loss.lambda_edge": 1.0}}
    (tree / "metrics" / "tune.json").write_text(json.dumps(tune))
    assert not any("earlier configuration" in line for line in tune_section(tree))
    tune["sampler"]["deterministic"], tune["commit"] = False, "0123abc"
    (tree / "metrics" / "tune.json").write_text(json.dumps(tune))
    assert any("tuned an earlier configuration" in line and "0123abc" in line for line in tune_section(tree))


def set_study(root: Path, **changes) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["study"] |= changes
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_method_targets_and_descriptions_come_from_params_and_experiments(tree):
    """The method, its targets and the arm descriptions are read from the study's files, not written in code."""
    target = {"metric": "self.tint_rate", "op": "<=", "value": 0.25, "of": "copy-lineart"}
    set_study(tree, method="A4", reference_arm="A3", targets=[target])
    experiment = yaml.safe_load((tree / "experiments" / "A4.yaml").read_text())
    experiment["description"] = "a synthetic arm described only here"
    (tree / "experiments" / "A4.yaml").write_text(yaml.safe_dump(experiment))
    text, _ = build_report(tree, groups=lookup)
    assert "## Targets for the method (A4)" in text and "| target | A4 (seed mean) | threshold | result |" in text
    assert "A4 = a synthetic arm described only here (**the method this study proposes**, `study.method`)" in text
    assert "**The method**: A4 (`study.method` in `params.yaml`), declared before this study ran." in text
    assert "this study's test drawings and training seeds were used by no choice" in text
    assert "What each shows (seed means): A3 reproduces its own reference best" in text
    assert "| self tint ≤ 0.25 × copy-lineart's |" in text
    assert "- Cross-reference colour transfer: A4 tone-region ΔE00" in text and " vs A3 " in text


def test_targets_compare_with_the_named_run_and_a_fraction_of_it(tree):
    targets = [
        {"metric": "cross_gt.delta_e_tone", "op": "<=", "value": 0.5, "of": "A0"},
        {"metric": "self.tint_rate", "op": "<=", "value": 0.1},
        {"metric": "self.psnr", "op": "<", "value": 1, "of": "A4"},
        {"metric": "self.psnr", "op": ">", "value": 1, "of": "A0"},
    ]
    rows = target_rows(tree, STUDY | {"targets": targets}, arm_runs(STUDY))
    a0 = np.mean([values("A0", s, "cross_gt", "delta_e_tone").mean() for s in (0, 1, 2)])
    assert rows[0]["label"] == "cross_gt ΔE00 tone ≤ 0.5 × A0's" and rows[0]["threshold"] == pytest.approx(0.5 * a0)
    assert rows[1]["label"] == "self tint ≤ 10 %" and rows[1]["threshold"] == 0.1
    assert rows[1]["result"].startswith("missed by ") and rows[1]["result"].endswith(" pp")  # A3's tint ≈ 17 %
    assert rows[2]["label"] == "self PSNR below A4's" and rows[2]["result"] == "met"  # A4 is 0.1 dB higher
    assert rows[3]["label"] == "self PSNR above A0's" and rows[3]["result"].startswith("missed by ")  # A0: +10 dB


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"method": "A9"}, "study.method=A9: not an arm of study.runs"),
        ({"runs": {"A0-s0": "A3"}}, "study.runs.A0-s0: a run of A3 is named A3-sSEED"),
        ({"null_control": {"arm": "A9", "metric": "self.psnr"}}, "study.null_control.arm=A9: not an arm"),
        ({"reference_arm": "A9"}, "study.reference_arm=A9: not a run of the study"),
        ({"targets": [{"metric": "self.psnr", "op": "<", "value": 1, "of": "scft"}]}, "study.targets.0.of=scft"),
        ({"targets": [{"metric": "self.psnr", "op": "=", "value": 1}]}, "study.targets.0.op"),
        ({"targets": [{"metric": "psnr", "op": "<", "value": 1}]}, "study.targets.0.metric"),
        ({"target": []}, "study.target: unknown key"),
    ],
)
def test_a_bad_study_section_names_its_key(tree, changes, message):
    set_study(tree, **changes)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_study(tree)


def test_the_headline_block_has_the_targets_and_every_question_in_one_line(tree):
    text, _ = build_report(tree, groups=lookup)
    block = headline_block(text)
    assert block is not None and text.index(block) < text.index("## Pre-declared questions")
    assert block.startswith(HEADLINE_START + "\n") and block.endswith("\n" + HEADLINE_END)
    assert "mean over its seeds 0, 1, 2" in block
    for row in target_rows(tree, STUDY, arm_runs(STUDY)):
        assert f"- {row['label']}" in block
    for row in primary_contrasts(tree, STUDY, lookup):
        assert f"- {question_line(row)}\n" in block
    assert "- A3 − A0, cross_gt ΔE00 tone↓: " in block and "→ better (lower is better)" in block
    assert headline_block("no markers here") is None


def test_readme_carries_the_committed_reports_headline():
    """README.md shows the same headline block as the committed report, so its numbers are the report's."""
    report_block = headline_block((REPO / "reports" / "ablation.md").read_text())
    assert report_block is not None, "reports/ablation.md has no headline block: run `dvc repro`"
    assert headline_block((REPO / "README.md").read_text()) == report_block


def test_the_report_command_copies_its_headline_into_the_readme(tree, monkeypatch):
    readme = tree / "README.md"
    readme.write_text(f"# x\n\n{HEADLINE_START}\nold numbers\n{HEADLINE_END}\n\nmore\n")
    monkeypatch.setenv("DVC_ROOT", str(tree))
    monkeypatch.setattr(assemble, "prepared_groups", lambda prepared: lookup)
    main(argparse.Namespace(out="reports/ablation.md"))
    block = headline_block((tree / "reports" / "ablation.md").read_text())
    assert readme.read_text() == f"# x\n\n{block}\n\nmore\n"


def test_every_table_pads_a_short_row_with_empty_cells():
    assert fmt.table(["a", "b", "c"], [["x", "1", "2"], ["y", "not run"]]) == [
        "| a | b | c |",
        "|---|---|---|",
        "| x | 1 | 2 |",
        "| y | not run | |",
    ]


def test_not_significant_reads_within_margin_or_inconclusive(tree):
    """A4 − A3 on tone is 0.1 ΔE00 plus noise: inside a margin of 1, but not provably inside one of 0.01."""
    wide = primary_contrasts(tree, STUDY, lookup)[1]
    assert not wide["significant"] and wide["equivalent"]
    assert -1.0 < wide["tost"]["low"] < wide["tost"]["high"] < 1.0
    narrow_study = {**STUDY, "primary": [{**STUDY["primary"][1], "margin": 0.01}]}
    narrow = primary_contrasts(tree, narrow_study, lookup)[0]
    assert not narrow["significant"] and not narrow["equivalent"]
    text, _ = build_report(tree, groups=lookup)
    assert "within ± 1" in text and "→ within ± 1" in text
    assert "minimum df" in text
    set_study(tree, primary=narrow_study["primary"])
    text, _ = build_report(tree, groups=lookup)
    assert "**inconclusive**" in text


def test_does_it_learn_rests_on_the_declared_test(tree):
    """The transfer check quotes the primary question of the method against the reference arm, and follows it."""
    text, _ = build_report(tree, groups=lookup)
    line = next(x for x in text.splitlines() if x.startswith("- Cross-reference colour transfer:"))
    assert "the test: A3 − A0, cross_gt ΔE00 tone↓: " in line and line.endswith("→ **A3 lower (transfers colour)**.")
    set_study(tree, primary=STUDY["primary"][1:])  # no question tests it: the seed means alone, said so
    text, _ = build_report(tree, groups=lookup)
    assert "(seed means; no primary question tests it) → **A3 lower (transfers colour)**." in text


def test_models_outside_the_study_show_each_style_with_unseen_ones_in_italics(tree):
    scores = {"tone": 10.0, "slope": 0.8, "interior": 8.0}
    record = {
        "split": "test",
        "items": 0,
        "models": {
            "before": {
                "line_styles": {"share": 0.0, "families": ["width"]},
                "seen": {"thick": False, "filled": False, "extracted": False},
                "scores": {"in style": scores | {"psnr": 26.0}, "thick": scores | {"tone": 15.0}}
                | {"filled": scores, "extracted": scores},
            }
        },
    }
    (tree / "metrics" / "line-styles").mkdir(parents=True)
    (tree / "metrics" / "line-styles" / "test.json").write_text(json.dumps(record))
    text, _ = build_report(tree, groups=lookup)
    assert "`metrics/line-styles/test.json` (test split, every item of each protocol" in text
    assert "| before | none | 26.00 | 10.00 / 0.800 / 8.00 | *15.00 (1.50×) / 0.800 / 8.00 (1.00×)* |" in text
