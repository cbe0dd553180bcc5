"""The data layer: OpenMoji fetch and rendering, splits by drawing, prepare, references, datasets, bad input.

A small real subset (data.limit_groups) is rendered at 32 px once per module.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms.functional import pil_to_tensor

from linebridge.cli import main as cli_main
from linebridge.core.config import UserError, load_config
from linebridge.data.augment import make_reference, warp, warp_all
from linebridge.data.datasets import PreparedOpenMoji, ProtocolDataset, build_dataset
from linebridge.data.folders import ColourFolder, PairFolder
from linebridge.data.openmoji import (
    drawing_key,
    fetch,
    group_key,
    hair_variant,
    lineart_svg,
    package_svg_dir,
    render_colour,
    render_lineart,
    skin_tone,
    strip_skin_tones,
    tone_regions,
)
from linebridge.data.prepare import (
    Emoji,
    _random_pairs,
    _tone_pairs,
    catalogue,
    cross_design,
    prepare,
    protocol_seeds,
    tone_masks,
)
from linebridge.data.splits import PROTOCOLS, split_of
from linebridge.data.styles import STYLE_PROTOCOLS

REPO = Path(__file__).resolve().parents[1]
SIZE = 32  # the default profile's size, so the full config (network included) is valid
LIMIT = 40
CODES = ["1F600", "1F34E", "1F9D1-1F3FD-200D-1F9B0", "1F1E8-1F1EB", "2764", "1F697", "1F332", "1F431"]
EVERYTHING = (1.0, 0.0, 1e-9)  # split fractions that put every file in train
JITTER = {"brightness": 0.1, "contrast": 0.1, "saturation": 0.1, "hue": 0.02}


def tree_hashes(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def study_root(folder: Path) -> Path:
    """A study root with a copy of the real params.yaml (load_config and repo_root look there)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "params.yaml", folder / "params.yaml")
    return folder


def config(root: Path, *overrides: str):
    return load_config(None, None, list(overrides), root=root)


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("raw") / "openmoji"
    assert fetch(dest)
    return dest


@pytest.fixture(scope="module")
def study(tmp_path_factory, raw_dir):
    """(root, cfg, summary) of a prepared real subset."""
    root = study_root(tmp_path_factory.mktemp("study"))
    cfg = config(root, f"data.raw_dir={raw_dir}", f"data.limit_groups={LIMIT}", f"data.image_size={SIZE}")
    summary = prepare(cfg, root=root, contact_sheet=Path("sheet.png"))
    return root, cfg, summary


def prepared(study) -> Path:
    root, cfg, _ = study
    return root / cfg["data"]["prepared_dir"]


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def emoji_png(code: str, size: int = 48) -> Image.Image:
    return render_colour((package_svg_dir() / f"{code}.svg").read_text(), size)


# ---------------------------------------------------------------- OpenMoji


def test_hexcode_parsing():
    red_hair = "1F9D1-1F3FD-200D-1F9B0"
    assert (skin_tone(red_hair), hair_variant(red_hair), group_key(red_hair)) == ("1F3FD", "red", "1F9D1")
    assert strip_skin_tones(red_hair) == "1F9D1-200D-1F9B0"
    # gender variants share the neutral form's group; different skin tones of a couple are "mixed"
    assert group_key("1F469-200D-2695-FE0F") == group_key("1F468-1F3FF-200D-2695-FE0F") == "1F9D1-200D-2695"
    assert group_key("1F646-1F3FB-200D-2640-FE0F") == group_key("1F646") == "1F646"
    assert group_key("1F48F-1F3FB") == group_key("1F469-1F3FB-200D-2764-FE0F-200D-1F48B-200D-1F468-1F3FC")
    assert skin_tone("1F469-1F3FB-200D-2764-FE0F-200D-1F48B-200D-1F468-1F3FC") == "1F3FB-1F3FC"
    assert skin_tone("1F600") == "" and hair_variant("1F600") == "" and group_key("1F600") == "1F600"
    assert group_key("1F3FD") == "1F3FD"  # a bare modifier is a colour swatch, not a nameless group


