"""Checkpoints that survive `kill -9` and never unpickle arbitrary objects.

Written to a temp file in the same folder, fsynced, then renamed over the old one, so a
reader sees either the previous checkpoint or the new one, never half of one. Read
with `torch.load(weights_only=True)`: only tensors and plain containers come back.
"""

from __future__ import annotations

import json
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


RELEASE_SUFFIX = ".safetensors"  # released weights: EMA tensors + the run's config as metadata, no pickle


def save_release(path: Path, weights: dict[str, Tensor], config: dict[str, Any], facts: dict[str, str]) -> None:
    """The EMA weights of a BBDM run as safetensors; its config (JSON) and `facts` (source, commit) as metadata."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
    metadata = {"kind": BBDM_KIND, "config": json.dumps(config, sort_keys=True), **facts}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_release(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Released weights as a checkpoint-shaped state: kind, config and `ema` (there are no raw weights)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as fh:
            metadata = fh.metadata() or {}
            weights = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({str(err)[:200]}); fetch it again") from None
    if metadata.get("kind") != BBDM_KIND or "config" not in metadata:
        raise CheckpointError(f"{path}: safetensors without linebridge metadata; export with `linebridge release`")
    return {"kind": BBDM_KIND, "config": json.loads(metadata["config"]), "ema": weights, "released": metadata}


def load(path: Path, kind: str | None = BBDM_KIND, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint (or released `.safetensors` weights); a clear CheckpointError when it is missing,
    truncated or of the wrong kind."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint. Train first: `linebridge train --experiment ID`.")
    if path.suffix == RELEASE_SUFFIX:
        state = load_release(path, map_location)
        if kind is not None and kind != BBDM_KIND:
            raise CheckpointError(f"{path}: released BBDM weights, expected a checkpoint of kind {kind!r}")
        return state
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
