"""The ring all-reduce exercise's answer (Patarasuk & Yuan 2009; NCCL's ring)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def ring_all_reduce(tensors: list[torch.Tensor], send_recv: Callable) -> list[torch.Tensor]:
    """Sum N ranks' tensors with a ring: N − 1 reduce-scatter steps, then N − 1 all-gather steps, over N chunks.

    Args:
        tensors: N tensors of one shape, tensors[r] on rank r.
        send_recv: one ring step: takes N tensors (outgoing[r] goes from rank r to rank (r + 1) mod N) and returns
            N tensors (received[r] came from rank (r − 1) mod N). The only way data moves between ranks.
    Returns:
        N tensors of the input shape, each the elementwise sum of all N inputs. Each rank sends 2(N − 1) chunks of
        about 1/N of the tensor: 2(N − 1)/N × its bytes.
    """
    n, shape = len(tensors), tensors[0].shape
    chunks = [list(t.flatten().tensor_split(n)) for t in tensors]  # chunks[r][c]: rank r's chunk c, N × (≈ len/N,)
    # reduce-scatter: at step s rank r passes on chunk (r − s); its neighbour adds its own part of that chunk
    for s in range(n - 1):
        received = send_recv([chunks[r][(r - s) % n] for r in range(n)])
        for r in range(n):
            c = (r - 1 - s) % n
            chunks[r][c] = chunks[r][c] + received[r]
    # now rank r holds chunk (r + 1) mod N summed over all ranks; all-gather: each summed chunk goes round the ring
    for s in range(n - 1):
        received = send_recv([chunks[r][(r + 1 - s) % n] for r in range(n)])
        for r in range(n):
            chunks[r][(r - s) % n] = received[r]
    return [torch.cat(c).reshape(shape) for c in chunks]