def test_fetch_copies_package_svgs_byte_for_byte(raw_dir):
    src = package_svg_dir()
    svgs = sorted(p.name for p in src.glob("*.svg"))
    assert len(svgs) == 4495
    assert sorted(p.name for p in raw_dir.glob("*.svg")) == svgs
    for name in svgs[::500]:
        assert (raw_dir / name).read_bytes() == (src / name).read_bytes()
    assert "CC BY-SA 4.0" in (raw_dir / "ATTRIBUTION.txt").read_text()
    assert "openmoji.org" in (raw_dir / "ATTRIBUTION.txt").read_text()
    assert "Attribution-ShareAlike 4.0" in (raw_dir / "LICENSE").read_text()
    before = tree_hashes(raw_dir)
    assert not fetch(raw_dir)  # idempotent: nothing rewritten
    (raw_dir / svgs[0]).write_text("<svg/>")  # a damaged copy is restored
    assert fetch(raw_dir)
    assert tree_hashes(raw_dir) == before
    assert [p.name for p in raw_dir.parent.iterdir()] == ["openmoji"]  # no temp folders left


def test_lineart_has_only_grey_pixels_and_differs_from_colour(raw_dir, study):
    # 1F196 draws a white stroke inside its line group; the rest: the whole prepared subset
    codes = ["1F196"] + [r["id"] for r in rows(prepared(study) / "manifest.csv")]
    for code in codes:
        svg = (raw_dir / f"{code}.svg").read_text()
        line_rgb = np.asarray(render_colour(lineart_svg(svg), SIZE)).astype(int)
        assert (line_rgb[..., 0] == line_rgb[..., 1]).all() and (line_rgb[..., 1] == line_rgb[..., 2]).all(), code
        line = np.asarray(render_lineart(svg, SIZE))
        assert line.min() < 200 and line.max() == 255, code  # dark (anti-aliased) lines on white
        colour = np.asarray(render_colour(svg, SIZE)).astype(int)
        if (colour.max(-1) - colour.min(-1)).max() > 30:  # 3 % are black symbols (©, letters): line = colour
            # > 1 grey level on average: a figure in a black suit (1F574) differs from its lines in the face alone
            assert np.abs(colour - line[..., None]).mean() > 1, code


# ---------------------------------------------------------------- prepare


def test_prepare_layout_and_counts(study):
    root, cfg, summary = study
    out = prepared(study)
    manifest = rows(out / "manifest.csv")
    assert [r["id"] for r in manifest] == sorted(r["id"] for r in manifest)
    assert len({r["group"] for r in manifest}) == LIMIT
    assert all(summary["splits"][s]["images"] > 0 for s in ("train", "val", "test"))
    assert json.loads((out / "info.json").read_text()) == summary
    for r in manifest:
        assert Image.open(out / r["colour"]).mode == "RGB" and Image.open(out / r["line"]).mode == "L"
        assert Image.open(out / r["colour"]).size == (SIZE, SIZE)
    assert (root / "sheet.png").exists()
    assert not list(out.parent.glob(".*"))  # no staging folder left behind


def test_splits_have_no_group_leakage(study, raw_dir):
    manifest = rows(prepared(study) / "manifest.csv")
    split_of_group: dict[str, set[str]] = {}
    for r in manifest:
        split_of_group.setdefault(r["group"], set()).add(r["split"])
    assert all(len(s) == 1 for s in split_of_group.values())
    # the full catalogue too: every skin-tone / hair / gender variant sits with its base emoji
    root, cfg, _ = study
    everything = catalogue(raw_dir, config(root, "data.limit_groups=0"))
    assert len(everything) == 4495
    assert all(e.group for e in everything)  # the skin-tone swatches once formed a group named ""
    split_by_group: dict[str, set[str]] = {}
    for e in everything:
        split_by_group.setdefault(e.group, set()).add(e.split)
    assert all(len(s) == 1 for s in split_by_group.values())
    by_id = {e.id: e for e in everything}
    assert by_id["1F9D1-1F3FD-200D-1F9B0"].split == by_id["1F469-200D-1F9B3"].split == by_id["1F9D1"].split
    counts = {s: sum(e.split == s for e in everything) for s in ("train", "val", "test")}
    assert 0.65 < counts["train"] / 4495 < 0.9 and counts["test"] > 200 and counts["val"] > 200


