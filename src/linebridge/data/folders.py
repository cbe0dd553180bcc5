"""Your own images: folders of colour images (line art extracted) or of aligned pairs, and the helpers that read
any image file safely.

Bad input is answered with a `UserError` that names the file and the fix.  Images in other modes are converted,
not rejected: alpha (RGBA, LA, P with transparency) is flattened on white, CMYK/L/1 go to RGB, 16-bit (I;16, I)
is scaled to 8 bits (÷257). Images are never upscaled: one smaller than `image_size` is an error; larger ones
are centre-cropped to a square and resized with Lanczos.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import kornia.filters
import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor

from linebridge.core.config import ConfigError, UserError
from linebridge.data.splits import (
    SPLITS,
    key_fraction,
    parse_fractions,
    split_of,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
EXTRACTORS = ("xdog", "find_edges")
PAIR_LAYOUTS = ("separate", "side_by_side")
XDOG_SIGMAS = (0.3, 0.4, 0.5)
Item = dict[str, Any]  # GT, lineart, ref (float tensors in [-1, 1]) and id


# ---------------------------------------------------------------- image helpers


def to_float(image: Tensor) -> Tensor:
    """uint8 [C,H,W] in 0..255 → float32 in [-1, 1]."""
    return image.float() / 127.5 - 1.0


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode → RGB: alpha flattened on white, 16-bit scaled down to 8 bits."""
    if image.mode == "I" or image.mode.startswith("I;16"):
        wide = np.asarray(image).astype(np.float64)
        image = Image.fromarray(np.clip(np.round(wide / 257.0), 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La", "P") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    return image.convert("RGB")


def probe(path: Path, min_size: int) -> tuple[int, int]:
    """Check a file's header (cheap): it exists, is non-empty, is an image, is big enough."""
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file (0 bytes); delete it or replace it with the real image")
    try:
        with Image.open(path) as image:
            size = image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UserError(
            f"{path}: not an image that PIL can read ({err}); delete it or move it out of the folder"
        ) from None
    if min(size) < min_size:
        raise UserError(
            f"{path}: {size[0]}×{size[1]} is smaller than data.image_size={min_size}; images are never "
            "upscaled: remove it or lower data.image_size"
        )
    return size


def load_rgb(path: Path) -> Image.Image:
    """Decode a whole image as RGB; truncated or corrupt pixel data is a UserError naming the file."""
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UserError(f"{path}: truncated or corrupt image ({err}); re-export the file or delete it") from None


def fit(image: Image.Image, size: int) -> Image.Image:
    """Centre-crop to a square and resize to `size` (Lanczos)."""
    return ImageOps.fit(image, (size, size), method=Image.Resampling.LANCZOS)


def image_files(root: Path) -> list[Path]:
    """Image files under `root` (recursive, hidden ones skipped), sorted; empty → UserError."""
    if not root.is_dir():
        raise UserError(f"{root}: no such folder; set data.folder_root to a folder of images")
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        other = f" (found {len(files)} other files)" if files else ""
        raise UserError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}){other}; put images there or fix the path")
    return images


def split_by_name(root: Path, names: Sequence[str], split: str, fractions: Sequence[float], what: str) -> list[int]:
    """Indices of `names` (the `what` under `root`) that fall in `split`, by a hash of each name
    (independent of list order); an empty split is an error."""
    if split not in SPLITS:
        raise UserError(f"split {split!r}: use one of {', '.join(SPLITS)}")
    parsed = parse_fractions(fractions)
    keep = [i for i, name in enumerate(names) if split_of(name, parsed) == split]
    if not keep:
        raise UserError(f"{root}: no {what} fall in the {split} split ({len(names)} in all); add {what}")
    return keep


# ---------------------------------------------------------------- line-art extractors


def xdog(gray: Tensor, sigma: float, k: float = 4.5, p: float = 19.0, eps: float = 0.01, phi: float = 1e9) -> Tensor:
    """XDoG line art (Winnemöller et al. 2012) of `gray` [B,1,H,W] in [0, 1] → [0, 1], lines dark.

    S = (1 + p)·G_σ(I) − p·G_kσ(I);  out = 1 where S ≥ ε, else 1 + tanh(φ·(S − ε)).
    With φ = 1e9 the soft threshold is a hard one: binary black lines on white; flat
    areas darker than ε also turn black, like inked fills.
    """

    def blur(s: float) -> Tensor:
        size = 2 * int(np.ceil(3 * s)) + 1
        return kornia.filters.gaussian_blur2d(gray, (size, size), (s, s), border_type="replicate")

    sharp = (1 + p) * blur(sigma) - p * blur(k * sigma)
    return torch.where(sharp >= eps, torch.ones_like(sharp), 1 + torch.tanh(phi * (sharp - eps)))


def find_edges(image: Image.Image) -> Image.Image:
    """The simplest extractor: PIL FIND_EDGES on luminance, inverted (thin grey lines on white)."""
    return ImageOps.invert(image.convert("L").filter(ImageFilter.FIND_EDGES))


# ---------------------------------------------------------------- your own folders


