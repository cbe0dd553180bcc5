"""Atomic file output: a reader (DVC, a resumed run, another process) never sees half a file.

Every product of the pipeline is written beside its target under a hidden temporary
name and renamed into place, so a run killed mid-write leaves the old file or none.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed.

    For writers that want a file name (matplotlib, PIL, torch.save): write to the yielded path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write text (UTF-8) or bytes to `path` atomically."""
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")


def write_json(path: str | Path, obj: Any) -> None:
    """Indented JSON with a final newline: the form of every committed metrics file."""
    write_atomic(path, json.dumps(obj, indent=2) + "\n")


def save_with(path: str | Path, save: Callable[[Path], Any]) -> Path:
    """Call `save(tmp)` (e.g. `fig.savefig`, `image.save`) and move the result to `path` atomically."""
    with atomic_path(path) as tmp:
        save(tmp)
    return Path(path)
