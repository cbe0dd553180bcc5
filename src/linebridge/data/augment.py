"""Reference making on batched tensors, on whatever device the batch lives on.

The training reference is the target after a thin-plate-spline warp and a colour
jitter, so the model must find colours by meaning rather than copy them pixel for
pixel; `jitter_pair` recolours a target and its reference source alike.  All draw from
the global torch RNG: training seeds it and checkpoints its state, so a resumed run makes
the same references, and one seed gives the same bytes.
Images are in [-1, 1] here; kornia wants [0, 1], so we convert around its calls.
"""

from __future__ import annotations

from collections.abc import Mapping

import kornia.augmentation as KA
import numpy as np
import torch
from torch import Tensor

JITTER_KEYS = ("brightness", "contrast", "saturation", "hue")
WARP_CHUNK = 64  # images per TPS call in `warp_all`; fixed, because the draws depend on it


def warp(gt: Tensor, tps_scale: float) -> Tensor:
    """A random TPS warp of each image of `gt` [B,3,H,W] in [-1, 1] (no colour change).

    The five control points move by U(-tps_scale, tps_scale) in normalised coordinates.
    Pixels pulled in from outside the frame repeat the border (`padding_mode='border'`):
    white stays white on OpenMoji, instead of the black wedges zero padding would add.
    """
    if tps_scale <= 0:
        return gt.clone()
    tps = KA.RandomThinPlateSpline(scale=tps_scale, padding_mode="border", p=1.0)
    return _from01(tps(_to01(gt)))


def warp_all(images: list[np.ndarray], tps_scale: float, seed: int) -> list[np.ndarray]:
    """TPS-warp uint8 RGB images with a private, seeded torch RNG (global state untouched): the fixed references.

    In float64, so the bytes are the same on every CPU: in float32 the spline's solve (MKL, which picks its
    kernels by the CPU's instruction set) moves some pixels across a rounding edge, and a clone on another
    machine would prepare other references and have to retrain every run.
    """
    out: list[np.ndarray] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(images), WARP_CHUNK):
            batch = torch.from_numpy(np.stack(images[start : start + WARP_CHUNK])).permute(0, 3, 1, 2)
            warped = warp(batch.double() / 127.5 - 1.0, tps_scale)
            out.extend(((warped + 1.0) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy())
    return out


def make_reference(gt: Tensor, use_tps: bool, tps_scale: float, jitter: Mapping[str, float] | None = None) -> Tensor:
    """The training reference of each target in `gt` [B,3,H,W] in [-1, 1].

    `use_tps=False` (ablations A0–A2) keeps the geometry and only jitters colour.
    `jitter` (augment.reference_jitter) holds kornia `ColorJiggle` strengths for brightness,
    contrast, saturation and hue (all zero or None: no jitter).
    """
    ref = warp(gt, tps_scale) if use_tps else gt
    jiggle = _color_jiggle(jitter)
    if jiggle is not None:
        ref = _from01(jiggle(_to01(ref)))
    return ref.clamp(-1.0, 1.0)


def jitter_pair(target: Tensor, source: Tensor, jitter: Mapping[str, float]) -> tuple[Tensor, Tensor]:
    """`target` and `source` [B,3,H,W] in [-1, 1] under one colour jitter per item (the same draw for both).

    With the target recoloured like its reference, the line art no longer tells the colours:
    the reference is the only place to read them from, which is what transfer needs.
    All strengths zero: both returned unchanged, with no draw.
    """
    jiggle = _color_jiggle(jitter)
    if jiggle is None:
        return target, source
    params = jiggle.forward_parameters(target.shape)
    return _from01(jiggle(_to01(target), params=params)), _from01(jiggle(_to01(source), params=params))


def _color_jiggle(jitter: Mapping[str, float] | None) -> KA.ColorJiggle | None:
    """kornia's ColorJiggle at the `jitter` strengths (missing keys 0), always applied; None if all are 0."""
    strengths = {key: float((jitter or {}).get(key, 0.0)) for key in JITTER_KEYS}
    return KA.ColorJiggle(**strengths, p=1.0) if any(strengths.values()) else None


def _to01(x: Tensor) -> Tensor:
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def _from01(x: Tensor) -> Tensor:
    return x.clamp(0.0, 1.0) * 2.0 - 1.0
