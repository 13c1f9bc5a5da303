"""The percentile exercise's answer (Hyndman & Fan 1996, definition 7: numpy's default)."""

from __future__ import annotations

import math


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile of `samples`, interpolating linearly between the two closest ranks.

    Args:
        samples: one or more numbers, in any order. q: the percentile, 0 <= q <= 100.
    Returns:
        the value below which q % of the samples lie, in the samples' unit.
    Raises:
        ValueError: no samples, or q outside [0, 100].
    """
    if not samples:
        raise ValueError("no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    ordered = sorted(samples)
    rank = q / 100 * (len(ordered) - 1)  # 0-based fractional position: 0 is the smallest, n − 1 the largest
    below = math.floor(rank)
    above = min(below + 1, len(ordered) - 1)  # q = 100 (or one sample): no sample after the last one
    return ordered[below] + (rank - below) * (ordered[above] - ordered[below])
