"""ControlNet (SD 1.5 + a line-art ControlNet, through diffusers): zero-shot, and only where its weights exist.

It needs weights this study cannot download and a GPU: `controlnet_status` says whether
it can run here and, if not, why (the reason the report prints); `controlnet_colorizer`
is the `fn(lineart, ref, seed)` evaluation calls when it can. Text prompt + line art
only: SD has no reference input without an adapter. Line art goes in as white lines on
black (the line-art ControlNet's convention), upscaled to `resolution`; the output is
resized back to data.image_size. See docs/deviations.md.

diffusers and transformers are the optional extra `controlnet` (`pip install -e '.[controlnet]'`),
not dependencies of the CPU study: they are imported only when a pipeline is built.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from linebridge.core.checkpoint import Colorizer
from linebridge.core.config import Config, UserError, repo_root

SD_DIR, CONTROLNET_DIR = "stable-diffusion", "controlnet"  # inside baselines.controlnet.weights_dir
MISSING_EXTRA = "the diffusers and transformers packages are not installed: pip install -e '.[controlnet]'"


def extra_installed() -> bool:
    """Whether the `controlnet` extra (diffusers and transformers) is installed, without importing it."""
    return all(importlib.util.find_spec(name) is not None for name in ("diffusers", "transformers"))


def controlnet_weights(cfg: Config) -> Path | None:
    """baselines.controlnet.weights_dir as a path (relative ones from the repo root), or None when unset."""
    folder = cfg["baselines"]["controlnet"]["weights_dir"]
    return (repo_root() / folder) if folder else None


def controlnet_status(cfg: Config) -> dict[str, Any]:
    """{'run': True, 'reason': ''} when the ControlNet baseline can run here, else run=False and why not."""
    root = controlnet_weights(cfg)
    if root is None:
        reason = (
            "it needs Stable Diffusion 1.5 and a line-art ControlNet (e.g. lllyasviel/control_v11p_sd15_lineart), "
            "which this study cannot download, and a GPU; set baselines.controlnet.weights_dir to a folder holding "
            f"{SD_DIR}/ and {CONTROLNET_DIR}/ in diffusers format (save_pretrained output)"
        )
    elif not (root / SD_DIR / "model_index.json").is_file() or not (root / CONTROLNET_DIR / "config.json").is_file():
        reason = (
            f"{root} must hold {SD_DIR}/model_index.json (a diffusers Stable Diffusion pipeline) and "
            f"{CONTROLNET_DIR}/config.json (a diffusers ControlNetModel)"
        )
    elif not torch.cuda.is_available():
        reason = "Stable Diffusion at 512² needs a CUDA GPU, and none is visible"
    elif not extra_installed():
        reason = MISSING_EXTRA
    else:
        return {"run": True, "reason": ""}
    return {"run": False, "reason": f"ControlNet not run: {reason}."}


def controlnet_colorizer(cfg: Config, device: torch.device | str | None = None) -> Colorizer:
    """`fn(lineart, ref, seed) -> colour in [-1, 1]` from the local SD + ControlNet weights; `ref` is unused.

    Check `controlnet_status` first: this builds the pipeline on any device (tests run a
    tiny random one on the CPU). Noise comes from a generator seeded per batch (seed + k).
    """
    if not extra_installed():
        raise UserError(f"ControlNet: {MISSING_EXTRA}")
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    c, root = cfg["baselines"]["controlnet"], controlnet_weights(cfg)
    if root is None:
        raise UserError(controlnet_status(cfg)["reason"])
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    controlnet = ControlNetModel.from_pretrained(root / CONTROLNET_DIR, dtype=dtype, local_files_only=True)
    pipe = StableDiffusionControlNetPipeline.from_pretrained(
        root / SD_DIR,
        controlnet=controlnet,
        dtype=dtype,
        local_files_only=True,
        safety_checker=None,
        requires_safety_checker=False,
    ).to(device)
    pipe.set_progress_bar_config(disable=True)
    size, batch = c["resolution"], c["batch_size"]

    @torch.inference_mode()
    def fn(lineart: Tensor, ref: Tensor | None, seed: int) -> Tensor:
        outs = []
        for k, i in enumerate(range(0, lineart.shape[0], batch)):
            line = lineart[i : i + batch].to(device, torch.float32)
            control = F.interpolate((1 - line) / 2, size=(size, size), mode="bilinear").expand(-1, 3, -1, -1)
            images = pipe(
                prompt=[c["prompt"]] * len(line),
                negative_prompt=[c["negative_prompt"]] * len(line),
                image=control,
                height=size,
                width=size,
                num_inference_steps=c["steps"],
                guidance_scale=c["guidance_scale"],
                generator=torch.Generator(device).manual_seed(seed + k),
                output_type="pt",
            ).images
            small = F.interpolate(images.float(), size=lineart.shape[-2:], mode="bilinear", antialias=True)
            outs.append((small * 2 - 1).clamp(-1, 1).to(lineart.device))
        return torch.cat(outs)

    return fn
