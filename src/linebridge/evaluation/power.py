"""Size and power of the study's contrast test at a planned design: the null control that can fail.

A paired contrast b − a on a cross-reference protocol is a table D[seed, item], each item being a
(line drawing, reference drawing) pair. Its noise has five sources, estimated from a finished study:

    D[s, i] = effect + seed_s + line_l(i) + ref_r(i) + item_i + e[s, i]

- seed: the per-seed shift of the whole contrast (what another training seed moves),
- line / ref: the drawing of the line art and the drawing the reference was taken from (crossed clusters),
- item: what is left of one item after its drawings, the same for every seed,
- e: seed × item noise (another seed colours this one item differently).

`simulate` draws many such tables for the item structure of a prepared protocol (the real line and
reference drawing of every item) and the planned number of seeds, runs `stats.seed_group_contrast` on each
under both reference distributions, and counts rejections: at effect 0 that is the test's size (5 % at
α = 5 % if it is calibrated; far from it if not), at effect = the declared margin its power, and with the
effect at 0 the share of studies whose interval lies within ± margin (the power to claim "no difference").
"""

from __future__ import annotations

import argparse
import csv
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from linebridge.core.config import UserError, read_yaml, repo_root
from linebridge.core.io import write_json
from linebridge.evaluation.stats import seed_group_contrast

METHODS = ("behrens_fisher", "min_df")


@dataclass(frozen=True)
class Components:
    """Variances of the sources of noise of a per-seed, per-item contrast (metric units squared)."""

    seed: float
    line: float
    ref: float
    item: float
    residual: float


