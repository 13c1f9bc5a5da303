"""The ring all-reduce exercise: its send_recv primitive moves and counts what it should, the grader passes the
reference answer, fails the usual mistakes (no communication, whole tensors round the ring, gather to one rank,
reduce-scatter without the all-gather) with the failing case named, and never raises; the reference answer sums
exactly what torch does and sends 2(N − 1)/N of the tensor per rank beyond the graded cases."""

import torch

from labkit.exercises import ring_all_reduce
from labkit.exercises.solutions import ring_all_reduce as solutions


def test_send_recv_passes_each_rank_s_tensor_to_its_right_neighbour_and_counts_bytes():
    link = ring_all_reduce.RingLink(3)
    a, b = torch.arange(4.0), torch.arange(2, dtype=torch.float64)
    received = link.send_recv([a, None, b])
    assert torch.equal(received[0], b) and torch.equal(received[1], a) and received[2] is None
    received[1].add_(1)  # a copy: the sender's tensor is not the receiver's
    assert torch.equal(a, torch.arange(4.0)) and link.bytes_sent == [16, 0, 16] and link.steps == 1


def test_the_solution_passes_and_sends_the_ring_s_bytes_on_random_inputs():
    assert ring_all_reduce.grade(solutions.ring_all_reduce).ok
    gen = torch.Generator().manual_seed(1)
    for n, shape, dtype in ((2, (64,), torch.float32), (6, (12, 5), torch.float64), (8, (40,), torch.float64)):
        tensors = [torch.randn(*shape, generator=gen, dtype=dtype) for _ in range(n)]
        link = ring_all_reduce.RingLink(n)
        out = solutions.ring_all_reduce(tensors, link.send_recv)
        for y in out:
            torch.testing.assert_close(y, torch.stack(tensors).sum(0))
        nbytes = tensors[0].numel() * tensors[0].element_size()
        assert link.bytes_sent == [2 * (n - 1) * nbytes // n] * n and link.steps == 2 * (n - 1)  # N divides the length


def _no_communication(tensors, send_recv):  # every rank reads every tensor: right values, nothing sent
    return [torch.stack(tensors).sum(0) for _ in tensors]


def _whole_tensors_round_the_ring(tensors, send_recv):  # naive: N − 1 hops of the whole tensor, (N − 1)× the bytes
    n, total, moving = len(tensors), [t.clone() for t in tensors], list(tensors)
    for _ in range(n - 1):
        moving = send_recv(moving)
        total = [s + m for s, m in zip(total, moving, strict=True)]
    for _ in range(n - 1):  # idle steps, so that only the byte count can tell
        send_recv([None] * n)
    return total


def _gather_to_rank_0_then_broadcast(tensors, send_recv):  # a partial sum walks 1 → 2 → … → 0, then the total walks
    n, partial, out = len(tensors), [None] * len(tensors), [None] * len(tensors)
    partial[1 % n] = tensors[1 % n].clone()
    for _ in range(n - 1):
        partial = [None if p is None else p + t for p, t in zip(send_recv(partial), tensors, strict=True)]
    out[0] = partial[0]
    moving = [out[0]] + [None] * (n - 1)
    for _ in range(n - 1):
        moving = send_recv(moving)
        out = [o if m is None else m for o, m in zip(out, moving, strict=True)]
    return out


def _reduce_scatter_only(tensors, send_recv):  # forgets the all-gather: each rank has one summed chunk
    n = len(tensors)
    chunks = [list(t.flatten().tensor_split(n)) for t in tensors]
    for s in range(n - 1):
        received = send_recv([chunks[r][(r - s) % n] for r in range(n)])
        for r in range(n):
            chunks[r][(r - 1 - s) % n] = chunks[r][(r - 1 - s) % n] + received[r]
    return [torch.cat(c).reshape(tensors[0].shape) for c in chunks]


def test_wrong_answers_are_graded_wrong_with_what_differs():
    stub = ring_all_reduce.grade(lambda tensors, send_recv: [t.clone() for t in tensors])
    assert not stub.ok and stub.cases == 1 and "rank 0's result differs from the sum" in stub.message
    silent = ring_all_reduce.grade(_no_communication)
    assert not silent.ok and silent.cases == 1 and "sent [0, 0] bytes" in silent.message
    assert "2(N − 1)/N × 32 = 32 bytes from each rank" in silent.message
    naive = ring_all_reduce.grade(_whole_tensors_round_the_ring)  # at N = 2 the whole tensor is the ring's 2(N−1)/N
    assert not naive.ok and naive.cases == 2 and "sent [80, 80, 80] bytes" in naive.message
    gathered = ring_all_reduce.grade(_gather_to_rank_0_then_broadcast)
    assert not gathered.ok and gathered.cases == 2 and "sent [40, 80, 40] bytes" in gathered.message
    half = ring_all_reduce.grade(_reduce_scatter_only)
    assert not half.ok and half.cases == 1 and "differs from the sum" in half.message
    flat = ring_all_reduce.grade(lambda tensors, send_recv: [
        y.flatten() for y in solutions.ring_all_reduce(tensors, send_recv)])
    assert not flat.ok and flat.cases == 4
    assert "rank 0 returned (18,), expected a tensor of shape (3, 6)" in flat.message


def test_an_exception_in_the_learners_code_is_reported_not_raised():
    grade = ring_all_reduce.grade(lambda tensors, send_recv: send_recv(tensors[:1]))  # one entry, not N
    assert not grade.ok and "your function raised ValueError: send_recv takes a list of 2 tensors" in grade.message
    assert str(grade).startswith("✗ ")
