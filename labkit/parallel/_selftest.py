"""Tiny rank functions the launcher's own tests run (they must live in an importable module)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def rank_and_sum() -> dict:
    """Each rank contributes rank + 1; all-reduce sums them."""
    t = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(t)
    return {
        "rank": dist.get_rank(),
        "world_size": dist.get_world_size(),
        "sum": t.item(),
        "backend": dist.get_backend(),
    }


def fail_on_rank(bad_rank: int = 1) -> None:
    """One rank raises while the other waits in a collective that can never complete."""
    if dist.get_rank() == bad_rank:
        raise ValueError(f"deliberate failure on rank {bad_rank}")
    dist.barrier()