def estimate_components(d: np.ndarray, lines: Sequence, refs: Sequence) -> Components:
    """Method-of-moments / REML estimates of the five variances from a contrast table `d` [seeds, items].

    The seed × item residual and the seed variance come from the two-way (seed × item) ANOVA of `d`; the line,
    reference and item variances from a crossed random-effects model (statsmodels MixedLM, REML) fitted to the
    item means over seeds, whose residual holds item + residual / n_seeds. Items with a NaN in any seed are
    dropped; negative moment estimates are set to 0.
    """
    import pandas as pd
    from statsmodels.regression.mixed_linear_model import MixedLM

    d = np.asarray(d, dtype=np.float64)
    keep = ~np.isnan(d).any(axis=0)
    d, lines, refs = d[:, keep], np.asarray(lines)[keep], np.asarray(refs)[keep]
    n_seeds, n_items = d.shape
    residual = 0.0
    if n_seeds >= 2:
        r = d - d.mean(1, keepdims=True) - d.mean(0, keepdims=True) + d.mean()
        residual = float((r**2).sum() / ((n_seeds - 1) * (n_items - 1)))
    seed = max(0.0, float(d.mean(1).var(ddof=1)) - residual / n_items) if n_seeds >= 2 else 0.0
    if all(line == ref for line, ref in zip(lines, refs)):  # a self-reference protocol: one drawing per item
        refs = np.arange(len(refs))  # every item its own "reference": the ref variance joins the item variance
    frame = pd.DataFrame({"y": d.mean(0), "line": lines, "ref": refs, "one": 1})
    model = MixedLM.from_formula(
        "y ~ 1", groups="one", vc_formula={"line": "0 + C(line)", "ref": "0 + C(ref)"}, re_formula="0", data=frame
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = model.fit(reml=True, method=["lbfgs", "powell"])
        vc = dict(zip(fit.model.exog_vc.names, np.asarray(fit.vcomp, dtype=np.float64)))
        scale = float(fit.scale)
    except (np.linalg.LinAlgError, ValueError):  # too few items to separate the drawings: all of it per item
        vc, scale = {"line": 0.0, "ref": 0.0}, float(d.mean(0).var(ddof=1))
    item = max(0.0, scale - residual / n_seeds)
    return Components(seed=seed, line=float(vc["line"]), ref=float(vc["ref"]), item=item, residual=residual)


def simulate(
    components: Components,
    lines: Sequence,
    refs: Sequence,
    n_seeds: int,
    effect: float,
    alpha: float = 0.05,
    n_sims: int = 1000,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, dict[str, np.ndarray]]:
    """The contrast test on `n_sims` simulated studies: per reference distribution, each study's p-value and
    its (1 − 2·alpha) interval (`low`, `high`: the interval of the two one-sided tests of equivalence).

    Each simulated study has `n_seeds` paired seeds and the items given by `lines` / `refs` (one label each per
    item), with the true contrast `effect`.
    """
    line_codes = np.unique(np.asarray(lines), return_inverse=True)[1].reshape(-1)
    ref_codes = np.unique(np.asarray(refs), return_inverse=True)[1].reshape(-1)
    n_items = len(line_codes)
    sd = {k: np.sqrt(max(v, 0.0)) for k, v in asdict(components).items()}
    rng = np.random.default_rng(seed)
    out = {m: {k: np.zeros(n_sims) for k in ("p", "low", "high")} for m in METHODS}
    zeros = np.zeros((n_seeds, n_items))
    for k in tqdm(range(n_sims), desc=f"{n_seeds} seeds, effect {effect:g}", disable=not progress, leave=False):
        d = (
            effect
            + sd["seed"] * rng.standard_normal((n_seeds, 1))
            + sd["line"] * rng.standard_normal(line_codes.max() + 1)[line_codes]
            + sd["ref"] * rng.standard_normal(ref_codes.max() + 1)[ref_codes]
            + sd["item"] * rng.standard_normal(n_items)
            + sd["residual"] * rng.standard_normal((n_seeds, n_items))
        )
        for method in METHODS:
            kw = {"paired": True, "n_boot": 0, "method": method, "ref_groups": ref_codes}
            out[method]["p"][k] = seed_group_contrast(zeros, d, line_codes, **kw)["p_value"]
            tost = seed_group_contrast(zeros, d, line_codes, level=1 - 2 * alpha, **kw)
            out[method]["low"][k], out[method]["high"][k] = tost["low"], tost["high"]
    return out


def _share(hits: np.ndarray) -> tuple[float, float]:
    rate = float(np.mean(hits))
    return rate, float(np.sqrt(rate * (1 - rate) / len(hits)))


def power_table(
    components: Components,
    lines: Sequence,
    refs: Sequence,
    seed_counts: Sequence[int],
    margin: float,
    alpha: float,
    n_primaries: int,
    n_sims: int = 1000,
    seed: int = 0,
    progress: bool = False,
) -> list[dict[str, float | int | str]]:
    """One row per (seed count, reference distribution): the size at α (with its simulation standard error), the
    power at effect = margin at α and at α / m (the strictest Holm step over m primaries), and at effect 0 the
    share of studies whose interval lies within ± margin (the power to say "no difference larger than the margin")."""
    rows = []
    for n_seeds in seed_counts:
        null = simulate(components, lines, refs, n_seeds, 0.0, alpha, n_sims, seed, progress)
        alt = simulate(components, lines, refs, n_seeds, margin, alpha, n_sims, seed + 1, progress)
        for method in METHODS:
            size, size_se = _share(null[method]["p"] < alpha)
            within = (-margin < null[method]["low"]) & (null[method]["high"] < margin)
            rows.append(
                {
                    "n_seeds": int(n_seeds),
                    "method": method,
                    "size": size,
                    "size_se": size_se,
                    "power": _share(alt[method]["p"] < alpha)[0],
                    "power_holm": _share(alt[method]["p"] < alpha / n_primaries)[0],
                    "within_margin": _share(within)[0],
                }
            )
    return rows


# ---------------------------------------------------------------------------------------------------------------------
# `linebridge power`: components from finished runs, size and power at a planned design.
# ---------------------------------------------------------------------------------------------------------------------


def read_items(path: Path) -> dict[str, tuple[str, str]]:
    """id → (line drawing, reference drawing) from a prepared protocol table (columns id, group, ref_group)."""
    if not path.is_file():
        raise UserError(f"{path}: no protocol table; run `linebridge prepare` (or pass --design / --items)")
    with path.open(newline="") as f:
        return {row["id"]: (row["group"], row["ref_group"]) for row in csv.DictReader(f)}


def contrast_table(results: Path, a: str, b: str, metric: str) -> tuple[np.ndarray, list[str]]:
    """D[seed, item] = b − a for `metric` (PROTOCOL.NAME) over the seeds both arms have in `results`."""
    protocol, name = metric.split(".", 1)
    tables = {}
    for arm in (a, b):
        for folder in sorted(results.glob(f"{arm}-s*")):
            path = folder / f"{protocol}.csv"
            if path.is_file():
                with path.open(newline="") as f:
                    tables[(arm, folder.name.rsplit("-s", 1)[1])] = {r["id"]: float(r[name]) for r in csv.DictReader(f)}
    seeds = sorted({s for arm, s in tables if arm == a} & {s for arm, s in tables if arm == b}, key=int)
    if len(seeds) < 2:
        where = results.relative_to(repo_root()) if results.is_relative_to(repo_root()) else results
        raise UserError(f"{where}: {a} and {b} need two or more common seeds (ARM-sN folders) with {protocol}.csv")
    ids = sorted(tables[(a, seeds[0])])
    d = np.array([[tables[(b, s)][i] - tables[(a, s)][i] for i in ids] for s in seeds])
    return d, ids


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", default="metrics/eval", help="finished runs' per-image metrics (ARM-sN/...csv)")
    parser.add_argument(
        "--items",
        default=None,
        help="protocol table of those results (id, group, ref_group); default: the design's own table",
    )
    parser.add_argument(
        "--design",
        default=None,
        help="protocol table of the planned design; default: the prepared test protocol of each primary's metric",
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="seed counts to simulate (default: study.power_seeds)"
    )
    parser.add_argument(
        "--sims", type=int, default=None, help="simulated studies per seed count and effect (default: study.power_sims)"
    )
    parser.add_argument("--out", default="metrics/power/plan.json", help="JSON written here (atomically)")


def main(args: argparse.Namespace) -> int:
    params = read_yaml(repo_root() / "params.yaml")
    study, prepared = params["study"], repo_root() / params["data"]["prepared_dir"]
    results = repo_root() / args.results
    seed_counts, n_sims = args.seeds or study["power_seeds"], args.sims or study["power_sims"]
    primaries = study["primary"]
    record: dict = {"alpha": study["alpha"], "n_primaries": len(primaries), "n_sims": n_sims, "questions": []}
    for q in primaries:
        protocol = q["metric"].split(".", 1)[0]
        design_path = Path(args.design) if args.design else prepared / "protocols" / f"{protocol}.csv"
        design = read_items(design_path)
        items = read_items(Path(args.items)) if args.items else design
        entry = {
            **q,
            "design": {
                "table": str(design_path.relative_to(repo_root()) if design_path.is_absolute() else design_path),
                "items": len(design),
            },
        }
        try:
            d, ids = contrast_table(results, q["a"], q["b"], q["metric"])
        except UserError as err:  # a question whose runs are not there: recorded, not simulated
            record["questions"].append({**entry, "not_run": str(err)})
            print(f"{q['b']} − {q['a']}: not run ({err})")
            continue
        unknown = [i for i in ids if i not in items]
        if unknown:
            raise UserError(
                f"{len(unknown)} items of {args.results} (e.g. {unknown[0]}) are not in "
                f"{args.items or design_path}: pass --items with the protocol table those runs were evaluated on"
            )
        lines, refs = zip(*(items[i] for i in ids))
        comp = estimate_components(d, lines, refs)
        d_lines, d_refs = zip(*design.values())
        entry["design"].update(line_drawings=len(set(d_lines)), reference_drawings=len(set(d_refs)))
        rows = power_table(
            comp, d_lines, d_refs, seed_counts, q["margin"], study["alpha"], len(primaries), n_sims, progress=True
        )
        entry.update(
            components=asdict(comp),
            components_from={"results": args.results, "seeds": d.shape[0], "items": d.shape[1]},
            rows=rows,
        )
        record["questions"].append(entry)
        print(f"\n{q['b']} − {q['a']} on {q['metric']} (margin ± {q['margin']}):")
        print(markdown(rows))
    write_json(repo_root() / args.out, record)
    return 0


def markdown(rows: list[dict]) -> str:
    """The size-and-power rows as a markdown table."""
    lines = ["| seeds | reference | size at α (± s.e.) | power at margin | power, Holm's strictest | within ± margin |"]
    lines.append("|---|---|---|---|---|---|")
    for r in rows:
        size = f"{100 * r['size']:.1f} % (± {100 * r['size_se']:.1f})"
        lines.append(
            f"| {r['n_seeds']} | {r['method'].replace('_', ' ')} | {size} | {100 * r['power']:.0f} % "
            f"| {100 * r['power_holm']:.0f} % | {100 * r['within_margin']:.0f} % |"
        )
    return "\n".join(lines)
