"""The row-parallel linear exercise: its grader passes the reference answer, fails the usual mistakes with the
failing case named, and never raises; the reference answer agrees with F.linear and with labkit's own
RowParallelLinear (lab 09's layer on real ranks) shard by shard beyond the graded cases."""

import torch
import torch.nn.functional as F
from torch import nn

from labkit.exercises import row_parallel
from labkit.exercises.solutions import row_parallel as solutions
from labkit.parallel import tp


def _row_parallel_shards(full: nn.Linear, x: torch.Tensor, world: int, monkeypatch) -> torch.Tensor:
    """Σ over ranks of labkit's RowParallelLinear (bias-free) built as rank r of `world`, + the bias once."""
    bias_free = nn.Linear(full.in_features, full.out_features, bias=False)
    bias_free.weight = full.weight
    partials = []
    for rank in range(world):  # outside a process group the layer's all-reduce is the identity: sum here
        monkeypatch.setattr(tp, "_rank_world", lambda rank=rank: (rank, world))
        partials.append(tp.RowParallelLinear(bias_free)(x.chunk(world, -1)[rank]))  # this rank's input features
    return torch.stack(partials).sum(0) + full.bias


def test_the_solution_passes_and_agrees_with_labkits_row_parallel_layer(monkeypatch):
    assert row_parallel.grade(solutions.row_parallel_linear).ok
    torch.manual_seed(1)
    for world, shape in ((2, (3, 24)), (3, (2, 4, 24)), (8, (5, 24))):
        full, x = nn.Linear(24, 10), torch.randn(*shape)
        got = solutions.row_parallel_linear(x, full.weight.detach(), full.bias.detach(), world)
        torch.testing.assert_close(got, F.linear(x, full.weight, full.bias).detach(), rtol=1e-5, atol=1e-5)
        with torch.no_grad():
            torch.testing.assert_close(got, _row_parallel_shards(full, x, world, monkeypatch), rtol=1e-5, atol=1e-5)


def _bias_on_every_rank(x, weight, bias, world_size):  # the usual mistake: each rank adds b, the all-reduce sums p·b
    shards = zip(x.chunk(world_size, -1), weight.chunk(world_size, 1), strict=True)
    return sum(F.linear(x_r, w_r, bias) for x_r, w_r in shards)


def test_wrong_answers_are_graded_wrong_with_what_differs():
    stub = row_parallel.grade(lambda x, weight, bias, world_size: F.linear(x, weight))  # forgets the bias
    assert not stub.ok and stub.cases == 1 and stub.message.startswith("case 1 (") and "max |y" in stub.message
    twice = row_parallel.grade(_bias_on_every_rank)
    assert not twice.ok and twice.cases == 2 and "bias was added on each of the 2 ranks" in twice.message
    unsplit = row_parallel.grade(lambda x, weight, bias, world_size: F.linear(x, weight, bias))  # right values
    assert not unsplit.ok and unsplit.cases == 2 and "contracted over 8 input features" in unsplit.message

    def column_parallel(x, weight, bias, p):  # split the output features and concatenate: right values, whole x
        y = torch.cat([F.linear(x, w) for w in weight.chunk(p, 0)], -1)
        return y if bias is None else y + bias

    column = row_parallel.grade(column_parallel)
    assert not column.ok and "split x and the weight along the input dimension" in column.message
    shape = row_parallel.grade(lambda x, weight, bias, world_size: x)
    assert not shape.ok and "returned shape (3, 8), expected (3, 6)" in shape.message


def test_an_exception_in_the_learners_code_is_reported_not_raised():
    mismatch = row_parallel.grade(lambda x, weight, bias, p: F.linear(x, weight.chunk(p, 1)[0], bias))  # x not split
    assert not mismatch.ok and mismatch.cases == 2 and "your function raised RuntimeError" in mismatch.message

    def bias_none_unhandled(x, weight, bias, p):
        return solutions.row_parallel_linear(x, weight, None, p) + bias

    none_bias = row_parallel.grade(bias_none_unhandled)
    assert not none_bias.ok and none_bias.cases == 3 and "your function raised TypeError" in none_bias.message
    assert str(none_bias).startswith("✗ ")
