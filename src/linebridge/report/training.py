"""How the runs trained: convergence, time and best checkpoints, and the time-to-convergence benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from linebridge.core.config import study_runs
from linebridge.core.runs import CONVERGED_CHECKS, converged_now, convergence_value
from linebridge.report.fmt import and_list, minutes, show, table
from linebridge.report.read import read_history, read_json, train_file


def training_minutes(summary: dict[str, Any] | None, history: list[dict[str, Any]]) -> float | None:
    """Training time of a run: the summary's wall time, else the history's last cumulative wall_s (if recorded)."""
    if summary and summary.get("wall_time_s") is not None:
        return summary["wall_time_s"] / 60
    if history and history[-1].get("wall_s") is not None:
        return history[-1]["wall_s"] / 60
    return None


def convergence_section(root: Path, study: dict[str, Any], gain: float, min_epochs: int) -> list[str]:
    """For every BBDM run: steps, epochs, best epoch, the rule's value at the end, whether it holds, what stopped it."""
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
        converged = "—" if value is None else ("yes" if converged_now(history, gain, min_epochs) else "no")
        rows.append([run, steps, epochs, best, shown, converged, stopped_by(summary, history, gain, min_epochs)])
        rows[-1].append(minutes(training_minutes(summary, history)))
    header = ["run", "steps", "epochs", "best epoch", "val-loss fall, last quarter", "converged", "stopped by"]
    header.append("training minutes")
    capped = capped_text(root, study_runs(study), gain, min_epochs)
    return [
        *table(header, [[str(c) for c in row] for row in rows]),
        "",
        *([f"**{capped}**", ""] if capped else []),
        f"Converged: the validation loss fell by less than {100 * gain:g} % of its value over the last quarter of "
        f"the run's steps (from the epoch whose step is closest to 75 % of the final step, at least one epoch before "
        f"the last, to the end), at {CONVERGED_CHECKS} epoch ends in a row, not before epoch {min_epochs}. Runs stop "
        "there (train.stop_at_convergence) or at their cap (train.epochs).",
    ]


def stopped_by(summary: dict[str, Any] | None, history: list[dict[str, Any]], gain: float, min_epochs: int) -> str:
    """What ended a run: the convergence rule, early stopping (patience) or the cap, flagged: a run that ran to its
    cap did not converge by the rule. The summary's own `converged` decides where it has one; the history is read
    only for runs from before the summaries recorded it."""
    if summary is None:
        return "—"
    if summary.get("stopped_early"):
        return "patience"
    converged = summary.get("converged")
    if converged is None:
        converged = converged_now(history, gain, min_epochs)
    return "rule" if converged else f"**cap ({summary['epochs_run']})**"


def capped_runs(root: Path, names: list[str], gain: float, min_epochs: int) -> list[str]:
    """The runs that ran to their cap without the rule holding, each as 'RUN (N epochs)'."""
    out = []
    for run in names:
        summary = read_json(train_file(root, run, "json"))
        if summary is None:
            continue
        if stopped_by(summary, read_history(train_file(root, run, "csv")), gain, min_epochs).startswith("**cap"):
            out.append(f"{run} ({summary['epochs_run']} epochs)")
    return out


def capped_text(root: Path, names: list[str], gain: float, min_epochs: int) -> str:
    """One sentence on the runs that did not converge by the rule; empty when every trained run did."""
    capped = capped_runs(root, names, gain, min_epochs)
    if not capped:
        return ""
    return f"Not every run converged by the rule: {and_list(capped)} ran to the cap without it."


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


def efficiency_section(root: Path) -> list[str]:
    """The time-to-convergence benchmark (benchmarks/convergence.py → metrics/convergence.json): per arm, the recipe
    before (24 epochs) and the study's (stopped by the rule), loop seconds and validation quality where each stops."""
    record = read_json(root / "metrics" / "convergence.json")
    if record is None:
        return ["Not run (no metrics/convergence.json): `python benchmarks/convergence.py` writes it."]
    rows = []
    for key, r in sorted(record["runs"].items(), key=lambda kv: (kv[0].split("/")[1], kv[0])):
        recipe, run = key.split("/")
        q = r["quality"]
        held = "—" if r.get("rule_first_held_at") is None else str(r["rule_first_held_at"])
        rows.append(
            [run, recipe, str(r["epoch"]), held, f"{r['loop_s']:.0f}", show(q.get("psnr"), "psnr")]
            + [show(q.get("tint_rate"), "tint_rate"), show(q.get("delta_e_tone"), "delta_e_tone"), r.get("date", "")]
            + [r.get("commit", "")]
        )
    header = ["run", "recipe", "stopped at epoch", "rule first held", "loop s", "val PSNR↑", "val tint↓"]
    header += ["val ΔE00 tone↓", "sitting", "commit"]
    ratios = ", ".join(f"{run} {ratio:.2f}" for run, ratio in sorted(record.get("ratio", {}).items()))
    return [
        *table(header, rows),
        "",
        "Validation split, EMA weights at the study's sampler, the epoch where each run stops (before: the 24th; "
        "after: params.yaml as it was at the row's commit, where the convergence rule stopped it, or its cap). Loop "
        "seconds exclude validation, checkpoints and sample grids; compare them within one sitting only. After / "
        f"before: {ratios or '—'}.",
    ]
