"""GAN baselines (Pix2Pix, SCFT): train.py's training contract, inference, architecture facts, ControlNet status."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from conftest import study_params
from linebridge.baselines import controlnet, gan, pix2pix, scft
from linebridge.cli import main as cli_main
from linebridge.core import checkpoint
from linebridge.core.config import UserError, load_config
from linebridge.core.runs import Paths, TrainingDiverged

FAMILIES = tuple(study_params()["baselines"])  # pix2pix, scft: the tiny profile trains each for 2 epochs of 4 steps


def run_train(family: str, out: Path, *extra: str) -> int:
    return cli_main(["train", "--experiment", family, "--profile", "tiny", "--no-mlflow", "--out", str(out), *extra])


@pytest.fixture(scope="module")
def reference_runs(tiny_study, tmp_path_factory) -> dict[str, Path]:
    """One uninterrupted tiny run per baseline that the other tests compare against."""
    outs = {}
    old = os.getcwd()
    os.chdir(tiny_study)
    try:
        for family in FAMILIES:
            outs[family] = tmp_path_factory.mktemp("ref") / family
            assert run_train(family, outs[family]) == 0
    finally:
        os.chdir(old)
    return outs


@pytest.mark.parametrize("family", FAMILIES)
def test_run_outputs_and_same_seed_same_bytes(family, in_study, reference_runs, tmp_path, sha):
    ref = reference_runs[family]
    state = checkpoint.load(ref / "last.pt", kind=checkpoint.GAN_KIND)
    assert {
        "config",
        "generator",
        "discriminator",
        "opt_g",
        "opt_d",
        "sched_g",
        "sched_d",
        "rng",
        "history",
    } <= state.keys()
    assert state["epoch"] == 2 and state["step"] == 8
    assert (ref / "history.csv").read_text().splitlines()[0] == "epoch,step,train_loss,val_loss,lr"
    assert (ref / "metrics.json").exists()
    assert run_train(family, tmp_path / "again") == 0
    for name in ("last.pt", "best.pt", "history.csv"):
        assert sha(tmp_path / "again" / name) == sha(ref / name), name


@pytest.mark.parametrize("family", FAMILIES)
def test_resume_after_interrupt_gives_same_state(family, in_study, reference_runs, tmp_path, same_state):
    def stop_after_first_epoch(epoch: int, val_loss: float) -> None:
        raise KeyboardInterrupt

    cfg = load_config(family, "tiny")
    paths = Paths.for_experiment(family, tmp_path / "stopped")
    with pytest.raises(KeyboardInterrupt):
        gan.train_gan(cfg, paths, log_mlflow=False, progress=False, on_epoch=stop_after_first_epoch)
    assert checkpoint.load(paths.out / "last.pt", kind=checkpoint.GAN_KIND)["epoch"] == 1
    assert run_train(family, paths.out, "--resume") == 0
    for name in ("last.pt", "best.pt"):
        assert same_state(
            checkpoint.load(paths.out / name, kind=None), checkpoint.load(reference_runs[family] / name, kind=None)
        ), name
    assert (paths.out / "history.csv").read_text() == (reference_runs[family] / "history.csv").read_text()


def test_colorizers_shapes_range_and_reference_use(in_study, reference_runs):
    from linebridge.inference import Sampler, load_colorizer

    torch.manual_seed(0)
    line = torch.rand(5, 1, 16, 16) * 2 - 1
    ref_a, ref_b = torch.rand(5, 3, 16, 16) * 2 - 1, torch.rand(5, 3, 16, 16) * 2 - 1
    outputs = {}
    for family in FAMILIES:
        fn, cfg = load_colorizer(reference_runs[family] / "best.pt", Sampler(steps=5, weights="ema"))
        assert cfg["model"]["family"] == family
        out_a, out_b = fn(line, ref_a, 0), fn(line, ref_b, 1)
        assert out_a.shape == (5, 3, 16, 16) and out_a.min() >= -1 and out_a.max() <= 1
        assert torch.equal(fn(line, ref_a, 7), out_a)  # eval mode: deterministic, seed unused
        outputs[family] = (out_a, out_b)
    assert torch.equal(*outputs["pix2pix"])  # Pix2Pix ignores the reference
    assert not torch.allclose(*outputs["scft"])  # SCFT colours from it


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(in_study, tmp_path, monkeypatch):
    real = gan.Losses.generator
    calls = {"n": 0}

    def poisoned(self, *args):
        loss, parts = real(self, *args)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] == 6 else loss), parts  # step 6: inside epoch 2

    monkeypatch.setattr(gan.Losses, "generator", poisoned)
    cfg = load_config("pix2pix", "tiny")
    paths = Paths.for_experiment("pix2pix", tmp_path / "nan")
    with pytest.raises(TrainingDiverged, match=r"not finite \(nan\) at step 6"):
        gan.train_gan(cfg, paths, log_mlflow=False, progress=False)
    state = checkpoint.load(paths.out / "last.pt", kind=checkpoint.GAN_KIND)
    assert state["epoch"] == 1 and all(
        torch.isfinite(v).all() for v in state["generator"].values() if v.is_floating_point()
    )


def test_scft_run_logs_to_mlflow_with_the_losses_that_ran(in_study, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))  # no VGG19 weights anywhere
    out = tmp_path / "logged"
    assert cli_main(["train", "--experiment", "scft", "--profile", "tiny", "--out", str(out)]) == 0
    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    run = client.get_run((out / "mlflow_run_id").read_text().strip())
    assert run.data.tags["stage"] == "train@scft" and run.data.tags["family"] == "scft" and run.data.tags["git_commit"]
    assert run.data.tags["losses"] == "l1+adversarial" and "vgg19" in run.data.tags["losses_note"].lower()
    assert run.data.params["baselines.scft.lambda_l1"] == "30.0"
    for name in ("g_loss", "d_loss", "l1", "val_loss", "lr", "images_per_s"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, name)] == [1, 2], name
    assert "samples/epoch_002.png" in [
        a.path for a in client.list_artifacts(run.info.run_id, "samples")
    ]  # the last epoch's grid
    assert run.info.status == "FINISHED"


# --------------------------------------------------------------------------- architecture facts


@pytest.mark.parametrize(("n_layers", "field"), [(1, 16), (2, 34), (3, 70)])
def test_patchgan_receptive_field(n_layers, field):
    """The gradient of one central output logit reaches exactly a field×field input window."""
    disc = pix2pix.PatchDiscriminator(
        8, n_layers, lambda c: torch.nn.Identity(), in_channels=1
    )  # norms would couple all pixels
    x = torch.randn(1, 1, 128, 128, requires_grad=True)
    out = disc.net(x)
    out[0, 0, out.shape[2] // 2, out.shape[3] // 2].backward()
    rows, cols = x.grad[0, 0].abs().sum(1).nonzero(), x.grad[0, 0].abs().sum(0).nonzero()
    assert rows.max() - rows.min() + 1 == field and cols.max() - cols.min() + 1 == field


def test_pix2pix_unet_reaches_1x1_and_places_dropout():
    gen = pix2pix.Pix2PixGenerator(32, 8, pix2pix.norm_factory("batch"), dropout_layers=3)
    sizes = []
    blocks = [m for m in gen.modules() if isinstance(m, pix2pix.UNetBlock)]  # outermost first
    for b in blocks:
        b.model[0].register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))  # each level's strided conv
    assert gen(torch.zeros(2, 1, 32, 32)).shape == (2, 3, 32, 32)
    assert sizes == [16, 8, 4, 2, 1]  # log2(32) downsamplings, down to the 1×1 bottleneck
    dropout = [isinstance(b.model[-1], torch.nn.Dropout) for b in blocks]
    assert dropout == [False, False, True, True, True]  # the 3 decoder layers next to the bottleneck


def test_scft_paper_width_and_attention_tokens():
    assert scft.SCFTEncoder(3, 16, 4, pix2pix.norm_factory("batch")).dim == 992  # d_v of Lee et al. at 256²
    gen = scft.SCFTGenerator(32, 4, 2, 1, pix2pix.norm_factory("batch")).eval()
    tokens, skips = gen.sketch_encoder(torch.zeros(1, 1, 32, 32))
    assert tokens.shape == (1, 56, 8, 8) and [s.shape[-1] for s in skips] == [32, 16, 8]
    with pytest.raises(UserError, match="reference"):
        gen(torch.zeros(1, 1, 32, 32), None)


def test_linear_decay_policy():
    factors = [gan.linear_decay(8)(e) for e in range(8)]
    assert factors[:4] == [1.0] * 4 and factors[4:] == pytest.approx([0.8, 0.6, 0.4, 0.2])


def test_perceptual_and_style_losses_run_when_vgg19_weights_exist(tmp_path):
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    features = make_layers(cfgs["E"])
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, tmp_path / "vgg19-dcbb9e9d.pth")
    cfg = load_config("scft", "tiny", [f"baselines.scft.vgg_weights_dir={tmp_path}"])
    losses = gan.Losses(cfg, torch.device("cpu"))
    assert losses.names == ["l1", "adversarial", "perceptual", "style"] and not losses.note
    x, y = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    same = scft.perceptual_style_losses(losses.vgg, x, x)
    assert all(v.item() == 0 for v in same)
    assert all(v.item() > 0 for v in scft.perceptual_style_losses(losses.vgg, x, y))


# --------------------------------------------------------------------------- ControlNet


def test_controlnet_status_gives_the_reason_it_does_not_run(tmp_path):
    cfg = load_config("scft", "tiny")
    status = controlnet.controlnet_status(cfg)
    assert status["run"] is False and "baselines.controlnet.weights_dir" in status["reason"]
    cfg["baselines"]["controlnet"]["weights_dir"] = str(tmp_path)
    assert "stable-diffusion/model_index.json" in controlnet.controlnet_status(cfg)["reason"]


def test_controlnet_status_without_cuda_names_the_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present, so ControlNet is not held back for want of a GPU")
    cfg = load_config("scft", "tiny", [f"baselines.controlnet.weights_dir={tmp_path}"])
    (tmp_path / "stable-diffusion").mkdir()
    (tmp_path / "stable-diffusion" / "model_index.json").write_text("{}")
    (tmp_path / "controlnet").mkdir()
    (tmp_path / "controlnet" / "config.json").write_text("{}")
    status = controlnet.controlnet_status(cfg)
    assert status["run"] is False and "GPU" in status["reason"]


def test_controlnet_without_its_extra_names_the_install(monkeypatch):
    """diffusers and transformers are an optional extra: without them the colorizer says how to install them."""
    cfg = load_config("scft", "tiny", ["baselines.controlnet.weights_dir=somewhere"])
    monkeypatch.setattr(controlnet, "extra_installed", lambda: False)
    with pytest.raises(UserError, match=r"pip install -e '\.\[controlnet\]'"):
        controlnet.controlnet_colorizer(cfg, "cpu")


def save_tiny_controlnet_weights(root: Path) -> None:
    """A randomly initialised, tiny SD + ControlNet in the layout weights_dir expects (no downloads)."""
    import json

    from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    widths = {"block_out_channels": (8, 16), "norm_num_groups": 4}
    attn = {
        "cross_attention_dim": 8,
        "attention_head_dim": 2,
        "layers_per_block": 1,
        "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    }
    unet = UNet2DConditionModel(**widths, **attn, sample_size=8, up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    net = ControlNetModel(**widths, **attn, conditioning_embedding_out_channels=(4, 8))
    vae = AutoencoderKL(
        **widths,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=8,
            intermediate_size=16,
            num_attention_heads=2,
            num_hidden_layers=1,
            vocab_size=64,
            max_position_embeddings=32,
        )
    )
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz,":
        vocab[ch], vocab[ch + "</w>"] = len(vocab), len(vocab) + 1
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(root / "vocab.json"), str(root / "merges.txt"), model_max_length=32)
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(root / controlnet.SD_DIR)
    net.save_pretrained(root / controlnet.CONTROLNET_DIR)


def test_controlnet_colorizer_runs_a_tiny_random_pipeline(tmp_path):
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    save_tiny_controlnet_weights(tmp_path)
    cfg = load_config(
        "scft",
        "tiny",
        [
            f"baselines.controlnet.weights_dir={tmp_path}",
            "baselines.controlnet.resolution=32",
            "baselines.controlnet.steps=2",
            "baselines.controlnet.batch_size=2",
        ],
    )
    fn = controlnet.controlnet_colorizer(cfg, "cpu")
    line = torch.rand(3, 1, 16, 16) * 2 - 1
    out = fn(line, None, 0)
    assert out.shape == (3, 3, 16, 16) and out.min() >= -1 and out.max() <= 1
    assert torch.equal(fn(line, torch.zeros(3, 3, 16, 16), 0), out)  # seeded; the reference is not used
