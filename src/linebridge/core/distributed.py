"""torchrun support: process group, rank, and the few collectives training needs.

Under `torchrun --nproc_per_node=N` (env WORLD_SIZE > 1) training runs DistributedDataParallel
on gloo (CPU) or NCCL (GPU). Every rank draws the random numbers of the *whole* global
batch (timesteps, noise, TPS warps: cheap) and computes its own slice, so a BBDM DDP run
equals a single-process run with the same global batch up to the order of float
reductions. The GAN baselines' BatchNorm sees each rank's slice, so theirs does not.
Only rank 0 logs and writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self) -> torch.device:
        return torch.device(f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu")

    def my_slice(self, global_batch: int) -> slice:
        """This rank's contiguous part of a global batch (the batch size must divide evenly)."""
        per = global_batch // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    def min_item(self, value: torch.Tensor) -> int:
        """The smallest value of a scalar integer tensor over all ranks, as a Python int (a host sync)."""
        if self.world > 1:
            value = value.detach().clone()
            if dist.get_backend() != "nccl":
                value = value.cpu()
            dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return int(value.item())

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return value
        out = value.detach().clone()
        dist.all_reduce(out)
        return out / self.world

    def from_main(self, value: float) -> float:
        """Rank 0's value of a Python float on every rank (a host sync; the value itself in one process)."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device() if dist.get_backend() == "nccl" else "cpu")
        dist.broadcast(t, src=0)
        return float(t.item())

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm running statistics) to every rank."""
        if self.world > 1:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    def same_everywhere(self, tensors: list[torch.Tensor]) -> bool:
        """Whether every rank holds bit-identical tensors (compares a float64 checksum)."""
        if self.world == 1:
            return True
        checksum = torch.stack(
            [t.detach().double().sum() + t.detach().double().abs().sum() * 1e-3 for t in tensors]
        ).sum()
        gathered = [torch.zeros_like(checksum) for _ in range(self.world)]
        dist.all_gather(gathered, checksum)
        return all(torch.equal(g, gathered[0]) for g in gathered)


def setup() -> Dist:
    """Join the process group when launched by torchrun; a no-op in a plain process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    info = Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
    return info


def teardown(info: Dist) -> None:
    if info.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
