"""Time to convergence: training-loop seconds until the convergence rule holds, and validation quality then.

For each arm (default A0, A3, A5; seed 0) it trains two recipes, one process at a time with every core:

    before  the recipe the previous study used, trained a fixed 24 epochs (its overrides: BEFORE below)
    after   params.yaml as it stands: the run stops at the first epoch end where the rule holds (train.epochs caps it)

and writes, per arm and recipe, the training-loop seconds (the loop only: validation, sample grids and checkpoints
excluded) and the validation quality of the EMA weights under the study's sampler (params.yaml `eval`: self PSNR /
SSIM / tint and cross_gt tone ΔE00 on the validation protocols, `--val-items` items each) at the epoch where the
run stops: for `after` the epoch where the convergence rule stopped it (`runs.converged_at`: validation loss fell
less than train.convergence_gain over the last quarter of the steps, at two epoch ends in a row, not before
train.min_epochs) or its cap; for `before` its 24th epoch, with the epoch where the rule first held, if it did.
`ratio` = after / before loop seconds, per arm.

    python benchmarks/convergence.py                      # both recipes, A0 A3 A5, seed 0 → metrics/convergence.json
    python benchmarks/convergence.py --extend 2           # then: each `after` run continued to 2 × its stopping
                                                          # epoch; its validation quality there beside the stop's
    python benchmarks/convergence.py --seeds 1 --recipes after   # more seeds of the new recipe: the seed spread
    python benchmarks/convergence.py --resummarise        # re-read every finished run (after a change of the rule)
    python benchmarks/convergence.py --gans pix2pix scft  # instead: each GAN baseline on its schedule and on twice it
    python benchmarks/convergence.py --past-stop A5-s0 A0-s0 A3-s0   # instead: the study's runs, past their stop

The GAN baselines decay their learning rate linearly to 0 over their schedule (baselines.NAME.epochs, the reference
code's policy), so a run is at its plateau when a longer schedule no longer improves its validation quality: `--gans`
trains each on its schedule times each of `--gan-times` (default 1 2; `gan-EPOCHSep/NAME`) and records, under
`plateau`, what each longer schedule changed against the one before it.

`--past-stop RUN ...` asks whether a run the study stopped by the rule had converged for the conclusions, not only
for its loss: a copy of the study's run (outputs/train/RUN, its seed and its configuration, the tuned values
included) trains on to `--times` (2) × its stopping epoch without the rule, in outputs/bench/convergence/past-stop/RUN.
Its best checkpoint (what evaluate scores) is scored on validation at the stop, and its best and last checkpoints at
the end, beside the spread of the same metrics over the arm's study runs at their stops (every seed trained here so
far): `past_stop` in the JSON, with `moved` = end − stop and `within_spread` = |moved| < the seeds' standard
deviation, per metric and checkpoint.

Resumable: every run trains into outputs/bench/convergence/RECIPE/ARM-sSEED with --resume, and the JSON is
rewritten after each result, so a killed benchmark goes on where it stopped. Timings compare only within one
sitting on one machine (the JSON records the host and the date of each run); run it with nothing else on the
machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from linebridge.core.config import load_config, repo_root
from linebridge.core.io import write_json
from linebridge.core.runs import converged_at, convergence_value
from linebridge.evaluation.evaluate import study_quality, validation_sets

# The previous study's recipe and network, as overrides of today's params.yaml.
BEFORE = [
    "train.epochs=24",
    "train.batch_size=8",
    "train.lr=2.0e-4",
    "train.decay_epochs=24",
    "train.lr_min=2.0e-5",
    "train.warmup_steps=100",
    "train.ema_rate=0.995",
    "train.ema_start=200",
    "train.stop_at_convergence=false",
    "model.heads=8",
    "model.dim_head=32",
    "augment.line_styles.share=0",  # line-style augmentation came after that study
]
RECIPES = {"before": BEFORE, "after": []}
GANS = ("pix2pix", "scft")
KEEP = ["train.keep_epochs=true"]  # every epoch's weights: the quality at the stopping epoch and at 2 × it


def train(run: str, out: Path, sets: list[str], tuned: list[str] = ()) -> None:
    cmd = [sys.executable, "-m", "linebridge.cli", "train", "--experiment", run, "--out", str(out), "--resume"]
    cmd += ["--no-mlflow", *tuned, *[a for s in sets for a in ("--set", s)]]
    print("$", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True)


def summarise(out: Path, cfg: dict[str, Any], data: dict[str, Any], at: int | None = None) -> dict[str, Any]:
    """The run in `out` where it stops (`after`: the rule or the cap; `before`: its last epoch) or at epoch `at`."""
    tc = cfg["train"]
    walls = json.loads((out / "metrics.json").read_text())["epoch_wall_s"]
    rows = load_history(out / "history.csv")
    stop = converged_at(rows, tc["convergence_gain"], tc["min_epochs"])
    epoch = at or (stop if tc["stop_at_convergence"] and stop else None) or min(len(rows), tc["epochs"])
    value = convergence_value(rows[:epoch])
    kept = out / "epochs" / f"epoch_{epoch:03d}.pt"  # the GAN loop keeps no epochs: scored where it ends
    quality = study_quality(kept if kept.exists() or epoch < len(rows) else out / "last.pt", cfg, data)
    return {
        "epoch": epoch,
        "steps": int(rows[epoch - 1]["step"]),
        "loop_s": walls[epoch - 1],
        "rule_first_held_at": stop,
        "rule_holds": stop is not None and epoch >= stop,
        "val_loss_fall_last_quarter": None if value is None else round(value, 4),
        "val_loss": rows[epoch - 1]["val_loss"],
        "quality": rounded(quality),
    }


def load_history(csv_file: Path) -> list[dict[str, Any]]:
    """A run's epoch rows (its history.csv, or the study's metrics/train/RUN.csv)."""
    import csv

    with csv_file.open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", default=["A0", "A3", "A5"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--extend", type=float, default=0, help="continue each `after` run to this × its stop")
    parser.add_argument("--val-items", type=int, default=160, help="validation items per protocol (self, cross_gt)")
    parser.add_argument("--out", default="metrics/convergence.json")
    parser.add_argument("--resummarise", action="store_true", help="re-read the finished runs; train nothing")
    parser.add_argument("--gans", nargs="+", choices=GANS, help="instead: these GAN baselines on longer schedules")
    parser.add_argument("--gan-times", nargs="+", type=int, default=[1, 2], help="--gans: schedule multiples")
    parser.add_argument("--past-stop", nargs="+", metavar="RUN", help="instead: these study runs past their stop")
    parser.add_argument("--times", type=float, default=2.0, help="--past-stop: train on to this × the stop")
    args = parser.parse_args()
    root = repo_root()
    out_json = root / args.out
    record = json.loads(out_json.read_text()) if out_json.exists() else {"runs": {}}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    record.update(
        {
            "command": "python benchmarks/convergence.py (see each run's `command` and `commit`)",
            "before_overrides": BEFORE,
        }
    )
    threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))
    record.setdefault("threads", threads)  # the first sitting's; a run in another records its own
    sitting = {"host": platform.node(), "date": datetime.date.today().isoformat(), "commit": commit}
    if threads != record["threads"]:
        sitting["threads"] = threads
    sitting["command"] = " ".join(["python benchmarks/convergence.py", *sys.argv[1:]])
    for name in (args.gans or []) if not args.past_stop else []:
        for times in args.gan_times:
            epochs = load_config(name)["baselines"][name]["epochs"] * times
            key = f"gan-{epochs}ep/{name}"
            folder = root / "outputs" / "bench" / "convergence" / key
            sets = [f"baselines.{name}.epochs={epochs}", *KEEP, f"eval.sweep_images={args.val_items}"]
            if key not in record["runs"] or not (folder / "metrics.json").exists():
                train(name, folder, sets)
                cfg = load_config(name, overrides=sets)
                record["runs"][key] = {**sitting, **summarise(folder, cfg, validation_sets(cfg), at=epochs)}
                write_json(out_json, plateaus(ratios(record)))
    for run in args.past_stop or []:
        record.setdefault("past_stop", {})[run] = {
            **sitting,
            **past_stop(root, run, args.times, args.val_items, record.get("past_stop", {}).get(run)),
        }
        write_json(out_json, record)
    for recipe in args.recipes if not (args.gans or args.past_stop) else []:
        for arm in args.arms:
            for seed in args.seeds:
                run = f"{arm}-s{seed}"
                key = f"{recipe}/{run}"
                folder = root / "outputs" / "bench" / "convergence" / recipe / run
                sets = RECIPES[recipe] + KEEP + [f"eval.sweep_images={args.val_items}"]
                cfg = load_config(run, overrides=sets)
                data = validation_sets(cfg)
                entry = record["runs"].get(key)
                if args.resummarise:
                    if entry is not None and (folder / "metrics.json").exists():
                        keys = ("host", "date", "commit", "command", "threads", "extended")
                        kept = {k: entry[k] for k in keys if k in entry}
                        entry = record["runs"][key] = {**kept, **summarise(folder, cfg, data)}
                        write_json(out_json, ratios(record))
                    continue
                if entry is None or not (folder / "metrics.json").exists():
                    train(run, folder, sets)
                    entry = {**sitting, **summarise(folder, cfg, data)}
                    record["runs"][key] = entry
                    write_json(out_json, ratios(record))
                if recipe == "after" and args.extend and "extended" not in entry:
                    longer = int(round(args.extend * entry["epoch"]))
                    extra = [f"train.epochs={longer}", "train.stop_at_convergence=false"]
                    train(run, folder, sets + extra)
                    cfg = load_config(run, overrides=sets + extra)
                    later = summarise(folder, cfg, data, at=longer)
                    entry["extended"] = {**sitting, "times": args.extend, **later}
                    write_json(out_json, ratios(record))
    print(json.dumps(ratios(record), indent=2))
    return 0


def past_stop(root: Path, run: str, times: float, val_items: int, done: dict[str, Any] | None) -> dict[str, Any]:
    """The study's RUN trained on, in a copy, to `times` × its stop: validation quality at both against its arm's
    seed-to-seed spread (see the module docstring)."""
    import shutil

    import numpy as np

    from linebridge.core.config import RUN_NAME, load_tuned_config, read_yaml

    study_dir, summary = root / "outputs" / "train" / run, root / "metrics" / "train" / f"{run}.json"
    if not (summary.exists() and (study_dir / "last.pt").exists()):
        raise SystemExit(f"{run}: no finished study run here; train it first (`make repro` or `dvc repro train@{run}`)")
    stop = json.loads(summary.read_text())["epochs_run"]
    longer = int(round(times * stop))
    tuned_file = root / load_config(run)["tune"]["best_params"]
    sets = [f"eval.sweep_images={val_items}"]
    cfg, _ = load_tuned_config(run, None, sets, tuned_file)
    data = validation_sets(cfg)
    arm = RUN_NAME.match(run)["arm"]
    seeds = sorted(
        name
        for name, experiment in read_yaml(root / "params.yaml")["study"]["runs"].items()
        if experiment == arm and (root / "outputs" / "train" / name / "best.pt").exists()
    )
    at_stop = (done or {}).get("seeds", {})
    for name in seeds:  # each seed's best checkpoint at its stop, as the study evaluates it
        if name not in at_stop:
            seed_cfg, _ = load_tuned_config(name, None, sets, tuned_file)
            at_stop[name] = rounded(study_quality(root / "outputs" / "train" / name / "best.pt", seed_cfg, data))
    folder = root / "outputs" / "bench" / "convergence" / "past-stop" / run
    if not folder.exists():  # the run as the study left it: checkpoints, summary and history (--out's layout)
        tmp = folder.with_suffix(".tmp")
        shutil.copytree(study_dir, tmp, dirs_exist_ok=True)
        shutil.copy(summary, tmp / "metrics.json")
        shutil.copy(summary.with_suffix(".csv"), tmp / "history.csv")
        tmp.rename(folder)
    extra = [f"train.epochs={longer}", "train.stop_at_convergence=false"]
    train(run, folder, [*sets, *extra], ["--tuned", str(tuned_file)])
    before, after = load_history(summary.with_suffix(".csv")), load_history(folder / "history.csv")
    if after[:stop] != before:
        raise SystemExit(f"{folder} did not go on from the study's run (its first {stop} epochs differ): remove it")
    ran = json.loads((folder / "metrics.json").read_text())
    end = {  # best.pt: what the study would have scored had it trained on; last.pt: the weights at the end
        name: rounded(study_quality(folder / f"{name}.pt", cfg, data)) for name in ("best", "last")
    }
    spread = len(at_stop) > 1
    sd = {k: round(float(np.std([q[k] for q in at_stop.values()], ddof=1)), 4) for k in end["best"]} if spread else {}
    moved = {name: {k: round(q[k] - at_stop[run][k], 4) for k in q} for name, q in end.items()}
    return {
        "stop_epoch": stop,
        "trained_to": ran["epochs_run"],  # below `times` × stop when patience stopped it
        "stopped_early": ran["stopped_early"],
        "best_epoch": ran["best_epoch"],
        "at_stop": at_stop[run],
        "at_end": end,
        "moved": moved,
        "seeds": at_stop,
        "seed_sd": sd,
        "within_spread": {name: {k: abs(m[k]) < sd[k] for k in sd} for name, m in moved.items()},
    }


def rounded(quality: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in quality.items()}


def plateaus(record: dict[str, Any]) -> dict[str, Any]:
    """Per GAN baseline, each longer schedule's validation quality minus the next shorter one's ("12→24": ...)."""
    by_gan: dict[str, dict[int, dict[str, float]]] = {}
    for key, run in record["runs"].items():
        if key.startswith("gan-"):
            by_gan.setdefault(key.split("/", 1)[1], {})[run["epoch"]] = run["quality"]
    record["plateau"] = {
        name: {
            f"{a}→{b}": {m: round(runs[b][m] - runs[a][m], 4) for m in runs[a]}
            for a, b in zip(sorted(runs), sorted(runs)[1:])
        }
        for name, runs in by_gan.items()
    }
    return record


def ratios(record: dict[str, Any]) -> dict[str, Any]:
    """`ratio` per run: the new recipe's loop seconds to its stop over the previous recipe's 24 epochs."""
    runs = record["runs"]
    record["ratio"] = {
        run.split("/", 1)[1]: round(runs[run]["loop_s"] / runs[f"before/{run.split('/', 1)[1]}"]["loop_s"], 3)
        for run in runs
        if run.startswith("after/") and f"before/{run.split('/', 1)[1]}" in runs
    }
    return record


if __name__ == "__main__":
    sys.exit(main())