def test_no_drawing_is_in_two_splits(study, raw_dir):
    """Over the full OpenMoji set: emoji with the same line layer (fingerprint) share a split."""
    root, _, _ = study
    everything = catalogue(raw_dir, config(root, "data.limit_groups=0"))
    splits_of_drawing: dict[str, set[str]] = {}
    for e in everything:
        drawing = drawing_key((raw_dir / f"{e.id}.svg").read_text(encoding="utf-8"))
        if drawing is not None:
            splits_of_drawing.setdefault(drawing, set()).add(e.split)
    leaks = {d: s for d, s in splits_of_drawing.items() if len(s) > 1}
    assert not leaks, f"{len(leaks)} line layers appear in more than one split"
    by_id = {e.id: e for e in everything}
    # the leaks name-based grouping missed: bunny-ears people in every form, handshakes, flags
    bunny = [i for i in by_id if i.startswith("1F46F") or "-1F430-" in i]
    assert len({by_id[i].split for i in bunny}) == 1 and len(bunny) > 60
    assert by_id["1F91D"].split == by_id["1FAF1-1F3FB-200D-1FAF2-1F3FC"].split
    flags = [i for i in by_id if i.startswith("1F1E6-") or i.startswith("1F1FA-")]
    assert len({by_id[i].split for i in flags}) == 1


def test_prepare_twice_is_byte_identical(study):
    root, cfg, _ = study
    out = prepared(study)
    before = tree_hashes(out) | {"sheet.png": hashlib.sha256((root / "sheet.png").read_bytes()).hexdigest()}
    prepare(cfg, root=root, contact_sheet=Path("sheet.png"))
    after = tree_hashes(out) | {"sheet.png": hashlib.sha256((root / "sheet.png").read_bytes()).hexdigest()}
    assert after == before


def test_failed_prepare_keeps_old_output(study, raw_dir, tmp_path):
    root, cfg, _ = study
    out = prepared(study)
    broken = tmp_path / "raw"
    broken.mkdir()
    for name in sorted(p.name for p in raw_dir.glob("1F60*.svg")):
        shutil.copy(raw_dir / name, broken / name)
    (broken / "1F60F.svg").write_text("<svg><g id='line'>")  # truncated XML
    before = tree_hashes(out)
    with pytest.raises(UserError, match="1F60F.svg.*data fetch"):
        prepare(config(root, f"data.raw_dir={broken}", f"data.image_size={SIZE}"), root=root, contact_sheet=None)
    assert tree_hashes(out) == before
    assert not list(out.parent.glob(".*"))


def test_cross_gt_triples(study):
    out = prepared(study)
    manifest = {r["id"]: r for r in rows(out / "manifest.csv")}
    triples = rows(out / "protocols" / "cross_gt.csv")
    assert triples, "the subset must keep skin-tone groups in the test split"
    for t in triples:
        item, ref = manifest[t["gt"]], manifest[t["ref_source"]]
        assert item["split"] == ref["split"] == "test"
        assert item["group"] != ref["group"]
        assert t["id"].startswith(f"{t['gt']}_r")  # the k-th reference for this target
        assert item["skin_tone"] == ref["skin_tone"] == t["tone"] and len(t["tone"]) == 5
        mask = np.asarray(Image.open(out / "protocols" / "cross_gt" / "mask" / f"{t['id']}.png"))
        assert 0 < (mask == 255).mean() < 0.8 and set(np.unique(mask)) <= {0, 255}
    for name in ("self", "cross_random"):
        items = rows(out / "protocols" / f"{name}.csv")
        assert sorted(r["id"] for r in items) == sorted(i for i, r in manifest.items() if r["split"] == "test")
        for r in items:
            ref_group = manifest[r["ref_source"]]["group"]
            assert (r["ref_source"] == r["id"]) if name == "self" else (ref_group != r["group"])


def test_toned_drawings_are_held_out_by_count_from_those_the_hash_split_trains_on(study, raw_dir):
    """Over the full set: validation and test get exactly data.toned_groups drawings with skin tones, none of which
    the plain hash split put in validation or test (where earlier choices could have seen them)."""
    root, cfg, _ = study
    fractions = tuple(cfg["data"]["split_fractions"])
    everything = catalogue(raw_dir, config(root, "data.limit_groups=0"))
    toned = {e.group: e.split for e in everything if e.tone is not None}
    assert {s: sum(v == s for v in toned.values()) for s in ("val", "test")} == cfg["data"]["toned_groups"]
    assert all(split_of(g, fractions) == "train" for g, s in toned.items() if s != "train")
    assert len(toned) - sum(cfg["data"]["toned_groups"].values()) >= 90  # left to learn transfer from
    untoned = {e.group: e.split for e in everything if e.group not in toned}
    assert all(split_of(g, fractions) == s for g, s in untoned.items())  # the rest keep the hash split


