"""One run over several processes: `torchrun --nproc_per_node N -m fercore train ...` (docs/architecture.md#compute).

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; `setup` joins the process group (NCCL on CUDA,
gloo on CPU) and `fit` wraps the method in DistributedDataParallel. Every rank keeps the whole
split on its device and draws each global batch of `train.batch_size` exactly as a single process
would (same permutation, same augmentation); `ShardedLoader` then hands rank r the r-th of
`world` equal contiguous slices `[ours]`. DDP averages gradients, so with equal shards a step
equals the single-process step up to BatchNorm statistics (computed per shard) and float
summation order. Training sums, evaluation predictions, per-sample diagnostics and relabels are
merged across ranks; only rank 0 writes the run directory.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .errors import ConfigError


@dataclass
class Dist:
    """This process's place in the run; a single process is rank 0 of 1 and every method is a no-op."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def sum(self, t: Tensor) -> Tensor:
        """Sum of `t` over ranks (a new tensor)."""
        t = t.clone()
        if self.active:
            dist.all_reduce(t, dist.ReduceOp.SUM)
        return t

    def any(self, flag: Tensor) -> bool:
        """True if `flag` (a bool tensor) is set on any rank."""
        return bool(self.sum(flag.to(torch.int64).reshape(1)).item() > 0)

    def gather_rows(self, t: Tensor) -> Tensor:
        """Concatenate every rank's rows of `t` in rank order (row counts may differ by rank)."""
        if not self.active:
            return t
        n = torch.tensor([len(t)], device=t.device)
        sizes = [torch.zeros_like(n) for _ in range(self.world)]
        dist.all_gather(sizes, n)
        longest = int(max(s.item() for s in sizes))
        padded = torch.zeros((longest, *t.shape[1:]), dtype=t.dtype, device=t.device)
        padded[:len(t)] = t
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded)
        return torch.cat([p[:int(s.item())] for p, s in zip(parts, sizes)])

    def merge_samples(self, t: Tensor) -> Tensor:
        """Per-sample scores where each rank filled its own samples and left NaN elsewhere (SampleRecord):
        the filled values of all ranks, averaged where several ranks filled the same sample."""
        if not self.active:
            return t
        seen = ~torch.isnan(t)
        total = self.sum(torch.where(seen, t, torch.zeros_like(t)))
        count = self.sum(seen.to(t.dtype))
        return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(t, math.nan))

    def merge_labels(self, labels: Tensor, before: Tensor) -> None:
        """Make every rank's label table hold every rank's relabels of this epoch (in place).
        Shards of one epoch are disjoint, so each sample was relabelled by at most one rank."""
        if not self.active:
            return
        mark = torch.where(labels != before, labels + 1, torch.zeros_like(labels))
        dist.all_reduce(mark, dist.ReduceOp.MAX)
        labels.copy_(torch.where(mark > 0, mark - 1, before))

    def gather_objects(self, obj) -> list:
        """Every rank's `obj` (picklable), in rank order."""
        if not self.active:
            return [obj]
        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


def setup(device_spec: str) -> tuple[Dist, torch.device | None]:
    """Join the process group torchrun describes in the environment; a single process returns
    (Dist(), None). Under torchrun the device is cuda:LOCAL_RANK with CUDA, else the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), None
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_spec != "cpu" and torch.cuda.is_available()
    if device_spec.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device_spec!r} asked for, but torch sees no CUDA device")
    device = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", device_id=device if use_cuda else None)
    return Dist(rank=rank, world=world, local_rank=local), device


def shutdown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(batch: dict, d: Dist) -> dict:
    """Rank `d.rank`'s contiguous slice of every per-sample entry of a global batch."""
    n = len(batch["index"])
    return {k: (torch.tensor_split(v, d.world)[d.rank] if torch.is_tensor(v) and v.ndim and len(v) == n else v)
            for k, v in batch.items()}


class ShardedLoader:
    """Wraps a Loader: yields this rank's shard of each global batch."""

    def __init__(self, loader, d: Dist) -> None:
        if loader.batch_size % d.world:
            raise ConfigError(f"train.batch_size={loader.batch_size} must be a multiple of the "
                              f"{d.world} processes")
        if len(loader.data) < d.world:
            raise ConfigError(f"{len(loader.data)} training samples cannot be split over {d.world} processes")
        self.loader, self.dist = loader, d

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            yield shard(batch, self.dist)


def wrap(method: nn.Module, d: Dist, device: torch.device) -> nn.Module:
    """The module to call for training steps: DDP around `method` when distributed, else `method`."""
    if not d.active:
        return method
    from torch.nn.parallel import DistributedDataParallel as DDP
    return DDP(method, device_ids=[device.index] if device.type == "cuda" else None)
