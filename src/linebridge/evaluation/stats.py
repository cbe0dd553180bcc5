"""Confidence intervals and tests over per-image metric values of the test protocols.

`bootstrap_ci` and `paired_bootstrap` treat every test image as one observation (what the
current report uses). The rest treat images as clustered in groups (variants of one
drawing) and training seeds as the unit of inference: `clustered_bootstrap_ci`,
`seed_group_contrast`, `holm`, `format_p`, `null_control`. NaN values (e.g. ΔE on an image
with an empty tone region) are dropped and the number actually used is returned.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from scipy import optimize, special, stats


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


# ---------------------------------------------------------------------------------------------------------------------
# Clustered and seed-level inference.
#
# The test images come in groups (tone/gender variants of one drawing), so images are not independent draws, and every
# arm is a trained model whose metrics move with its training seed. The functions below treat the group (drawing) as
# the sampling unit of the test set and the training seed as the unit of replication of an arm.
# ---------------------------------------------------------------------------------------------------------------------


def _group_codes(groups: Sequence | np.ndarray, n_images: int) -> np.ndarray:
    """Integer codes 0..G-1 for one group label per image (any hashable labels)."""
    g = np.asarray(groups)
    if g.ndim != 1 or len(g) != n_images:
        raise ValueError(f"groups needs one label per image: {n_images} images, got groups of shape {g.shape}")
    return np.unique(g, return_inverse=True)[1].reshape(-1)


def _group_sums(x: np.ndarray, codes: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row, per-group sums of the finite values and their counts: two [rows, G] arrays."""
    finite = ~np.isnan(x)
    sums = np.zeros((x.shape[0], n_groups))
    counts = np.zeros((x.shape[0], n_groups))
    for r in range(x.shape[0]):
        sums[r] = np.bincount(codes, weights=np.where(finite[r], x[r], 0.0), minlength=n_groups)
        counts[r] = np.bincount(codes, weights=finite[r].astype(np.float64), minlength=n_groups)
    return sums, counts


