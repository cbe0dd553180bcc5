"""What the demo page offers: the checkpoints it finds, the fixed test items of its gallery, and what to do when
there is no checkpoint. Plain files only (no Gradio, no torch), so the page's choices are tested without either."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from linebridge.core.config import RELEASED, UserError, read_yaml

PROTOCOLS = ("self", "cross_gt")  # the gallery's test protocols: both have a paired ground truth
EXAMPLES_PER_PROTOCOL = 8


@dataclass(frozen=True)
class Example:
    """One fixed test item: its line art, its protocol's reference and its ground truth."""

    protocol: str
    id: str
    line: Path
    ref: Path
    gt: Path

    @property
    def caption(self) -> str:
        return f"{self.protocol} · {self.id}"


RELEASED_LABEL = "released weights (the study's method)"


def find_checkpoints(root: Path, extra: Path | None = None) -> dict[str, Path]:
    """Label → checkpoint: `extra` first (--checkpoint), then the released weights (weights/linebridge.safetensors),
    then outputs/train/*/*.pt (runs such as A5-s0, baselines)."""
    found: dict[str, Path] = {}
    if extra is not None:
        found[f"{extra} (--checkpoint)"] = extra
    if (root / RELEASED).is_file():
        found[RELEASED_LABEL] = root / RELEASED
    for path in sorted((root / "outputs" / "train").glob("*/*.pt")):
        found[f"{path.parent.name} / {path.name}"] = path
    return found


def default_choice(models: dict[str, Path], extra: Path | None) -> str | None:
    """--checkpoint when given, else the released weights of the study's method, else the first found."""
    if not models:
        return None
    return next(iter(models))  # find_checkpoints lists --checkpoint, then the released weights, first


def find_examples(prepared: Path, per_protocol: int = EXAMPLES_PER_PROTOCOL) -> list[Example]:
    """Up to `per_protocol` items of each gallery protocol, spread over its CSV (prepare.py's layout)."""
    examples: list[Example] = []
    for protocol in PROTOCOLS:
        table = prepared / "protocols" / f"{protocol}.csv"
        if not table.is_file():
            continue
        with table.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        stride = max(1, len(rows) // per_protocol)
        for row in rows[::stride][:per_protocol]:
            item = Example(
                protocol,
                row["id"],
                prepared / "line" / f"{row['gt']}.png",
                prepared / "protocols" / protocol / "ref" / f"{row['id']}.png",
                prepared / "colour" / f"{row['gt']}.png",
            )
            if item.line.is_file() and item.ref.is_file() and item.gt.is_file():
                examples.append(item)
    return examples


def no_checkpoint_note(root: Path) -> str:
    """What to run when there is nothing to colour with (Markdown)."""
    try:
        method = str(read_yaml(root / "params.yaml")["study"]["method"])
    except (OSError, KeyError, TypeError, UserError):
        method = "A5"
    took = ""
    try:
        seconds = float(json.loads((root / "metrics" / "train" / f"{method}-s0.json").read_text())["wall_time_s"])
        took = f" Its training took about {seconds / 60:.0f} minutes ({seconds:.0f} s) on the CPU of the last study."
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return (
        "### No trained checkpoint found\n"
        f"Neither the released weights (`{RELEASED}`, committed with the study: `git checkout -- {RELEASED}` "
        f"restores them) nor anything under `{root / 'outputs' / 'train'}/*/*.pt`. Train the study's method, "
        "from the repository root:\n\n"
        "```bash\nlinebridge data fetch      # once: the OpenMoji SVGs\n"
        f"dvc repro train@{method}-s0      # seed 0; runs `prepare` (and any missing upstream stage) first\n```\n\n"
        f"{took} Or start the demo with `--checkpoint PATH`. Then restart `linebridge demo` and reload this page."
    )
