"""Counting collectives: how many all-reduces a forward pass makes, how many bytes, and from where.

    with comm.counting() as log:
        logits = tp_model(ids)
    log.summary()   # {"all_reduce": 9, "all_reduce_bytes": ..., "all_gather": 1, ...}

labkit's own tensor-parallel layers call `all_reduce` / `all_gather` here (which record, then call
torch.distributed); DTensor's collectives are counted with `DTensorCounter`, a CommDebugMode that
also adds up bytes.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist


@dataclass
class CommLog:
    """Collectives seen while counting: (op, tag, bytes) per call."""

    calls: list[tuple[str, str, int]] = field(default_factory=list)

    def count(self, op: str, tag: str | None = None) -> int:
        return sum(1 for o, t, _ in self.calls if o == op and (tag is None or t == tag))

    def nbytes(self, op: str) -> int:
        return sum(b for o, _, b in self.calls if o == op)

    def by_tag(self, op: str = "all_reduce") -> dict[str, int]:
        return dict(Counter(t for o, t, _ in self.calls if o == op))

    def summary(self) -> dict[str, int]:
        ops = sorted({o for o, _, _ in self.calls})
        return {k: v for op in ops for k, v in ((op, self.count(op)), (f"{op}_bytes", self.nbytes(op)))}


_ACTIVE: list[CommLog] = []


@contextlib.contextmanager
def counting() -> Iterator[CommLog]:
    """Record every collective labkit's layers make inside the block."""
    log = CommLog()
    _ACTIVE.append(log)
    try:
        yield log
    finally:
        _ACTIVE.remove(log)


def _record(op: str, tag: str, t: torch.Tensor) -> None:
    for log in _ACTIVE:
        log.calls.append((op, tag, t.numel() * t.element_size()))


def all_reduce(t: torch.Tensor, tag: str) -> torch.Tensor:
    """Sum `t` over all ranks, in place (recorded under `tag`)."""
    _record("all_reduce", tag, t)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


def all_gather(t: torch.Tensor, dim: int, tag: str) -> torch.Tensor:
    """Concatenate every rank's `t` along `dim` (recorded under `tag`, with this rank's bytes)."""
    _record("all_gather", tag, t)
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=dim)


def _dtensor_counter_base():
    from torch.distributed.tensor.debug import CommDebugMode

    return CommDebugMode


class DTensorCounter(_dtensor_counter_base()):
    """CommDebugMode that also sums the input bytes of each collective DTensor issues."""

    def __init__(self) -> None:
        super().__init__()
        self.log = CommLog()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = super().__torch_dispatch__(func, types, args, kwargs)
        name = getattr(getattr(func, "_overloadpacket", None), "__name__", "")
        if out is not NotImplemented and name in ("all_reduce", "all_gather_into_tensor", "reduce_scatter_tensor"):
            op = "all_gather" if name.startswith("all_gather") else name
            self.log.calls.append((op, "dtensor", args[0].numel() * args[0].element_size()))
        return out
