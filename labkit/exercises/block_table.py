"""Implementation exercise: PagedAttention's block-table lookup, graded against labkit's own paged engine.

A learner writes `slot_mapping(block_table, positions, block_size)`: the flat KV-pool slot of each token position of
one sequence, the index where the paged engine writes that token's key and value and reads them back. Logical block
`position // block_size` of the sequence is physical block `block_table[position // block_size]` of the pool, and
the token sits at offset `position % block_size` in it:

    slot = block_table[position // block_size] × block_size + position % block_size

Kwon et al. 2023, "Efficient Memory Management for Large Language Model Serving with PagedAttention" (SOSP '23),
§4.1-4.2; vLLM passes these slots to its kernels as `slot_mapping`. The reference is
`labkit.serving.paged.attention.slot`, the lookup labkit's paged engine builds every step's batch with (`build_batch`,
and the ONNX Runtime runner). `grade(slot_mapping)` runs the learner's function on cases chosen to catch the usual
mistakes (a contiguous cache assumed, the block id not scaled by the block size, an off-by-one at a block's last
slot, positions taken as sorted, a power-of-two block size assumed, a block table the BlockManager fragmented) and
says which case failed and how. A position past the table's last block must raise (IndexError, as labkit's lookup
does, or ValueError), never name a slot: that slot belongs to another sequence's block.
"""

from __future__ import annotations

from dataclasses import dataclass

from labkit.exercises import Case, Grade, grade_cases

JUDGE = "labkit's paged engine (labkit.serving.paged.attention.slot)"
SHORT = "labkit's slot()"  # named in each verdict
OUT_OF_RANGE = (IndexError, ValueError)  # what a lookup past the block table may raise


@dataclass(frozen=True)
class Raised:
    """A lookup that raised one of OUT_OF_RANGE instead of returning slots."""

    error: str
    message: str


def _outcome(fn):
    """`fn`, with an OUT_OF_RANGE error returned as `Raised` (any other exception still propagates)."""

    def call(*args):
        try:
            return fn(*args)
        except OUT_OF_RANGE as err:
            return Raised(type(err).__name__, str(err))

    return call


def reference(block_table: list[int], positions: list[int], block_size: int) -> list[int]:
    """labkit's paged engine's slot for each position (`labkit.serving.paged.attention.slot`).

    Args:
        block_table: physical block ids, logical block i -> block_table[i]. positions: token positions in the
            sequence (>= 0), any order. block_size: tokens per block.
    Returns:
        one flat pool slot per position, in the order of `positions`.
    Raises:
        IndexError: a position at or past len(block_table) × block_size (no block holds it).
    """
    from labkit.serving.paged.attention import slot

    return [slot(block_table, p, block_size) for p in positions]


def _fragmented_table() -> list[int]:
    """The block table the BlockManager gives a 14-token prompt after an earlier sequence freed its blocks."""
    from labkit.serving.paged.blocks import BlockManager
    from labkit.serving.paged.sequence import Sequence

    manager = BlockManager(num_blocks=6, block_size=4, prefix_caching=False)
    first, second, third = Sequence(list(range(9))), Sequence(list(range(5))), Sequence(list(range(14)))
    manager.allocate(first)  # blocks 0, 1, 2
    manager.allocate(second)  # blocks 3, 4
    manager.free(first)  # back on the free list after block 5, tail first
    manager.allocate(third)  # whatever the free list holds, in its order
    return list(third.block_table)


def cases() -> list[Case]:
    """The grader's inputs: (block_table, positions, block_size), each with what it tests."""
    fragmented = _fragmented_table()
    return [
        Case("positions within the first block: block_table[0] × block_size + position", ([3], [0, 1, 2], 4)),
        Case("across a block boundary: position 4 opens logical block 1", ([3, 1], [2, 3, 4, 5], 4)),
        Case("a block's last slot: positions 15 and 31 end blocks 0 and 1, position 16 starts block 1",
             ([0, 5], [15, 16, 31], 16)),
        Case(f"a prefill of 14 tokens through the table {fragmented} the BlockManager gave after another sequence "
             "freed its blocks", (fragmented, list(range(14)), 4)),
        Case("positions in any order, slots in the same order; a block size that is not a power of two",
             ([7, 2, 9], [7, 0, 5], 3)),
        Case("a decode step: only the newest token's slot, in the table's last block", (fragmented, [13], 4)),
        Case("a position past the table's last block must raise (IndexError or ValueError), never name a slot: "
             "that slot is another sequence's", ([3, 1], [6, 8], 4)),
    ]  # fmt: skip


def _compare(got, want, case: Case) -> str | None:
    table, positions, size = case.args
    if isinstance(want, Raised):
        if isinstance(got, Raised):
            return None
        return (f"returned {got!r}; position {max(positions)} lies past the {len(table)} block(s) of {size} tokens "
                f"({len(table) * size} slots) of the table {table}: {SHORT} raises {want.error}")  # fmt: skip
    if isinstance(got, Raised):
        return f"raised {got.error} ({got.message}); {SHORT} gives {want}"
    if hasattr(got, "tolist"):  # a tensor or an array of slots is fine too
        got = got.tolist()
    if not isinstance(got, (list, tuple)):
        return f"returned {type(got).__name__}, expected a list of {len(want)} int(s)"
    if len(got) != len(want):
        return f"returned {len(got)} slot(s) for {len(positions)} position(s)"
    if list(got) != want:
        first = next(i for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w)
        p = positions[first]
        return (f"position {p} (logical block {p // size}, offset {p % size}) gave slot {got[first]}, {SHORT} gives "
                f"{want[first]} = block {table[p // size]} × {size} + {p % size}; all slots: {list(got)} vs {want}")
    return None


def grade(slot_mapping) -> Grade:
    """Run a learner's block-table lookup on `cases()` and compare each result with `reference`.

    Args:
        slot_mapping: (block_table: list of physical block ids, positions: list of token positions, block_size:
            tokens per block) -> list of flat pool slots, one per position; raises IndexError or ValueError for a
            position no block of the table holds.
    Returns:
        Grade: ok only if every case gives labkit's slots (and the out-of-range case raises); otherwise the first
        failing case and what differs. Any other exception inside the learner's code is reported, not raised.
    """
    return grade_cases(_outcome(slot_mapping), cases(), _outcome(reference), _compare, JUDGE)
