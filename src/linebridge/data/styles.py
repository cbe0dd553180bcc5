"""Line art in other styles: thicker strokes, dark fills inked black, lines extracted from the colour image.

A user's drawing rarely has OpenMoji's thin strokes of one width. Each style *family* is one way line art
differs, with one transform on batched tensors [B, 1, H, W] in [-1, 1] (dark lines at −1 on white at 1):

    width    strokes drawn wider and solid, as a renderer draws a wider stroke (grown on a finer page)
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
FINE = 4  # width: strokes grow on a page FINE × finer, so in steps of 1/FINE px
STROKE_LEVEL = 0.3  # width: a fine pixel at least 35 % inked (below 0.3 in [-1, 1]) is stroke
GROWTHS = (0.25, 0.5, 0.75, 1.0)  # width: px each side at 32²; a 1-px stroke becomes 2–3.5 px (thick: ~2.2 px)


def luminance(colour: Tensor) -> Tensor:
    """[B, 3, H, W] in [-1, 1] → [B, 1, H, W] in [0, 1] (Rec. 601 weights, as PIL's L mode)."""
    r, g, b = ((colour + 1) / 2).unbind(1)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def thicken(line: Tensor, grow: float) -> Tensor:
    """Every stroke `grow` pixels wider on each side, and solid, as a renderer draws a wider stroke.

    At 32² OpenMoji's strokes are narrower than a pixel, so they are grey; growing the grey page by erosion
    gives wide grey bands, while a wider stroke renders black with anti-aliased edges. So the page is
    up-sampled FINE × (bilinear), its pixels darker than STROKE_LEVEL taken as stroke, the stroke grown by
    `grow` px (a max-pool on the fine page) and averaged back to the page's size. `grow` < 1/(2·FINE) px
    returns the page unchanged.
    """
    import torch.nn.functional as F

    r = round(grow * FINE)
    if r <= 0:
        return line
    fine = F.interpolate(line, scale_factor=FINE, mode="bilinear", align_corners=False)
    stroke = F.max_pool2d((fine < STROKE_LEVEL).to(line.dtype), 2 * r + 1, stride=1, padding=r)
    return 1 - 2 * F.avg_pool2d(stroke, FINE)


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
    the strengths are drawn per batch: strokes grown by one of GROWTHS px a side, fill threshold in [0.1, 0.25],
    XDoG σ in [0.3, 0.5] px, blur σ in [0.5, 1] px with a threshold in [−0.5, 0.5] (pixel sizes at 32², scaled
    with the side). No draw at all when `share` is 0 or `families` is empty: runs without it keep their stream.
    """
    if share <= 0 or not families:
        return line
    n, scale = line.shape[0], line.shape[-1] / BASE_SIZE
    chosen = torch.randint(0, len(families), (n,))
    apply = torch.rand(n) < share
    grow = GROWTHS[int(torch.randint(0, len(GROWTHS), ()).item())] * scale
    dark, sigma = 0.1 + 0.15 * torch.rand(()).item(), 0.3 + 0.2 * torch.rand(()).item()
    blur_sigma, level = (0.5 + 0.5 * torch.rand(()).item()) * scale, torch.rand(()).item() - 0.5
    styled = {
        "width": lambda: thicken(line, grow),
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