def test_cross_gt_design_caps_drawings_and_spreads_references():
    """Each drawing supplies cross_refs items per skin tone; reference drawings are used evenly within a tone."""
    tones = ["1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF"]
    items = [
        Emoji(f"D{g}-{k}-{t}", f"D{g}", "test", t, "") for g in range(9) for t in tones for k in range(1 + (g == 0) * 4)
    ]
    pairs = _tone_pairs(items, np.random.default_rng(0), refs_per_tone=3)
    per_drawing = Counter(item.group for item, _ in pairs)
    assert set(per_drawing.values()) == {15}  # 5 tones × 3, also for D0 with its five variants per tone
    assert all(item.group != src.group and item.tone == src.tone for item, src in pairs)
    for tone in tones:
        used = Counter(src.group for item, src in pairs if item.tone == tone)
        assert max(used.values()) - min(used.values()) <= 2  # 27 uses over 9 drawings: about 3 each
    d0 = [item.id for item, _ in pairs if item.group == "D0" and item.tone == "1F3FB"]
    assert d0 == ["D0-0-1F3FB", "D0-1-1F3FB", "D0-2-1F3FB"]  # the targets cycle through the variants
    design = cross_design([{"group": i.group, "ref_group": s.group} for i, s in pairs])
    assert design == {"items": 135, "line_drawings": 9, "reference_drawings": 9, "largest_share": round(1 / 9, 4)}


def test_val_protocols_use_val_items_only(study):
    out = prepared(study)
    manifest = {r["id"]: r for r in rows(out / "manifest.csv")}
    val_ids = sorted(i for i, r in manifest.items() if r["split"] == "val")
    assert study[2]["protocols_val"] == {
        name: len(rows(out / "protocols" / "val" / f"{name}.csv")) for name in PROTOCOLS
    }
    for name in PROTOCOLS:
        items = rows(out / "protocols" / "val" / f"{name}.csv")
        assert all(manifest[r["gt"]]["split"] == manifest[r["ref_source"]]["split"] == "val" for r in items)
        assert sorted((out / "protocols" / "val" / name / "ref").iterdir()) == sorted(
            out / "protocols" / "val" / name / "ref" / f"{r['id']}.png" for r in items
        )
        if name != "cross_gt":
            assert sorted(r["id"] for r in items) == val_ids
    triples = rows(out / "protocols" / "val" / "cross_gt.csv")
    assert triples, "the subset must keep skin-tone groups in the val split"
    for t in triples:
        item, ref = manifest[t["gt"]], manifest[t["ref_source"]]
        assert item["group"] == t["group"] != ref["group"] == t["ref_group"]
        assert item["skin_tone"] == ref["skin_tone"] == t["tone"] and len(t["tone"]) == 5
        mask = np.asarray(Image.open(out / "protocols" / "val" / "cross_gt" / "mask" / f"{t['id']}.png"))
        assert 0 < (mask == 255).mean() < 0.8 and set(np.unique(mask)) <= {0, 255}


def test_test_protocols_come_from_the_test_split_alone(study):
    """The test protocols are redrawn from the test items with the original seeds: the val protocols change nothing."""
    root, cfg, _ = study
    out = prepared(study)
    seed, tps_scale = int(cfg["seed"]), float(cfg["augment"]["tps_scale"])
    test = [
        Emoji(r["id"], r["group"], r["split"], r["skin_tone"], r["hair"])
        for r in rows(out / "manifest.csv")
        if r["split"] == "test"
    ]
    colour = {e.id: np.asarray(Image.open(out / "colour" / f"{e.id}.png")) for e in test}
    masks = tone_masks(test, colour)
    for index, name in enumerate(PROTOCOLS):
        rng = np.random.default_rng([seed, index])
        if name == "self":
            pairs = [(e, e) for e in test]
        elif name == "cross_gt":
            pairs = _tone_pairs(test, rng, int(cfg["data"]["cross_refs"]))
        else:
            pairs = _random_pairs(test, rng)
        saved = rows(out / "protocols" / f"{name}.csv")
        assert [(r["gt"], r["ref_source"]) for r in saved] == [(e.id, src.id) for e, src in pairs]
        refs = warp_all([colour[src.id] for _, src in pairs], tps_scale, seed * len(PROTOCOLS) + index)
        for row, (item, _), ref in zip(saved, pairs, refs, strict=True):
            assert np.array_equal(np.asarray(Image.open(out / "protocols" / name / "ref" / f"{row['id']}.png")), ref)
            if name == "cross_gt":
                mask = np.asarray(Image.open(out / "protocols" / name / "mask" / f"{row['id']}.png"))
                assert np.array_equal(mask, masks[item.id])
    assert protocol_seeds(7, "test", 1)[1] == 22 and protocol_seeds(7, "test", 2)[1] == 23  # 7 · 3 protocols + index
    assert protocol_seeds(seed, "val", 1)[1] != protocol_seeds(seed, "test", 1)[1]
    # training's tone regions (loss.tone_weight) follow the same rule as these masks
    regions = PreparedOpenMoji(out, "test").tone_regions()
    by_id = {e.id: i for i, e in enumerate(test)}
    assert masks and all(np.array_equal(regions[by_id[k], 0].numpy() * 255, m) for k, m in masks.items())
    assert all(regions[by_id[e.id]].sum() == 0 for e in test if e.tone is None)


