"""Which bridge objective to train: grad, noise and ysubx compared at equal budget.

BBDM lets the network predict three things (`bridge.objective`): grad (m_t(y − x₀) + √δ_t ε, the
step from x_t back towards x₀; BBDM's default), ysubx (y − x₀) or noise (ε). The sampler turns each
into its own estimate x̂ of the target (`BrownianBridge.predict_target`); the L1 and edge losses are
taken on the predicted quantity. An error in the output passes into x̂ one to one for grad and
ysubx, but multiplied by √δ_t / (1 − m_t) for noise: ~45× at the first sampler step (t = T − 1).

This side study trains the study's full method (A3, with the tuned values where the study uses
them) once per objective and seed, everything else equal, and scores each checkpoint on the
validation split at the study's sampler and at more steps. It costs ~20 minutes on the CPU profile,
beyond the study's budget, so it is no DVC stage: `make objectives` writes metrics/objectives.json
(with the commit and the recipe), which the report stage reads. A killed run resumes: each training
continues from its last epoch, and a finished one is reloaded rather than trained again.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from linebridge.bbdm.bridge import OBJECTIVES
from linebridge.core.config import (
    Config,
    add_config_arguments,
    load_config,
    load_tuned_config,
    repo_root,
)
from linebridge.core.io import write_json
from linebridge.core.tracking import git_commit

EXPERIMENT = "A3"
METRICS = ("psnr", "ssim", "delta_e", "tint_rate", "delta_e_tone")


def compare(
    cfg_for: Callable[[str, int], Config],
    objectives: list[str],
    seeds: list[int],
    steps: list[int],
    runs: Path,
    log_mlflow: bool,
) -> dict[str, Any]:
    """Train and score every (objective, seed); `cfg_for(objective, seed)` gives the config."""
    from linebridge.bbdm.train import train
    from linebridge.core.runs import Paths
    from linebridge.evaluation.evaluate import study_quality, validation_sets

    data = validation_sets(cfg_for(objectives[0], seeds[0]))  # the same items for every run
    rows = []
    for objective in objectives:
        for seed in seeds:
            cfg = cfg_for(objective, seed)
            paths = Paths.for_experiment(cfg["experiment"], runs / f"{objective}-s{seed}")
            summary = train(cfg, paths, resume=True, log_mlflow=log_mlflow, progress=True)
            scores = []
            for n in steps:
                t0 = time.perf_counter()
                quality = study_quality(paths.best, {**cfg, "eval": {**cfg["eval"], "sample_step": n}}, data)
                scores.append({"sample_step": n, **{k: quality[k] for k in METRICS}})
                print(
                    f"{cfg['experiment']} {n:>3} steps: PSNR {quality['psnr']:.2f}  tint {quality['tint_rate']:.1%}  "
                    f"tone ΔE00 {quality['delta_e_tone']:.2f}  ({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
            rows.append(
                {
                    "objective": objective,
                    "seed": seed,
                    "train_steps": summary["steps"],
                    "train_seconds": summary["wall_time_s"],
                    "scores": scores,
                }
            )
    means = []
    for objective in objectives:
        mine = [r for r in rows if r["objective"] == objective]
        for i, n in enumerate(steps):
            means.append(
                {
                    "objective": objective,
                    "sample_step": n,
                    **{k: float(np.mean([r["scores"][i][k] for r in mine])) for k in METRICS},
                    "train_seconds": float(np.mean([r["train_seconds"] for r in mine])),
                }
            )
    return {"runs": rows, "means": means, "validation_items": {p: len(d["id"]) for p, d in data.items()}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--objectives", nargs="+", choices=OBJECTIVES, default=list(OBJECTIVES), help="bridge objectives to train"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="training seeds of each objective")
    parser.add_argument(
        "--epochs", type=int, default=4, help="epochs of every training (equal budget: no convergence stop)"
    )
    parser.add_argument(
        "--steps", nargs="+", type=int, default=None, help="sampler steps to score (default: the study's, and 10)"
    )
    parser.add_argument("--runs", default="outputs/objectives", help="checkpoint folder, one run per objective-seed")
    parser.add_argument("--out", default="metrics/objectives.json", help="JSON the report reads")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log the trainings to MLflow")


def main(args: argparse.Namespace) -> int:
    from linebridge.core.runs import TrainingDiverged
    from linebridge.inference import check_sampler

    root = repo_root()
    objectives, seeds = list(dict.fromkeys(args.objectives)), list(dict.fromkeys(args.seeds))

    tuned = root / load_config(EXPERIMENT, args.profile)["tune"]["best_params"]  # as the study's train stages

    def cfg_for(objective: str, seed: int) -> Config:
        overrides = [*args.overrides, f"bridge.objective={objective}"]
        cfg, _ = load_tuned_config(f"{EXPERIMENT}-s{seed}", args.profile, overrides, tuned)
        cfg["experiment"] = f"{EXPERIMENT}-{objective}-s{seed}"  # its name in MLflow and on progress bars
        cfg["train"]["keep_epochs"] = False  # only the final weights are scored
        cfg["train"]["stop_at_convergence"] = False  # equal budget: every objective trains the same epochs
        cfg["train"]["epochs"] = args.epochs
        return cfg

    base = cfg_for(objectives[0], seeds[0])
    steps = sorted(set(args.steps or [base["eval"]["sample_step"], 10]))
    for n in steps:
        check_sampler(n, base["eval"]["eta"], base["bridge"]["num_timesteps"])
    started = time.perf_counter()
    try:
        result = compare(cfg_for, objectives, seeds, steps, root / args.runs, not args.no_mlflow)
    except TrainingDiverged as err:
        print(f"linebridge objectives: {err}; the finished trainings are kept, the same command continues")
        return 3
    out = root / args.out
    write_json(
        out,
        {
            "commit": git_commit(),
            "profile": base["profile"],
            "experiment": EXPERIMENT,
            "sampler_from": "params.yaml eval",
            "overrides": list(args.overrides),
            "recipe": {k: base["train"][k] for k in ("epochs", "batch_size", "lr")},
            "sampler": {k: base["eval"][k] for k in ("eta", "deterministic", "weights")},
            **result,
            "wall_seconds": time.perf_counter() - started,
        },
    )
    print(f"wrote {out}")
    return 0
