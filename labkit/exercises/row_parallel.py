"""Implementation exercise: a row-parallel linear layer's forward on simulated ranks, graded against
`torch.nn.functional.linear` on the whole weight.

A learner writes `row_parallel_linear(x, weight, bias, world_size)`: split the weight along its input dimension
(its columns) into `world_size` slices, let each "rank" multiply its slice of x's input features by its slice of the
weight, sum the partial products (what the all-reduce does across real ranks) and add the bias once, after the sum.
Megatron-LM: Shoeybi et al. 2019, "Megatron-LM: Training Multi-Billion Parameter Language Models Using Model
Parallelism", section 3 (the second GEMM of the MLP, B split by rows of Bᵀ, i.e. by input features, then an
all-reduce); `labkit.parallel.tp.RowParallelLinear` is the same layer on real ranks.

`grade(row_parallel_linear)` runs it on cases chosen to catch the usual mistakes (the bias added on every rank, no
bias, a (batch, seq, in) activation) and also watches the matrix products it issues: each must contract over
in / world_size features, so calling `F.linear` on the whole weight is graded wrong even though its values agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from labkit.exercises import Case, Grade, grade_cases, tensor_shape_error

JUDGE = "torch.nn.functional.linear on the whole weight"
# matrix-product operators -> index of the argument whose last dimension is the contracted one
_PRODUCTS = {"mm": 0, "addmm": 1, "bmm": 0, "baddbmm": 1, "mv": 0, "addmv": 1, "dot": 0, "vdot": 0}


class _Contractions(TorchDispatchMode):
    """Records how many features each matrix product issued inside `with` contracts over."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        index = _PRODUCTS.get(func._opname) if func.namespace == "aten" else None
        if index is not None and isinstance(args[index], torch.Tensor):
            self.sizes.append(int(args[index].shape[-1]))
        return func(*args, **(kwargs or {}))


def reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, world_size: int) -> torch.Tensor:
    """The unsplit layer: y = x Wᵀ + b (`torch.nn.functional.linear`); world_size does not change the result.

    Args:
        x: (..., in). weight: (out, in). bias: (out,) or None. world_size: the simulated ranks (ignored).
    Returns:
        (..., out).
    """
    return F.linear(x, weight, bias)


def cases() -> list[Case]:
    """The grader's inputs: (x, weight, bias, world_size), each with what it tests."""
    gen = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=gen)

    return [
        Case("world_size 1: one rank holds the whole weight", (randn(3, 8), randn(6, 8), randn(6), 1)),
        Case("world_size 2 with a bias: added once, after the sum", (randn(3, 8), randn(6, 8), randn(6), 2)),
        Case("world_size 4, no bias (bias None)", (randn(2, 16), randn(5, 16), None, 4)),
        Case("world_size 4, a (batch, seq, in) activation", (randn(2, 5, 12), randn(7, 12), randn(7), 4)),
        Case("world_size 8 with a bias: 2 input features per rank", (randn(4, 16), randn(3, 16), randn(3), 8)),
    ]  # fmt: skip


def _compare(got, want, case: Case) -> str | None:
    if wrong := tensor_shape_error(got, want):
        return wrong
    x, weight, bias, world = case.args
    if torch.allclose(got, want, rtol=1e-4, atol=1e-5):
        return None
    if bias is not None and world > 1 and torch.allclose(got, want + (world - 1) * bias, rtol=1e-4, atol=1e-5):
        return f"the bias was added on each of the {world} ranks; add it once, after the partial sums are summed"
    return f"max |y − {JUDGE}| = {(got - want).abs().max().item():.3g}"


def grade(row_parallel_linear) -> Grade:
    """Run a learner's row-parallel forward on `cases()`, compare each result with `reference`, and check that every
    matrix product it issued contracts over only one rank's in / world_size input features.

    Args:
        row_parallel_linear: (x (..., in), weight (out, in), bias (out,) or None, world_size) -> y (..., out).
    Returns:
        Grade: ok only if every case agrees with F.linear (within 1e-4 relative) and no product used more than
        in / world_size input features; otherwise the first failing case and what differs. An exception inside
        the learner's code is reported, not raised.
    """
    last: list[int] = []  # the contractions of the learner's latest call (grade_cases compares right after it)

    def watched(x, weight, bias, world_size):
        last.clear()
        with _Contractions() as products:
            y = row_parallel_linear(x, weight, bias, world_size)
        last.extend(products.sizes)
        return y

    def compare(got, want, case: Case) -> str | None:
        if wrong := _compare(got, want, case):
            return wrong
        x, weight, _, world = case.args
        share = weight.shape[1] // world
        widest = max(last, default=0)
        if widest > share:  # right values from the whole weight: not the row-parallel computation
            return (f"a matrix product contracted over {widest} input features; with world_size {world} each rank "
                    f"holds {share} of the {weight.shape[1]}: split x and the weight along the input dimension")
        return None

    return grade_cases(watched, cases(), reference, compare, JUDGE)
