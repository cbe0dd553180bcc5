"""Released weights: export to safetensors, load without pickle, colour without a checkpoint, verify the numbers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import make_root
from linebridge.cli import main as cli_main
from linebridge.core import checkpoint
from linebridge.core.config import MODEL_CARD, RELEASED, UserError


@pytest.fixture
def released_root(tiny_study, tiny_checkpoint, tmp_path, monkeypatch) -> Path:
    """A study root whose method run (A5-s0) is the tiny checkpoint, evaluated on the tiny protocols."""
    root = make_root(tmp_path / "root")
    params = root / "params.yaml"
    params.write_text(params.read_text().replace("profile: default ", "profile: tiny ", 1))
    (root / "outputs").mkdir()
    (root / "outputs" / "prepared").symlink_to(tiny_study / "outputs" / "prepared")
    run = root / "outputs" / "train" / "A5-s0"
    run.mkdir(parents=True)
    shutil.copy(tiny_checkpoint.best, run / "best.pt")
    (root / "metrics" / "train").mkdir(parents=True)
    shutil.copy(tiny_checkpoint.metrics, root / "metrics" / "train" / "A5-s0.json")
    monkeypatch.chdir(root)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert cli_main(["evaluate", "--experiment", "A5-s0", "--no-mlflow"]) == 0
    return root


def test_release_writes_ema_weights_without_pickle_and_a_model_card(released_root, tiny_checkpoint):
    assert cli_main(["release"]) == 0
    state = checkpoint.load(released_root / RELEASED)
    best = checkpoint.load(tiny_checkpoint.best)
    assert state["ema"].keys() == best["ema"].keys()
    assert all(torch.equal(state["ema"][k], best["ema"][k]) for k in best["ema"])
    assert state["config"] == json.loads(json.dumps(best["config"]))
    assert state["released"]["run"] == "A5-s0"
    assert b"pickle" not in (released_root / RELEASED).read_bytes()[:64]
    card = (released_root / MODEL_CARD).read_text()
    psnr = json.loads((released_root / "metrics" / "eval" / "A5-s0" / "self.json").read_text())["metrics"]["psnr"]
    assert f"| self | psnr | {psnr['mean']:.4g} |" in card and "CC BY-SA 4.0" in card


def test_colorize_without_a_checkpoint_uses_the_released_weights(released_root, tmp_path, capsys):
    line = tmp_path / "line.png"
    Image.new("L", (40, 30), 255).save(line)
    assert cli_main(["colorize", str(line), "--ref", str(line), "-o", str(tmp_path / "a.png")]) == 2
    assert f"no released weights at {released_root / RELEASED}" in capsys.readouterr().err
    assert cli_main(["release"]) == 0
    assert cli_main(["colorize", str(line), "--ref", str(line), "-o", str(tmp_path / "a.png")]) == 0
    assert Image.open(tmp_path / "a.png").size == (40, 30)
    with pytest.raises(UserError, match="EMA weights only"):
        from linebridge.inference import Sampler, load_colorizer

        load_colorizer(released_root / RELEASED, Sampler(weights="raw"))


def test_verify_passes_on_the_study_numbers_and_fails_on_changed_ones(released_root, capsys):
    assert cli_main(["release"]) == 0
    capsys.readouterr()
    assert cli_main(["verify"]) == 0
    said = capsys.readouterr().out
    assert "ok self.psnr" in said and "FAILED" not in said
    path = released_root / "metrics" / "eval" / "A5-s0" / "cross_gt.json"
    result = json.loads(path.read_text())
    result["metrics"]["delta_e_tone"]["mean"] += 0.5
    path.write_text(json.dumps(result))
    assert cli_main(["verify"]) == 1
    assert "FAILED cross_gt.delta_e_tone" in capsys.readouterr().out


def test_a_damaged_release_names_the_file(tmp_path):
    bad = tmp_path / "linebridge.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(checkpoint.CheckpointError, match="not a readable safetensors file"):
        checkpoint.load(bad)