class ColourFolder(Dataset):
    """Colour images from a folder (recursive); line art extracted on the fly.

    `extractor="xdog"` (default): `xdog` on luminance after resizing, with k = 4.5,
    p = 19, ε = 0.01, φ = 1e9 and σ from {0.3, 0.4, 0.5}: drawn afresh from the global
    torch RNG at every access in the train split (a line-width augmentation), fixed
    per image in val/test (chosen by a hash of `seed` and the file name).
    `extractor="find_edges"`: PIL FIND_EDGES + invert (`find_edges`), a second, unseen line
    style for generalisation tests.  The split is by a hash of the path relative to
    `root`, in `fractions`.  Headers are checked here; pixel data when an item is read.
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int,
        extractor: str = "xdog",
        split: str = "train",
        seed: int = 0,
        fractions: Sequence[float] = (0.8, 0.1, 0.1),
    ) -> None:
        if extractor not in EXTRACTORS:
            raise ConfigError(f"data.extractor={extractor!r}: use one of {', '.join(EXTRACTORS)}")
        self.root, self.image_size, self.extractor = Path(root), image_size, extractor
        self.split, self.seed = split, seed
        files = image_files(self.root)
        names = [p.relative_to(self.root).as_posix() for p in files]
        keep = split_by_name(self.root, names, split, fractions, "images")
        self.files = [files[i] for i in keep]
        self.ids = [names[i] for i in keep]
        for path in self.files:
            probe(path, image_size)

    def __len__(self) -> int:
        return len(self.files)

    def sigma(self, index: int) -> float:
        """XDoG σ of this access: random when training, fixed per image otherwise."""
        if self.split == "train":
            return XDOG_SIGMAS[int(torch.randint(len(XDOG_SIGMAS), ()))]
        return XDOG_SIGMAS[int(key_fraction(f"{self.seed}:{self.ids[index]}") * len(XDOG_SIGMAS))]

    def __getitem__(self, index: int) -> Item:
        colour = fit(load_rgb(self.files[index]), self.image_size)
        if self.extractor == "xdog":
            gray = pil_to_tensor(colour.convert("L")).float()[None] / 255.0
            lineart = xdog(gray, self.sigma(index))[0] * 2.0 - 1.0
        else:
            lineart = to_float(pil_to_tensor(find_edges(colour)))
        gt = to_float(pil_to_tensor(colour))
        return {"GT": gt, "lineart": lineart, "ref": gt, "id": self.ids[index]}


class PairFolder(Dataset):
    """Aligned (sketch, colour) pairs.

    layout="separate": `root/colour/` and `root/sketch/` with matching names (the
    suffix may differ, subfolders allowed), and each pair the same size.
    layout="side_by_side": each image holds colour | sketch (colour on the left half).
    The sketch is read as luminance.  Split by a hash of the name, as in ColourFolder.
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int,
        layout: str = "separate",
        split: str = "train",
        fractions: Sequence[float] = (0.8, 0.1, 0.1),
    ) -> None:
        if layout not in PAIR_LAYOUTS:
            raise ConfigError(f"data.pair_layout={layout!r}: use one of {', '.join(PAIR_LAYOUTS)}")
        self.root, self.image_size, self.layout = Path(root), image_size, layout
        if layout == "separate":
            colour, sketch = self._stems(self.root / "colour"), self._stems(self.root / "sketch")
            unmatched = sorted(set(colour) ^ set(sketch))
            if unmatched:
                shown = ", ".join(f"{s} (only in {'colour' if s in colour else 'sketch'}/)" for s in unmatched[:20])
                more = f" and {len(unmatched) - 20} more" if len(unmatched) > 20 else ""
                raise UserError(
                    f"{self.root}: {len(unmatched)} unmatched pair names: {shown}{more}; "
                    "every colour/X needs a sketch/X (any image suffix)"
                )
            names = sorted(colour)
            pairs = [(colour[n], sketch[n]) for n in names]
        else:
            files = image_files(self.root)
            names = [p.relative_to(self.root).with_suffix("").as_posix() for p in files]
            pairs = [(p, p) for p in files]
        keep = split_by_name(self.root, names, split, fractions, "pairs")
        self.ids = [names[i] for i in keep]
        self.pairs = [pairs[i] for i in keep]
        for colour_path, sketch_path in self.pairs:
            self._check(colour_path, sketch_path)

    @staticmethod
    def _stems(folder: Path) -> dict[str, Path]:
        if not folder.is_dir():
            raise UserError(
                f"{folder}: missing; layout 'separate' needs colour/ and sketch/ subfolders "
                "(or set data.pair_layout: side_by_side)"
            )
        return {p.relative_to(folder).with_suffix("").as_posix(): p for p in image_files(folder)}

    def _check(self, colour_path: Path, sketch_path: Path) -> None:
        if self.layout == "side_by_side":
            w, h = probe(colour_path, 1)
            if min(w // 2, h) < self.image_size:
                raise UserError(
                    f"{colour_path}: each half is {w // 2}×{h}, smaller than data.image_size="
                    f"{self.image_size}; remove it or lower data.image_size"
                )
            return
        size_c, size_s = probe(colour_path, self.image_size), probe(sketch_path, self.image_size)
        if size_c != size_s:
            raise UserError(
                f"{colour_path} is {size_c[0]}×{size_c[1]} but {sketch_path} is {size_s[0]}×{size_s[1]}; "
                "aligned pairs must have the same size"
            )

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Item:
        colour_path, sketch_path = self.pairs[index]
        if self.layout == "side_by_side":
            both = load_rgb(colour_path)
            half = both.width // 2
            colour, sketch = both.crop((0, 0, half, both.height)), both.crop((half, 0, 2 * half, both.height))
        else:
            colour, sketch = load_rgb(colour_path), load_rgb(sketch_path)
        gt = to_float(pil_to_tensor(fit(colour, self.image_size)))
        lineart = to_float(pil_to_tensor(fit(sketch, self.image_size).convert("L")))
        return {"GT": gt, "lineart": lineart, "ref": gt, "id": self.ids[index]}