def clustered_bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    groups: Sequence | np.ndarray,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """Mean over images with a percentile CI that resamples groups, not images: {mean, low, high, n, n_groups}.

    `groups` holds one label per image (e.g. the drawing a tone/gender variant comes from). Each bootstrap replicate
    draws as many groups as there are, with replacement, keeps all images of every drawn group and takes the mean
    over those images (so the statistic is the same image-weighted mean as `mean`). Images that are correlated
    within a group then move together, which the image-level `bootstrap_ci` ignores. NaN values are dropped first
    (n and n_groups count what is left). Like `bootstrap_ci`: n = 0 → NaN everywhere; a single group or constant
    values → a zero-width interval.
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    codes = _group_codes(groups, len(x))
    keep = ~np.isnan(x)
    x, codes = x[keep], np.unique(codes[keep], return_inverse=True)[1].reshape(-1)
    n_groups = int(codes.max()) + 1 if len(x) else 0
    mean = float(x.mean()) if len(x) else float("nan")
    if n_groups < 2:
        return {"mean": mean, "low": mean, "high": mean, "n": len(x), "n_groups": n_groups}
    sums = np.bincount(codes, weights=x, minlength=n_groups)
    counts = np.bincount(codes, minlength=n_groups).astype(np.float64)
    draws = np.random.default_rng(seed).multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot)
    boot = (draws @ sums) / (draws @ counts)
    tail = 50.0 * (1.0 - level)
    low, high = np.percentile(boot, [tail, 100.0 - tail])
    # The percentile of a constant can differ from the mean in the last bit; keep low ≤ mean ≤ high exactly then.
    low, high = min(float(low), mean), max(float(high), mean)
    return {"mean": mean, "low": low, "high": high, "n": len(x), "n_groups": n_groups}


def _as_runs(x: Sequence | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape [n_seeds, n_images] (or [n_images] for one seed), got {arr.shape}")
    return arr


METHODS = ("behrens_fisher", "min_df", "satterthwaite")


@functools.lru_cache(maxsize=256)
def _chi2_quantiles(dfs: tuple[int, ...], n_points: int) -> np.ndarray:
    """Chi-square quantiles of each df at a fixed scrambled Sobol point set: the same for every call with these dfs
    (cached: the size-and-power simulation calls the test thousands of times)."""
    points = stats.qmc.Sobol(len(dfs), scramble=True, seed=12345).random(n_points)
    points = np.clip(points, 1e-12, 1 - 1e-12)
    return np.stack([stats.chi2.ppf(points[:, k], d) for k, d in enumerate(dfs)])


def _behrens_fisher_tail(components: list[tuple[float, int]], n_points: int = 2**13):
    """c ↦ P(|Σ_k sqrt(v_k) T_k| ≥ c) for independent Student t variables T_k with d_k degrees of freedom.

    Each T_k = Z_k / sqrt(W_k / d_k) with W_k chi-square; given the W the sum is normal with variance
    Σ v_k d_k / W_k, so the tail is the average of normal tails over W drawn on a fixed scrambled Sobol point set
    (deterministic, smooth in c).
    """
    quantiles = _chi2_quantiles(tuple(d for _, d in components), n_points)
    scale2 = np.zeros(n_points)
    for k, (v, d) in enumerate(components):
        scale2 += v * d / quantiles[k]
    inv_scale = 1.0 / np.sqrt(scale2)
    return lambda c: float(np.mean(special.erfc(c * inv_scale / np.sqrt(2.0))))


def seed_group_contrast(
    a: Sequence | np.ndarray,
    b: Sequence | np.ndarray,
    groups: Sequence | np.ndarray,
    paired: bool = True,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    p_floor: float = 1e-4,
    method: str = "behrens_fisher",
    ref_groups: Sequence | np.ndarray | None = None,
) -> dict:
    """One contrast between two arms, b − a, with training seeds and image groups as the units of inference.

    Input: `a` [n_seeds_a, n_images] and `b` [n_seeds_b, n_images], a metric per seed (row) and image (column), the
    columns being the SAME images in the same order for both arms; `groups` holds one group label per image (the
    drawing it comes from). A 1-D array is one seed. With `paired=True` (the study trains every arm with the same
    seed list) row k of `a` and row k of `b` must come from the same training seed, so both need the same number of
    rows; the per-seed differences b[k] − a[k] are analysed. With `paired=False` the seeds of the two arms are taken
    as independent (e.g. different seed lists or counts) and the arms are compared through their seed means.

    NaN: paired, a (seed, image) pair with a NaN on either side is dropped; unpaired, an image column with a NaN in
    any run of either arm is dropped (so both arms are always averaged over the same images). A seed (or pair) with
    no finite image left is dropped.

    Estimate: `effect` = mean over seeds of the per-seed mean over images of b − a (paired), or the difference of
    the arms' seed-averaged image means (unpaired). Every seed has the same weight; within a seed every image has.

    Interval and p-value: the standard error has one variance component per source of noise — seeds (the spread of
    the per-seed means divided by their number: seed-to-seed variance, per arm when unpaired, as in Welch's test;
    n_seeds − 1 degrees of freedom) and groups (the spread over groups of each group's linearised contribution to
    the estimate, averaged over seeds, divided by n_groups: drawing-to-drawing variance; n_groups − 1 degrees of
    freedom). This is the method-of-moments form of a crossed random-effects model (seeds × groups, every seed
    evaluated on every image); the residual seed × group variance enters both components, so the standard error is
    slightly conservative.

    Crossed clusters: on a cross-reference protocol an item is (line drawing, reference drawing), and both repeat
    across items. With `ref_groups` (one reference-drawing label per image) the drawing component becomes the two-way
    clustered variance of Cameron, Gelbach & Miller (2011): V_line + V_ref − V_line×ref, each the spread of the
    linearised contributions over that factor's clusters (the intersection clusters are the (line, reference) pairs);
    its df is min(G_line, G_ref) − 1. Should the difference come out below max(V_line, V_ref) − which happens only by
    chance − the larger one-way variance is used instead, so the crossed variance never undercuts either one-way one.

    The reference distribution (`method`):

    - "behrens_fisher" (default): the estimate's error is taken as Σ_k sqrt(v_k) T_k with T_k Student t on the
      component's own degrees of freedom (the Behrens–Fisher construction extended to several components, evaluated
      by deterministic quasi-Monte-Carlo); the interval is the set of values the test does not reject, so it
      excludes 0 exactly when p < 1 − level. A component estimated from two seeds keeps its heavy t_1 tail, while a
      seed component that is small next to the group component no longer dominates.
    - "min_df": Student t on the smallest component df (1 with two seeds): valid whatever the variance ratio, but
      with two seeds almost powerless.
    - "satterthwaite": Welch–Satterthwaite df, as mixed-model software does; liberal here, because with two seeds
      the seed variance is often small by chance and the df estimate then jumps.

    In simulations (80 groups of 3 images, no true effect, seed, group and image noise in various ratios, 400–2000
    datasets per setting) at nominal 0.05 "behrens_fisher" rejected about 0.5–6.5 % of datasets with 2–3 seeds,
    "satterthwaite" up to 12 % with two seeds and "min_df" ≤ 4 %; with two seeds "min_df" found almost no real
    effect of moderate size, where "behrens_fisher" found a fair share.
    Why not a permutation or bootstrap test: with 2–3 seeds a test that keeps the seed as unit has only 2^n_seeds
    sign patterns (p ≥ 0.5 two-sided with two seeds), a bootstrap over two or three seeds badly understates the seed
    variance, and a test at the image or group level counts seed noise as signal. p below `p_floor` is reported as
    `p_floor` (the normal-theory far tail is not trustworthy).

    With a single seed in an arm the seed variance cannot be estimated: the interval and p-value then rest on the
    group variance only — conditional on the trained models, unable to tell the arm from training noise — and
    `seed_var_estimable` is False. Check such contrasts against `null_control`.

    Also returned, as a description and not for the test: `boot_low`, `boot_high`, a percentile interval from a
    hierarchical bootstrap that per replicate draws each arm's seeds with replacement (pairs of seeds when paired)
    and, once for all seeds and both arms (they saw the same images), as many groups as there are with replacement,
    keeping all images of a drawn group. With 2–3 seeds it is too narrow (see above).

    Returns {effect, low, high, p_value, p_floor, method, df, se, var_seed, var_group, n_seeds, n_groups, n_images,
    seed_effects, seed_sd, seed_means_a, seed_means_b, seed_var_estimable, boot_low, boot_high, paired}. n_seeds is
    the number of seed pairs (paired) or the smaller of the two arms' seed counts (unpaired). seed_effects are the
    per-seed differences (paired; None unpaired); seed_sd is the standard deviation of a single-seed contrast (of
    seed_effects paired; sqrt(var_a + var_b) of the seed means unpaired; NaN with one seed). se² = var_seed +
    var_group, the two variance components of the estimate; df is the t df used (NaN for "behrens_fisher").
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    a, b = _as_runs(a, "a"), _as_runs(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must cover the same images: a has {a.shape[1]} columns, b has {b.shape[1]}")
    if paired and a.shape[0] != b.shape[0]:
        raise ValueError(
            f"paired contrast needs the same seeds in both arms: a has {a.shape[0]} seeds, b has {b.shape[0]} "
            "(pass paired=False for independent seed lists)"
        )
    codes = _group_codes(groups, a.shape[1])
    ref_codes = None if ref_groups is None else _group_codes(ref_groups, a.shape[1])
    if paired:
        keep = _finite_mask(a, b)
        a, b = np.where(keep, a, np.nan), np.where(keep, b, np.nan)
        live = keep.any(axis=1)
        a, b = a[live], b[live]
        col = keep[live].any(axis=0)
        sides = [(b - a, 1.0)]
    else:
        a, b = a[~np.isnan(a).all(axis=1)], b[~np.isnan(b).all(axis=1)]
        col = _finite_mask(*a, *b) if len(a) and len(b) else np.zeros(a.shape[1], bool)
        sides = [(b, 1.0), (a, -1.0)]
    factors = {"line": codes[col]}
    if ref_codes is not None:
        factors["ref"] = ref_codes[col]
        factors["pair"] = factors["line"] * (int(ref_codes.max()) + 1) + factors["ref"]
    factors = {k: np.unique(c, return_inverse=True)[1].reshape(-1) for k, c in factors.items()}
    codes = factors["line"]
    sides = [(x[:, col], sign) for x, sign in sides]
    a, b = a[:, col], b[:, col]
    n_images, n_groups = int(col.sum()), (int(codes.max()) + 1 if col.any() else 0)
    seed_counts = [x.shape[0] for x, _ in sides]
    nan = float("nan")
    result = {
        "effect": nan, "low": nan, "high": nan, "p_value": nan, "p_floor": float(p_floor), "method": method,
        "df": nan, "se": nan, "var_seed": 0.0, "var_group": 0.0, "n_seeds": min(seed_counts),
        "n_groups": n_groups, "n_images": n_images, "seed_effects": None, "seed_sd": nan, "seed_means_a": [],
        "seed_means_b": [], "seed_var_estimable": min(seed_counts) >= 2, "boot_low": nan, "boot_high": nan,
        "paired": paired,
    }  # fmt: skip
    if n_images == 0 or min(seed_counts) == 0:
        return result

    effect, components, sums_counts = 0.0, [], []
    n_clusters = {k: int(c.max()) + 1 for k, c in factors.items()}
    cluster_var = dict.fromkeys(factors, 0.0)
    for x, sign in sides:
        sums, counts = _group_sums(x, codes, n_groups)
        sums_counts.append((sums, counts, sign))
        seed_means = sums.sum(1) / counts.sum(1)
        effect += sign * seed_means.mean()
        if len(seed_means) >= 2:
            components.append((seed_means.var(ddof=1) / len(seed_means), len(seed_means) - 1))
    for name, fcodes in factors.items():
        g = n_clusters[name]
        part = np.zeros(g)
        for k, (x, sign) in enumerate(sides):
            sums, counts = sums_counts[k][:2] if name == "line" else _group_sums(x, fcodes, g)
            seed_means = sums.sum(1) / counts.sum(1)
            # Linearised contribution of cluster g to seed s's ratio mean: (T_sg − m_s N_sg) / (N_s / G).
            part += sign * ((sums - seed_means[:, None] * counts) / (counts.sum(1, keepdims=True) / g)).mean(0)
        cluster_var[name] = float(part.var(ddof=1) / g) if g >= 2 else 0.0
    result["var_seed"] = float(sum(v for v, _ in components))
    if ref_codes is not None:
        result["n_ref_groups"] = n_clusters["ref"]
        if min(n_groups, n_clusters["ref"]) >= 2:
            crossed = cluster_var["line"] + cluster_var["ref"] - cluster_var["pair"]
            result["var_group"] = max(crossed, cluster_var["line"], cluster_var["ref"])
            components.append((result["var_group"], min(n_groups, n_clusters["ref"]) - 1))
    elif n_groups >= 2:
        result["var_group"] = cluster_var["line"]
        components.append((cluster_var["line"], n_groups - 1))

    mean_a = np.nanmean(a, axis=1)
    mean_b = np.nanmean(b, axis=1)
    result["seed_means_a"], result["seed_means_b"] = mean_a.tolist(), mean_b.tolist()
    if paired:
        per_seed = sums_counts[0][0].sum(1) / sums_counts[0][1].sum(1)
        result["seed_effects"] = per_seed.tolist()
        result["seed_sd"] = float(per_seed.std(ddof=1)) if len(per_seed) >= 2 else nan
    elif min(seed_counts) >= 2:
        result["seed_sd"] = float(np.sqrt(mean_a.var(ddof=1) + mean_b.var(ddof=1)))
    result["effect"] = effect = float(effect)

    if components:
        var = sum(v for v, _ in components)
        se = float(np.sqrt(var))
        result["se"] = se
        if var > 0:
            live = [(v, d) for v, d in components if v > 0]
            if method == "behrens_fisher":
                tail_p = _behrens_fisher_tail(live)
                p = tail_p(abs(effect))
                half = optimize.brentq(lambda c: tail_p(c) - (1 - level), 0.0, 1e3 * se + 1e-300, xtol=1e-12 * se)
                df = float("nan")
            else:
                if method == "min_df":
                    df = min(d for _, d in live)
                else:  # Welch–Satterthwaite
                    df = var**2 / sum(v**2 / d for v, d in live)
                p = 2.0 * stats.t.sf(abs(effect) / se, df)
                half = stats.t.ppf(0.5 + level / 2, df) * se
            result.update(df=float(df), low=effect - half, high=effect + half)
        else:  # no noise at all: the estimate is exact
            p = 1.0 if effect == 0 else 0.0
            result.update(low=effect, high=effect)
        result["p_value"] = float(max(p, p_floor))

    if n_boot > 0:
        rng = np.random.default_rng(seed)
        group_draws = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot)  # [B, G]
        boot = np.zeros(n_boot)
        for sums, counts, sign in sums_counts:
            n_s = len(sums)
            seed_draws = rng.multinomial(n_s, np.full(n_s, 1.0 / n_s), size=n_boot)  # [B, S]
            with np.errstate(invalid="ignore", divide="ignore"):
                means = (group_draws @ sums.T) / (group_draws @ counts.T)  # [B, S]
            means = np.where(seed_draws > 0, means, 0.0)
            boot += sign * (seed_draws * means).sum(1) / n_s
        tail = 50.0 * (1.0 - level)
        low, high = np.nanpercentile(boot, [tail, 100.0 - tail])
        result.update(boot_low=min(float(low), effect), boot_high=max(float(high), effect))
    return result


