"""The failure-cases page (reports/failures.md): the method's worst cross_gt test items, each shown as line art,
reference, the method's output and ground truth, with their per-image tone-region ΔE00.

The items are ranked on the per-image values evaluate wrote (metrics/eval/RUN/cross_gt.csv), averaged over the
method's runs. Evaluate keeps no output per item, so the outputs shown are coloured again here, under the study's
sampler, by the method's released weights (its lowest seed's EMA weights, committed: a clone needs no training), else
by that run's checkpoint; without either the page goes without them and says so.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from linebridge.core.config import RELEASED, run_name
from linebridge.report.fmt import LABELS, and_list, show, table
from linebridge.report.read import NotRun, eval_file, read_per_image, rel, seed_mean
from linebridge.report.study import arm_runs, arm_seeds

PROTOCOL, METRIC = "cross_gt", "delta_e_tone"  # where a reference's colour shows: the skin-tone region
WORST = 8  # items the page shows
PAGE = "failures.md"  # beside the report, in reports/
FIGURE = "figures/failures.png"


def worst_items(root: Path, runs: list[str], n: int = WORST) -> tuple[list[dict[str, Any]], list[str], int]:
    """The `n` items with the highest tone ΔE00 averaged over `runs`, highest first (ties by id), the runs read and
    how many items were ranked.

    Each item is {id, mean, values (one per run read)}. Runs whose cross_gt.csv is missing are left out (the page
    names those read); the items are those every run read evaluated, less those without a tone value (NaN: no tone
    region). Raises NotRun when no run has the file or the metric.
    """
    paths = {run: eval_file(root, run, PROTOCOL, "csv") for run in runs}
    tables = {run: t for run, path in paths.items() if (t := read_per_image(path))}
    if not tables:
        raise NotRun("missing " + ", ".join(rel(root, p) for p in paths.values()))
    ids = sorted(set.intersection(*(set(t) for t in tables.values())))
    if not ids:
        raise NotRun(f"the runs {', '.join(tables)} have no {PROTOCOL} item in common")
    if any(METRIC not in t[ids[0]] for t in tables.values()):
        raise NotRun(f"{METRIC} is not in every run's {PROTOCOL}.csv")
    items = []
    for item in ids:
        values = [t[item][METRIC] for t in tables.values()]
        mean = float(np.mean(values))
        if not np.isnan(mean):
            items.append({"id": item, "mean": mean, "values": values})
    if not items:
        raise NotRun(f"no {PROTOCOL} item has a {METRIC} value")
    items.sort(key=lambda it: (-it["mean"], it["id"]))
    return items[:n], list(tables), len(items)


def _png(path: Path, mode: str = "RGB"):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert(mode)


def method_weights(root: Path, cfg: dict[str, Any], run: str) -> tuple[Path | None, str]:
    """What colours the method's items: the released weights when they are RUN's and the study samples with EMA
    weights (a clone has them: the report needs no training), else RUN's best.pt; (None, why) without either."""
    released, best = root / RELEASED, root / "outputs" / "train" / run / "best.pt"
    if released.exists() and cfg["eval"]["weights"] == "ema":
        from linebridge.core.checkpoint import CheckpointError, load_release

        try:
            if load_release(released)["released"].get("run") == run:
                return released, rel(root, released)
        except CheckpointError:  # unreadable (say, a Git LFS pointer): the checkpoint, if there is one
            pass
    if best.exists():
        return best, rel(root, best)
    return None, f"no checkpoint: neither {run}'s released weights ({RELEASED}) nor {rel(root, best)}"


