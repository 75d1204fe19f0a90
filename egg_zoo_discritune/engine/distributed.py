"""torchrun support: the process group, who this process is, and the collectives the game needs.

``torchrun --nproc_per_node N`` sets MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK and LOCAL_RANK (EGG's
"launch" mode reads the same five). Everything here is a no-op in a single process, so the same code
path runs with and without torchrun.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import torch
import torch.distributed as dist

TORCHRUN_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK")


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_leader(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in TORCHRUN_ENV) and int(os.environ["WORLD_SIZE"]) > 1


def init_distributed(use_cuda: bool) -> DistributedContext:
    """Joins the process group (NCCL on GPUs, gloo on CPUs) when started by torchrun; else a single process."""
    if not launched_by_torchrun():
        return DistributedContext()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return current_context()


@contextmanager
def process_group(use_cuda: bool, join: Optional[Callable[[], DistributedContext]] = None
                  ) -> Iterator[DistributedContext]:
    """The whole life of a torchrun process group: this process's GPU is chosen first (NCCL needs it before
    the group forms), the group is joined (by ``join``, e.g. EGG's own init, else here), and it is left
    at the end, whatever happens in between. A single process gets a plain context."""
    if use_cuda and launched_by_torchrun():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    context = join() if join is not None else init_distributed(use_cuda)
    try:
        yield context
    finally:
        finish_distributed()


def current_context() -> DistributedContext:
    """The context of an initialised process group (whoever initialised it: this package or EGG)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistributedContext()
    return DistributedContext(dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)), dist.get_world_size())


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@torch.no_grad()
def all_gather_rows(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every rank's ``x`` concatenated along the first dimension in rank order (the sizes may differ:
    undecodable images leave a rank with fewer), and the offset of this rank's rows in the result."""
    if world_size() == 1:
        return x, 0
    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([x.size(0)], device=x.device))
    sizes = [int(s) for s in sizes]
    padded = torch.zeros((max(sizes), *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[: x.size(0)] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)]), sum(sizes[: dist.get_rank()])


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    if world_size() == 1:
        return x
    x = x.detach().clone()
    dist.all_reduce(x)
    return x / dist.get_world_size()


def local_device(device: torch.device, context: DistributedContext) -> torch.device:
    """This process's GPU under torchrun (one per process, by LOCAL_RANK); the device itself otherwise."""
    if device.type != "cuda" or not context.is_distributed:
        return device
    torch.cuda.set_device(context.local_rank)
    return torch.device("cuda", context.local_rank)


def broadcast_from_leader(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a picklable object, e.g. the run directory)."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@contextmanager
def leader_first(context: DistributedContext) -> Iterator[None]:
    """Rank 0 runs the block before the others (who then find its result on disk, e.g. a built toy world)."""
    if context.is_distributed and not context.is_leader:
        dist.barrier()
    yield
    if context.is_distributed and context.is_leader:
        dist.barrier()


def shard(n: int, context: DistributedContext) -> range:
    """This process's contiguous share of ``n`` items (contiguous, so gathering in rank order keeps file order)."""
    return range(n * context.rank // context.world_size, n * (context.rank + 1) // context.world_size)


def all_gather_lists(items: list) -> list:
    """Every rank's list (picklable items, e.g. captions) concatenated in rank order."""
    if world_size() == 1:
        return items
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part]


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def finish_distributed() -> None:
    """Leaves the process group (any DDP wrapper must be gone by then)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
