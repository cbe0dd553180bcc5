"""Line styles: the training transforms on known pictures, the SVG stroke scaling and the unseen-style protocols."""

from __future__ import annotations

import re

import torch

from linebridge.data import styles
from linebridge.data.openmoji import lineart_svg, package_svg_dir

WHITE, BLACK = 1.0, -1.0


def page(size: int = 9) -> torch.Tensor:
    return torch.full((1, 1, size, size), WHITE)


def test_thicken_draws_strokes_wider_and_solid():
    line = page()
    line[..., :, 4] = BLACK  # a vertical stroke one pixel wide: its solid core on the fine page is 1.5 px
    for grow, row in [
        (0.25, [WHITE] * 3 + [0.0, BLACK, 0.0] + [WHITE] * 3),
        (0.75, [WHITE] * 3 + [BLACK] * 3 + [WHITE] * 3),
        (1.0, [WHITE] * 2 + [0.5, BLACK, BLACK, BLACK, 0.5] + [WHITE] * 2),
    ]:
        assert styles.thicken(line, grow)[0, 0, 4].tolist() == row  # 1.5 + 2 × grow px of ink, centred
    grey = page()
    grey[..., :, 4] = 0.0  # a stroke narrower than a pixel renders grey; wider, it renders black
    assert styles.thicken(grey, 0.5)[0, 0, 4].tolist() == [WHITE] * 3 + [0.5, BLACK, 0.5] + [WHITE] * 3
    assert torch.equal(styles.thicken(line, 0.1), line)


def test_fill_dark_inks_only_the_dark_colour():
    line, colour = page(4), torch.ones(1, 3, 4, 4)
    colour[..., :2, :] = -0.9  # luminance 0.05: dark hair
    colour[..., 2, :] = -0.2  # luminance 0.4: a dark skin tone stays uninked
    filled = styles.fill_dark(line, colour)
    assert (filled[..., :2, :] == BLACK).all() and (filled[..., 2:, :] == WHITE).all()


def test_extract_finds_region_borders_and_nothing_on_a_blank_page():
    assert (styles.extract(torch.ones(1, 3, 16, 16)) == WHITE).all()
    colour = torch.ones(1, 3, 16, 16)
    colour[..., 4:12, 4:12] = torch.tensor([0.6, -0.2, -0.2])[:, None, None]  # a pink square
    lines = styles.extract(colour)
    assert set(lines.unique().tolist()) <= {BLACK, WHITE}
    assert (lines[..., 4:12, 4:12] == BLACK).any() and (lines[..., 0, :] == WHITE).all()


def test_restyle_off_draws_nothing_and_on_replays_with_the_seed():
    line, colour = page(32), torch.ones(1, 3, 32, 32)
    line[..., 16, :] = BLACK  # one horizontal stroke, 32 px
    torch.manual_seed(0)
    state = torch.get_rng_state()
    assert styles.restyle(line, colour, 0.0, styles.FAMILIES) is line
    assert styles.restyle(line, colour, 0.5, []) is line
    assert torch.equal(torch.get_rng_state(), state)
    batch, colours = line.expand(64, -1, -1, -1), colour.expand(64, -1, -1, -1)
    torch.manual_seed(1)
    a = styles.restyle(batch, colours, 0.5, ["width"])
    torch.manual_seed(1)
    assert torch.equal(a, styles.restyle(batch, colours, 0.5, ["width"]))
    changed = (a != batch).flatten(1).any(dim=1)
    assert 16 < changed.sum() < 48  # about half of the pictures, each stroke grown
    assert (((1 - a[changed]) / 2).flatten(1).sum(1) >= 2 * 32).all()  # at least 2 px of ink across the stroke


def test_stroke_scale_multiplies_every_width_and_gives_the_group_a_scaled_default():
    svg = (package_svg_dir() / "1F600.svg").read_text()
    plain, thick = lineart_svg(svg), lineart_svg(svg, 2.5)
    widths = [float(w) for w in re.findall(r'stroke-width="([0-9.]+)"', plain)]
    assert [float(w) for w in re.findall(r'stroke-width="([0-9.]+)"', thick)] == [2.5, *[2.5 * w for w in widths]]
    assert lineart_svg(svg, 1.0) == plain  # no default written at scale 1: the study's line art is unchanged
