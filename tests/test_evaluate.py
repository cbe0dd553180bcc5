"""Evaluation outputs, the colorize command and the report, on a tiny trained model."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from linebridge.cli import main as cli_main
from linebridge.core.config import load_config
from linebridge.evaluation.evaluate import PROTOCOLS


@pytest.fixture(scope="module", autouse=True)
def empty_torch_home(tmp_path_factory) -> Iterator[Path]:
    """An empty torch hub cache for this module: weights a developer has cached (Inception, AlexNet for LPIPS)
    would otherwise turn the unavailable metrics into numbers and change what these tests see."""
    home = tmp_path_factory.mktemp("torch_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def trained(tiny_study, tiny_checkpoint) -> Iterator[Path]:
    """The session's tiny A3 checkpoint where `evaluate --experiment A3` looks for it: outputs/train/A3 of the tiny
    study, a link removed at the end of this module."""
    link = tiny_study / "outputs" / "train" / "A3"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(tiny_checkpoint.out, target_is_directory=True)
    yield link / "best.pt"
    link.unlink()


def test_evaluate_writes_every_protocol(in_study, trained, tmp_path):
    out = tmp_path / "eval"
    assert cli_main(["evaluate", "--experiment", "A3", "--profile", "tiny", "--steps", "5", "--out", str(out)]) == 0
    for protocol in PROTOCOLS:
        res = json.loads((out / f"{protocol}.json").read_text())
        rows = list(csv.DictReader((out / f"{protocol}.csv").open()))
        assert res["n_images"] == len(rows) > 0
        m = res["metrics"]
        assert 0 <= m["edge_iou"]["low"] <= m["edge_iou"]["mean"] <= m["edge_iou"]["high"] <= 1
        assert m["edge_iou"]["n"] == len(rows)
        assert m["swd"]["value"] > 0
        # offline: no Inception weights → unavailable with a reason and a fix, not a number
        assert m["fid"]["unavailable"] and "weights-inception" in m["fid"]["reason"] and m["fid"]["how_to_fix"]
        if protocol != "cross_random":
            assert {"psnr", "ssim", "delta_e"} <= set(rows[0])
        if protocol == "cross_gt":
            assert "delta_e_tone" in m
        assert Image.open(out / f"{protocol}.png").size[0] > 0
    # the same seed gives the same numbers
    again = tmp_path / "again"
    assert cli_main(["evaluate", "--experiment", "A3", "--profile", "tiny", "--steps", "5", "--out", str(again)]) == 0
    assert (again / "self.csv").read_text() == (out / "self.csv").read_text()


def test_trivial_models_score_as_expected(in_study, tmp_path):
    out = tmp_path / "copy"
    assert cli_main(["evaluate", "--experiment", "copy-lineart", "--profile", "tiny", "--out", str(out)]) == 0
    res = json.loads((out / "self.json").read_text())
    assert res["sampler"] is None and res["checkpoint"] is None
    # the line art is black and white: its colour error against colour images is large but finite
    assert 0 < res["metrics"]["delta_e"]["mean"] < 100
    assert np.isfinite(res["metrics"]["psnr"]["mean"])
    # the reference with the lines drawn on keeps the lines: on self it beats the bare reference on line pixels
    scores = {}
    for name in ("copy-reference", "reference-with-lines"):
        assert cli_main(["evaluate", "--experiment", name, "--profile", "tiny", "--out", str(tmp_path / name)]) == 0
        scores[name] = json.loads((tmp_path / name / "self.json").read_text())["metrics"]["delta_e_lines"]["mean"]
    assert scores["reference-with-lines"] < scores["copy-reference"]


def test_sweep_rows(in_study, trained, tmp_path):
    out = tmp_path / "sweep"
    assert (
        cli_main(
            [
                "evaluate",
                "--experiment",
                "A3",
                "--profile",
                "tiny",
                "--sweep",
                "--out",
                str(out),
                "--set",
                "eval.sweep_steps=[10,5]",
                "--set",
                "eval.sweep_images=4",
            ]
        )
        == 0
    )
    sweep = json.loads((out / "sweep.json").read_text())
    rows = sweep["rows"]
    assert sweep["split"] == "val"
    assert [(r["weights"], r["steps"], r["sampler"].split()[0]) for r in rows] == [
        (w, s, kind) for w in ("ema", "raw") for s in (10, 5) for kind in ("eta=1", "deterministic")
    ]
    assert all(r["seconds_per_image"] > 0 and r["n_images"] == {"self": 4, "cross_gt": 4} for r in rows)
    # the choice is one of the rows (which one: the test below); written into `eval`, evaluation uses it
    choice = yaml.safe_load((out / "choice.yaml").read_text())["eval"]
    chosen = (choice["sample_step"], choice["weights"], choice["deterministic"])
    assert chosen in [(r["steps"], r["weights"], r["deterministic"]) for r in rows]
    evaluated = tmp_path / "chosen"
    args = ["evaluate", "--experiment", "A3", "--profile", "tiny", *(f"--set=eval.{k}={v}" for k, v in choice.items())]
    assert cli_main([*args, "--out", str(evaluated), "--no-mlflow"]) == 0
    sampler = json.loads((evaluated / "self.json").read_text())["sampler"]
    assert (sampler["steps"], sampler["deterministic"]) == (choice["sample_step"], choice["deterministic"])
    assert json.loads((evaluated / "self.json").read_text())["weights"] == choice["weights"]


def test_sweep_chooses_the_best_psnr_to_0_01_db_and_ties_to_fewer_steps(in_study, tmp_path, monkeypatch):
    """Validation PSNRs given by hand, in the sweep's row order (EMA then raw; 10 then 5 steps; η = 1 then
    deterministic): 20.001, 20.004 and 19.996 are all 20.00 dB, and of those EMA at 5 steps, deterministic, has the
    fewest steps."""
    import linebridge.evaluation.evaluate as E
    import linebridge.inference

    psnrs = iter([20.001, 20.004, 19.0, 19.996, 18.0, 18.0, 19.5, 17.0])
    monkeypatch.setattr(linebridge.inference, "load_colorizer", lambda *args, **kwargs: (None, {}))
    monkeypatch.setattr(E, "validation_quality", lambda *args: {"psnr": next(psnrs), "delta_e_tone": 1.0})
    cfg = load_config("A3", "tiny", ["eval.sweep_steps=[10,5]", "eval.sweep_images=4"])
    choice = E.sweep([tmp_path / "unused.pt"], cfg, tmp_path / "sweep")
    assert choice["eval"] == {"sample_step": 5, "eta": 1.0, "deterministic": True, "weights": "ema"}
    assert "20.00 dB" in choice["rule"]


def test_sweep_over_seeds_averages_each_setting(in_study, trained, tmp_path):
    """--seeds scores every setting on ARM-sN for each N and chooses on the mean: two copies of one checkpoint
    give that checkpoint's own values, row by row."""
    small = ["--profile", "tiny", "--set", "eval.sweep_steps=[5]", "--set", "eval.sweep_images=4"]
    links = [in_study / "outputs" / "train" / f"A3-s{s}" for s in (0, 1)]
    for link in links:
        link.symlink_to(trained.parent, target_is_directory=True)
    try:
        one, two = tmp_path / "one", tmp_path / "two"
        assert cli_main(["evaluate", "--experiment", "A3", "--sweep", "--out", str(one), *small]) == 0
        assert (
            cli_main(["evaluate", "--experiment", "A3-s0", "--sweep", "--seeds", "0", "1", "--out", str(two), *small])
            == 0
        )
    finally:
        for link in links:
            link.unlink()
    single, double = (json.loads((d / "sweep.json").read_text()) for d in (one, two))
    assert double["checkpoints"] == ["outputs/train/A3-s0/best.pt", "outputs/train/A3-s1/best.pt"]
    for a, b in zip(single["rows"], double["rows"], strict=True):
        assert b["per_checkpoint"] == [a["metrics"], a["metrics"]]
        assert b["metrics"] == pytest.approx(a["metrics"])
    assert "mean over 2 checkpoints" in yaml.safe_load((two / "choice.yaml").read_text())["rule"]
    assert cli_main(["evaluate", "--experiment", "A3", "--seeds", "0", *small]) == 2  # --seeds needs --sweep
    assert cli_main(["evaluate", "--experiment", "A3-s0", "--sweep", "--seeds", "7", *small]) == 2  # no A3-s7


