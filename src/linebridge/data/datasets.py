"""PyTorch datasets: prepared OpenMoji, the fixed test and val protocols, and the one a config names.

Every item is a dict of float32 tensors in [-1, 1] plus the item's `id` (str):

    GT       [3, H, W]  colour target
    lineart  [1, H, W]  dark lines ≈ -1 on white ≈ +1
    ref      [3, H, W]  colour reference

For training sets `ref` is the target itself: the training loop makes the real
reference on the device (`augment.make_reference`), batched.  The protocols
(`ProtocolDataset`, test or val) carry the fixed references that `prepare` saved.

Your own folders (`ColourFolder`, `PairFolder`) and the image helpers live in `folders`.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor

from linebridge.core.config import Config, ConfigError, UserError, repo_root
from linebridge.data.folders import ColourFolder, Item, PairFolder, to_float
from linebridge.data.openmoji import SKIN_TONES, tone_regions
from linebridge.data.splits import (
    PROTOCOL_SPLITS,
    PROTOCOLS,
    SPLITS,
    protocol_dir,
)
from linebridge.data.styles import STYLE_PROTOCOLS

PREPARE_HINT = "run `linebridge prepare` (or `dvc repro prepare`) first"


# ---------------------------------------------------------------- prepared OpenMoji


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        raise UserError(f"{path}: missing; {PREPARE_HINT}")
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _png(path: Path, mode: str) -> Tensor:
    try:
        with Image.open(path) as image:
            return pil_to_tensor(image.convert(mode))
    except FileNotFoundError:
        raise UserError(f"{path}: missing from the prepared data; {PREPARE_HINT} again") from None


class _InMemory(Dataset):
    """Images held as uint8 tensors (small, so loaded once); items converted to [-1, 1] on access."""

    ids: list[str]
    tensors: dict[str, Tensor]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Item:
        item: Item = {
            key: t[index].float() / 255.0 if key == "mask" else to_float(t[index]) for key, t in self.tensors.items()
        }
        item.setdefault("ref", item["GT"])
        item["id"] = self.ids[index]
        return item

    @property
    def image_size(self) -> int:
        return int(self.tensors["GT"].shape[-1])


class PreparedOpenMoji(_InMemory):
    """One split (train | val | test) of the prepared OpenMoji; `ref` is the target itself.

    Per item, beside `ids`: `groups`, the drawing it is a variant of, and `tones`, the
    single skin tone shared by everyone in the picture (a modifier 1F3FB..1F3FF, as
    prepare's `Emoji.tone` decides), else None (no person, or a mixed-tone couple).
    """

    def __init__(self, prepared_dir: str | Path, split: str) -> None:
        root = Path(prepared_dir)
        if split not in SPLITS:
            raise UserError(f"split {split!r}: use one of {', '.join(SPLITS)}")
        rows = [r for r in _read_csv(root / "manifest.csv") if r["split"] == split]
        if not rows:
            raise UserError(f"{root}: the {split} split is empty; raise data.limit_groups or {PREPARE_HINT}")
        self.ids = [r["id"] for r in rows]
        self.groups = [r["group"] for r in rows]
        self.tones: list[str | None] = [r["skin_tone"] if r["skin_tone"] in SKIN_TONES else None for r in rows]
        self.tensors = {
            "GT": torch.stack([_png(root / r["colour"], "RGB") for r in rows]),
            "lineart": torch.stack([_png(root / r["line"], "L") for r in rows]),
        }

    def tone_regions(self) -> Tensor:
        """[N,1,H,W] float 0/1: each picture's skin-tone region within this split (`openmoji.tone_regions`), else 0."""
        gt = self.tensors["GT"]
        out = torch.zeros(gt.shape[0], 1, *gt.shape[-2:])
        for i, mask in tone_regions(self.ids, self.tones, gt.permute(0, 2, 3, 1).numpy()).items():
            out[i, 0] = torch.from_numpy(mask)
        return out


class ProtocolDataset(_InMemory):
    """The fixed items of one protocol (self | cross_gt | cross_random) of a split (test | val), with the line
    art as drawn or, with `style`, re-drawn in one unseen style (`styles.STYLE_PROTOCOLS`).

    split="test" reads `protocols/<name>.csv`, split="val" reads `protocols/val/<name>.csv`:
    the same protocols over the val items, for choosing checkpoints without touching test.

    An item is `id` (cross_gt: `TARGET_rK`, the K-th reference for the target; else the target itself) with the
    line art and ground truth of `gt`. Items also carry `ref_id` (the emoji the reference was made from) and `mask`
    [1,H,W] float 0/1: the tone region for cross_gt (where ΔE is measured; a style's inked pixels left out), all
    ones for self and cross_random, so every protocol has the same keys; `line_thin`, the drawing's own line
    art (= `lineart` without a style), which the ground truth keeps: the metrics leave the lines of both out; and
    `line_all`, the darkest of the drawing's and every style's line art (what the `_common` metrics leave out).
    For cross_random `GT` is the item's own colour image, useful only for FID/SWD (the reference is another
    emoji, so there is no paired ground truth).
    """

    def __init__(self, prepared_dir: str | Path, protocol: str, split: str = "test", style: str | None = None) -> None:
        root = Path(prepared_dir)
        if protocol not in PROTOCOLS:
            raise UserError(f"protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")
        if style is not None and style not in STYLE_PROTOCOLS:
            raise UserError(f"line style {style!r}: use one of {', '.join(STYLE_PROTOCOLS)}")
        if split not in PROTOCOL_SPLITS:
            raise UserError(f"protocol split {split!r}: use one of {', '.join(PROTOCOL_SPLITS)}")
        folder = root / protocol_dir(split) / protocol
        table = folder.with_suffix(".csv")
        if split != "test" and not table.exists():  # prepared data from before the val protocols has none
            raise UserError(
                f"{table}: missing; re-run `linebridge prepare` (or `dvc repro prepare`): "
                f"prepared data made before the {split} protocols existed lacks them"
            )
        rows = _read_csv(table)
        if not rows:
            raise UserError(
                f"{root}: {split} protocol {protocol} has no items; raise data.limit_groups and {PREPARE_HINT}"
            )
        self.protocol, self.split = protocol, split
        self.ids = [r["id"] for r in rows]
        self.gt_ids = [r["gt"] for r in rows]
        self.ref_ids = [r["ref_source"] for r in rows]
        self.groups = [r["group"] for r in rows]  # the drawing each item is a variant of (for clustered statistics)
        self.ref_groups = [r["ref_group"] for r in rows]  # the drawing its reference comes from (crossed with groups)
        thin = torch.stack([_png(root / "line" / f"{r['gt']}.png", "L") for r in rows])
        lines = root / "styles" / style if style else root / "line"
        if style and not lines.is_dir():
            raise UserError(f"{lines}: missing; the prepared data predates the unseen-style protocols; {PREPARE_HINT}")
        styled = [d for d in (root / "styles" / s for s in STYLE_PROTOCOLS) if d.is_dir()]
        self.tensors = {
            "GT": torch.stack([_png(root / "colour" / f"{r['gt']}.png", "RGB") for r in rows]),
            "lineart": torch.stack([_png(lines / f"{r['gt']}.png", "L") for r in rows]) if style else thin,
            "line_thin": thin,
            # the lines of the drawing and of every style at once: the pixels left out of the `_common` metrics,
            # which score in-style and styled line art on the same pixels
            "line_all": torch.stack(
                [thin, *(torch.stack([_png(d / f"{r['gt']}.png", "L") for r in rows]) for d in styled)]
            ).amin(dim=0),
            "ref": torch.stack([_png(folder / "ref" / f"{r['id']}.png", "RGB") for r in rows]),
        }
        if protocol == "cross_gt":
            mask = torch.stack([_png(folder / "mask" / f"{r['id']}.png", "L") for r in rows])
            # what the style inks over the tone region is not the model's to colour: left out of the score
            self.tensors["mask"] = torch.where(self.tensors["lineart"] < 128, 0, mask) if style else mask
        else:
            self.tensors["mask"] = torch.full_like(self.tensors["lineart"], 255)

    def __getitem__(self, index: int) -> Item:
        item = super().__getitem__(index)
        item["ref_id"] = self.ref_ids[index]
        item["group"] = self.groups[index]
        return item


# ---------------------------------------------------------------- from the config


def prepared_info(prepared_dir: Path) -> dict[str, Any]:
    """The info.json that `prepare` wrote (sizes, counts), or a UserError saying to run it."""
    path = prepared_dir / "info.json"
    if not path.exists():
        raise UserError(f"{prepared_dir}: no prepared data; {PREPARE_HINT}")
    return json.loads(path.read_text())


def build_dataset(cfg: Config, split: str) -> Dataset:
    """The `split` (train | val | test) of the dataset `cfg['data']['dataset']` names.

    openmoji → PreparedOpenMoji (checks it was prepared at data.image_size);
    folder → ColourFolder(data.folder_root); pairs → PairFolder(data.folder_root).
    Relative paths are taken from the repository root.
    """
    data = cfg["data"]
    size = int(data["image_size"])
    kind = data["dataset"]
    if kind == "openmoji":
        prepared = repo_root() / data["prepared_dir"]
        info = prepared_info(prepared)
        if info["image_size"] != size:
            raise UserError(
                f"{prepared} was prepared at {info['image_size']} px but data.image_size={size}; "
                f"{PREPARE_HINT.replace('first', 'again')} with this size"
            )
        return PreparedOpenMoji(prepared, split)
    if kind not in ("folder", "pairs"):
        raise ConfigError(f"data.dataset={kind!r}: use openmoji, folder or pairs")
    if not data["folder_root"]:
        raise ConfigError(f"data.dataset={kind} needs data.folder_root: the folder of your images")
    root = repo_root() / data["folder_root"]
    fractions = data["split_fractions"]
    if kind == "folder":
        return ColourFolder(root, size, data["extractor"], split, int(cfg["seed"]), fractions)
    return PairFolder(root, size, data["pair_layout"], split, fractions)