def test_tone_regions_are_where_the_tone_variants_differ():
    ids = ["1F44B-1F3FB", "1F44B-1F3FF", "1F44B", "1F600", "1F600-1F3FB"]
    tones = ["1F3FB", "1F3FF", None, None, "1F3FB"]
    colour = np.full((5, 4, 4, 3), 255, np.uint8)
    colour[0, 1:3, 1:3] = (250, 220, 188)
    colour[1, 1:3, 1:3] = (106, 78, 53)
    colour[1, 0, 0, 2] = 254  # one channel of one pixel is enough
    colour[2, :, :] = 0  # the yellow default has no tone: not part of the family
    regions = tone_regions(ids, tones, colour)
    want = np.zeros((4, 4), bool)
    want[1:3, 1:3] = want[0, 0] = True
    assert sorted(regions) == [0, 1, 4]
    assert np.array_equal(regions[0], want) and np.array_equal(regions[1], want)
    assert not regions[4].any()  # a family of one: nothing differs


def test_tps_warp_moves_pixels_but_keeps_colours():
    codes = CODES + ["1F30D", "1F355", "1F680", "1F3E0", "1F308", "1F40C", "1F33B", "26BD"]
    gt = torch.stack([pil_to_tensor(emoji_png(code)) for code in codes]).float() / 127.5 - 1
    torch.manual_seed(0)
    warped = warp(gt, 0.2)
    assert warped.shape == gt.shape and warped.min() >= -1 and warped.max() <= 1
    assert (warped - gt).abs().mean() > 0.1  # pixels moved

    def hist(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.histc(c, bins=8, min=-1, max=1) for c in x.flatten(1)]) / x[0].numel()

    n = len(codes)
    same = torch.stack([(hist(warped[i]) - hist(gt[i])).abs().sum() for i in range(n)]).mean()
    other = torch.stack([(hist(gt[i]) - hist(gt[(i + 1) % n])).abs().sum() for i in range(n)]).mean()
    assert same < 0.5 * other  # measured: 0.37 vs 1.13 (the white margin grows or shrinks a little)


def test_fixed_references_are_the_same_bytes_on_another_cpu():
    """The prepared references (warp_all) do not depend on the CPU's instruction set: a clone on another machine
    prepares the same data and keeps every recorded training. Here MKL is held to SSE4.2 kernels and ATen to its
    default (non-vector) ones, as on an older CPU; in float32 this warp gives other bytes under either (measured)."""
    code = (
        "import sys, numpy as np; from linebridge.data.augment import warp_all; "
        "images = list(np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)); "
        "sys.stdout.write(np.stack(warp_all(images, 0.2, 3)).tobytes().hex())"
    )
    older = {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "MKL_CBWR": "SSE4_2", "ATEN_CPU_CAPABILITY": "default"}
    env = {**os.environ, **older, "OMP_NUM_THREADS": "1"}
    there = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    images = list(np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8))
    assert bytes.fromhex(there) == np.stack(warp_all(images, 0.2, 3)).tobytes()


