"""The report's opening (summary sentences, sample grid, failure-cases link) and the failure-cases page, on
test_report's synthetic study tree: known values in, known sentences and rows out."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from linebridge.core import checkpoint
from linebridge.core.config import RELEASED, load_config
from linebridge.report import failures
from linebridge.report.assemble import HEADLINE_END, HEADLINE_START, build_report, headline_block
from linebridge.report.contrasts import primary_contrasts, verdict_word
from linebridge.report.failures import failure_cases, failures_page, worst_items
from linebridge.report.fmt import effect
from linebridge.report.read import NotRun
from linebridge.report.study import arm_runs, load_study
from linebridge.report.targets import target_rows, target_summary
from test_report import GROUPS, IDS, REFS, STUDY, lookup, run_values, set_study, tree, write_eval  # noqa: F401

N = len(IDS)
PSNR_PER_SEED = [22.0, 22.25, 22.5]  # the method's (A3's) self PSNR, constant over items: seed mean 22.25


def set_method(root: Path, columns: dict[str, list]) -> None:
    """Rewrite A3's evaluations (seeds 0, 1, 2) with the given PROTOCOL.METRIC columns, one value or array per seed
    (a value: the same for every item); the other columns as test_report writes them."""
    for seed in range(3):
        data = run_values("A3", seed)
        for spec, per_seed in columns.items():
            protocol, metric = spec.split(".")
            data[protocol][metric] = np.broadcast_to(np.asarray(per_seed[seed], dtype=float), (N,)).copy()
        write_eval(root, f"A3-s{seed}", data)


def read_text(root: Path, name: str) -> str:
    return (root / "reports" / name).read_text()


# ---------------------------------------------------------------- the summary sentences


def test_the_summary_opens_the_headline_and_names_the_missed_target_by_its_amount(tree):  # noqa: F811
    set_method(tree, {"self.psnr": PSNR_PER_SEED})  # target self PSNR ≥ 23: missed by 0.75; the other three met
    text, _ = build_report(tree, groups=lookup)
    block = headline_block(text)
    assert block.startswith(
        f"{HEADLINE_START}\n**Summary.** The method A3 met 3 of its 4 targets (seed means); it missed "
        "self PSNR ≥ 23 by 0.75 (22.25 vs 23.00). Pre-declared questions (Holm over 3 at α = 0.05): "
    )
    assert block.index("**Summary.**") < block.index("**Targets**") < block.index("**Pre-declared questions**")


def test_the_target_sentence_counts_met_missed_and_unchecked_targets(tree):  # noqa: F811
    set_method(tree, {"self.psnr": PSNR_PER_SEED, "self.tint_rate": [0.15, 0.15, 0.15]})
    runs = arm_runs(STUDY)
    tone = [t for t in STUDY["targets"] if t["metric"] == "cross_gt.delta_e_tone"]  # all three met (≈ 9.4)
    assert target_summary(target_rows(tree, STUDY | {"targets": tone}, runs), "A3") == (
        "The method A3 met all 3 of its targets (seed means)."
    )
    assert target_summary(target_rows(tree, STUDY | {"targets": tone[:1]}, runs), "A3") == (
        "The method A3 met its one target (seed means)."
    )
    tint = {"metric": "self.tint_rate", "op": "<=", "value": 0.1}
    rows = target_rows(tree, STUDY | {"targets": [*STUDY["targets"], tint]}, runs)
    assert target_summary(rows, "A3") == (
        "The method A3 met 3 of its 5 targets (seed means); it missed self PSNR ≥ 23 by 0.75 (22.25 vs 23.00) and "
        "self tint ≤ 10 % by 5.0 pp (15.0 % vs 10.0 %)."
    )
    (tree / "metrics" / "eval" / "pix2pix" / "cross_gt.json").unlink()  # the run one target compares with
    rows = target_rows(tree, STUDY, runs)
    assert target_summary(rows, "A3") == (
        "The method A3 met 2 of its 4 targets (seed means); it missed self PSNR ≥ 23 by 0.75 (22.25 vs 23.00). "
        "Not checked (not run): cross_gt ΔE00 tone below pix2pix's."
    )
    assert target_summary([], "A3").startswith("No targets are declared")


def test_the_question_sentence_gives_each_primary_question_its_verdict_word(tree):  # noqa: F811
    rows = primary_contrasts(tree, STUDY, lookup)
    # A3 − A0: 13 ΔE00 lower, significant; A4 − A3: 0.1 ΔE00 inside the margin of 1; A4 − A0 PSNR: 13 dB lower
    assert [verdict_word(r) for r in rows] == ["significant", "within ± 1.00", "significant"]
    for row in rows:  # the word follows the verdict's own flags
        assert (verdict_word(row) == "significant") == row["significant"]
        assert verdict_word(row).startswith("within") == (not row["significant"] and row["equivalent"])
    text, _ = build_report(tree, groups=lookup)
    tone, psnr = (
        effect(abs(rows[k]["result"]["effect"]), m).lstrip("+") for k, m in ((0, "delta_e_tone"), (2, "psnr"))
    )
    assert (
        "Pre-declared questions (Holm over 3 at α = 0.05): "
        f"A3 − A0 on cross_gt ΔE00 tone is **significant** (A3 better by {tone}); "
        "A4 − A3 on cross_gt ΔE00 tone is **within ± 1.00**; "
        f"A4 − A0 on self PSNR is **significant** (A4 worse by {psnr}).\n"
    ) in headline_block(text)
    # a margin too narrow to show equivalence: inconclusive
    set_study(tree, primary=[{**STUDY["primary"][1], "margin": 0.01}])
    text, _ = build_report(tree, groups=lookup)
    assert (
        "Pre-declared questions (Holm over 1 at α = 0.05): A4 − A3 on cross_gt ΔE00 tone is **inconclusive**." in text
    )
    # a question whose runs are missing
    set_study(tree, primary=STUDY["primary"])
    (tree / "metrics" / "eval" / "A4-s2" / "cross_gt.csv").unlink()
    text, _ = build_report(tree, groups=lookup)
    assert "; A4 − A3 on cross_gt ΔE00 tone was **not run**; A4 − A0 on self PSNR is **significant**" in text


# ---------------------------------------------------------------- a prepared cross_gt protocol over test_report's IDS


def colour_of(k: int) -> tuple[int, int, int]:
    """Item k's ground-truth colour; its reference is the colour reversed (so each image names its item)."""
    return (10 + 6 * k, 250 - 5 * k, 40 + 3 * k)


