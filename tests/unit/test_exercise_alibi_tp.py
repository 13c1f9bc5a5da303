"""The per-rank ALiBi slopes exercise: its grader passes the reference answer, fails the usual mistakes (rank 0's
slopes on every rank, all heads on every rank, the power-of-2 formula for any head count) with the failing case named,
and never raises; the reference answer agrees beyond the graded cases with transformers and with DeepSpeed's own
BLOOM ALiBi builder and head split (what AutoTP uses in lab 11)."""

import math

import pytest
import torch

from labkit.exercises import alibi_tp
from labkit.exercises.solutions import alibi_tp as solutions


def test_the_solution_passes_and_agrees_with_transformers_beyond_the_cases():
    assert alibi_tp.grade(solutions.alibi_slopes_for_rank).ok
    for n_heads, world in ((16, 8), (24, 3), (40, 4), (96, 8), (7, 1)):
        for rank in range(world):
            torch.testing.assert_close(solutions.alibi_slopes_for_rank(n_heads, rank, world),
                                       alibi_tp.reference(n_heads, rank, world), rtol=1e-6, atol=0)


def test_the_solution_matches_deepspeeds_bloom_alibi_and_head_split():
    pytest.importorskip("deepspeed")
    from deepspeed.module_inject.auto_tp_model_utils import build_bloom_alibi_tensor
    from deepspeed.module_inject.tp_shard import AutoTPMeta, get_shard_size_list

    mask = torch.ones(1, 3, dtype=torch.long)
    for n_heads, world in ((24, 3), (112, 8), (12, 4)):
        slopes = build_bloom_alibi_tensor(mask, n_heads, torch.float32)[:, 0, 1]  # outside a group: every head
        sizes = get_shard_size_list(n_heads, world, AutoTPMeta())  # DeepSpeed's split of the heads (no GQA)
        assert sizes == [n_heads // world] * world
        for rank in range(world):
            want = slopes[sum(sizes[:rank]):sum(sizes[:rank + 1])]
            torch.testing.assert_close(solutions.alibi_slopes_for_rank(n_heads, rank, world), want, rtol=1e-6, atol=0)


def test_the_slopes_follow_press_et_al_for_a_power_of_2():
    got = solutions.alibi_slopes_for_rank(8, 0, 1)  # the paper's example: 1/2, 1/4, ..., 1/256
    torch.testing.assert_close(got, torch.tensor([2.0 ** -i for i in range(1, 9)]))


def _power_of_2_formula(n_heads, rank, world_size):  # 2^(-8i/n) for every n: right only when n is a power of 2
    per_rank = n_heads // world_size
    return torch.tensor([2 ** (-8 * i / n_heads) for i in range(1, n_heads + 1)])[rank * per_rank:(rank + 1) * per_rank]


def _extra_heads_consecutive(n_heads, rank, world_size):  # the extra heads take 2p's sequence in order, not every other
    p = 2 ** math.floor(math.log2(n_heads))
    slopes = [2 ** (-8 * i / p) for i in range(1, p + 1)] + [2 ** (-8 * i / (2 * p)) for i in range(1, n_heads - p + 1)]
    per_rank = n_heads // world_size
    return torch.tensor(slopes[rank * per_rank:(rank + 1) * per_rank])


def test_wrong_answers_are_graded_wrong_with_what_differs():
    stub = alibi_tp.grade(lambda n_heads, rank, world_size: torch.zeros(n_heads // world_size))
    assert not stub.ok and stub.cases == 1 and "the slope of head 0 is 0," in stub.message
    rank_0 = alibi_tp.grade(lambda n, rank, world: solutions.alibi_slopes_for_rank(n, 0, world))
    assert not rank_0.ok and rank_0.cases == 2
    assert "rank 1 returned rank 0's slopes: its heads are 4 to 7" in rank_0.message
    all_heads = alibi_tp.grade(lambda n, rank, world: solutions.alibi_slopes_for_rank(n, 0, 1))
    assert not all_heads.ok and all_heads.cases == 2 and "returned the slopes of all 8 heads" in all_heads.message
    naive = alibi_tp.grade(_power_of_2_formula)
    assert not naive.ok and naive.cases == 3 and "the slope of head 0 is 0.629961" in naive.message
    consecutive = alibi_tp.grade(_extra_heads_consecutive)
    assert not consecutive.ok and consecutive.cases == 3 and "the slope of head 9 is" in consecutive.message
    shape = alibi_tp.grade(lambda n_heads, rank, world_size: torch.ones(n_heads // world_size, 1))
    assert not shape.ok and "returned shape (8, 1), expected (8,)" in shape.message


def test_an_exception_in_the_learners_code_is_reported_not_raised():
    grade = alibi_tp.grade(lambda n_heads, rank, world_size: torch.arange(n_heads)[rank::0])
    assert not grade.ok and "your function raised ValueError" in grade.message and str(grade).startswith("✗ ")