def test_make_reference_same_seed_same_bytes():
    gt = torch.rand(4, 3, 32, 32) * 2 - 1
    refs = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        refs.append(make_reference(gt, use_tps=True, tps_scale=0.2, jitter=JITTER))
    assert refs[0].numpy().tobytes() == refs[1].numpy().tobytes()
    assert not torch.equal(refs[0], refs[2])
    assert refs[0].min() >= -1 and refs[0].max() <= 1
    assert torch.equal(make_reference(gt, use_tps=False, tps_scale=0.2, jitter=None), gt)
    jittered = make_reference(gt, use_tps=False, tps_scale=0.2, jitter=JITTER)
    assert not torch.equal(jittered, gt) and (jittered - gt).abs().mean() < 0.2


# ---------------------------------------------------------------- datasets


def test_prepared_and_protocol_datasets(study):
    out = prepared(study)
    train = PreparedOpenMoji(out, "train")
    item = train[0]
    assert item["GT"].shape == (3, SIZE, SIZE) and item["lineart"].shape == (1, SIZE, SIZE)
    assert torch.equal(item["ref"], item["GT"]) and isinstance(item["id"], str)
    assert item["lineart"].min() == -1 and item["lineart"].max() == 1  # dark lines on white
    for name in PROTOCOLS:
        ds = ProtocolDataset(out, name)
        batch = next(iter(DataLoader(ds, batch_size=4)))
        assert batch["GT"].shape == (4, 3, SIZE, SIZE) and batch["mask"].shape == (4, 1, SIZE, SIZE)
        assert all(t.dtype == torch.float32 for k, t in batch.items() if k not in ("id", "ref_id", "group"))
        assert (batch["mask"] == 1).all() != (name == "cross_gt")
        assert not torch.equal(batch["ref"], batch["GT"])
        val = ProtocolDataset(out, name, split="val")
        assert val.split == "val" and set(val.gt_ids) <= set(PreparedOpenMoji(out, "val").ids)
        assert val[0]["mask"].shape == (1, SIZE, SIZE) and not torch.equal(val[0]["ref"], val[0]["GT"])
    with pytest.raises(UserError, match="split 'train': use one of test, val"):
        ProtocolDataset(out, "self", split="train")


def test_val_protocols_missing_from_old_prepared_data(study, tmp_path):
    out, old = prepared(study), tmp_path / "old"
    shutil.copytree(out, old, ignore=shutil.ignore_patterns("val"))
    assert len(ProtocolDataset(old, "self")) == len(ProtocolDataset(out, "self"))
    with pytest.raises(UserError, match=r"val/cross_gt\.csv: missing; re-run `linebridge prepare`"):
        ProtocolDataset(old, "cross_gt", split="val")


def test_prepared_tones(study, tmp_path):
    out = prepared(study)
    val = PreparedOpenMoji(out, "val")
    manifest = {r["id"]: r for r in rows(out / "manifest.csv")}
    assert len(val.tones) == len(val.ids) and None in val.tones and any(val.tones)
    assert all(t is None or t == manifest[i]["skin_tone"] for i, t in zip(val.ids, val.tones))  # the rule: below
    fake = tmp_path / "fake"
    fake.mkdir()
    source = manifest[val.ids[0]]
    tones = {"A": "", "B": "1F3FD", "C": "1F3FB-1F3FE", "D": "1F3FF"}  # none, one, a mixed couple, one
    header = ["id", "split", "group", "skin_tone", "hair", "colour", "line"]
    with (fake / "manifest.csv").open("w", newline="") as f:
        csv.writer(f).writerows(
            [header] + [[i, "val", i, t, "", out / source["colour"], out / source["line"]] for i, t in tones.items()]
        )
    ds = PreparedOpenMoji(fake, "val")
    assert ds.tones == [None, "1F3FD", None, "1F3FF"] and ds.groups == ["A", "B", "C", "D"]


def test_build_dataset(study, monkeypatch):
    root, cfg, _ = study
    monkeypatch.chdir(root)
    assert len(build_dataset(cfg, "val")) == study[2]["splits"]["val"]["images"]
    with pytest.raises(UserError, match=f"prepared at {SIZE} px.*linebridge prepare"):
        build_dataset(config(root, "data.image_size=16"), "train")
    with pytest.raises(UserError, match="data.folder_root"):
        build_dataset(config(root, "data.dataset=folder"), "train")


