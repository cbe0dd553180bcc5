"""Pretrained weights from the local cache only: linebridge never downloads at run time.

LPIPS (a metric, and optionally a training loss), VGG19 (SCFT's perceptual losses) and
Inception (FID/KID) look for their weight file in a given folder and in torch's hub
cache (`$TORCH_HOME/hub/checkpoints`) before building a network, and raise `Unavailable`
(the reason and how to provide the file) when it is absent.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import torch
from torch import nn

from linebridge.core.config import UserError


class Unavailable(UserError):
    """A metric or loss cannot be computed here (missing weights, images too small); says why and the fix."""

    def __init__(self, reason: str, how_to_fix: str) -> None:
        super().__init__(f"{reason} {how_to_fix}")
        self.reason = reason
        self.how_to_fix = how_to_fix


def find_weights(filename: str, url: str, what: str, weights_dir: str | Path | None) -> Path:
    """The local copy of `filename` (in `weights_dir`, then torch's hub cache), or Unavailable."""
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    folders = ([Path(weights_dir)] if weights_dir is not None else []) + [hub]
    for folder in folders:
        if (folder / filename).is_file():
            return folder / filename
    places = " or ".join(str(f) for f in folders)
    extra = f" or into {weights_dir}" if weights_dir is not None else ""
    raise Unavailable(
        reason=f"{what} needs the pretrained weight file {filename}, which is not in {places} "
        "(linebridge never downloads weights at run time).",
        how_to_fix=f"On a connected machine run `curl -L -o {filename} {url}`, then copy the file to "
        f"{hub / filename} (torch's hub cache: $TORCH_HOME/hub/checkpoints){extra}.",
    )


# torchvision's weight enum of each LPIPS trunk (looked up on use: the GPU check runs without torchvision)
_LPIPS_TRUNKS = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights", "squeeze": "SqueezeNet1_1_Weights"}
# Smallest image side each trunk accepts (AlexNet's stride-4 stem and three max-pools
# need ≥ 31 px); measured with lpips 0.1.4.
LPIPS_MIN_SIDE = {"alex": 31, "vgg": 16, "squeeze": 17}


@functools.lru_cache(maxsize=4)
def _lpips_model(net: str, trunk_path: str) -> nn.Module:
    """lpips.LPIPS with a random trunk (no download) whose weights are then loaded from `trunk_path`.

    The calibrated linear heads ship inside the lpips package. The trunk's slices keep
    torchvision's `features` indices as module names, so `sliceK.i.*` ↔ `features.i.*`.
    """
    import warnings

    import lpips as lpips_lib

    with warnings.catch_warnings():  # torchvision's "pretrained= is deprecated", raised inside lpips
        warnings.simplefilter("ignore", UserWarning)
        model = lpips_lib.LPIPS(net=net, pnet_rand=True, verbose=False)
    source = torch.load(trunk_path, map_location="cpu", weights_only=True)
    trunk = {key: source[re.sub(r"^slice\d+\.", "features.", key)] for key in model.net.state_dict()}
    model.net.load_state_dict(trunk)
    return model.eval().requires_grad_(False)


def load_lpips(net: str = "alex", weights_dir: str | Path | None = None) -> nn.Module:
    """The LPIPS network (v0.1, frozen, eval mode; also usable as a training loss), or Unavailable."""
    if net not in _LPIPS_TRUNKS:
        raise UserError(f"LPIPS net {net!r} unknown; choose one of {sorted(_LPIPS_TRUNKS)}")
    import torchvision.models

    url = getattr(torchvision.models, _LPIPS_TRUNKS[net]).IMAGENET1K_V1.url
    path = find_weights(url.rsplit("/", 1)[-1], url, f"LPIPS ({net})", weights_dir)
    return _lpips_model(net, str(path))
