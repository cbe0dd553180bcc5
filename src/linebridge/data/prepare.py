"""`linebridge prepare` — the DVC `prepare` stage: render, split, and fix the test and val references.

From the SVGs in `data.raw_dir` it writes `data.prepared_dir`:

    colour/<id>.png          RGB colour target at data.image_size (white background)
    line/<id>.png            L line art: the artist's `line*` groups, black on white
    manifest.csv             id, split, group, skin_tone, hair, colour, line (sorted by id)
    info.json                sizes, seed, fractions, counts, protocol sizes (test, val), skipped ids
    protocols/<name>.csv     one row per test item of protocol self | cross_gt | cross_random
    protocols/<name>/ref/<id>.png    its fixed reference (TPS-warped, no colour jitter)
    protocols/cross_gt/mask/<id>.png the tone region (255 where the tone variants differ)
    protocols/val/<name>.csv              the same three protocols over the val items,
    protocols/val/<name>/ref/<id>.png     built the same way from val emoji only
    protocols/val/cross_gt/mask/<id>.png  (tone masks over the val tone families)
    styles/<style>/<id>.png  the val and test line art re-drawn in each unseen style (`styles.STYLE_PROTOCOLS`:
                             strokes 2.5 × as wide from the SVG, dark fills inked, lines extracted by XDoG)

Splits are by drawing: a group is a connected component of emoji that share a base emoji
(`openmoji.group_key`) or an identical line layer (`openmoji.drawing_groups`), so no
drawing is in two splits; a group's split comes from a hash of its name, so it does not
change when `limit_groups` trims the set.  The test and val references are drawn once
with the `seed` of params.yaml, so every model meets identical inputs; the val draws are
a separate stream of that seed (`protocol_seeds`), so the test references do not depend
on the val split.  Output is byte-identical from run to run and appears atomically: it
is built in `.<name>.tmp` beside the target and renamed into place.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from linebridge.core.config import Config, ConfigError, UserError, add_config_arguments, load_config, repo_root
from linebridge.core.io import write_atomic
from linebridge.data.augment import warp_all
from linebridge.data.openmoji import (
    SKIN_TONES,
    drawing_groups,
    hair_variant,
    render_colour,
    render_lineart,
    replace_dir,
    skin_tone,
    staging_dir,
    tone_regions,
)
from linebridge.data.splits import (
    PROTOCOL_SPLITS,
    PROTOCOLS,
    SPLITS,
    key_fraction,
    parse_fractions,
    protocol_dir,
    split_of,
    spread,
    stratify_toned,
)
from linebridge.data.styles import STYLE_PROTOCOLS, restyled

CONTACT_SHEET = Path("reports/figures/data_contact_sheet.png")
SUMMARY = Path("metrics/data.json")  # info.json's committed copy: splits and the design of the protocols
MIN_TEST_GROUPS = 4  # with limit_groups: two groups with skin tones, so cross_gt has pairs


@dataclass(frozen=True)
class Emoji:
    id: str
    group: str
    split: str
    skin_tone: str
    hair: str

    @property
    def tone(self) -> str | None:
        """The single skin tone shared by everyone in the picture, else None."""
        return self.skin_tone if self.skin_tone in SKIN_TONES else None


# ---------------------------------------------------------------- splits


def select_groups(
    splits: dict[str, str], toned: set[str], limit: int, fractions: tuple[float, float, float]
) -> set[str]:
    """A deterministic subset of `limit` groups (all when 0), split in about `fractions`.

    Within each split, groups are taken in hash order, alternating between groups with
    skin-tone variants and groups without, so a small subset still has cross_gt pairs.
    """
    if limit <= 0:
        return set(splits)
    total = sum(fractions)
    n_val = max(1, round(limit * fractions[1] / total)) if fractions[1] > 0 else 0
    n_test = max(MIN_TEST_GROUPS, round(limit * fractions[2] / total))
    wanted = {"train": limit - n_val - n_test, "val": n_val, "test": n_test}
    if wanted["train"] < 1:
        raise ConfigError(f"data.limit_groups={limit} is too small: use 0 (all) or at least {n_val + n_test + 1}")
    chosen: set[str] = set()
    for split, n in wanted.items():
        keys = sorted((k for k, s in splits.items() if s == split), key=key_fraction)
        with_tones = [k for k in keys if k in toned]
        without = [k for k in keys if k not in toned]
        chosen.update(_interleave(with_tones, without)[:n])
    return chosen


def _interleave(a: list[str], b: list[str]) -> list[str]:
    out = [x for pair in zip(a, b) for x in pair]
    n = min(len(a), len(b))
    return out + a[n:] + b[n:]


def catalogue(raw_dir: Path, cfg: Config) -> list[Emoji]:
    """Every emoji to prepare (after `limit_groups`), sorted by id."""
    ids = sorted(p.stem for p in raw_dir.glob("*.svg"))
    if not ids:
        raise UserError(f"{raw_dir}: no OpenMoji SVGs. Run `linebridge data fetch` (or `dvc pull data.dvc`) first")
    fractions = parse_fractions(cfg["data"]["split_fractions"])
    groups = drawing_groups(ids, raw_dir)
    toned = {groups[i] for i in ids if skin_tone(i) in SKIN_TONES}
    counts = cfg["data"]["toned_groups"]
    splits = {g: split_of(g, fractions) for g in set(groups.values())}
    splits = stratify_toned(splits, toned, n_val=counts["val"], n_test=counts["test"])
    keep = select_groups(splits, toned, int(cfg["data"]["limit_groups"]), fractions)
    return [Emoji(i, groups[i], splits[groups[i]], skin_tone(i), hair_variant(i)) for i in ids if groups[i] in keep]


# ---------------------------------------------------------------- protocols


def _random_pairs(items: list[Emoji], rng: np.random.Generator) -> list[tuple[Emoji, Emoji]]:
    """(item, reference source) for every item: the source is a random emoji of another group of the split.

    The source's group is drawn first, uniformly, then an emoji within it, so groups with a hundred variants
    (couples) do not dominate the references.
    """
    pairs = []
    for item in items:
        pool: dict[str, list[Emoji]] = defaultdict(list)
        for e in items:
            if e.group != item.group:
                pool[e.group].append(e)
        if pool:
            group = sorted(pool)[int(rng.integers(len(pool)))]
            pairs.append((item, pool[group][int(rng.integers(len(pool[group])))]))
    return pairs


def _tone_pairs(items: list[Emoji], rng: np.random.Generator, refs_per_tone: int) -> list[tuple[Emoji, Emoji]]:
    """The cross_gt items: for each drawing and each of its skin tones, `refs_per_tone` (target, source) pairs.

    The targets cycle through the drawing's variants in that tone; each source is a variant in the same tone of
    another drawing, the one used least often so far as a source in that tone (ties drawn at random), so the
    reference drawings are spread evenly and no drawing supplies more than 5 · refs_per_tone items.
    """
    variants: dict[tuple[str, str], list[Emoji]] = defaultdict(list)
    for e in items:
        if e.tone is not None:
            variants[(e.group, e.tone)].append(e)
    used: dict[tuple[str, str], int] = defaultdict(int)
    pairs = []
    for group, tone in sorted(variants):
        others = sorted(g for g, t in variants if t == tone and g != group)
        for j in range(refs_per_tone if others else 0):
            least = min(used[(g, tone)] for g in others)
            ties = [g for g in others if used[(g, tone)] == least]
            source = ties[int(rng.integers(len(ties)))]
            used[(source, tone)] += 1
            pool = variants[(source, tone)]
            targets = variants[(group, tone)]
            pairs.append((targets[j % len(targets)], pool[int(rng.integers(len(pool)))]))
    return pairs


def cross_design(rows: list[dict[str, str]]) -> dict[str, float | int]:
    """What a cross_gt protocol rests on: items, line drawings, reference drawings, and the largest share of the
    items that one line drawing supplies."""
    per_drawing = Counter(r["group"] for r in rows)
    return {
        "items": len(rows),
        "line_drawings": len(per_drawing),
        "reference_drawings": len({r["ref_group"] for r in rows}),
        "largest_share": round(max(per_drawing.values()) / len(rows), 4) if rows else 0.0,
    }


def tone_masks(test: list[Emoji], colour: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """For each single-tone emoji of `test` (one split): its tone region (`tone_regions`) as uint8 0/255."""
    if not test:
        return {}
    regions = tone_regions([e.id for e in test], [e.tone for e in test], np.stack([colour[e.id] for e in test]))
    return {test[i].id: mask.astype(np.uint8) * 255 for i, mask in regions.items()}


def protocol_seeds(seed: int, split: str, index: int) -> tuple[np.random.Generator, int]:
    """The pairing RNG and the TPS-warp seed of protocol number `index` of `split`.

    Test keeps its original draws (`[seed, index]` and `seed·3 + index`); the other splits
    take two children of a seed sequence keyed by (seed, index, split number), a separate
    stream, so the val protocols never shift the test references.
    """
    if split == "test":
        return np.random.default_rng([seed, index]), seed * len(PROTOCOLS) + index
    pairing, warping = np.random.SeedSequence([seed, index, SPLITS.index(split)]).spawn(2)
    return np.random.default_rng(pairing), int(warping.generate_state(1, np.uint64)[0])


# ---------------------------------------------------------------- the stage


def prepare(
    cfg: Config,
    root: Path | None = None,
    contact_sheet: Path | None = CONTACT_SHEET,
    summary_out: Path | None = SUMMARY,
) -> dict:
    """Run the whole stage for `cfg`; paths in it are relative to `root` (default: repo root).

    Returns the summary also written to info.json.  `contact_sheet=None` skips the figure.
    """
    root = Path(root) if root else repo_root()
    data = cfg["data"]
    size = int(data["image_size"])
    if size < 8:
        raise ConfigError(f"data.image_size={size}: use at least 8 pixels")
    raw_dir, out_dir = root / data["raw_dir"], root / data["prepared_dir"]
    emojis = catalogue(raw_dir, cfg)

    tmp = staging_dir(out_dir)
    try:
        kept, skipped, eval_colour = _render_all(raw_dir, emojis, size, tmp)
        _write_csv(
            tmp / "manifest.csv",
            ["id", "split", "group", "skin_tone", "hair", "colour", "line"],
            ([e.id, e.split, e.group, e.skin_tone, e.hair, f"colour/{e.id}.png", f"line/{e.id}.png"] for e in kept),
        )
        protocols = {
            split: _write_protocols(tmp, [e for e in kept if e.split == split], eval_colour, cfg, split)
            for split in PROTOCOL_SPLITS
        }
        summary = {
            "image_size": size,
            "seed": int(cfg["seed"]),
            "tps_scale": float(cfg["augment"]["tps_scale"]),
            "split_fractions": list(parse_fractions(data["split_fractions"])),
            "limit_groups": int(data["limit_groups"]),
            "splits": {
                s: {"images": sum(e.split == s for e in kept), "groups": len({e.group for e in kept if e.split == s})}
                for s in SPLITS
            },
            "protocols": {name: len(rows) for name, rows in protocols["test"].items()},
            "protocols_val": {name: len(rows) for name, rows in protocols["val"].items()},
            "cross_gt_design": {split: cross_design(protocols[split]["cross_gt"]) for split in PROTOCOL_SPLITS},
            "skipped": skipped,
        }
        (tmp / "info.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        if summary_out is not None:
            write_atomic(root / summary_out, json.dumps(summary, indent=2, sort_keys=True) + "\n")
        if contact_sheet is not None:
            _contact_sheet(root / contact_sheet, tmp, [e for e in kept if e.split == "test"], protocols["test"])
        replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary


def _render_all(
    raw_dir: Path, emojis: list[Emoji], size: int, tmp: Path
) -> tuple[list[Emoji], list[str], dict[str, np.ndarray]]:
    """Render colour and line art PNGs into `tmp`; returns kept emojis, skipped ids, val and test colours."""
    (tmp / "colour").mkdir()
    (tmp / "line").mkdir()
    for style in STYLE_PROTOCOLS:
        (tmp / "styles" / style).mkdir(parents=True)
    kept: list[Emoji] = []
    skipped: list[str] = []
    eval_colour: dict[str, np.ndarray] = {}
    for e in tqdm(emojis, desc=f"render {size}px", unit="emoji"):
        path = raw_dir / f"{e.id}.svg"
        try:
            svg = path.read_text(encoding="utf-8")
            colour, line = render_colour(svg, size), render_lineart(svg, size)
        except (ET.ParseError, UnicodeDecodeError, ValueError) as err:
            raise UserError(f"{path}: not a valid SVG ({err}); restore it with `linebridge data fetch`") from None
        if line.getextrema()[0] == 255 or min(lo for lo, _ in colour.getextrema()) == 255:
            skipped.append(e.id)  # nothing drawn: no line art (e.g. a text-only button) or no picture
            continue
        colour.save(tmp / "colour" / f"{e.id}.png")
        line.save(tmp / "line" / f"{e.id}.png")
        kept.append(e)
        if e.split in PROTOCOL_SPLITS:
            eval_colour[e.id] = np.asarray(colour)
            for style, image in restyled(svg, size, colour, line).items():
                image.save(tmp / "styles" / style / f"{e.id}.png")
    return kept, skipped, eval_colour


def _write_protocols(
    tmp: Path, items: list[Emoji], colour: dict[str, np.ndarray], cfg: Config, split: str
) -> dict[str, list[dict[str, str]]]:
    """Draw and save the fixed references of the three protocols over `items` (all of `split`).

    Pairs, masks and references come from `split` alone; returns the CSV rows.
    """
    seed, tps_scale = int(cfg["seed"]), float(cfg["augment"]["tps_scale"])
    masks = tone_masks(items, colour)
    out = tmp / protocol_dir(split)
    rows: dict[str, list[dict[str, str]]] = {}
    for index, name in enumerate(PROTOCOLS):
        rng, warp_seed = protocol_seeds(seed, split, index)
        if name == "self":
            pairs = [(e, e) for e in items]
        elif name == "cross_gt":
            pairs = _tone_pairs(items, rng, int(cfg["data"]["cross_refs"]))
        else:
            pairs = _random_pairs(items, rng)
        refs = warp_all([colour[src.id] for _, src in pairs], tps_scale, warp_seed)
        folder = out / name
        (folder / "ref").mkdir(parents=True)
        if name == "cross_gt":
            (folder / "mask").mkdir()
        header = ["id", "gt", "ref_source", "group", "ref_group"] + (["tone"] if name == "cross_gt" else [])
        rows[name] = []
        seen: dict[str, int] = defaultdict(int)
        for (item, src), ref in zip(pairs, refs, strict=True):
            # cross_gt has several references per target: the item is `TARGET_rK`, the K-th one
            row_id = f"{item.id}_r{seen[item.id]}" if name == "cross_gt" else item.id
            seen[item.id] += 1
            Image.fromarray(ref, "RGB").save(folder / "ref" / f"{row_id}.png")
            if name == "cross_gt":
                Image.fromarray(masks[item.id], "L").save(folder / "mask" / f"{row_id}.png")
            values = [row_id, item.id, src.id, item.group, src.group, item.skin_tone]
            rows[name].append(dict(zip(header, values)))
        _write_csv(out / f"{name}.csv", header, (list(r.values()) for r in rows[name]))
    return rows


def _write_csv(path: Path, header: list[str], rows: Iterable[list[str]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _contact_sheet(path: Path, prepared: Path, test: list[Emoji], protocols: dict[str, list[dict[str, str]]]) -> None:
    """~16 test items as rows: line art | colour | the three fixed references | tone mask.

    A visual check of the data: black lines on white, true colours, warped references,
    and for cross_gt a reference of another emoji in the same skin tone.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cross_row = {}  # target → its first cross_gt item (`TARGET_r0`)
    for r in protocols["cross_gt"]:
        cross_row.setdefault(r["gt"], r["id"])
    in_cross = list(cross_row)
    others = [e.id for e in test if e.id not in cross_row]
    ids = [in_cross[i] for i in spread(len(in_cross), 8)] + [
        others[i] for i in spread(len(others), 16 - min(8, len(in_cross)))
    ]
    columns = {
        "line art": "line/{}.png",
        "colour (GT)": "colour/{}.png",
        **{f"{p} ref": f"protocols/{p}/ref/{{}}.png" for p in PROTOCOLS},
        "cross_gt mask": "protocols/cross_gt/mask/{}.png",
    }
    cross_columns = {"cross_gt ref", "cross_gt mask"}
    fig, axes = plt.subplots(
        len(ids),
        len(columns),
        figsize=(1.2 * len(columns) + 1.2, 1.25 * len(ids)),
        squeeze=False,
        gridspec_kw={"wspace": 0.05, "hspace": 0.08},
    )
    blank = Image.new("RGB", Image.open(prepared / "colour" / f"{ids[0]}.png").size, "white")
    for r, item in enumerate(ids):
        for c, (title, pattern) in enumerate(columns.items()):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            panel = prepared / pattern.format(cross_row.get(item, "") if title in cross_columns else item)
            ax.imshow(Image.open(panel).convert("RGB") if panel.exists() else blank, interpolation="nearest")
            if not panel.exists():
                ax.text(0.5, 0.5, "n/a", ha="center", va="center", color="grey", transform=ax.transAxes)
            if r == 0:
                ax.set_title(title, fontsize=8)
        cps = item.split("-")
        label = "\n".join("-".join(cps[i : i + 3]) for i in range(0, len(cps), 3))
        axes[r][0].set_ylabel(label, fontsize=6, rotation=0, ha="right", va="center")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    write_atomic(path, buffer.getvalue())


# ---------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--contact-sheet",
        type=Path,
        default=CONTACT_SHEET,
        help="where to write the contact sheet PNG (relative to the repo root)",
    )


def main(args: argparse.Namespace) -> int:
    cfg = load_config(None, args.profile, args.overrides)
    summary = prepare(cfg, contact_sheet=args.contact_sheet)
    counts = ", ".join(f"{s} {c['images']} images / {c['groups']} groups" for s, c in summary["splits"].items())
    print(f"{cfg['data']['prepared_dir']}: {counts}")
    print("test protocols: " + ", ".join(f"{name} {n}" for name, n in summary["protocols"].items()))
    print("val protocols: " + ", ".join(f"{name} {n}" for name, n in summary["protocols_val"].items()))
    for split, d in summary["cross_gt_design"].items():
        print(
            f"{split} cross_gt: {d['items']} items over {d['line_drawings']} line drawings and "
            f"{d['reference_drawings']} reference drawings; the largest drawing has {100 * d['largest_share']:.1f} %"
        )
    if summary["skipped"]:
        print(f"skipped {len(summary['skipped'])} emoji(s) with nothing drawn: {' '.join(summary['skipped'])}")
    return 0