def write_images(folder: Path, codes: list[str], size: int = 48, suffix: str = ".png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for code in codes:
        emoji_png(code, size).save(folder / f"{code}{suffix}")


@pytest.mark.parametrize("extractor", ["xdog", "find_edges"])
def test_colour_folder(tmp_path, extractor):
    write_images(tmp_path / "imgs", CODES[:4])
    write_images(tmp_path / "imgs" / "more", CODES[4:], suffix=".jpg")
    (tmp_path / "imgs" / "notes.txt").write_text("not an image, ignored")
    fractions = (0.5, 0.25, 0.25)
    sets = {s: ColourFolder(tmp_path / "imgs", 32, extractor, s, fractions=fractions) for s in ("train", "test")}
    assert not set(sets["train"].ids) & set(sets["test"].ids)
    item = sets["test"][0]
    assert item["GT"].shape == (3, 32, 32) and item["lineart"].shape == (1, 32, 32)
    assert item["lineart"].min() < -0.5 and item["lineart"].max() == 1
    if extractor == "xdog":  # eval line art is fixed; training draws σ afresh
        assert torch.equal(sets["test"][0]["lineart"], item["lineart"])


def test_pair_folder_layouts(tmp_path):
    separate = tmp_path / "separate"
    write_images(separate / "colour", CODES)
    (separate / "sketch").mkdir()
    for code in CODES:
        render_lineart((package_svg_dir() / f"{code}.svg").read_text(), 48).save(separate / "sketch" / f"{code}.png")
    side = tmp_path / "side"
    side.mkdir()
    for code in CODES:
        both = Image.new("RGB", (96, 48), "white")
        both.paste(Image.open(separate / "colour" / f"{code}.png"), (0, 0))
        both.paste(Image.open(separate / "sketch" / f"{code}.png").convert("RGB"), (48, 0))
        both.save(side / f"{code}.png")
    a = PairFolder(separate, 32, "separate", "train", fractions=(0.5, 0.25, 0.25))
    b = PairFolder(side, 32, "side_by_side", "train", fractions=(0.5, 0.25, 0.25))
    assert a.ids == b.ids and len(a) > 0
    for x, y in zip(a, b):
        assert torch.allclose(x["GT"], y["GT"], atol=1e-6) and torch.allclose(x["lineart"], y["lineart"], atol=1e-6)
        assert x["lineart"].min() < -0.5


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("zero.png", b"", r"zero\.png: empty file \(0 bytes\)"),
        ("text.png", b"this is not an image", r"text\.png: not an image"),
        ("tiny.png", None, r"tiny\.png: 20×20 is smaller than data.image_size=32"),
    ],
)
def test_bad_files_are_named(tmp_path, name, content, message):
    write_images(tmp_path, CODES[:3])
    if content is None:
        emoji_png("1F600", 20).save(tmp_path / name)
    else:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError, match=message):
        ColourFolder(tmp_path, 32, split="train", fractions=EVERYTHING)


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.txt").write_text("no images here")
    with pytest.raises(UserError, match=r"empty: no images .* \(found 1 other files\)"):
        ColourFolder(tmp_path / "empty", 32)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image(tmp_path, fmt):
    folder = tmp_path / "imgs"
    folder.mkdir()
    buffer = io.BytesIO()
    emoji_png("1F34E", 128).save(buffer, fmt)
    (folder / f"cut.{fmt.lower()}").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(UserError, match=f"cut.{fmt.lower()}: truncated or corrupt"):
        ColourFolder(folder, 32, split="train", fractions=EVERYTHING)[0]


def test_modes_are_converted_not_rejected(tmp_path):
    folder = tmp_path / "modes"
    folder.mkdir()
    rgb = emoji_png("1F34E", 32)
    transparent = Image.new("RGBA", (32, 32), (255, 0, 0, 0))  # invisible red → white
    transparent.save(folder / "rgba.png")
    rgb.convert("P").save(folder / "p.png")
    rgb.convert("CMYK").save(folder / "cmyk.jpg")
    rgb.convert("LA").save(folder / "la.png")
    ramp = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (32, 1))
    Image.fromarray(ramp).save(folder / "i16.png")
    assert Image.open(folder / "i16.png").mode.startswith("I")
    ds = ColourFolder(folder, 32, split="train", fractions=EVERYTHING)
    items = {i: ds[k] for k, i in enumerate(ds.ids)}
    assert set(items) == {"rgba.png", "p.png", "cmyk.jpg", "la.png", "i16.png"}
    assert torch.equal(items["rgba.png"]["GT"], torch.ones(3, 32, 32))
    assert torch.equal(items["la.png"]["GT"][0], items["la.png"]["GT"][2])  # grey stays grey
    ramp_row = items["i16.png"]["GT"][0, 16]
    assert ramp_row[0] == -1 and ramp_row[-1] == 1 and abs(float(ramp_row[16])) < 0.1  # scaled, not clipped
    assert (items["p.png"]["GT"] - items["cmyk.jpg"]["GT"]).abs().mean() < 0.1


