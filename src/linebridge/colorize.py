"""`linebridge colorize LINE.png --ref REF.png -o OUT.png`: your own drawing, coloured by the released weights
of the study's method (weights/linebridge.safetensors) or by any checkpoint given with `--checkpoint`.

Any size and mode: the line art (any PIL mode: converted to L; alpha flattened on white)
is padded with white to a square, resized to the model's image size, coloured, and the
output is resized back to the line art's aspect and cropped like it. The reference is
resized to the model's size (its layout need not match the line art).

Large drawings stay within bounded memory: a file's header is checked against a pixel
limit before any pixel is decoded (a decompression bomb is refused with a message, never
a traceback); JPEGs decode at 1/2 to 1/8 scale where that still covers the working size;
every input is shrunk at once to WORK_SCALE × the model's size; and the output is written
with its longer side at most MAX_OUTPUT_SIDE unless `--max-output-side` asks for more. The
model colours at its own size (32² by default, 256² in the paper profile), so a bigger
output is smoother, not more detailed.
"""

from __future__ import annotations

import argparse
import math
import re
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from linebridge.core.config import RELEASED, Config, UserError, repo_root
from linebridge.core.io import save_with

if TYPE_CHECKING:
    from linebridge.inference import Colorizer, Sampler

MAX_PIXELS = 100_000_000  # colorize's limit on a file's width × height (header); --max-megapixels raises it
MAX_OUTPUT_SIDE = 1024  # default longer side of the written image (smaller drawings keep their size)
WORK_SCALE = 4  # inputs are shrunk to at most this × the model's size a side before anything else
RAISE_HINT = "or raise the limit with --max-megapixels N"
# Image.MAX_IMAGE_PIXELS and the warnings filter are process-wide; the demo decodes in several threads.
_PIL_LIMIT = threading.Lock()


class Decoded(NamedTuple):
    image: Image.Image  # 'L' or 'RGB', longer side at most the side asked for
    size: tuple[int, int]  # the file's own width and height


def too_large(path: Path, pixels: int | None, limit: int, hint: str) -> UserError:
    """The error for a file past the pixel limit: its name, its size, the limit and what to do."""
    size = f"{pixels / 1e6:.1f} megapixels" if pixels else "more pixels than the limit"
    return UserError(
        f"{path}: {size}, past the limit of {limit / 1e6:g} megapixels; downscale it first "
        f"(colouring works at a few hundred pixels a side at most, so no detail is lost), {hint}"
    )


def _pixels_in(err: Exception) -> int | None:
    """The pixel count in PIL's DecompressionBomb message ("Image size (N pixels) exceeds ..."), if it says one."""
    found = re.search(r"\((\d+) pixels\)", str(err))
    return int(found.group(1)) if found else None


def shrink(image: Image.Image, side: int) -> Image.Image:
    """`image` with its longer side at most `side` (aspect kept, never enlarged), in a mode PIL resizes smoothly."""
    from linebridge.data.folders import to_rgb

    if image.mode == "1":
        image = image.convert("L")
    elif image.mode in ("P", "PA"):  # palettes resize by nearest neighbour only: thin strokes would vanish
        image = to_rgb(image)
    elif image.mode.startswith("I;16"):
        image = image.convert("I")
    w, h = image.size
    if max(w, h) <= side:
        return image
    scale = side / max(w, h)
    target = (max(1, round(w * scale)), max(1, round(h * scale)))
    return image.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)


def read_image(path: Path, mode: str, side: int, max_pixels: int = MAX_PIXELS, hint: str = RAISE_HINT) -> Decoded:
    """Open any common image file as `mode` ('L' or 'RGB'), alpha flattened on white, longer side at most `side`.

    Past `max_pixels` (width × height, read from the header before any decoding) a UserError
    names the file, its size and the limit, followed by `hint`. PIL's own bomb check runs at
    the same limit, so a file PIL refuses gets the same message.
    """
    from linebridge.data.folders import to_rgb

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    with _PIL_LIMIT, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # PIL warns past the limit: refuse instead
        Image.MAX_IMAGE_PIXELS = max_pixels  # PIL raises past twice this, inside Image.open
        try:
            with Image.open(path) as image:
                size = image.size
                if size[0] * size[1] > max_pixels:  # PIL refused it above already; the limit is ours to keep
                    raise Image.DecompressionBombError(f"Image size ({size[0] * size[1]} pixels)")
                scale = min(1.0, side / max(size))
                # JPEG only (a no-op elsewhere): decode at 1/2..1/8 scale, never below the working size
                image.draft(
                    "L" if mode == "L" and image.mode == "RGB" else None,
                    (math.ceil(size[0] * scale), math.ceil(size[1] * scale)),
                )
                image.load()
                small = shrink(image, side)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise too_large(path, _pixels_in(err), max_pixels, hint) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise UserError(f"{path}: truncated or corrupt image ({err}); re-export the file or delete it") from None
    rgb = to_rgb(small)
    return Decoded(rgb if mode == "RGB" else rgb.convert("L"), size)


