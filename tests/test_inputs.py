"""Bad input stops before any work with a message naming the key or option and the fix; odd-but-valid input works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import experiments
from linebridge.cli import main as cli_main
from linebridge.core.config import load_config
from linebridge.core.runs import Paths, config_changes


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint) -> Path:
    """The session's tiny A3 checkpoint (read only)."""
    return tiny_checkpoint.best


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.model_channels=abc", "model.model_channels"),
        ("model.model_channels=-8", "model.model_channels"),
        ("eval.eta=.nan", "eval.eta"),
        ("eval.sample_step=5000", "eval.sample_step"),
        ("train.betas=[0.9]", "train.betas"),
        ("model.reference=crossattention", "model.reference"),
    ],
)
def test_bad_settings_name_the_key_before_training(in_study, tmp_path, capsys, override, key):
    args = ["train", "--experiment", "A3", "--profile", "tiny", "--no-mlflow", "--out", str(tmp_path / "run")]
    assert cli_main([*args, "--set", override]) == 2
    err = capsys.readouterr().err
    assert key in err and "Traceback" not in err
    assert not (tmp_path / "run").exists(), "nothing is written before the settings are checked"


def test_every_profile_and_experiment_is_valid(in_study):
    for profile in ("default", "paper", "tiny"):
        for experiment in (None, *experiments()):
            load_config(experiment, profile)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--steps", "100000"], "--steps 100000"),
        (["--steps", "0"], "--steps 0"),
        (["--steps", "1"], "--steps 1"),
        (["--eta", "nan"], "--eta nan"),
        (["--eta", "-1"], "--eta -1"),
    ],
)
def test_colorize_rejects_bad_sampler_settings(in_study, checkpoint, tmp_path, capsys, extra, message):
    Image.new("L", (20, 12), 255).save(tmp_path / "l.png")
    Image.new("RGB", (20, 12), (200, 40, 40)).save(tmp_path / "r.png")
    out = tmp_path / "o.png"
    args = ["colorize", str(tmp_path / "l.png"), "--ref", str(tmp_path / "r.png"), "--checkpoint", str(checkpoint)]
    assert cli_main([*args, "-o", str(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_sampler_settings_left_none_are_the_checkpoints_own(checkpoint):
    from linebridge.inference import Sampler, load_colorizer

    own = Sampler.of_checkpoint(torch.load(checkpoint, weights_only=True)["config"])
    assert own == Sampler.from_eval(load_config("A3", "tiny")["eval"])
    assert Sampler(steps=5).over(own) == Sampler(5, own.deterministic, own.eta, own.weights)
    line, ref = torch.rand(2, 1, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    out = load_colorizer(checkpoint)[0](line, ref, 0)
    assert torch.equal(load_colorizer(checkpoint, own)[0](line, ref, 0), out)
    assert not torch.equal(load_colorizer(checkpoint, Sampler(steps=5))[0](line, ref, 0), out)


@pytest.mark.parametrize("target, message", [("folder", "is a folder"), ("colour.unknownext", "unknown image type")])
def test_colorize_rejects_unusable_output(in_study, checkpoint, tmp_path, capsys, target, message):
    Image.new("L", (20, 12), 255).save(tmp_path / "l.png")
    (tmp_path / "folder").mkdir()
    args = ["colorize", str(tmp_path / "l.png"), "--ref", str(tmp_path / "l.png"), "--checkpoint", str(checkpoint)]
    assert cli_main([*args, "-o", str(tmp_path / target)]) == 2
    assert message in capsys.readouterr().err


def test_colorize_at_700_steps(in_study, checkpoint, tmp_path):
    """Step counts from 502 to 999 once produced a repeated index and crashed the sampler."""
    Image.new("L", (20, 12), 255).save(tmp_path / "l.png")
    args = ["colorize", str(tmp_path / "l.png"), "--ref", str(tmp_path / "l.png"), "--checkpoint", str(checkpoint)]
    assert cli_main([*args, "-o", str(tmp_path / "o.png"), "--steps", "700", "--deterministic"]) == 0
    assert Image.open(tmp_path / "o.png").size == (20, 12)


def test_resume_ignores_settings_that_change_no_number(in_study, tmp_path, capsys):
    cfg = load_config("A3", "tiny")
    assert config_changes(cfg, load_config("A3", "tiny", ["perf.channels_last=false", "eval.sample_step=50"])) == []
    assert config_changes(cfg, load_config("A3", "tiny", ["baselines.scft.epochs=7"])) == []  # BBDM never reads it
    gan = load_config("scft", "tiny")
    assert config_changes(gan, load_config("scft", "tiny", ["baselines.scft.epochs=7"])) != []
    changed = f"train.lr: {cfg['train']['lr']!r} → 0.0003"
    assert config_changes(cfg, load_config("A3", "tiny", ["train.lr=3e-4"])) == [changed]
    out = tmp_path / "run"
    base = ["train", "--experiment", "A3", "--profile", "tiny", "--no-mlflow", "--out", str(out)]
    assert cli_main([*base, "--set", "train.epochs=1"]) == 0
    capsys.readouterr()
    assert cli_main([*base, "--set", "train.epochs=1", "--set", "perf.channels_last=false", "--resume"]) == 0
    assert "resuming A3 after epoch 1" in capsys.readouterr().out
    assert cli_main([*base, "--set", "train.epochs=1", "--set", "train.lr=3e-4", "--resume"]) == 0
    said = capsys.readouterr().out
    assert changed in said and "starting from scratch" in said


def _random_vgg16_trunk(torch_home: Path) -> None:
    """A randomly initialised VGG16 `features` trunk under the name LPIPS looks for (the real code path)."""
    from torchvision.models import vgg16

    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in vgg16().features.state_dict().items()}
    torch.save(state, folder / "vgg16-397923af.pth")


def test_lpips_loss_needs_its_weights_and_trains_with_them(in_study, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    args = ["train", "--experiment", "A3", "--profile", "tiny", "--no-mlflow", "--set", "loss.lambda_lpips=0.5"]
    assert cli_main([*args, "--out", str(tmp_path / "none")]) == 2
    assert "vgg16-397923af.pth" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    _random_vgg16_trunk(tmp_path / "home")
    import linebridge.bbdm.train as T

    seen = []
    real = T.lpips_loss
    monkeypatch.setattr(T, "lpips_loss", lambda *a: seen.append(1) or real(*a))
    assert cli_main([*args, "--set", "train.epochs=1", "--out", str(tmp_path / "lpips")]) == 0
    assert seen, "the LPIPS term ran"
    assert json.loads((tmp_path / "lpips" / "metrics.json").read_text())["steps"] == 4


@pytest.mark.slow  # torchrun: two processes
def test_gan_baseline_trains_under_torchrun(in_study, tmp_path):
    """Two gloo processes share the global batch; rank 0 alone writes; the replicas end identical."""
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "linebridge.cli", "train"]
    cmd += ["--experiment", "pix2pix", "--profile", "tiny", "--no-mlflow", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=in_study, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("pix2pix epoch 1:") == 1, "only rank 0 reports"
    summary = json.loads(Path(Paths.for_experiment("pix2pix", out).metrics).read_text())
    assert summary["epochs_run"] == 2 and (out / "best.pt").exists() and (out / "last.pt").exists()


def test_tune_exit_with_trials_still_to_run(in_study, tmp_path, monkeypatch, capsys):
    """Every trial fails: tune says how many are still to run (this exit once raised KeyError)."""
    import linebridge.bbdm.train as T

    real = T.diffusion_loss

    def nan_loss(*args, **kwargs):
        loss, parts = real(*args, **kwargs)
        return loss * float("nan"), parts

    monkeypatch.setattr(T, "diffusion_loss", nan_loss)
    args = ["tune", "--profile", "tiny", "--trials", "2", "--set", "tune.max_failed=1", "--no-mlflow"]
    assert cli_main([*args, "--out", str(tmp_path / "tune")]) == 3
    assert "2 of 2 trials still to run (1 failed so far)" in capsys.readouterr().out
