"""Bytes a rank really sends through collectives, measured by the kernel, next to the two ways of counting them.

    with wire.BytesWritten() as sent:
        dist.all_reduce(t)
    sent.nbytes          # gloo, 2 ranks: ≈ 1 × t's bytes — the ring's 2(N − 1)/N, not the paper's 2×

    run_distributed(wire.probe_collectives, world_size=4)   # per rank: all-reduce / all-gather / reduce-scatter

Linux counts in the `wchar` field of /proc/self/io every byte the process hands to write(2) and its relatives,
whatever the file descriptor (proc(5)); gloo's TCP transport sends each message that way, so the difference of
`wchar` around a block of collectives is the bytes this rank sent (plus anything else it wrote meanwhile: keep
prints and file writes out of the block). NCCL on GPUs moves data over NVLink, PCIe or InfiniBand without write
calls, so there this measures ~0: it is meaningful for the gloo backend only.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import pandas as pd
import torch
import torch.distributed as dist

from labkit.hardware import CapabilityMissing
from labkit.parallel.comm import CommCounter, ring_factor

_IO = "/proc/self/io"
PROBE_OPS = ("all_reduce", "all_gather", "reduce_scatter")


def available() -> bool:
    """Whether this machine can measure bytes sent: Linux's /proc/self/io is readable."""
    return os.access(_IO, os.R_OK)


def _wchar() -> int:
    try:
        with open(_IO) as f:
            fields = dict(line.split(": ") for line in f.read().splitlines() if ": " in line)
    except OSError as e:
        raise CapabilityMissing(f"measuring bytes sent needs Linux's {_IO} ({e})") from e
    return int(fields["wchar"])


class BytesWritten:
    """`with BytesWritten() as sent:` ... then `sent.nbytes`: bytes this process wrote while the block ran.

    Raises:
        CapabilityMissing: on entry, where /proc/self/io cannot be read (not Linux).
    """

    def __init__(self) -> None:
        self.nbytes = 0
        self._start = 0

    def __enter__(self) -> BytesWritten:
        self._start = _wchar()
        return self

    def __exit__(self, *exc) -> None:
        self.nbytes = _wchar() - self._start


@dataclass(frozen=True)
class CollectiveProbe:
    """One collective on one rank: its tensor's bytes (what CommCounter records), the bytes the two conventions
    say the rank sends (paper: all-reduce 2×, others 1×; ring: `comm.ring_factor`), and the bytes it sent."""

    op: str
    rank: int
    world_size: int
    backend: str
    tensor_bytes: int
    paper_bytes: int
    ring_bytes: float
    sent_bytes: int

    def table(self) -> pd.DataFrame:
        """One row: every field, with sent_over_tensor and ring_over_tensor."""
        return pd.DataFrame([{**asdict(self), "ring_over_tensor": self.ring_bytes / self.tensor_bytes,
                              "sent_over_tensor": self.sent_bytes / self.tensor_bytes}])


def _run(op: str, numel: int) -> None:
    n = dist.get_world_size()
    if op == "all_reduce":
        dist.all_reduce(torch.ones(numel))
    elif op == "all_gather":  # numel is the gathered output, as CommCounter counts it
        dist.all_gather_into_tensor(torch.empty(numel // n * n), torch.ones(numel // n))
    else:  # reduce_scatter: numel is the scattered input
        dist.reduce_scatter_tensor(torch.empty(numel // n), torch.ones(numel // n * n))


def probe_collectives(numel: int = 1 << 20, ops: tuple[str, ...] = PROBE_OPS) -> tuple[CollectiveProbe, ...]:
    """Rank function (run it with `run_distributed`): each collective once on an fp32 tensor, counted and measured.

    Args:
        numel: elements of the tensor each collective counts (all-reduce: the tensor, all-gather: its output,
            reduce-scatter: its input); rounded down to a multiple of the world size.
        ops: collectives from PROBE_OPS.
    Returns:
        one CollectiveProbe per op, this rank's.
    Raises:
        ValueError: for an op not in PROBE_OPS or numel < world size (before any collective).
        CapabilityMissing: without /proc/self/io.
    """
    unknown = [op for op in ops if op not in PROBE_OPS]
    if unknown:
        raise ValueError(f"unknown collectives {unknown}; choose from {list(PROBE_OPS)}")
    n = dist.get_world_size()
    if numel < n:
        raise ValueError(f"numel must be >= the world size {n}, got {numel}")
    probes = []
    for op in ops:
        _run(op, numel)  # warm-up: gloo sets up its buffers on first use
        dist.barrier()
        with CommCounter() as counter, BytesWritten() as sent:
            _run(op, numel)
        (call,) = counter.log.calls
        probes.append(CollectiveProbe(op, dist.get_rank(), n, dist.get_backend(), call.nbytes,
                                      counter.log.traffic_bytes(), ring_factor(op, n) * call.nbytes, sent.nbytes))
    return tuple(probes)
