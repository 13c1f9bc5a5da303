"""The per-rank ALiBi slopes exercise's answer (Press et al. 2022, section 3; BLOOM's `_get_alibi_slopes`)."""

from __future__ import annotations

import math

import torch


def alibi_slopes_for_rank(n_heads: int, rank: int, world_size: int) -> torch.Tensor:
    """The ALiBi slopes of the heads tensor-parallel rank `rank` holds: heads [rank·n/W, (rank+1)·n/W).

    Args:
        n_heads: the model's attention heads, n. rank: 0 ≤ rank < world_size. world_size: W, tensor-parallel ranks.
    Returns:
        (n // W,) float32 slopes.
    Raises:
        ValueError: n is not divisible by W, or rank is outside [0, W).
    """
    if n_heads % world_size or not 0 <= rank < world_size:
        raise ValueError(f"{n_heads} heads do not split over {world_size} ranks, or rank {rank} is not one of them")
    p = 2 ** math.floor(math.log2(n_heads))  # the largest power of 2 not above n
    slopes = [2 ** (-8 * i / p) for i in range(1, p + 1)]  # 2^(-8/p), 2^(-16/p), ..., 2^(-8)
    # the other n − p heads: the odd terms 2^(-8·1/2p), 2^(-8·3/2p), ... of the sequence for 2p heads
    slopes += [2 ** (-8 * i / (2 * p)) for i in range(1, 2 * (n_heads - p), 2)]
    per_rank = n_heads // world_size
    return torch.tensor(slopes[rank * per_rank:(rank + 1) * per_rank], dtype=torch.float32)  # (n // W,)
