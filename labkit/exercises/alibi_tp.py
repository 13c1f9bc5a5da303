"""Implementation exercise: the ALiBi slopes one tensor-parallel rank needs, graded against transformers' BLOOM
`build_alibi_tensor` sliced to that rank's heads.

ALiBi (Press, Smith & Lewis 2022, "Train Short, Test Long: Attention with Linear Biases Enables Input Length
Extrapolation", section 3) adds slope_h × (key position) to head h's attention scores. For n heads, n a power of 2,
the slopes are the geometric sequence 2^(−8/n), 2^(−16/n), …, 2^(−8); otherwise (BLOOM-176B has 112 heads) the
first p = 2^⌊log₂ n⌋ heads take the sequence for p, and the remaining n − p heads take every other term (the 1st,
3rd, 5th, …) of the sequence for 2p (the authors' code, copied into transformers'
`models/bloom/modeling_bloom.py:_get_alibi_slopes`). Under tensor parallelism rank r of W holds heads
[r·n/W, (r+1)·n/W), so it needs exactly those heads' slopes: a rank that builds the bias for every head fails with a
shape mismatch (`labkit.parallel.deepspeed_inference.fix_bloom_alibi`), and DeepSpeed's `build_bloom_alibi_tensor`
slices the same way.

A learner writes `alibi_slopes_for_rank(n_heads, rank, world_size) -> (n_heads // world_size,)`; `grade` runs it on
cases chosen to catch the usual mistakes (a non-power-of-2 head count, every rank using rank 0's slopes, every rank
keeping all the heads' slopes) and names the first that fails.
"""

from __future__ import annotations

import torch

from labkit.exercises import Case, Grade, grade_cases, tensor_shape_error

JUDGE = "transformers' BLOOM build_alibi_tensor, sliced to the rank's heads"


def reference(n_heads: int, rank: int, world_size: int) -> torch.Tensor:
    """The slopes of rank `rank`'s heads, read from transformers' `build_alibi_tensor` for all `n_heads` heads.

    With an all-ones mask the bias of head h at key position j is slope_h × j, so position 1 holds the slope.

    Args:
        n_heads: the model's attention heads (a multiple of world_size). rank: 0 ≤ rank < world_size.
        world_size: tensor-parallel ranks.
    Returns:
        (n_heads // world_size,) float32: the slopes of heads [rank·n/W, (rank+1)·n/W).
    """
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    alibi = build_alibi_tensor(torch.ones(1, 2, dtype=torch.long), n_heads, torch.float32)  # (heads, 1, positions)
    slopes = alibi[:, 0, 1]  # (heads,): the bias at key position 1
    per_rank = n_heads // world_size
    return slopes[rank * per_rank:(rank + 1) * per_rank]


def cases() -> list[Case]:
    """The grader's inputs: (n_heads, rank, world_size), each with what it tests."""
    return [
        Case("8 heads on 1 rank: the geometric sequence 2^(-8/n), 2^(-16/n), …", (8, 0, 1)),
        Case("8 heads on 2 ranks, rank 1: the second half of the heads, not rank 0's", (8, 1, 2)),
        Case("12 heads on 1 rank: not a power of 2, the 4 extra heads interleave from 16 heads' sequence", (12, 0, 1)),
        Case("12 heads on 4 ranks, rank 3: the last rank holds extra heads only", (12, 3, 4)),
        Case("12 heads on 2 ranks, rank 1: heads 6-11 straddle the power-of-2 and the extra heads", (12, 1, 2)),
        Case("112 heads (BLOOM-176B) on 4 ranks, rank 2: 64 power-of-2 heads, 48 interleaved", (112, 2, 4)),
    ]  # fmt: skip


def _compare(got, want, case: Case) -> str | None:
    n_heads, rank, world = case.args
    if isinstance(got, torch.Tensor) and world > 1 and got.shape == (n_heads,):
        return (f"returned the slopes of all {n_heads} heads; rank {rank} of {world} holds {n_heads // world} heads "
                f"and needs only theirs (DeepSpeed's shape error under AutoTP)")
    if wrong := tensor_shape_error(got, want):
        return wrong
    if torch.allclose(got.double(), want.double(), rtol=1e-5, atol=0):
        return None
    if rank > 0 and torch.allclose(got.double(), reference(n_heads, 0, world).double(), rtol=1e-5, atol=0):
        return f"rank {rank} returned rank 0's slopes: its heads are {rank * len(want)} to {(rank + 1) * len(want) - 1}"
    first = int((~torch.isclose(got.double(), want.double(), rtol=1e-5, atol=0)).nonzero()[0])
    return (f"the slope of head {rank * len(want) + first} is {got[first].item():.6g}, "
            f"transformers' build_alibi_tensor gives {want[first].item():.6g}")


def grade(alibi_slopes_for_rank) -> Grade:
    """Run a learner's per-rank ALiBi slopes on `cases()` and compare each result with `reference`.

    Args:
        alibi_slopes_for_rank: (n_heads, rank, world_size) -> (n_heads // world_size,) slopes of that rank's heads.
    Returns:
        Grade: ok only if every case gives the reference's slopes (within 1e-5 relative); otherwise the first
        failing case and what differs. An exception inside the learner's code is reported, not raised.
    """
    return grade_cases(alibi_slopes_for_rank, cases(), reference, _compare, JUDGE)
