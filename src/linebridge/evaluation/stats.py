"""Confidence intervals and paired tests over per-image metric values of the test protocols.

Every test image is one observation; NaN values (e.g. ΔE on an image with an empty
tone region) are dropped and the number actually used is returned as `n`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats


def _finite_mask(*arrays: np.ndarray) -> np.ndarray:
    return np.logical_and.reduce([~np.isnan(x) for x in arrays])


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> dict[str, float]:
    """Mean with a percentile-bootstrap CI over images: {mean, low, high, n} (scipy.stats.bootstrap).

    Percentile rather than BCa so constant samples (e.g. Edge IoU all 1) give low = high = mean
    instead of NaN. n = 0 → NaN everywhere; n = 1 → a zero-width interval.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[_finite_mask(x)]
    if len(x) < 2:
        mean = float(x[0]) if len(x) else float("nan")
        return {"mean": mean, "low": mean, "high": mean, "n": len(x)}
    ci = stats.bootstrap(
        (x,), np.mean, n_resamples=n_boot, confidence_level=level, method="percentile", rng=np.random.default_rng(seed)
    ).confidence_interval
    return {"mean": float(x.mean()), "low": float(ci.low), "high": float(ci.high), "n": len(x)}


def paired_bootstrap(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """Mean of b − a over the same images, its bootstrap CI and a two-sided p-value.

    Pairs with a NaN on either side are dropped. The CI is bootstrap_ci of the per-image
    differences; the p-value is a paired permutation (sign-flip) test of "no difference"
    (scipy.stats.permutation_test, exact when 2^n ≤ n_boot), which keeps its level for
    small n where a bootstrap test does not.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need equal shapes, got {a.shape} and {b.shape}")
    keep = _finite_mask(a, b)
    diff = b[keep] - a[keep]
    ci = bootstrap_ci(diff, n_boot=n_boot, seed=seed, level=level)
    if len(diff) < 2:
        p_value = float("nan")
    else:
        test = stats.permutation_test(
            (a[keep], b[keep]),
            lambda x, y, axis: np.mean(y - x, axis=axis),
            permutation_type="samples",
            n_resamples=n_boot,
            vectorized=True,
            rng=np.random.default_rng(seed),
        )
        p_value = float(test.pvalue)
    return {"mean_diff": ci["mean"], "low": ci["low"], "high": ci["high"], "p_value": p_value, "n": ci["n"]}
