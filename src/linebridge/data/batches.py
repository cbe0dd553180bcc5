"""From a dataset to device batches, the same way in every training loop and validation.

The batch order of an epoch depends only on (seed, epoch), and validation draws its
timesteps, noise and references under a fixed seed, so runs, resumes and loss curves are
comparable. `reference_for` is the training reference: the target, TPS-warped and
colour-jittered (`data.augment`); `SameToneDonors` swaps the target for another drawing
in the same skin tone (augment.reference_source = same_tone). `tone_regions` marks the
pixels that loss.tone_weight counts more.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from linebridge.core.config import Config, UserError

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
    return make_reference(gt, a["use_tps"], a["tps_scale"], a["reference_jitter"])


def shared_jitter(target: Tensor, source: Tensor, cfg: Config) -> tuple[Tensor, Tensor]:
    """Target and reference source recoloured by the same random jitter (augment.shared_jitter; off: unchanged).

    No draw when every strength is 0, so runs without it keep their random stream.
    """
    strengths = cfg["augment"]["shared_jitter"]
    if not any(strengths.values()):
        return target, source
    from linebridge.data.augment import jitter_pair

    return jitter_pair(target, source, strengths)


class SameToneDonors:
    """For each training picture with one skin tone, a reference source from another drawing in that tone.

    Trained only on warped copies of its own target, a model can learn to copy colours by
    position; a reference from a different drawing (another group) that shares only the skin
    tone makes the tone the one thing worth reading from it, which is what the cross_gt
    protocol asks at test time. Pictures without a single tone keep their own target. Draws
    come from the global RNG, so they replay on resume like the rest of training.
    """

    def __init__(self, dataset) -> None:
        base, index = _split_and_index(dataset)
        if not hasattr(base, "tones"):
            raise UserError(
                "augment.reference_source=same_tone needs skin tones, which only the prepared OpenMoji data has; "
                "use reference_source=self with data.dataset folder or pairs"
            )
        self.tones = [base.tones[i] for i in index]
        self.groups = [base.groups[i] for i in index]
        self.by_tone: dict[str, list[int]] = defaultdict(list)
        for i, tone in enumerate(self.tones):
            if tone is not None:
                self.by_tone[tone].append(i)

    def pick(self, indices: list[int]) -> list[int]:
        """A donor index per item: a random same-tone item of another group, or the item itself."""
        out = []
        for i in indices:
            tone = self.tones[i]
            candidates = [j for j in self.by_tone.get(tone, ()) if self.groups[j] != self.groups[i]] if tone else []
            out.append(candidates[int(torch.randint(len(candidates), ()))] if candidates else i)
        return out


def tone_regions(dataset) -> Tensor | None:
    """[N,1,H,W] 0/1 per item of `dataset` (the prepared OpenMoji, or the first N of it): its skin-tone region.

    loss.tone_weight counts these pixels more: only there does the target depend on the
    reference alone (the line art is the same for every tone), so only there is the lesson
    "read the colour from the reference". None for data without skin tones (folder, pairs):
    the loss is then plain L1.
    """
    base, index = _split_and_index(dataset)
    return base.tone_regions()[index] if hasattr(base, "tones") else None


def _split_and_index(dataset):
    """The dataset under `dataset` (a Subset from train.max_*_images, or itself) and the indices into it."""
    if hasattr(dataset, "indices"):
        return dataset.dataset, list(dataset.indices)
    return dataset, list(range(len(dataset)))