def test_unmatched_pairs_are_listed(tmp_path):
    write_images(tmp_path / "colour", ["1F600", "1F34E", "2764"])
    write_images(tmp_path / "sketch", ["1F600", "1F697"])
    listed = r"1F34E \(only in colour/\), 1F697 \(only in sketch/\), 2764 \(only in colour/\)"
    with pytest.raises(UserError, match=f"3 unmatched pair names: {listed}"):
        PairFolder(tmp_path, 32, "separate")
    write_images(tmp_path / "sketch", ["1F34E", "2764"], size=64)
    (tmp_path / "colour" / "1F697.png").write_bytes((tmp_path / "colour" / "2764.png").read_bytes())
    with pytest.raises(UserError, match=r"1F34E\.png is 48×48 but .*sketch/1F34E\.png is 64×64"):
        PairFolder(tmp_path, 32, "separate", fractions=EVERYTHING)


def test_missing_prepared_dir(tmp_path):
    with pytest.raises(UserError, match="linebridge prepare"):
        PreparedOpenMoji(tmp_path / "nowhere", "train")
    with pytest.raises(UserError, match="linebridge prepare"):
        ProtocolDataset(tmp_path / "nowhere", "cross_gt")


def test_cli_reports_missing_raw_data(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(study_root(tmp_path))
    assert cli_main(["prepare", "--set", "data.raw_dir=missing"]) == 2
    assert "linebridge data fetch" in capsys.readouterr().err


def test_shared_jitter_recolours_target_and_source_alike():
    from linebridge.data.augment import jitter_pair

    torch.manual_seed(0)
    x = torch.rand(6, 3, 8, 8) * 2 - 1
    a, b = jitter_pair(x, x.clone(), {"brightness": 0.2, "contrast": 0.1, "saturation": 0.3, "hue": 0.1})
    assert torch.equal(a, b) and (a - x).abs().max() > 0.05
    y = torch.rand(6, 3, 8, 8) * 0.5 - 0.25  # brightness only, away from clamping: one shift per item, for both
    a, b = jitter_pair(y, y.flip(-1), {"brightness": 0.2})
    shift = (a - y).flatten(1)
    torch.testing.assert_close(shift, (b - y.flip(-1)).flatten(1))
    torch.testing.assert_close(shift, shift[:, :1].expand_as(shift))
    assert shift[:, 0].std() > 0.01  # a different draw for each item


def test_shared_jitter_off_draws_nothing_and_changes_nothing():
    from linebridge.data.batches import shared_jitter

    cfg = load_config("A0")  # A0 turns it off: it has no reference to read the colours from
    x = torch.rand(2, 3, 8, 8)
    before = torch.get_rng_state()
    target, source = shared_jitter(x, x, cfg)
    assert target is x and source is x
    assert torch.equal(torch.get_rng_state(), before)


def test_unseen_style_protocols_keep_items_and_ground_truth_and_redraw_the_lines(study):
    out = prepared(study)
    plain = ProtocolDataset(out, "cross_gt")
    for style in STYLE_PROTOCOLS:
        ds = ProtocolDataset(out, "cross_gt", style=style)
        assert ds.ids == plain.ids and torch.equal(ds.tensors["GT"], plain.tensors["GT"])
        assert torch.equal(ds.tensors["line_thin"], plain.tensors["lineart"])
        assert not torch.equal(ds.tensors["lineart"], plain.tensors["lineart"]), style
        inked = ds.tensors["lineart"] < 128
        assert (ds.tensors["mask"][inked] == 0).all()  # what the style inks is not scored
        assert torch.equal(ds.tensors["mask"][~inked], plain.tensors["mask"][~inked])
    thick = ProtocolDataset(out, "self", style="thick")
    assert (thick.tensors["lineart"] < 128).sum() > (thick.tensors["line_thin"] < 128).sum()
    with pytest.raises(UserError, match="line style 'bold': use one of thick, filled, extracted"):
        ProtocolDataset(out, "self", style="bold")