def method_outputs(
    root: Path, cfg: dict[str, Any], run: str, seed: int, prepared: Path, ids: list[str]
) -> tuple[list | None, str]:
    """The method's outputs (PIL images) for the items `ids`, coloured by RUN's weights (`method_weights`) under the
    study's sampler (params.yaml eval) with the run's seed, as evaluate coloured them; (None, why) without them."""
    path, source = method_weights(root, cfg, run)
    if path is None:
        return None, source
    import torch
    from PIL import Image

    from linebridge.data.datasets import ProtocolDataset
    from linebridge.inference import Sampler, load_colorizer

    data = ProtocolDataset(prepared, PROTOCOL)
    where = {item: k for k, item in enumerate(data.ids)}
    items = [data[where[item]] for item in ids]
    colorizer, _ = load_colorizer(path, Sampler.from_eval(cfg["eval"]))
    lineart = torch.stack([it["lineart"] for it in items])
    ref = torch.stack([it["ref"] for it in items])
    out = colorizer(lineart, ref, seed)
    pixels = ((out.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(p) for p in pixels], source


def failure_cases(root: Path, cfg: dict[str, Any], study: dict[str, Any], prepared: Path) -> dict[str, Any]:
    """What the page and its figure show.

    {method, run (whose outputs are shown), runs (averaged), items (worst first; with gt and ref_source when the
    prepared data has them), ranked (items ranked), seed_mean, columns (title → images, one per item; None without
    the prepared data), output (the checkpoint read, or None), notes ((what is not shown, why) pairs)}, or with
    `reason` when nothing can be ranked.
    """
    method = study["method"]
    seed = min(arm_seeds(study)[method])
    cases: dict[str, Any] = {"method": method, "run": run_name(method, seed), "runs": [], "items": []}
    cases |= {"ranked": 0, "columns": None, "output": None, "notes": []}
    runs = arm_runs(study)
    try:
        items, read, ranked = worst_items(root, runs[method])
    except NotRun as err:
        return {**cases, "reason": str(err)}
    cases |= {"items": items, "runs": read, "ranked": ranked}
    cases["seed_mean"] = seed_mean(root, runs, method, f"{PROTOCOL}.{METRIC}")
    protocol_table = prepared / "protocols" / f"{PROTOCOL}.csv"
    if not protocol_table.exists():
        cases["notes"].append(("Images", f"no {rel(root, protocol_table)}; run `linebridge prepare`"))
        return cases
    with protocol_table.open(newline="") as fh:
        by_id = {r["id"]: r for r in csv.DictReader(fh)}
    unknown = [it["id"] for it in items if it["id"] not in by_id]
    if unknown:
        cases["notes"].append(
            ("Images", f"{', '.join(unknown)} not in the prepared {PROTOCOL} protocol; re-run evaluate")
        )
        return cases
    for it in items:
        it.update(gt=by_id[it["id"]]["gt"], ref_source=by_id[it["id"]]["ref_source"])
    columns = {
        "line art": [_png(prepared / "line" / f"{it['gt']}.png") for it in items],
        "reference": [_png(prepared / "protocols" / PROTOCOL / "ref" / f"{it['id']}.png") for it in items],
    }
    outputs, source = method_outputs(root, cfg, cases["run"], seed, prepared, [it["id"] for it in items])
    if outputs is None:
        cases["notes"].append((f"{method}'s outputs", source))
    else:
        columns[f"{method} output"] = outputs
        cases["output"] = source
    columns["ground truth"] = [_png(prepared / "colour" / f"{it['gt']}.png") for it in items]
    cases["columns"] = columns
    return cases


def row_labels(cases: dict[str, Any]) -> list[str]:
    """The figure's row labels: the item's rank (as in the page's table) and its mean tone ΔE00."""
    return [f"#{k} · {show(it['mean'], METRIC)}" for k, it in enumerate(cases["items"], 1)]


def _what(cases: dict[str, Any]) -> str:
    method, n = cases["method"], len(cases["items"])
    return (
        f"the {n} {PROTOCOL} test items on which {method} does worst: the highest tone-region ΔE00 (the skin-tone "
        f"region a reference's colour should reach), mean over its {len(cases['runs'])} runs"
    )


def failures_link(cases: dict[str, Any]) -> str:
    """The report's sentence pointing to the page: what it shows, or why it could not be made."""
    link = f"**Failure cases** ([{PAGE}]({PAGE}))"
    if "reason" in cases:
        return f"{link}: not run ({cases['reason']})."
    method = cases["method"]
    if cases["columns"] is None:
        shows = f"listed with their values, without images ({'; '.join(why for _, why in cases['notes'])})"
    elif cases["output"] is None:
        shows = f"each shown as line art, reference and ground truth ({method}'s outputs are not: no checkpoint)"
    else:
        shows = f"each shown as line art, reference, {method}'s output and ground truth"
    return f"{link}: {_what(cases)}, {shows}."


def sampler_text(ec: dict[str, Any]) -> str:
    """The study's sampler in words: '2 steps, deterministic, ema weights'."""
    kind = "deterministic" if ec["deterministic"] else f"stochastic, η = {ec['eta']:g}"
    return f"{ec['sample_step']} steps, {kind}, {ec['weights']} weights"


def failures_page(cases: dict[str, Any], figure: bool, cfg: dict[str, Any]) -> list[str]:
    """reports/failures.md: what was ranked and how, the figure, and a table of the items with their values."""
    method = cases["method"]
    lines = [f"# linebridge — failure cases of the method ({method})", ""]
    if "reason" in cases:
        return [*lines, f"Not run: {cases['reason']}.", "", "Back to [the report](ablation.md).", ""]
    runs = cases["runs"]
    overall = (
        ""
        if cases.get("seed_mean") is None
        else f" Its seed mean over all of them, the value its targets use, is {show(cases['seed_mean'], METRIC)}."
    )
    what = _what(cases)
    lines += [
        f"{what[0].upper()}{what[1:]} ({', '.join(runs)}; per-image values in "
        f"`metrics/eval/RUN/{PROTOCOL}.csv`), out of the {cases['ranked']} evaluated items with a tone region."
        f"{overall} Written by the `report` stage with [the report](ablation.md).",
        "",
    ]
    if figure:
        lines += [f"![failure cases]({FIGURE})", ""]
        titles = and_list(cases["columns"])
        caption = f"One row per item, worst first (numbered as in the table below); columns: {titles}."
        if cases["output"] is not None:
            ec = cfg["eval"]
            caption += (
                f" The outputs are {cases['run']}'s (`{cases['output']}`), coloured again here for these items "
                f"(evaluate keeps no output per item) under the study's sampler (params.yaml `eval`: "
                f"{sampler_text(ec)}) with the run's seed"
            )
            noise = ": the sampler's noise differs from the evaluation's, so an output can differ from the one scored"
            caption += "." if ec["deterministic"] else f"{noise}."
        lines += [caption, ""]
    for what, why in cases["notes"]:
        lines += [f"**{what} not shown**: {why}.", ""]
    header = ["#", "item", "drawing (ground truth)", "reference from", f"{LABELS[METRIC]}, mean", *runs]
    cells = [
        [str(k), it["id"], it.get("gt", "—"), it.get("ref_source", "—"), show(it["mean"], METRIC)]
        + [show(v, METRIC) for v in it["values"]]
        for k, it in enumerate(cases["items"], 1)
    ]
    return [*lines, *table(header, cells), ""]
