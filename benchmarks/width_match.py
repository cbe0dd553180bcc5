"""How close the `width` family's thickened strokes come to strokes rendered wider: a picture and one number each.

The `thick` protocol renders the SVG's line layer with every stroke 2.5 × as wide; the `width` family thickens the
rendered 32² line art instead (it has no SVG in the training loop). This compares, on every val and test picture
with a thick rendering, each way of thickening against the rendering: the mean absolute difference per pixel
(line art in [-1, 1]) and the share of ink (0 white, 1 black). `erosion k` is the family as it was until this
script came (a grey-scale erosion of the page with a k × k square); `solid g` is `data.styles.thicken` with growth
g px a side (strokes grown on a finer page and drawn solid). Writes the JSON and a figure: rows thin, rendered
thick, erosion 2, erosion 3, then solid at each of `data.styles.GROWTHS`.

    python benchmarks/width_match.py   # → metrics/line-styles/width-match.json, docs/figures/width-family.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from linebridge.core.config import load_config
from linebridge.core.io import write_json
from linebridge.core.tracking import git_commit
from linebridge.data.folders import to_float
from linebridge.data.styles import GROWTHS, thicken

FIGURE_IDS = 8  # pictures in the figure, evenly spaced over the sorted ids


def load(path: Path) -> torch.Tensor:
    return to_float(pil_to_tensor(Image.open(path).convert("L")))[None]


def erode(line: torch.Tensor, k: int) -> torch.Tensor:
    """The family until this script: every dark stroke k − 1 px wider by a grey-scale erosion with a k × k square."""
    import kornia

    return kornia.morphology.erosion(line, torch.ones(k, k))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="metrics/line-styles/width-match.json")
    parser.add_argument("--figure", default="docs/figures/width-family.png")
    args = parser.parse_args()
    prepared = Path(load_config()["data"]["prepared_dir"])
    ids = sorted(p.name for p in (prepared / "styles" / "thick").iterdir())
    thin = torch.cat([load(prepared / "line" / i) for i in ids])
    thick = torch.cat([load(prepared / "styles" / "thick" / i) for i in ids])
    ways = {"as drawn (thin)": thin, "erosion 2": erode(thin, 2), "erosion 3": erode(thin, 3)}
    ways |= {f"solid {g:g}": thicken(thin, g) for g in GROWTHS}

    def ink(x: torch.Tensor) -> float:
        return round(float(((1 - x) / 2).mean()), 4)

    rows = [
        {"way": name, "mean_abs_diff": round(float((x - thick).abs().mean()), 4), "ink": ink(x)}
        for name, x in ways.items()
    ]
    write_json(
        Path(args.out),
        {
            "what": "each way of thickening the 32² line art against the SVG rendered with strokes 2.5 × as wide",
            "pictures": len(ids),
            "rendered_thick_ink": ink(thick),
            "rows": rows,
            "commit": git_commit(short=True),
            "command": " ".join(["python benchmarks/width_match.py", *sys.argv[1:]]),
        },
    )
    pick = [round(i) for i in np.linspace(0, len(ids) - 1, FIGURE_IDS)]
    order = [thin, thick, ways["erosion 2"], ways["erosion 3"], *(ways[f"solid {g:g}"] for g in GROWTHS)]
    grid = torch.cat([torch.cat(list(x[pick, 0]), dim=1) for x in order], dim=0)
    image = Image.fromarray(((grid + 1) * 127.5).round().clamp(0, 255).byte().numpy(), "L")
    Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
    image.resize((image.width * 3, image.height * 3), Image.NEAREST).save(args.figure)
    for row in rows:
        print(f"{row['way']:<16} mean |diff| {row['mean_abs_diff']:.3f}  ink {row['ink']:.3f}")
    print(f"rendered thick   ink {ink(thick):.3f}  ({len(ids)} pictures) → {args.out}, {args.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
