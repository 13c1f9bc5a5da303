"""The block-table exercise: its grader passes the reference answer, fails the usual mistakes with the failing case
named, requires a position past the table to raise, and never raises itself; the reference answer agrees with
labkit's paged engine on the block tables its BlockManager hands out, and the slots it names are where the engine's
pool really holds each token."""

import random

import pytest

from labkit.exercises import block_table
from labkit.exercises.solutions import block_table as solutions

torch = pytest.importorskip("torch")


def test_the_solution_passes_and_agrees_with_labkit_on_tables_the_block_manager_builds():
    from labkit.serving.paged.blocks import BlockManager
    from labkit.serving.paged.sequence import Sequence

    assert block_table.grade(solutions.slot_mapping).ok
    rng = random.Random(0)
    for size in (1, 3, 16):
        manager = BlockManager(num_blocks=40, block_size=size, prefix_caching=False)
        live = []
        for _ in range(30):  # sequences come and go: the free list, and so the tables, get fragmented
            if live and rng.random() < 0.4:
                manager.free(live.pop(rng.randrange(len(live))))
            seq = Sequence([0] * rng.randint(1, 3 * size))
            if manager.can_allocate(seq):
                manager.allocate(seq)
                live.append(seq)
                positions = rng.sample(range(len(seq.token_ids)), k=len(seq.token_ids))
                want = block_table.reference(seq.block_table, positions, size)
                assert solutions.slot_mapping(seq.block_table, positions, size) == want


def test_the_slots_are_where_the_paged_pool_holds_each_token():
    """labkit's engine writes a step's keys at `build_batch(...).slot_mapping`: the solution names the same slots."""
    from labkit.serving.paged.attention import build_batch

    size, table = 4, [5, 2, 1, 0]
    pool = [torch.zeros(6, size, 1, 1)]
    batch = build_batch(pool, pool, [table, table], [10, 1], [10, 14])  # a 10-token prefill, a decode at 13
    assert batch.slot_mapping.tolist() == solutions.slot_mapping(table, [*range(10), 13], size)


def _clamped(table, positions, size):  # a position past the table reuses the last block: another token's slot
    return [table[min(p // size, len(table) - 1)] * size + p % size for p in positions]


def test_wrong_answers_are_graded_wrong_with_what_differs():
    stub = block_table.grade(lambda table, positions, size: list(positions))  # as if the pool were contiguous
    assert not stub.ok and stub.message.startswith("case 1 (") and "gave slot 0" in stub.message
    assert "gives 12 = block 3 × 4 + 0" in stub.message
    unscaled = block_table.grade(lambda t, ps, b: [t[p // b] + p % b for p in ps])  # block id not × block_size
    assert not unscaled.ok and unscaled.message.startswith("case 1 (") and "gave slot 3" in unscaled.message
    sorted_ = block_table.grade(lambda t, ps, b: solutions.slot_mapping(t, sorted(ps), b))
    assert not sorted_.ok and sorted_.message.startswith("case 5 (")
    bits = block_table.grade(lambda t, ps, b: [t[p >> 2] * b + (p & 3) for p in ps])  # block size 4 assumed
    assert not bits.ok and bits.message.startswith("case 3 (") and "raised IndexError" in bits.message
    clamped = block_table.grade(_clamped)
    assert not clamped.ok and clamped.message.startswith("case 7 (") and "returned [6, 4]" in clamped.message
    assert "raises IndexError" in clamped.message
    short = block_table.grade(lambda t, ps, b: solutions.slot_mapping(t, ps[:-1], b))
    assert not short.ok and "returned 2 slot(s) for 3 position(s)" in short.message


def test_a_value_error_or_a_tensor_is_accepted():
    def checked(table, positions, size):
        if max(positions) >= len(table) * size:
            raise ValueError("past the table")
        return torch.tensor(solutions.slot_mapping(table, positions, size))

    assert block_table.grade(checked).ok


def test_an_exception_in_the_learners_code_is_reported_not_raised():
    grade = block_table.grade(lambda t, ps, b: 1 / 0)
    assert not grade.ok and "ZeroDivisionError" in grade.message and str(grade).startswith("✗ ")
