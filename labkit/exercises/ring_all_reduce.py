"""Implementation exercise: a ring all-reduce built from point-to-point sends on N simulated ranks, graded against
the elementwise sum and against the ring's cost in bytes.

A learner writes `ring_all_reduce(tensors, send_recv)`: `tensors[r]` is rank r's tensor; the only way to move data
between ranks is `send_recv(outgoing)`, one step of the ring in which every rank r may send one tensor to its right
neighbour (r + 1) mod N (`RingLink`). The ring algorithm cuts each tensor into N chunks and runs N − 1 steps of
reduce-scatter (each rank passes on a chunk with its own part added, so after N − 1 steps rank r holds one chunk
fully summed) then N − 1 steps of all-gather (the summed chunks travel once around the ring).
Patarasuk & Yuan 2009, "Bandwidth optimal all-reduce algorithms for clusters of workstations", J. Parallel Distrib.
Comput. 69(2); NCCL's ring all-reduce; the cost, 2(N − 1)/N × the tensor's bytes sent per rank, is Thakur,
Rabenseifner & Gropp 2005 (`labkit.parallel.comm.ring_factor`, the prediction measured gloo bytes are compared with).

`grade(ring_all_reduce)` checks every rank ends with torch.stack(tensors).sum(0), then that each rank sent its share
of 2(N − 1) × the tensor's bytes (exactly 2(N − 1)/N × the tensor when N divides its length; within one chunk's
rounding otherwise) in 2(N − 1) steps: passing whole tensors round the ring, or summing without sending, fails.
"""

from __future__ import annotations

import math

import torch

from labkit.exercises import Case, Grade, grade_cases
from labkit.parallel.comm import ring_factor

JUDGE = "the elementwise sum and the ring's 2(N − 1)/N bytes per rank"


class RingLink:
    """N simulated ranks joined in a ring; one call is one step, counted per rank in bytes sent.

    send_recv(outgoing): outgoing[r] is the tensor rank r sends to rank (r + 1) mod N this step (None: it sends
    nothing). Returns received, where received[r] is what rank r got from rank (r − 1) mod N (a copy; None if that
    rank sent nothing).
    """

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self.bytes_sent = [0] * world_size  # per rank
        self.steps = 0

    def send_recv(self, outgoing: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
        """One ring step: every rank sends to its right neighbour and receives from its left one.

        Args:
            outgoing: N entries, each a tensor (any shape) or None.
        Returns:
            N entries: received[r] = a copy of outgoing[(r − 1) mod N].
        Raises:
            ValueError: not N entries, or an entry that is neither a tensor nor None.
        """
        n = self.world_size
        if len(outgoing) != n or any(t is not None and not isinstance(t, torch.Tensor) for t in outgoing):
            raise ValueError(f"send_recv takes a list of {n} tensors (or None), one per rank, got {outgoing!r:.80}")
        self.steps += 1
        for r, t in enumerate(outgoing):
            self.bytes_sent[r] += 0 if t is None else t.numel() * t.element_size()
        return [None if outgoing[(r - 1) % n] is None else outgoing[(r - 1) % n].detach().clone() for r in range(n)]


def reference(tensors: list[torch.Tensor]) -> torch.Tensor:
    """What every rank must hold after an all-reduce (sum): the elementwise sum of all ranks' tensors.

    Args:
        tensors: N tensors of one shape. Returns: that shape.
    """
    return torch.stack(tensors).sum(0)


def cases() -> list[Case]:
    """The grader's inputs: (the ranks' tensors,), each with what it tests."""
    gen = torch.Generator().manual_seed(0)

    def ranks(n, *shape):
        return [torch.randn(*shape, generator=gen) for _ in range(n)]

    return [
        Case("2 ranks, 8 values: one reduce-scatter step, one all-gather step", (ranks(2, 8),)),
        Case("3 ranks, 10 values: N does not divide the length, chunks of unequal size", (ranks(3, 10),)),
        Case("4 ranks, 16 values", (ranks(4, 16),)),
        Case("4 ranks, a (3, 6) tensor: the result keeps its shape", (ranks(4, 3, 6),)),
        Case("5 ranks, 7 values: some chunks hold one value", (ranks(5, 7),)),
    ]  # fmt: skip


def expected_bytes(tensors: list[torch.Tensor]) -> tuple[float, int]:
    """(the ring's bytes sent per rank on average, 2(N − 1)/N × the tensor's bytes; the most one rank may send,
    2(N − 1) of the largest of N chunks)."""
    n, t = len(tensors), tensors[0]
    mean = ring_factor("all_reduce", n) * t.numel() * t.element_size()
    return mean, 2 * (n - 1) * math.ceil(t.numel() / n) * t.element_size()


def _compare(got, want, case: Case) -> str | None:
    results, link = got
    (tensors,) = case.args
    n = len(tensors)
    if not isinstance(results, (list, tuple)) or len(results) != n:
        size = f" of length {len(results)}" if isinstance(results, (list, tuple)) else ""
        return f"returned {type(results).__name__}{size}, expected a list of {n} tensors (one per rank)"
    for r, y in enumerate(results):
        if not isinstance(y, torch.Tensor) or y.shape != want.shape:
            what = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            return f"rank {r} returned {what}, expected a tensor of shape {tuple(want.shape)}"
        if not torch.allclose(y, want, rtol=1e-5, atol=1e-5):
            bad = int((~torch.isclose(y, want, rtol=1e-5, atol=1e-5)).sum())
            return f"rank {r}'s result differs from the sum of all ranks' tensors at {bad} of {want.numel()} values"
    mean_bytes, most = expected_bytes(tensors)
    sent = link.bytes_sent
    if sum(sent) != round(mean_bytes * n) or max(sent) > most:
        total = want.numel() * want.element_size()
        if want.numel() % n == 0:
            ring = f"2(N − 1)/N × {total} = {mean_bytes:g} bytes from each rank (N = {n})"
        else:  # unequal chunks: the ranks' shares differ by at most a chunk
            ring = (f"2(N − 1) chunks of about 1/N of its {total} bytes from each rank: {mean_bytes:.1f} on average, "
                    f"at most {most} (N = {n}, chunks of unequal size)")
        return f"the ranks sent {sent} bytes; the ring sends {ring}"
    if link.steps != 2 * (n - 1):
        return (f"took {link.steps} send_recv steps; the ring takes N − 1 = {n - 1} to reduce-scatter and {n - 1} "
                "to all-gather")
    return None


def grade(ring_all_reduce) -> Grade:
    """Run a learner's ring all-reduce on `cases()`, each with a fresh `RingLink`, and check results and bytes.

    Args:
        ring_all_reduce: (tensors: list of N same-shaped tensors, send_recv) -> list of N tensors, rank r's result;
            it may move data between ranks only through send_recv (see `RingLink.send_recv`).
    Returns:
        Grade: ok only if every rank's result equals the elementwise sum (within 1e-5), the bytes each rank sent
        are the ring's and it took 2(N − 1) steps; otherwise the first failing case and what differs. An exception
        inside the learner's code is reported, not raised.
    """

    def run(tensors):  # a fresh ring per case, so its counters are the learner's alone
        link = RingLink(len(tensors))
        return ring_all_reduce(tensors, link.send_recv), link

    return grade_cases(run, cases(), reference, _compare, JUDGE)