def write_prepared(root: Path, size: int = 8) -> Path:
    """outputs/prepared with the cross_gt protocol over IDS, as prepare lays it out: the table (id, gt, ref_source,
    group, ref_group, tone), line art and colour per drawing, reference and tone mask per item; flat images."""
    prepared = root / "outputs" / "prepared"
    folder = prepared / "protocols" / "cross_gt"
    for sub in (prepared / "line", prepared / "colour", folder / "ref", folder / "mask"):
        sub.mkdir(parents=True, exist_ok=True)
    with (prepared / "protocols" / "cross_gt.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "gt", "ref_source", "group", "ref_group", "tone"])
        for k, item in enumerate(IDS):
            gt = f"GT{item}"
            w.writerow([item, gt, f"RS{item}", GROUPS[k], REFS[k], "1F3FB"])
            Image.new("L", (size, size), 255).save(prepared / "line" / f"{gt}.png")
            Image.new("RGB", (size, size), colour_of(k)).save(prepared / "colour" / f"{gt}.png")
            Image.new("RGB", (size, size), colour_of(k)[::-1]).save(folder / "ref" / f"{item}.png")
            Image.new("L", (size, size), 255).save(folder / "mask" / f"{item}.png")
    return prepared


# The method's worst items by design: mean tone ΔE00 30, 29, …, 23, spread unevenly over the seeds (seed 0 alone,
# or seed 1 alone, would rank them otherwise); every other item ≤ 6.
WORST = [7, 3, 30, 12, 0, 25, 18, 33]
SPREAD = [5.0, -5.0, 0.0]  # added per seed to the worst items, alternating in sign: the seed mean is unchanged


def design_worst(root: Path) -> list[str]:
    per_seed = []
    for seed in range(3):
        tone = np.linspace(5.0, 6.0, N)
        for rank, k in enumerate(WORST):
            tone[k] = 30.0 - rank + SPREAD[seed] * (-1) ** rank
        per_seed.append(tone)
    set_method(root, {"cross_gt.delta_e_tone": per_seed})
    return [IDS[k] for k in WORST]


def study_cfg(root: Path) -> tuple[dict, dict]:
    return load_config(None, None, [], root=root), load_study(root)


def test_the_sample_grid_and_the_failures_link_follow_the_summary(tree):  # noqa: F811
    text, _ = build_report(tree, groups=lookup)  # no prepared data: the grid is not run, still in its place
    assert text.index(HEADLINE_END) < text.index("Sample grid: not run") < text.index("**Failure cases**")
    assert text.index("**Failure cases**") < text.index("Written by the `report` stage")
    write_prepared(tree)
    text, _ = build_report(tree, groups=lookup)
    grid, link = (
        text.index("![samples](figures/samples.png)"),
        text.index("**Failure cases** ([failures.md](failures.md))"),
    )
    assert text.index(HEADLINE_END) < grid < link < text.index("Written by the `report` stage")
    assert text.count("figures/samples.png") == 1  # no longer repeated under "## Figures"
    assert "![metric bars](figures/metric_bars.png)" in text
    assert (tree / "reports" / "figures" / "samples.png").stat().st_size > 1000


# ---------------------------------------------------------------- the worst items


def test_the_worst_items_are_ranked_on_the_mean_over_seeds(study_root):
    s0, s1 = np.linspace(0.0, 1.0, N), np.linspace(0.0, 1.0, N)
    for k, (a, b) in {30: (0, 40), 20: (16, 16), 5: (30, 0), 10: (10, 18), 2: (14, 14), 0: (np.nan, np.nan)}.items():
        s0[k], s1[k] = a, b
    write_eval(study_root, "X-s0", {"cross_gt": {"delta_e_tone": s0}})
    write_eval(study_root, "X-s1", {"cross_gt": {"delta_e_tone": s1}})
    items, read, ranked = worst_items(study_root, ["X-s0", "X-s1", "X-s2"], n=5)  # X-s2 was never evaluated
    # means 20, 16, 15, 14, 14 (a tie: by id, g00-2 before g03-1); seed 0 alone would put item 5 first
    assert [it["id"] for it in items] == [IDS[30], IDS[20], IDS[5], IDS[2], IDS[10]]
    assert [it["mean"] for it in items] == [20.0, 16.0, 15.0, 14.0, 14.0]
    assert items[0]["values"] == [0.0, 40.0]
    assert read == ["X-s0", "X-s1"] and ranked == N - 1  # the item without a tone value is left out
    with pytest.raises(NotRun, match="missing metrics/eval/Y-s0/cross_gt.csv"):
        worst_items(study_root, ["Y-s0"])


def test_without_a_checkpoint_the_page_shows_no_outputs_and_says_so(tree):  # noqa: F811
    worst = design_worst(tree)
    write_prepared(tree)
    text, _ = build_report(tree, groups=lookup)
    page = read_text(tree, "failures.md")
    assert (
        "**A3's outputs not shown**: no checkpoint: neither A3-s0's released weights (weights/linebridge.safetensors) "
        "nor outputs/train/A3-s0/best.pt"
    ) in page
    assert "columns: line art, reference and ground truth." in page
    assert "![failure cases](figures/failures.png)" in page
    assert (tree / "reports" / "figures" / "failures.png").stat().st_size > 1000
    assert "mean over its 3 runs (A3-s0, A3-s1, A3-s2;" in page and "out of the 36 evaluated items" in page
    rows = [line for line in page.splitlines() if line.startswith("| ") and not line.startswith("| #")]
    assert [row.split(" | ")[1] for row in rows] == worst
    assert rows[0] == f"| 1 | {worst[0]} | GT{worst[0]} | RS{worst[0]} | 30.00 | 35.00 | 25.00 | 30.00 |"
    assert rows[1] == f"| 2 | {worst[1]} | GT{worst[1]} | RS{worst[1]} | 29.00 | 24.00 | 34.00 | 29.00 |"
    assert (
        "**Failure cases** ([failures.md](failures.md)): the 8 cross_gt test items on which A3 does worst: the "
        "highest tone-region ΔE00"
    ) in text
    assert "each shown as line art, reference and ground truth (A3's outputs are not: no checkpoint)." in text


def test_without_prepared_data_the_page_lists_the_items_without_images(tree):  # noqa: F811
    worst = design_worst(tree)
    build_report(tree, groups=lookup)
    page = read_text(tree, "failures.md")
    assert "**Images not shown**: no outputs/prepared/protocols/cross_gt.csv; run `linebridge prepare`." in page
    assert "![failure cases]" not in page and not (tree / "reports" / "figures" / "failures.png").exists()
    assert f"| 1 | {worst[0]} | — | — | 30.00 |" in page
    text, _ = build_report(tree, groups=lookup)
    assert "mean over its 3 runs, listed with their values, without images (no outputs/prepared/" in text


def test_without_evaluations_the_page_says_not_run(tree):  # noqa: F811
    for seed in range(3):
        (tree / "metrics" / "eval" / f"A3-s{seed}" / "cross_gt.csv").unlink()
    cfg, study = study_cfg(tree)
    cases = failure_cases(tree, cfg, study, tree / "outputs" / "prepared")
    assert cases["reason"].startswith("missing metrics/eval/A3-s0/cross_gt.csv")
    assert "Not run: missing metrics/eval/A3-s0/cross_gt.csv" in "\n".join(failures_page(cases, False, cfg))
    assert failures.failures_link(cases).startswith("**Failure cases** ([failures.md](failures.md)): not run (")


def test_the_outputs_column_is_the_method_checkpoint_on_those_items(tree, monkeypatch):  # noqa: F811
    """The method's lowest-seed best.pt, under the study's sampler and that run's seed, colours exactly the worst
    items (a stand-in colorizer that returns each reference with its channels reversed: the item's ground truth)."""
    import linebridge.inference as inference

    worst = design_worst(tree)
    prepared = write_prepared(tree)
    best = tree / "outputs" / "train" / "A3-s0" / "best.pt"
    best.parent.mkdir(parents=True)
    best.write_bytes(b"stand-in")
    calls = []

    def fake_load(path, sampler=None, device="cpu", callback=None):
        def fn(lineart, ref, seed):
            calls.append((lineart.shape[0], seed))
            return ref.flip(1)

        calls.append((path, sampler))
        return fn, {}

    monkeypatch.setattr(inference, "load_colorizer", fake_load)
    cfg, study = study_cfg(tree)
    cases = failure_cases(tree, cfg, study, prepared)
    assert calls == [(best, inference.Sampler.from_eval(cfg["eval"])), (8, 0)]
    assert list(cases["columns"]) == ["line art", "reference", "A3 output", "ground truth"]
    for k, image in zip(WORST, cases["columns"]["A3 output"]):
        assert image.getpixel((0, 0)) == colour_of(k)
    text, _ = build_report(tree, groups=lookup)
    page = read_text(tree, "failures.md")
    assert "The outputs are A3-s0's (`outputs/train/A3-s0/best.pt`)" in page and "not shown**" not in page
    assert "with the run's seed." in page  # the study's sampler is deterministic: no caveat
    assert "each shown as line art, reference, A3's output and ground truth." in text
    assert [it["id"] for it in cases["items"]] == worst


def test_the_outputs_are_those_evaluate_scored(tree, tiny_study, tiny_checkpoint):  # noqa: F811
    """A real checkpoint: the page's outputs for the worst items equal evaluate's outputs for the same items."""
    from linebridge.evaluation.evaluate import load_protocol, study_colorizer

    prepared = tiny_study / "outputs" / "prepared"
    with (prepared / "protocols" / "cross_gt.csv").open(newline="") as fh:
        ids = [r["id"] for r in csv.DictReader(fh)]
    tone = np.linspace(1.0, 9.0, len(ids))
    for seed in range(3):
        folder = tree / "metrics" / "eval" / f"A3-s{seed}"
        with (folder / "cross_gt.csv").open("w", newline="") as fh:
            csv.writer(fh).writerows([["id", "delta_e_tone"], *([i, f"{v:.6g}"] for i, v in zip(ids, tone))])
    best = tree / "outputs" / "train" / "A3-s0" / "best.pt"
    best.parent.mkdir(parents=True)
    shutil.copy(tiny_checkpoint.best, best)
    cfg, study = study_cfg(tree)
    cases = failure_cases(tree, cfg, study, prepared)
    shown = [it["id"] for it in cases["items"]]
    assert shown == ids[::-1][: failures.WORST]  # the highest tone values come last in the table
    data = load_protocol(prepared, "cross_gt")
    fake = study_colorizer(best, cfg["eval"])(data["lineart"], data["ref"], 0)
    expected = ((fake[[data["id"].index(i) for i in shown]] + 1) * 127.5).round().permute(0, 2, 3, 1).numpy()
    got = np.stack([np.asarray(image, dtype=float) for image in cases["columns"]["A3 output"]])
    assert np.abs(got - expected).max() <= 1
    # released (the study releases the method's seed 0): the same outputs from the committed weights alone
    state = checkpoint.load(best)
    checkpoint.save_release(tree / RELEASED, state["ema"], state["config"], {"run": "A3-s0"})
    best.unlink()
    released = failure_cases(tree, cfg, study, prepared)
    assert released["output"] == str(RELEASED)
    assert all(a == b for a, b in zip(released["columns"]["A3 output"], cases["columns"]["A3 output"]))
    checkpoint.save_release(tree / RELEASED, state["ema"], state["config"], {"run": "A3-s1"})  # another run's
    assert failure_cases(tree, cfg, study, prepared)["output"] is None