def output_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """`size` scaled down so its longer side is at most `max_side` (None: unchanged); never enlarged."""
    w, h = size
    if max_side is None or max(w, h) <= max_side:
        return size
    scale = max_side / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


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


def from_model(
    out: Tensor, side: int, box: tuple[int, int, int, int], size: tuple[int, int] | None = None
) -> Image.Image:
    """A model-size image [1,3,s,s] in [-1, 1] as the part `box` of a padded square of `side` px, at `size`.

    `size` defaults to the box's own size. Bicubic straight from the model's pixels to the
    box: no padded square at full size is ever made, so memory is the output's alone.
    """
    from torchvision.transforms.functional import to_pil_image

    small = to_pil_image(((out[0] + 1) / 2).clamp(0, 1))
    k = small.size[0] / side
    size = size or (box[2] - box[0], box[3] - box[1])
    return small.resize(size, Image.Resampling.BICUBIC, box=tuple(v * k for v in box))


def colorize_image(
    fn: Colorizer,
    size: int,
    line: Image.Image,
    ref: Image.Image | None,
    seed: int = 0,
    out_size: tuple[int, int] | None = None,
) -> Image.Image:
    """Colour one line art ('L', any size) with `fn` (from `load_colorizer`) at model size `size`.

    RGB at `out_size` (default: the line art's size). Inputs larger than WORK_SCALE × `size`
    a side are shrunk to that first; `read_image` has usually done so already.
    """
    work = shrink(line, WORK_SCALE * size)
    padded, box = pad_square(work)
    ref_in = to_tensor(shrink(ref, WORK_SCALE * size), size) if ref is not None else None
    out = fn(to_tensor(padded, size), ref_in, seed)
    return from_model(out, padded.size[0], box, out_size or line.size)


def colorize_file(
    line_path: Path,
    ref_path: Path | None,
    checkpoint: Path,
    out_path: Path,
    sampler: Sampler | None = None,
    seed: int = 0,
    max_output_side: int | None = MAX_OUTPUT_SIDE,
    max_pixels: int = MAX_PIXELS,
) -> Path:
    """Colour the line art at `line_path` into `out_path`, its longer side at most `max_output_side` (None: the
    line art's own size); files past `max_pixels` are refused. Sampler settings left None are the checkpoint's own."""
    from linebridge.inference import load_colorizer

    check_output(out_path)
    fn, cfg = load_colorizer(checkpoint, sampler)
    work = WORK_SCALE * cfg["data"]["image_size"]
    line = read_image(line_path, "L", work, max_pixels)
    if needs_reference(cfg) and ref_path is None:
        raise UserError(f"{checkpoint}: this model colours from a reference; pass --ref REF.png")
    ref = read_image(ref_path, "RGB", work, max_pixels).image if ref_path else None
    out_size = output_size(line.size, max_output_side)
    image = colorize_image(fn, cfg["data"]["image_size"], line.image, ref, seed, out_size)
    return save_with(out_path, image.save)


def output_side(text: str) -> int | None:
    """--max-output-side: a positive number of pixels, or `full` (None: the line art's own size)."""
    if text == "full":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of pixels (e.g. 2048) or 'full'")
    return value


def megapixels(text: str) -> int:
    """--max-megapixels: a positive number (of millions of pixels), returned as pixels."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive number of megapixels (e.g. 250)")
    return round(value * 1e6)


def released_weights() -> Path:
    """The committed weights of the study's method, or a UserError saying how to get a checkpoint."""
    path = repo_root() / RELEASED
    if not path.is_file():
        raise UserError(
            f"no --checkpoint given and no released weights at {path}: restore them (`git checkout -- {RELEASED}`) "
            "or train a model (`dvc repro train@A5-s0`) and pass --checkpoint outputs/train/A5-s0/best.pt"
        )
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("line", type=Path, help="line-art image (dark lines on light background; any size and mode)")
    parser.add_argument(
        "--ref", type=Path, default=None, help="colour reference image (required unless the model is A0 or Pix2Pix)"
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help=f"a linebridge checkpoint, e.g. outputs/train/A5-s0/best.pt (default: the released weights of the "
        f"study's method, {RELEASED})",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="output PNG")
    parser.add_argument(
        "--max-output-side",
        type=output_side,
        default=MAX_OUTPUT_SIDE,
        metavar="{N,full}",
        help="longer side of the output in pixels, or 'full' for the line art's own size; a smaller drawing keeps "
        "its size (the model colours at its own small size: more pixels are smoother, not more detailed)",
    )
    parser.add_argument(
        "--max-megapixels",
        type=megapixels,
        default=f"{MAX_PIXELS / 1e6:g}",
        metavar="N",
        help="refuse line art or references of more than N million pixels (width × height): decoding a PNG needs "
        "its full size in memory",
    )
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
    checkpoint = args.checkpoint or released_weights()
    out = colorize_file(
        args.line, args.ref, checkpoint, args.output, sampler, args.seed, args.max_output_side, args.max_megapixels
    )
    print(f"wrote {out}")
    return 0
