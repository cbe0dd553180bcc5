"""Are two study roots the same study? Every metric value and every checkpoint tensor, compared.

For refactors that must change no result: run the tiny-profile pipeline (`dvc repro` with `profile: tiny`)
once at the old commit and once at the new one, each in its own root, then

    python benchmarks/compare_studies.py OLD_ROOT NEW_ROOT

compares metrics/**.{json,csv,yaml} (JSON by value; wall-clock fields and the keys of options that were
removed are skipped) and outputs/train/**.pt (every tensor bit for bit, the stored configuration skipped).
Exit status 1 when anything differs.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

# Keys that record time, or options removed since (their absence is not a change of result).
SKIPPED = {"seconds_per_image", "images_per_s", "wall_s", "wall_time_s", "epoch_wall_s", "seconds", "minutes"}
REMOVED = {"clip_denoised", "guidance"}


def strip(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: strip(v) for k, v in x.items() if k not in SKIPPED | REMOVED}
    if isinstance(x, list):
        return [strip(v) for v in x]
    return x


def tensors(x: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(x, torch.Tensor):
        yield prefix, x
    elif isinstance(x, dict):
        for k, v in x.items():
            if k != "config":
                yield from tensors(v, f"{prefix}.{k}")
    elif isinstance(x, (list, tuple)):
        for i, v in enumerate(x):
            yield from tensors(v, f"{prefix}[{i}]")


def same_file(a: Path, b: Path) -> bool:
    if a.read_bytes() == b.read_bytes():
        return True
    if a.suffix == ".json":
        return strip(json.loads(a.read_text())) == strip(json.loads(b.read_text()))
    if a.suffix == ".csv":
        ra, rb = list(csv.reader(a.open())), list(csv.reader(b.open()))
        keep = [i for i, h in enumerate(ra[0]) if h not in SKIPPED]
        return ra[0] == rb[0] and [[r[i] for i in keep] for r in ra] == [[r[i] for i in keep] for r in rb]
    return False


def compare(old: Path, new: Path) -> list[str]:
    problems = []
    for pattern in ("metrics/**/*.json", "metrics/**/*.csv", "metrics/**/*.yaml"):
        a = {p.relative_to(old) for p in old.glob(pattern)}
        b = {p.relative_to(new) for p in new.glob(pattern)}
        problems += [f"only in one root: {p}" for p in sorted(a ^ b)]
        problems += [f"differs: {p}" for p in sorted(a & b) if not same_file(old / p, new / p)]
    n = 0
    for path in sorted(old.glob("outputs/train/**/*.pt")):
        rel = path.relative_to(old)
        if not (new / rel).exists():
            problems.append(f"only in {old}: {rel}")
            continue
        ta = dict(tensors(torch.load(path, weights_only=True)))
        tb = dict(tensors(torch.load(new / rel, weights_only=True)))
        if ta.keys() != tb.keys():
            problems.append(f"other tensors: {rel}")
            continue
        n += len(ta)
        problems += [f"tensor differs: {rel} {k}" for k in ta if not torch.equal(ta[k], tb[k])]
    print(f"compared {n} checkpoint tensors and every metric file")
    return problems


if __name__ == "__main__":
    found = compare(Path(sys.argv[1]), Path(sys.argv[2]))
    print("\n".join(found) or "identical")
    sys.exit(1 if found else 0)
