"""Clustered and seed-level statistics (evaluation/stats.py): simulated data only, all seeded and fast."""

from __future__ import annotations

import numpy as np
import pytest

from linebridge.evaluation.stats import (
    bootstrap_ci,
    clustered_bootstrap_ci,
    format_p,
    holm,
    null_control,
    seed_group_contrast,
)


def simulate(
    rng: np.random.Generator,
    n_seeds: int = 3,
    n_groups: int = 60,
    per_group: int = 3,
    effect: float = 0.0,
    sd_seed: float = 0.2,
    sd_group: float = 0.3,
    sd_image: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arms a, b as [n_seeds, n_images] over shared images; b − a has seed, group and image noise around `effect`."""
    groups = np.repeat(np.arange(n_groups), per_group)
    n = len(groups)
    base = rng.normal(0, 1, n_groups)[groups] + rng.normal(0, 0.5, n)  # image difficulty, shared by both arms
    a = base + rng.normal(0, sd_seed, (n_seeds, 1)) + rng.normal(0, sd_image, (n_seeds, n))
    arm_by_group = rng.normal(0, sd_group, n_groups)[groups]  # drawings that gain more or less from arm b
    b = base + effect + arm_by_group + rng.normal(0, sd_seed, (n_seeds, 1)) + rng.normal(0, sd_image, (n_seeds, n))
    return a, b, groups


def test_clustered_ci_wider_than_image_ci_only_when_images_cluster() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(50), 4)
    clustered = rng.normal(0, 1, 50)[groups] + rng.normal(0, 0.1, len(groups))
    independent = rng.normal(0, 1, len(groups))

    def width(ci: dict[str, float]) -> float:
        return ci["high"] - ci["low"]

    wide, narrow = clustered_bootstrap_ci(clustered, groups), bootstrap_ci(clustered)
    assert width(wide) > 1.6 * width(narrow)  # ~sqrt(4): four near-copies of each drawing
    assert wide["low"] < wide["mean"] < wide["high"] and wide["n_groups"] == 50
    ratio = width(clustered_bootstrap_ci(independent, groups)) / width(bootstrap_ci(independent))
    assert 0.8 < ratio < 1.25


def test_clustered_ci_drops_nan_and_handles_degenerate_input() -> None:
    values = np.array([1.0, np.nan, 2.0, 3.0, np.nan, np.nan])
    ci = clustered_bootstrap_ci(values, ["x", "x", "y", "y", "z", "z"])
    assert ci["n"] == 3 and ci["n_groups"] == 2 and ci["mean"] == pytest.approx(2.0)
    const = clustered_bootstrap_ci(np.ones(6), [0, 0, 1, 1, 2, 2])
    assert const["low"] == const["mean"] == const["high"] == 1.0
    assert np.isnan(clustered_bootstrap_ci([np.nan], [0])["mean"])
    with pytest.raises(ValueError, match="one label per image"):
        clustered_bootstrap_ci(np.ones(4), [0, 1])


def test_contrast_recovers_known_effect() -> None:
    a, b, groups = simulate(np.random.default_rng(1), effect=0.3, sd_seed=0.05)
    r = seed_group_contrast(a, b, groups, n_boot=500)
    assert r["effect"] == pytest.approx(0.3, abs=0.1)
    assert r["low"] < 0.3 < r["high"] and r["p_value"] < 0.05
    assert r["boot_low"] <= r["effect"] <= r["boot_high"]
    assert (r["n_seeds"], r["n_groups"], r["n_images"]) == (3, 60, 180)
    assert len(r["seed_effects"]) == 3


def test_contrast_parts_on_a_hand_computed_example() -> None:
    """Three seeds shift b by 0.1, 0.3, 0.5; drawing x gains 0.2 more, drawing y 0.2 less (two images each).

    Seed effects 0.1, 0.3, 0.5 (the drawings cancel): mean 0.3, SD 0.2, seed variance of the mean 0.2²/3. Each
    drawing's contribution is ±0.2 in every seed: group variance (0.2² + 0.2²)/(2 − 1)/2 = 0.04.
    """
    shift, drawing = np.array([[0.1], [0.3], [0.5]]), np.array([0.2, 0.2, -0.2, -0.2])
    r = seed_group_contrast(np.zeros((3, 4)), shift + drawing, ["x", "x", "y", "y"], n_boot=0)
    assert r["seed_effects"] == pytest.approx([0.1, 0.3, 0.5]) and r["effect"] == pytest.approx(0.3)
    assert r["seed_sd"] == pytest.approx(0.2) and r["var_seed"] == pytest.approx(0.04 / 3)
    assert r["var_group"] == pytest.approx(0.04) and r["se"] == pytest.approx((0.04 / 3 + 0.04) ** 0.5)


@pytest.mark.parametrize("paired", [True, False])
@pytest.mark.parametrize("sd_group", [0.3, 0.0])
def test_contrast_keeps_its_level_under_seed_and_group_noise(paired: bool, sd_group: float) -> None:
    """No true effect, strong seed (and group) noise, 2–3 seeds: at most 10 % of 50 datasets 'significant' at 0.05."""
    rng = np.random.default_rng(2)
    rejections = 0
    for i in range(50):
        a, b, groups = simulate(rng, n_seeds=2 + i % 2, n_groups=50, sd_seed=0.3, sd_group=sd_group)
        rejections += seed_group_contrast(a, b, groups, paired=paired, n_boot=0)["p_value"] < 0.05
    assert rejections <= 5


def test_seed_noise_fools_a_single_seed_but_not_the_seed_level_test() -> None:
    """The review's point: with seed noise, the image-level view of one seed finds effects that are not there."""
    rng = np.random.default_rng(3)
    single = multi = 0
    for _ in range(30):
        a, b, groups = simulate(rng, n_seeds=3, n_groups=50, sd_seed=0.3, sd_group=0.0, sd_image=0.3)
        single += seed_group_contrast(a[0], b[0], groups, n_boot=0)["p_value"] < 0.05
        multi += seed_group_contrast(a, b, groups, n_boot=0)["p_value"] < 0.05
    assert single >= 15 and multi <= 5


def test_clear_effect_reaches_the_floor() -> None:
    a, b, groups = simulate(np.random.default_rng(4), effect=2.0, sd_seed=0.01, sd_group=0.05, sd_image=0.1)
    r = seed_group_contrast(a, b, groups, n_boot=200, p_floor=1e-4)
    assert r["p_value"] == r["p_floor"] == 1e-4
    assert format_p(r["p_value"], r["p_floor"]) == "≤ 0.0001"


def test_contrast_drops_nan_pairs() -> None:
    a, b, groups = simulate(np.random.default_rng(5), effect=0.2)
    a_nan, b_nan = a.copy(), b.copy()
    a_nan[:, 0] = np.nan  # an image without a value in any seed (e.g. no tone region)
    b_nan[:, [1, 2]] = np.nan  # the rest of that group: the group disappears
    r = seed_group_contrast(a_nan, b_nan, groups, n_boot=100)
    ref = seed_group_contrast(a[:, 3:], b[:, 3:], groups[3:], n_boot=100)
    assert (r["n_images"], r["n_groups"]) == (177, 59)
    assert r["effect"] == pytest.approx(ref["effect"]) and r["p_value"] == pytest.approx(ref["p_value"])
    a_nan[1, 10] = np.nan  # one pair of one seed only
    r = seed_group_contrast(a_nan, b_nan, groups, n_boot=100)
    assert np.isfinite([r["effect"], r["low"], r["high"], r["p_value"]]).all() and r["n_images"] == 177


def test_contrast_rejects_mismatched_shapes() -> None:
    a, b, groups = simulate(np.random.default_rng(6))
    with pytest.raises(ValueError, match="same images"):
        seed_group_contrast(a, b[:, :-1], groups)
    with pytest.raises(ValueError, match="same seeds"):
        seed_group_contrast(a, b[:2], groups)
    with pytest.raises(ValueError, match="one label per image"):
        seed_group_contrast(a, b, groups[:-1])
    with pytest.raises(ValueError, match=r"\[n_seeds, n_images\]"):
        seed_group_contrast(a[None], b, groups)
    with pytest.raises(ValueError, match="method"):
        seed_group_contrast(a, b, groups, method="bootstrap")


def test_unpaired_and_single_seed_contrasts() -> None:
    a, b, groups = simulate(np.random.default_rng(7), effect=0.3, sd_seed=0.05)
    r = seed_group_contrast(a, b[:2], groups, paired=False, n_boot=200)
    assert r["n_seeds"] == 2 and r["seed_effects"] is None and r["low"] < 0.3 < r["high"]
    one = seed_group_contrast(a[0], b[0], groups, n_boot=200)
    assert not one["seed_var_estimable"] and one["var_seed"] == 0.0 and np.isnan(one["seed_sd"])
    for method in ("min_df", "satterthwaite"):
        t = seed_group_contrast(a, b, groups, method=method, n_boot=0)
        assert t["effect"] == pytest.approx(r["effect"], abs=0.1) and t["df"] >= 2


def test_holm() -> None:
    adjusted = holm({"x": 0.01, "y": 0.04, "z": 0.03, "w": float("nan")})
    assert adjusted["x"] == pytest.approx(0.03) and adjusted["y"] == pytest.approx(0.06)
    assert adjusted["z"] == pytest.approx(0.06) and np.isnan(adjusted["w"])
    assert holm({}) == {} and np.isnan(holm({"only": float("nan")})["only"])


def test_format_p() -> None:
    floor = 1 / 2001
    assert format_p(floor, floor) == "≤ 0.0005"
    assert format_p(1 / 1001, 1 / 1001) == "≤ 0.001"
    assert format_p(float("nan"), floor) == "n/a" and format_p(None) == "n/a"
    assert format_p(0.0123, floor) == "0.012" and format_p(0.34, floor) == "0.34"
    assert format_p(0.0996) == "0.10" and format_p(1.0) == "1.00" and format_p(0.00123) == "0.0012"


def test_null_control_holds_for_noise_and_fails_for_a_shift() -> None:
    rng = np.random.default_rng(8)
    groups = np.repeat(np.arange(60), 3)
    arm = rng.normal(0, 1, 60)[groups] + rng.normal(0, 0.5, len(groups))  # what the arm's model gets per image
    run_0, run_1 = arm + rng.normal(0, 0.2, (2, len(groups)))  # two seeds: image-level noise only
    ok = null_control(run_0, run_1, groups, n_boot=100)
    assert ok["holds"] and ok["p_value"] >= 0.05
    shifted = null_control(run_0, run_1 + 0.3, groups, n_boot=100)
    assert not shifted["holds"] and shifted["effect"] == pytest.approx(0.3, abs=0.05)
    runs_0, runs_1 = arm + rng.normal(0, 0.2, (3, len(groups))), arm + rng.normal(0, 0.2, (3, len(groups)))
    assert null_control(runs_0, runs_1, groups, paired=True, n_boot=100)["holds"]
