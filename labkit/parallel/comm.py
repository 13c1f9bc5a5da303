"""Counting collectives: how many all-reduces a step makes, how many bytes, and from which layer.

    with comm.CommCounter() as counter:
        logits = tp_model(ids)
    counter.log.summary()   # {"all_reduce": 9, "all_reduce_bytes": ..., "all_gather": 1, ...}

One counter sees every collective a rank issues, whoever issues it (labkit's tensor-parallel layers, DTensor,
DeepSpeed, DDP, ZeroRedundancyOptimizer, FSDP2): it is a TorchDispatchMode, and every torch.distributed
collective is a `c10d` or `_c10d_functional` operator. labkit's own layers call `all_reduce` / `all_gather` here,
which label their collectives with a tag ("attention", "mlp", ...), so the log can also say where each came from.

Bytes per call are the size of the whole tensor being reduced or gathered (an all-gather's output, a
reduce-scatter's input). Two conventions turn them into bytes a rank sends, and they differ:

- `CommLog.traffic_bytes`, the ZeRO paper's (Rajbhandari et al., 2019, section 7): an all-reduce counts 2× its
  tensor (a reduce-scatter then an all-gather), every other collective 1×, the (N − 1)/N factor left out.
- `CommLog.ring_bytes(N)`, what one rank sends with bandwidth-optimal ring algorithms (Thakur, Rabenseifner &
  Gropp, "Optimization of collective communication operations in MPICH", 2005): 2(N − 1)/N × the tensor for an
  all-reduce (1× at N = 2, not 2×), (N − 1)/N for an all-gather, a reduce-scatter, a broadcast or a reduce
  (averaged over ranks). `labkit.parallel.wire` measures what a gloo rank really sends, to compare with both.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch.utils._python_dispatch import TorchDispatchMode, is_traceable_wrapper_subclass_type

# (namespace, operator) -> (collective, index of the argument whose bytes count)
_OPS = {
    ("c10d", "allreduce_"): ("all_reduce", 0), ("c10d", "allgather_"): ("all_gather", 0),
    ("c10d", "_allgather_base_"): ("all_gather", 0), ("c10d", "reduce_scatter_"): ("reduce_scatter", 1),
    ("c10d", "_reduce_scatter_base_"): ("reduce_scatter", 1), ("c10d", "broadcast_"): ("broadcast", 0),
    ("c10d", "reduce_"): ("reduce", 0), ("c10d", "alltoall_base_"): ("all_to_all", 1),
    ("_c10d_functional", "all_reduce"): ("all_reduce", 0), ("_c10d_functional", "all_reduce_"): ("all_reduce", 0),
    ("_c10d_functional", "all_gather_into_tensor"): ("all_gather", 0),
    ("_c10d_functional", "reduce_scatter_tensor"): ("reduce_scatter", 0),
}  # fmt: skip
# The ZeRO paper's accounting: an all-reduce = reduce-scatter + all-gather = 2× its tensor; every other collective 1×.
TRAFFIC_FACTOR = {"all_reduce": 2}


def ring_factor(op: str, world_size: int) -> float:
    """Bytes one rank sends per byte of a collective's tensor with ring algorithms (Thakur et al., 2005).

    Args:
        op: a collective as CommLog names it ("all_reduce", "all_gather", "reduce_scatter", ...).
        world_size: N, the ranks taking part (>= 1).
    Returns:
        2(N − 1)/N for an all-reduce, (N − 1)/N for any other collective (0 at N = 1: nothing leaves the rank).
    Raises:
        ValueError: world_size < 1.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    return TRAFFIC_FACTOR.get(op, 1) * (world_size - 1) / world_size


class Collective(NamedTuple):
    """One collective call: its kind, the tag of the labkit layer that issued it (None: someone else), bytes."""

    op: str
    tag: str | None
    nbytes: int


