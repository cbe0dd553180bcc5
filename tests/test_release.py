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


COMMITTED = Path(__file__).resolve().parents[1] / RELEASED


def own_drawing(side: int = 600) -> tuple[Image.Image, Image.Image, Image.Image]:
    """A face as a user might draw it, in a style the study never trains on: 600 px, strokes 5 % of the side
    wide, the hair a filled black area; its reference (skin and hair coloured, no lines); the face's mask."""
    from PIL import ImageDraw

    w = side // 20
    face = (side * 0.2, side * 0.25, side * 0.8, side * 0.9)
    line, ref, mask = (Image.new(m, (side, side), c) for m, c in (("L", 255), ("RGB", "white"), ("L", 0)))
    for draw, skin in ((ImageDraw.Draw(line), 255), (ImageDraw.Draw(ref), (232, 178, 130))):
        draw.ellipse(face, fill=skin, outline=0 if skin == 255 else None, width=w)
        draw.chord((side * 0.2, side * 0.15, side * 0.8, side * 0.6), 180, 360, fill=0 if skin == 255 else (70, 40, 20))
        if skin == 255:  # eyes and mouth: lines only
            for x in (0.38, 0.62):
                draw.ellipse((side * x - w, side * 0.6 - w, side * x + w, side * 0.6 + w), fill=0)
            draw.arc((side * 0.38, side * 0.62, side * 0.62, side * 0.8), 20, 160, fill=0, width=w)
    ImageDraw.Draw(mask).ellipse(face, fill=255)
    return line, ref, mask


@pytest.mark.skipif(not COMMITTED.exists(), reason=f"{RELEASED} is written by the study (`make repro`)")
def test_released_weights_colour_a_large_thick_stroked_drawing(tmp_path, monkeypatch):
    """The README's "own drawing" path: a 600 px drawing with thick strokes and a filled black area comes back
    coloured, not as its line art: most of the skin (off the lines) is neither white, black nor grey."""
    import numpy as np

    line, ref, mask = own_drawing()
    line.save(tmp_path / "line.png")
    ref.save(tmp_path / "ref.png")
    monkeypatch.chdir(COMMITTED.parents[1])
    out = tmp_path / "out.png"
    assert cli_main(["colorize", str(tmp_path / "line.png"), "--ref", str(tmp_path / "ref.png"), "-o", str(out)]) == 0
    colour = np.asarray(Image.open(out).convert("RGB").resize(line.size), dtype=float) / 255
    skin = (np.asarray(mask) > 0) & (np.asarray(line) > 128)  # inside the face, off the drawn lines and the hair
    saturation = colour.max(axis=2) - colour.min(axis=2)
    assert (saturation[skin] > 0.08).mean() > 0.5, f"coloured share of the skin {(saturation[skin] > 0.08).mean():.2f}"
