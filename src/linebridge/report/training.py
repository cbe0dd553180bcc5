"""How the runs trained: convergence, time and best checkpoints, and validation quality against training minutes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from linebridge.core.config import study_runs
from linebridge.core.runs import convergence_value
from linebridge.report.fmt import minutes, show, table
from linebridge.report.read import Curves, read_history, read_json, train_file


def training_minutes(summary: dict[str, Any] | None, history: list[dict[str, Any]]) -> float | None:
    """Training time of a run: the summary's wall time, else the history's last cumulative wall_s (if recorded)."""
    if summary and summary.get("wall_time_s") is not None:
        return summary["wall_time_s"] / 60
    if history and history[-1].get("wall_s") is not None:
        return history[-1]["wall_s"] / 60
    return None


def convergence_section(root: Path, study: dict[str, Any], gain: float) -> list[str]:
    """For every BBDM run: steps, epochs, best epoch, the convergence rule's value and its yes/no."""
    rows = []
    for run in study_runs(study):
        summary = read_json(train_file(root, run, "json"))
        history = read_history(train_file(root, run, "csv"))
        if summary is None and not history:
            rows.append([run, "not run"])
            continue
        value = convergence_value(history)
        steps = summary["steps"] if summary else int(history[-1]["step"])
        epochs = summary["epochs_run"] if summary else len(history)
        best = summary["best_epoch"] if summary else "—"
        shown = "— (fewer than two epochs)" if value is None else f"{100 * value:.1f} %"
        converged = "—" if value is None else ("yes" if value < gain else "no")
        rows.append([run, steps, epochs, best, shown, converged, minutes(training_minutes(summary, history))])
    header = ["run", "steps", "epochs", "best epoch", "val-loss fall, last quarter", "converged", "training minutes"]
    return [
        *table(header, [[str(c) for c in row] for row in rows]),
        "",
        f"Converged: the validation loss fell by less than {100 * gain:g} % of its value over the last quarter of "
        "the run's steps (from the epoch whose step is closest to 75 % of the final step, at least one epoch before "
        "the last, to the end).",
    ]


def training_table(root: Path, names: list[str]) -> list[str]:
    """Per run: how long it trained and where its best checkpoint is."""
    rows = []
    for m in names:
        s = read_json(train_file(root, m, "json"))
        if s is None:
            rows.append([m, "not run"])
            continue
        rows.append(
            [m, s["epochs_run"], s["steps"], s["best_epoch"], f"{s['best_val_loss']:.4f}", s["stopped_early"]]
            + [s.get("train_images", "—"), f"{s['wall_time_s'] / 60:.1f} min"]
        )
    header = ["run", "epochs", "steps", "best epoch", "best val loss", "stopped early", "train images", "wall time"]
    return [
        *table(header, [[str(c) for c in row] for row in rows]),
        "",
        "BBDM rows: validation loss = L_diff + λ_edge·L_edge on the EMA weights (5 fixed timesteps per image), so "
        "rows with and without the edge term are not on one scale; GAN rows: validation L1 of the generator.",
    ]


def curve_rows(root: Path, run: str) -> list[dict[str, Any]]:
    """A run's validation curve with training minutes per row (from the curve, else the training history's wall_s)."""
    curve = read_json(root / "metrics" / "curve" / f"{run}.json")
    if curve is None:
        return []
    walls = {int(h["epoch"]): h["wall_s"] for h in read_history(train_file(root, run, "csv"))}
    rows = []
    for r in curve["rows"]:
        wall = r.get("wall_s") if r.get("wall_s") is not None else walls.get(int(r["epoch"]))
        rows.append({**r, "minutes": None if wall is None else wall / 60})
    return rows


def efficiency_curves(root: Path, study: dict[str, Any]) -> Curves:
    """The validation curves of `study.curves`: the recipe's run first, the old recipe's run second."""
    new, old = study["curves"]
    return {"new recipe": (new, curve_rows(root, new)), "old recipe": (old, curve_rows(root, old))}


def efficiency_section(curves: Curves) -> list[str]:
    """Validation quality against training time for the two recipes, one row per epoch checkpoint."""
    rows = []
    for label, (run, points) in curves.items():
        if not points:
            rows.append([label, run, f"not run (no metrics/curve/{run}.json)"])
        for r in points:
            rows.append(
                [label, run, str(r["epoch"]), minutes(r["minutes"]), show(r.get("psnr"), "psnr")]
                + [show(r.get("delta_e_tone"), "delta_e_tone"), show(r.get("tint_rate"), "tint_rate")]
            )
    header = ["recipe", "run", "epoch", "training minutes", "val PSNR↑", "val ΔE00 tone↓", "val tint↓"]
    return [
        *table(header, rows),
        "",
        "Validation split, the checkpoint saved at the end of each epoch; minutes = cumulative training time then.",
    ]
