"""`linebridge colorize LINE.png --ref REF.png --checkpoint CKPT -o OUT.png`: your own drawing.

Any size and mode: the line art (any PIL mode: converted to L; alpha flattened on white)
is padded with white to a square, resized to the model's image size, coloured, and the
output is resized back to the padded square and cropped to the original size. The
reference is resized to the model's size (its layout need not match the line art).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import Tensor

from linebridge.config import Config, UserError
from linebridge.io import save_with

if TYPE_CHECKING:
    from linebridge.inference import Colorizer, Sampler


def read_image(path: Path, mode: str) -> Image.Image:
    """Open any common image file as `mode` ('L' or 'RGB'), alpha flattened on white."""
    from linebridge.data.datasets import load_rgb

    rgb = load_rgb(Path(path))
    return rgb if mode == "RGB" else rgb.convert("L")


def pad_square(image: Image.Image) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Pad with white to a square; returns the image and the box of the original inside it."""
    w, h = image.size
    side = max(w, h)
    left, top = (side - w) // 2, (side - h) // 2
    fill = 255 if image.mode == "L" else (255, 255, 255)
    return ImageOps.expand(image, (left, top, side - w - left, side - h - top), fill=fill), (
        left,
        top,
        left + w,
        top + h,
    )


def to_tensor(image: Image.Image, size: int) -> torch.Tensor:
    from torchvision.transforms.functional import pil_to_tensor

    x = pil_to_tensor(image).float().unsqueeze(0) / 127.5 - 1
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(-1, 1)


def check_output(path: Path) -> Path:
    """A UserError unless `path` can take an image file: not a folder, and a suffix PIL can write."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"-o {path}: is a folder; give a file name such as {path / 'colour.png'}")
    if path.suffix.lower() not in Image.registered_extensions():
        raise UserError(f"-o {path}: unknown image type {path.suffix!r}; end the name with .png or .jpg")
    return path


def needs_reference(cfg: Config) -> bool:
    """Whether the checkpoint's model colours from a reference (all but A0 and Pix2Pix).

    Pix2Pix configs inherit model.reference from params.yaml, so the family decides first.
    """
    family = cfg["model"]["family"]
    return family == "scft" or (family == "bbdm" and cfg["model"]["reference"] != "none")


def from_model(out: Tensor, side: int, box: tuple[int, int, int, int]) -> Image.Image:
    """A model-size image [1,3,s,s] in [-1, 1] back at the line art's size: resized to its padded square, cropped."""
    from torchvision.transforms.functional import to_pil_image

    big = F.interpolate(out, size=(side, side), mode="bicubic", align_corners=False).clamp(-1, 1)
    return to_pil_image(((big[0] + 1) / 2).clamp(0, 1)).crop(box)


def colorize_image(fn: Colorizer, size: int, line: Image.Image, ref: Image.Image | None, seed: int = 0) -> Image.Image:
    """Colour one line art ('L', any size) with `fn` (from `load_colorizer`) at model size `size`; RGB, same size."""
    line_img, box = pad_square(line)
    out = fn(to_tensor(line_img, size), to_tensor(ref, size) if ref is not None else None, seed)
    return from_model(out, line_img.size[0], box)


def colorize_file(
    line_path: Path,
    ref_path: Path | None,
    checkpoint: Path,
    out_path: Path,
    sampler: Sampler | None = None,
    seed: int = 0,
) -> Path:
    """Colour the line art at `line_path` into `out_path`; sampler settings left None are the checkpoint's own."""
    from linebridge.inference import load_colorizer

    check_output(out_path)
    fn, cfg = load_colorizer(checkpoint, sampler)
    line = read_image(line_path, "L")
    if needs_reference(cfg) and ref_path is None:
        raise UserError(f"{checkpoint}: this model colours from a reference; pass --ref REF.png")
    ref = read_image(ref_path, "RGB") if ref_path else None
    image = colorize_image(fn, cfg["data"]["image_size"], line, ref, seed)
    return save_with(out_path, image.save)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("line", type=Path, help="line-art image (dark lines on light background; any size and mode)")
    parser.add_argument(
        "--ref", type=Path, default=None, help="colour reference image (required unless the model is A0 or Pix2Pix)"
    )
    parser.add_argument(
        "--checkpoint", type=Path, required=True, help="a linebridge checkpoint, e.g. outputs/train/A3/best.pt"
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="output PNG")
    parser.add_argument(
        "--steps", type=int, default=None, help="sampler steps (default: the checkpoint's eval.sample_step)"
    )
    parser.add_argument(
        "--deterministic",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="DDIM-style deterministic sampler, which ignores --eta (default: the checkpoint's eval.deterministic)",
    )
    parser.add_argument(
        "--eta",
        type=float,
        default=None,
        help="BBDM eta: scales the stochastic sampler's noise (default: the checkpoint's eval.eta)",
    )
    parser.add_argument("--seed", type=int, default=0, help="sampler seed")


def main(args: argparse.Namespace) -> int:
    from linebridge.inference import Sampler

    sampler = Sampler(args.steps, args.deterministic, args.eta)  # None: the checkpoint's eval.* (weights included)
    out = colorize_file(args.line, args.ref, args.checkpoint, args.output, sampler, args.seed)
    print(f"wrote {out}")
    return 0
