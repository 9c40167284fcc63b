"""What data-parallel trainer ranks exchange besides DeepSpeed's gradients (torch.distributed, gloo).

The deepspeed launcher runs one trainer process per rank. Rank 0 decides what every rank does
(`from_rank0`: the step's trajectories, the lineage placement, the teacher gate's reward), the
loss divisor is the used-token count summed over ranks (`token_mean_divisor`), and the metrics that
count over the global batch are summed (`summed_over_ranks`). Each function here is a collective:
every rank calls it, in the same order, or the ranks wait for each other forever. With one rank
they return their input and never touch torch.distributed.

Not guaranteed: a rank that never arrives is not detected here (torch.distributed's timeout is the
only one); values broadcast must pickle; sums are in float64.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar, cast

import torch
import torch.distributed as dist

T = TypeVar("T")


def from_rank0(decide: Callable[[], T], rank: int, world: int) -> T:
    """Rank 0's `decide()` on every rank; the other ranks never call it (store reads that decide
    what all ranks do are made once)."""
    if world == 1:
        return decide()
    box = [decide() if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return cast(T, box[0])


def all_reduce_sum(values: Sequence[float], world: int) -> list[float]:
    """Each value summed over every rank."""
    if world == 1:
        return list(values)
    total = torch.tensor(list(values), dtype=torch.float64)
    dist.all_reduce(total)
    return [float(v) for v in total.tolist()]


def token_mean_divisor(local_count: float, world: int) -> float:
    """The divisor that makes DeepSpeed's mean over ranks the token mean over the global batch:
    Σ_ranks count / world (one rank: its own count)."""
    [total] = all_reduce_sum([local_count], world)
    return total / world


def summed_over_ranks(metrics: dict[str, float], keys: Sequence[str], world: int) -> dict[str, float]:
    """`keys` of `metrics` (0 where missing) totalled over ranks; the loss as DeepSpeed averages it,
    the mean of the ranks' losses. One rank: the keys it has, as they are."""
    if world == 1:
        return {k: metrics[k] for k in keys if k in metrics}
    out = dict(zip(keys, all_reduce_sum([metrics.get(k, 0.0) for k in keys], world), strict=True))
    if "loss" in out:
        out["loss"] /= world
    return out


def barrier(world: int) -> None:
    """Every rank has arrived here."""
    if world > 1:
        dist.barrier()