def null_control(
    run_0: Sequence | np.ndarray,
    run_1: Sequence | np.ndarray,
    groups: Sequence | np.ndarray,
    paired: bool = False,
    alpha: float = 0.05,
    **kwargs,
) -> dict:
    """The contrast test applied to training noise alone: `seed_group_contrast(run_0, run_1, groups)` plus `holds`.

    run_0 and run_1 are the same arm (same config, same data) trained or evaluated twice: under different seeds
    (paired=False, the default), or under the same seeds with only float rounding / nondeterministic kernels
    differing (paired=True, rows matched by seed). Each is [n_images] for one run or [n_runs, n_images]. There is
    no true effect, so a sound contrast test must not find one: `holds` is True when p_value ≥ alpha (or NaN).

    What a failure means: with one run per side the test can only use the group variance (seed_var_estimable is
    False), so a failing control shows that training noise alone already moves the metric by a "significant"
    amount — single-seed contrasts of that metric cannot be attributed to the module. With several runs per side
    it checks the seed-level test itself; it should then fail in about alpha of cases by chance. Extra keyword
    arguments (n_boot, seed, level, p_floor) go to seed_group_contrast.
    """
    result = seed_group_contrast(run_0, run_1, groups, paired=paired, **kwargs)
    result["holds"] = bool(not (result["p_value"] < alpha))
    return result


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm step-down adjusted p-values (family-wise error), same keys. NaN stays NaN and is not counted as a test."""
    from statsmodels.stats.multitest import multipletests

    out = {key: float("nan") for key in p_values}
    keys = [key for key, p in p_values.items() if p is not None and not np.isnan(p)]
    if keys:
        adjusted = multipletests([float(p_values[key]) for key in keys], method="holm")[1]
        out.update({key: float(p) for key, p in zip(keys, adjusted)})
    return out


def _fixed(x: float, sig: int) -> str:
    """x (> 0) to `sig` significant digits as a plain decimal, at least two decimals ("0.34", "0.012", "1.00")."""
    x = float(f"{x:.{sig}g}")
    decimals = max(2, sig - 1 - int(np.floor(np.log10(x))))
    return f"{x:.{decimals}f}"


def format_p(p: float, floor: float = 0.0) -> str:
    """A p-value for a table: "n/a" for NaN/None, "≤ F" at the method's floor, else two significant digits.

    F is the floor rounded UP to one significant digit (1/2001 → "≤ 0.0005"), so the statement stays true.
    Otherwise "0.34", "0.012", "0.0012", and scientific notation below 1e-4 ("3.1e-06").
    """
    if p is None or np.isnan(p):
        return "n/a"
    p = float(p)
    if floor > 0 and p <= floor * (1 + 1e-9):
        exponent = int(np.floor(np.log10(floor)))
        mantissa = np.ceil(floor / 10.0**exponent - 1e-9)
        bound = mantissa * 10.0**exponent
        return f"≤ {_fixed(bound, 1) if bound >= 1e-4 else f'{bound:.0e}'}"
    if p >= 1e-4:
        return _fixed(p, 2)
    return f"{p:.1e}" if p > 0 else "0"
