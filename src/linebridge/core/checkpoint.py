"""Checkpoints that survive `kill -9` and never unpickle arbitrary objects.

Written to a temp file in the same folder, fsynced, then renamed over the old one, so a
reader sees either the previous checkpoint or the new one, never half of one. Read
with `torch.load(weights_only=True)`: only tensors and plain containers come back.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from linebridge.core.config import UserError
from linebridge.core.io import atomic_path

BBDM_KIND = "linebridge-bbdm"
GAN_KIND = "linebridge-gan"  # Pix2Pix / SCFT baselines (baselines/gan.py)

# What a loaded model of any family is: fn(lineart, ref or None, seed) -> colour, all in [-1, 1].
Colorizer = Callable[[Tensor, "Tensor | None", int], Tensor]


class CheckpointError(UserError):
    """A checkpoint is missing, damaged or of another kind."""


def save(state: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())


def load(path: Path, kind: str | None = BBDM_KIND, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint; a clear CheckpointError when it is missing, truncated or of the wrong kind."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint. Train first: `linebridge train --experiment ID`.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(
            f"{path}: truncated or corrupted checkpoint ({type(err).__name__}: {str(err)[:200]}). "
            "Delete it and train again, or point to another checkpoint."
        ) from None
    except Exception as err:  # weights_only refuses pickled objects with an UnpicklingError
        raise CheckpointError(
            f"{path}: not a linebridge checkpoint or holds disallowed objects ({err.__class__.__name__})."
        ) from None
    if not isinstance(state, dict) or (kind is not None and state.get("kind") != kind):
        found = state.get("kind") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path}: checkpoint of kind {found!r}, expected {kind!r} (a linebridge training checkpoint)."
        )
    return state
