"""Crossed-cluster standard error and the size-and-power simulation, on simulated data with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from linebridge.evaluation.power import Components, estimate_components, power_table, simulate
from linebridge.evaluation.stats import seed_group_contrast


def crossed_design(n_lines: int = 30, per_line: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Items (line drawing, reference drawing): each line drawing gets `per_line` references from the other
    drawings, spread evenly (every drawing is a reference about `per_line` times)."""
    rng = np.random.default_rng(seed)
    lines = np.repeat(np.arange(n_lines), per_line)
    offsets = np.concatenate([rng.permutation(np.arange(1, n_lines))[:per_line] for _ in range(n_lines)])
    return lines, (lines + offsets) % n_lines


def exact_variance(lines: np.ndarray, refs: np.ndarray, c: Components, n_seeds: int) -> float:
    """Var of the mean of D over seeds and items under the model D = seed + line + ref + item + residual."""
    n = len(lines)
    share = lambda codes: (np.bincount(codes) / n) ** 2  # noqa: E731
    return (
        c.seed / n_seeds
        + c.line * share(lines).sum()
        + c.ref * share(refs).sum()
        + c.item / n
        + c.residual / (n * n_seeds)
    )


def draw(lines, refs, c: Components, n_seeds: int, rng) -> np.ndarray:
    n = len(lines)
    return (
        np.sqrt(c.seed) * rng.standard_normal((n_seeds, 1))
        + np.sqrt(c.line) * rng.standard_normal(lines.max() + 1)[lines]
        + np.sqrt(c.ref) * rng.standard_normal(refs.max() + 1)[refs]
        + np.sqrt(c.item) * rng.standard_normal(n)
        + np.sqrt(c.residual) * rng.standard_normal((n_seeds, n))
    )


def test_crossed_standard_error_matches_the_exact_variance():
    """With large reference-drawing effects the crossed SE² averages to the estimator's true variance; the one-way
    SE (line drawings only) misses the reference part."""
    lines, refs = crossed_design()
    c = Components(seed=0.0, line=1.0, ref=3.0, item=0.5, residual=2.0)
    rng = np.random.default_rng(1)
    truth = exact_variance(lines, refs, c, n_seeds=4)
    crossed, oneway, estimates = [], [], []
    for _ in range(300):
        d = draw(lines, refs, c, 4, rng)
        zeros = np.zeros_like(d)
        r = seed_group_contrast(zeros, d, lines, ref_groups=refs, n_boot=0)
        crossed.append(r["se"] ** 2)
        oneway.append(seed_group_contrast(zeros, d, lines, n_boot=0)["se"] ** 2)
        estimates.append(r["effect"])
    assert np.var(estimates) == pytest.approx(truth, rel=0.2)  # the formula is right about the estimator
    assert np.mean(crossed) == pytest.approx(truth, rel=0.25)
    assert np.mean(oneway) < 0.6 * truth


def test_crossed_equals_one_way_when_each_line_has_its_own_reference_drawing():
    """References nested in line drawings (one reference drawing per line drawing): nothing is crossed, and the
    crossed variance is the one-way variance."""
    rng = np.random.default_rng(2)
    lines = np.repeat(np.arange(12), 5)
    d = rng.standard_normal((3, len(lines)))
    one = seed_group_contrast(np.zeros_like(d), d, lines, n_boot=0)
    both = seed_group_contrast(np.zeros_like(d), d, lines, ref_groups=lines + 100, n_boot=0)
    assert both["var_group"] == pytest.approx(one["var_group"], rel=1e-12)
    assert both["n_ref_groups"] == 12


def test_components_are_recovered_from_a_large_study():
    lines, refs = crossed_design(n_lines=60, per_line=10, seed=3)
    c = Components(seed=0.5, line=2.0, ref=1.0, item=1.5, residual=4.0)
    d = draw(lines, refs, c, 8, np.random.default_rng(4))
    got = estimate_components(d, lines, refs)
    assert got.residual == pytest.approx(c.residual, rel=0.1)
    assert got.line == pytest.approx(c.line, rel=0.5)
    assert got.ref == pytest.approx(c.ref, rel=0.6)
    assert got.item == pytest.approx(c.item, rel=0.5)


def test_size_near_alpha_and_power_grows_with_the_effect():
    """The null control that can fail: at effect 0 the test rejects about alpha of simulated studies."""
    lines, refs = crossed_design()
    c = Components(seed=0.2, line=1.0, ref=1.0, item=2.0, residual=6.0)
    null = simulate(c, lines, refs, n_seeds=4, effect=0.0, n_sims=300, seed=5)
    big = simulate(c, lines, refs, n_seeds=4, effect=2.0, n_sims=100, seed=6)
    for method in ("behrens_fisher", "min_df"):
        size = np.mean(null[method]["p"] < 0.05)
        assert 0.0 <= size <= 0.09, (method, size)
        assert np.mean(big[method]["p"] < 0.05) > 0.8
    assert np.mean(null["behrens_fisher"]["p"] < 0.05) >= np.mean(null["min_df"]["p"] < 0.05)


def test_power_table_rows():
    lines, refs = crossed_design(n_lines=20, per_line=4)
    c = Components(seed=0.1, line=0.5, ref=0.5, item=1.0, residual=2.0)
    rows = power_table(c, lines, refs, [3, 4], margin=1.0, alpha=0.05, n_primaries=3, n_sims=40)
    assert [(r["n_seeds"], r["method"]) for r in rows] == [
        (3, "behrens_fisher"),
        (3, "min_df"),
        (4, "behrens_fisher"),
        (4, "min_df"),
    ]
    for r in rows:
        assert 0 <= r["power_holm"] <= r["power"] <= 1 and 0 <= r["size"] <= 1 and 0 <= r["within_margin"] <= 1
