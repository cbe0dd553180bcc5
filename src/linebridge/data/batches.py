"""From a dataset to device batches, the same way in every training loop and validation.

The batch order of an epoch depends only on (seed, epoch), and validation draws its
timesteps, noise and references under a fixed seed, so runs, resumes and loss curves are
comparable. `reference_for` is the training reference: the target, TPS-warped and
colour-jittered (`data.augment`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from linebridge.config import Config

VALIDATION_SEED_OFFSET = 7919  # validation's RNG stream: cfg seed + this, apart from training's


def batches(
    dataset, batch_size: int, seed: int, epoch: int, skip: int = 0, shuffle: bool = True, drop_last: bool = True
):
    """Index batches of one epoch; the order depends only on (seed, epoch)."""
    n = len(dataset)
    order = (
        torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        if shuffle
        else torch.arange(n)
    )
    chunks = [c.tolist() for c in order.split(batch_size) if not drop_last or len(c) == batch_size]
    return chunks[skip:]


def collate(dataset, indices: list[int], device: torch.device) -> dict[str, Tensor]:
    items = [dataset[i] for i in indices]
    return {k: torch.stack([it[k] for it in items]).to(device) for k in ("GT", "lineart")}


@contextmanager
def validation_rng(cfg: Config) -> Iterator[None]:
    """The global CPU RNG seeded for validation, and restored afterwards so training's stream is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg["seed"] + VALIDATION_SEED_OFFSET)
        yield


def reference_for(gt: Tensor, cfg: Config) -> Tensor:
    from linebridge.data.augment import make_reference  # kornia, imported on use: the GPU check runs without it

    a = cfg["augment"]
    return make_reference(gt, a["use_tps"], a["tps_scale"], a["jitter"])
