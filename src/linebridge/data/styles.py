"""Line art in other styles: thicker strokes, dark fills inked black, lines extracted from the colour image.

A user's drawing rarely has OpenMoji's thin strokes of one width. Each style *family* is one way line art
differs, with one transform on batched tensors [B, 1, H, W] in [-1, 1] (dark lines at −1 on white at 1):

    width    strokes thickened (a grey-scale erosion of the page: every dark stroke grows by k − 1 pixels)
    fill     areas whose colour is dark (hair, clothes, shadows) inked black, as many artists fill them
    extract  lines taken from the colour image by XDoG, a weight-free extractor, instead of the artist's
    blur     strokes softened and re-thresholded: thinner, thicker or broken depending on the threshold

Two uses. Training (`augment.line_styles`): `restyle` gives each picture, with probability `share`, one family
drawn from `families`; the draws come from the global RNG, so runs replay on resume. Evaluation: `prepare`
re-draws the val and test line art once per *unseen-style protocol* (`STYLE_PROTOCOLS`), and the report scores
every model on them. A protocol measures an unseen style only for a model trained without its family
(`PROTOCOL_FAMILY`); the report says which families each run saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from PIL import Image

FAMILIES = ("width", "fill", "extract", "blur")
# The unseen-style protocols and the family each belongs to. `thick` is drawn from the SVG itself (strokes
# STROKE_SCALE × as wide, rendered at the study's size), not by `thicken`: the same family, another hand.
STYLE_PROTOCOLS = ("thick", "filled", "extracted")
PROTOCOL_FAMILY = {"thick": "width", "filled": "fill", "extracted": "extract"}
STYLED = ("self", "cross_gt")  # the protocols evaluated again in each unseen style (they have a ground truth)
STROKE_SCALE = 2.5  # thick: OpenMoji strokes are 2 units of a 72-unit page, ~0.9 px at 32²; 2.5 × gives ~2.2 px
DARK = 0.2  # fill: luminance (0–1) below which an area is inked; OpenMoji's darkest skin tone is 0.31
XDOG_SIGMA = 0.4  # extracted: XDoG's σ in pixels at 32² (ColourFolder draws it from 0.3–0.5); scaled with the size
BASE_SIZE = 32  # pixel sizes here (σ, stroke growth) are for 32² images and scale with the image side


def luminance(colour: Tensor) -> Tensor:
    """[B, 3, H, W] in [-1, 1] → [B, 1, H, W] in [0, 1] (Rec. 601 weights, as PIL's L mode)."""
    r, g, b = ((colour + 1) / 2).unbind(1)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def thicken(line: Tensor, k: int) -> Tensor:
    """Every dark stroke k − 1 pixels wider: the page's grey-scale erosion with a k × k square."""
    import kornia

    if k <= 1:
        return line
    return kornia.morphology.erosion(line, torch.ones(k, k, device=line.device, dtype=line.dtype))


def fill_dark(line: Tensor, colour: Tensor, dark: float = DARK) -> Tensor:
    """The line art with every pixel whose colour is darker than `dark` (luminance) inked black."""
    return torch.where(luminance(colour) < dark, torch.full_like(line, -1.0), line)


def extract(colour: Tensor, sigma: float = XDOG_SIGMA) -> Tensor:
    """Lines found in the colour image by XDoG (no weights): region borders and dark areas, not the artist's.
    `sigma` is in pixels of a 32² image (BASE_SIZE) and scales with the image's side."""
    from linebridge.data.folders import xdog

    return xdog(luminance(colour), sigma * colour.shape[-1] / BASE_SIZE) * 2 - 1


def blur_threshold(line: Tensor, sigma: float, level: float) -> Tensor:
    """Strokes blurred by a Gaussian of `sigma` px, then black where the blur is below `level` (in [-1, 1])."""
    import kornia

    size = 2 * int(3 * sigma + 0.5) + 1
    soft = kornia.filters.gaussian_blur2d(line, (size, size), (sigma, sigma), border_type="replicate")
    return torch.where(soft < level, -torch.ones_like(line), torch.ones_like(line))


def restyle(line: Tensor, colour: Tensor, share: float, families: Sequence[str]) -> Tensor:
    """Training augmentation: each picture, with probability `share`, in one of `families` drawn uniformly.

    Every family is computed for the whole batch (cheap at the study's sizes) and each picture picks its own;
    the strengths are drawn per batch: strokes 1 or 2 px wider, fill threshold in [0.1, 0.25], XDoG σ in
    [0.3, 0.5] px, blur σ in [0.5, 1] px with a threshold in [−0.5, 0.5] (pixel sizes at 32², scaled with the
    side). No draw at all when `share` is 0 or `families` is empty, so runs without it keep their random stream.
    """
    if share <= 0 or not families:
        return line
    n, scale = line.shape[0], line.shape[-1] / BASE_SIZE
    chosen = torch.randint(0, len(families), (n,))
    apply = torch.rand(n) < share
    k = 1 + round(int(torch.randint(1, 3, ()).item()) * scale)  # 2 or 3 px wider at 32²
    dark, sigma = 0.1 + 0.15 * torch.rand(()).item(), 0.3 + 0.2 * torch.rand(()).item()
    blur_sigma, level = (0.5 + 0.5 * torch.rand(()).item()) * scale, torch.rand(()).item() - 0.5
    styled = {
        "width": lambda: thicken(line, k),
        "fill": lambda: fill_dark(line, colour, dark),
        "extract": lambda: extract(colour, sigma),
        "blur": lambda: blur_threshold(line, blur_sigma, level),
    }
    out = line
    for i, family in enumerate(families):
        pick = (apply & (chosen == i)).to(line.device)
        if bool(pick.any()):
            out = torch.where(pick[:, None, None, None], styled[family](), out)
    return out


def restyled(svg: str, size: int, colour: Image.Image, line: Image.Image) -> dict[str, Image.Image]:
    """The line art of one val/test picture in each unseen style (`STYLE_PROTOCOLS`; mode L, dark lines on white):
    what `prepare` writes for the unseen-style protocols."""
    from torchvision.transforms.functional import pil_to_tensor, to_pil_image

    from linebridge.data.folders import to_float
    from linebridge.data.openmoji import render_lineart

    rgb, lines = (to_float(pil_to_tensor(image))[None] for image in (colour, line))

    def image(t: Tensor) -> Image.Image:
        return to_pil_image(((t[0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8), "L")

    return {
        "thick": render_lineart(svg, size, STROKE_SCALE),
        "filled": image(fill_dark(lines, rgb)),
        "extracted": image(extract(rgb)),
    }