@dataclass(frozen=True)
class CommLog:
    """The collectives a block issued on this rank, in order (picklable: it travels back from a rank)."""

    calls: tuple[Collective, ...] = ()

    def count(self, op: str, tag: str | None = None) -> int:
        """Calls of collective `op` ("all_reduce", "all_gather", ...), only those tagged `tag` if given."""
        return sum(1 for c in self.calls if c.op == op and (tag is None or c.tag == tag))

    def nbytes(self, op: str) -> int:
        """Bytes of the tensors `op` reduced or gathered, summed over its calls."""
        return sum(c.nbytes for c in self.calls if c.op == op)

    def by_tag(self, op: str = "all_reduce") -> dict[str, int]:
        """Calls of `op` per labkit layer tag (untagged calls left out)."""
        return dict(Counter(c.tag for c in self.calls if c.op == op and c.tag is not None))

    def summary(self) -> dict[str, int]:
        """{op: calls, f"{op}_bytes": bytes} for every collective seen (empty when none was)."""
        ops = sorted({c.op for c in self.calls})
        return {k: v for op in ops for k, v in ((op, self.count(op)), (f"{op}_bytes", self.nbytes(op)))}

    def _by_op(self, factor: Callable[[str], float]) -> dict[str, float]:
        out: dict[str, float] = {}
        for c in self.calls:
            out[c.op] = out.get(c.op, 0) + factor(c.op) * c.nbytes
        return out

    def traffic_by_op(self) -> dict[str, int]:
        """Bytes per collective kind, the ZeRO paper's convention (all-reduce 2× its tensor, the others 1×)."""
        return self._by_op(lambda op: TRAFFIC_FACTOR.get(op, 1))

    def traffic_bytes(self) -> int:
        """Total bytes through collectives, the ZeRO paper's convention (see `traffic_by_op`)."""
        return sum(self.traffic_by_op().values())

    def ring_by_op(self, world_size: int) -> dict[str, float]:
        """Bytes one rank sends per collective kind with ring algorithms on `world_size` ranks (`ring_factor`)."""
        return self._by_op(lambda op: ring_factor(op, world_size))

    def ring_bytes(self, world_size: int) -> float:
        """Total bytes one rank sends through collectives with ring algorithms (see `ring_by_op`)."""
        return sum(self.ring_by_op(world_size).values())


_TAGS: list[str] = []


@contextlib.contextmanager
def _tagged(tag: str) -> Iterator[None]:
    _TAGS.append(tag)
    try:
        yield
    finally:
        _TAGS.pop()


def _nbytes(x) -> int:
    if isinstance(x, torch.Tensor):
        return x.numel() * x.element_size()
    return sum(_nbytes(v) for v in x) if isinstance(x, (list, tuple)) else 0


class CommCounter(TorchDispatchMode):
    """Records every collective issued inside `with CommCounter() as counter:`; read `counter.log` after."""

    def __init__(self) -> None:
        super().__init__()
        self._calls: list[Collective] = []

    @property
    def log(self) -> CommLog:
        return CommLog(tuple(self._calls))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if isinstance(func, torch._ops.HigherOrderOperator):
            return func(*args, **(kwargs or {}))
        if any(is_traceable_wrapper_subclass_type(t) for t in types):
            return NotImplemented  # let DTensor turn the op into plain collectives first; they come back here
        known = _OPS.get((func.namespace, func._opname))
        if known is not None:
            op, index = known
            size = _nbytes(args[index])
            if func._opname == "all_gather_into_tensor":
                size *= args[1]  # (input, group_size, group_name): the output is group_size inputs
            self._calls.append(Collective(op, _TAGS[-1] if _TAGS else None, size))
        return func(*args, **(kwargs or {}))


def all_reduce(t: torch.Tensor, tag: str) -> torch.Tensor:
    """Sum `t` over all ranks, in place; a CommCounter records the call under `tag`.

    Args:
        t: any shape; every rank passes a tensor of the same shape. tag: the layer kind issuing it.
    Returns:
        `t`, now the sum over ranks (unchanged outside a process group of 2 or more).
    """
    if dist.is_initialized() and dist.get_world_size() > 1:
        with _tagged(tag):
            dist.all_reduce(t)
    return t


def all_gather(t: torch.Tensor, dim: int, tag: str) -> torch.Tensor:
    """Concatenate every rank's `t` along `dim`; a CommCounter records the call under `tag`.

    Args:
        t: this rank's part; every rank's has the same shape. dim: the dimension to concatenate. tag: as above.
    Returns:
        the parts of ranks 0..N-1 concatenated along `dim` (`t` itself outside a process group).
    """
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    with _tagged(tag):
        dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=dim)
