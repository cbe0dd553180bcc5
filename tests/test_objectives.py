"""`linebridge objectives`: one training per objective and seed, scored on validation; a rerun reuses the trainings."""

from __future__ import annotations

import json

import pytest

from linebridge.cli import main as cli_main
from linebridge.report import objectives_section

OBJECTIVES = ["grad", "ysubx", "noise"]
ARGS = ["objectives", "--profile", "tiny", "--objectives", *OBJECTIVES, "--seeds", "0", "--steps", "3", "2"]
ARGS += ["--epochs", "2"]


def test_each_objective_is_trained_scored_and_reported(in_study, tmp_path, capsys):
    out, runs = tmp_path / "metrics" / "objectives.json", tmp_path / "runs"
    call = [*ARGS, "--runs", str(runs), "--out", str(out), "--no-mlflow"]
    assert cli_main(call) == 0
    s = json.loads(out.read_text())
    assert [(m["objective"], m["sample_step"]) for m in s["means"]] == [(o, n) for o in OBJECTIVES for n in (2, 3)]
    assert [r["train_steps"] for r in s["runs"]] == [8, 8, 8]  # tiny: 16 images, batch 4, 2 epochs
    assert all(0 <= m["tint_rate"] <= 1 and 0 <= m["ssim"] <= 1 for m in s["means"])
    assert s["recipe"]["epochs"] == 2 and s["validation_items"]["self"] > 0
    assert s["sampler_from"] == "params.yaml eval"
    assert not any((runs / f"{o}-s0" / "epochs").exists() for o in OBJECTIVES)  # only final weights are kept

    # the same checkpoints and the seeded sampler give the same numbers; nothing is trained again
    first = [r["scores"] for r in s["runs"]]
    capsys.readouterr()
    assert cli_main(call) == 0
    printed = capsys.readouterr().out
    assert all(f"resuming A3-{o}-s0 after epoch 2" in printed for o in OBJECTIVES)
    assert [r["scores"] for r in json.loads(out.read_text())["runs"]] == first

    lines = objectives_section(tmp_path)
    rows = [line for line in lines if line.split("|")[1:2] and line.split("|")[1].strip() in OBJECTIVES]
    assert len(rows) == 6 and rows[0].startswith("| grad | 2 | ")
    psnr = first[0][0]["psnr"]
    assert f"{psnr:.2f} ({psnr:.2f})" in rows[0]  # one seed: the mean and the seed agree


def test_report_says_when_the_comparison_has_not_run(tmp_path):
    assert objectives_section(tmp_path)[0].startswith("Not run (`make objectives`")


def test_bad_steps_name_the_option_before_any_training(in_study, tmp_path, capsys):
    call = [*ARGS[:-2], "1", "--runs", str(tmp_path / "r"), "--out", str(tmp_path / "o.json"), "--no-mlflow"]
    assert cli_main(call) == 2
    assert "--steps 1: give a whole number from 2 to 1000" in capsys.readouterr().err
    assert not (tmp_path / "r").exists() and not (tmp_path / "o.json").exists()


def test_help_explains_the_side_study(capsys):
    with pytest.raises(SystemExit) as stop:
        cli_main(["objectives", "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert "--objectives" in text and "--seeds" in text and "--no-mlflow" in text and "grad" in text