def test_colorize_any_size_and_mode(in_study, trained, tmp_path):
    line = Image.new("LA", (37, 23), (255, 0))  # transparent, odd size, with alpha
    for x in range(5, 30):
        line.putpixel((x, 11), (0, 255))
    line.save(tmp_path / "line.png")
    Image.new("P", (50, 50), 3).save(tmp_path / "ref.gif")
    out = tmp_path / "out" / "colour.png"
    args = ["colorize", str(tmp_path / "line.png"), "--ref", str(tmp_path / "ref.gif"), "--checkpoint", str(trained)]
    assert cli_main([*args, "-o", str(out), "--steps", "5"]) == 0
    img = Image.open(out)
    assert img.size == (37, 23) and img.mode == "RGB"
    a = np.asarray(img)
    assert cli_main([*args, "-o", str(out), "--steps", "5"]) == 0
    assert np.array_equal(a, np.asarray(Image.open(out))), "same seed, same image"


def test_colorize_errors_name_the_problem(in_study, trained, tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert (
        cli_main(
            [
                "colorize",
                str(tmp_path / "broken.png"),
                "--ref",
                str(tmp_path / "broken.png"),
                "--checkpoint",
                str(trained),
                "-o",
                str(tmp_path / "o.png"),
            ]
        )
        == 2
    )
    assert "broken.png" in capsys.readouterr().err
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    Image.new("L", (8, 8), 255).save(tmp_path / "l.png")
    assert (
        cli_main(
            [
                "colorize",
                str(tmp_path / "l.png"),
                "--checkpoint",
                str(tmp_path / "foreign.pt"),
                "-o",
                str(tmp_path / "o.png"),
            ]
        )
        == 2
    )
    assert "foreign.pt" in capsys.readouterr().err
    assert (
        cli_main(["colorize", str(tmp_path / "l.png"), "--checkpoint", str(trained), "-o", str(tmp_path / "o.png")])
        == 2
    )
    assert "--ref" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_protocols_are_group_stratified(in_study):
    """self and cross_random keep at most k variants of each drawing; cross_gt keeps every triple."""
    from collections import Counter

    from linebridge.data.datasets import ProtocolDataset
    from linebridge.evaluation.evaluate import load_protocol, stratified

    assert stratified(["a", "a", "a", "b", "c", "c"], 2) == [0, 1, 3, 4, 5]
    assert stratified(["a", "a"], 0) == [0, 1]
    prepared = in_study / "outputs" / "prepared"
    for protocol in ("self", "cross_random"):
        data = load_protocol(prepared, protocol, 1)
        assert max(Counter(data["group"]).values()) == 1
        assert set(data["group"]) == set(ProtocolDataset(prepared, protocol).groups)
    assert len(load_protocol(prepared, "cross_gt", 1)["id"]) == len(ProtocolDataset(prepared, "cross_gt"))


def test_evaluation_logs_test_metrics_to_the_training_run(in_study, tmp_path):
    """`mlflow ui` compares models by test metrics: evaluate adds them to the run that trained the model."""
    import mlflow

    out = tmp_path / "A0"
    tiny = ["--experiment", "A0", "--profile", "tiny"]
    assert cli_main(["train", *tiny, "--set", "train.epochs=1", "--out", str(out)]) == 0
    ckpt = str(out / "best.pt")
    assert cli_main(["evaluate", *tiny, "--checkpoint", ckpt, "--out", str(tmp_path / "eval")]) == 0
    # a one-off evaluation (other sampler settings) must not replace the run's test metrics
    assert cli_main(["evaluate", *tiny, "--checkpoint", ckpt, "--steps", "2", "--out", str(tmp_path / "adhoc")]) == 0
    run = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).get_run((out / "mlflow_run_id").read_text().strip())
    logged = json.loads((tmp_path / "eval" / "self.json").read_text())["metrics"]["psnr"]["mean"]
    assert run.data.metrics["test/self/psnr"] == pytest.approx(logged)
    assert "test/cross_gt/delta_e_tone" in run.data.metrics and "val_loss" in run.data.metrics
