"""The block-table exercise's answer (Kwon et al. 2023, PagedAttention, §4.1-4.2; vLLM's slot_mapping)."""

from __future__ import annotations


def slot_mapping(block_table: list[int], positions: list[int], block_size: int) -> list[int]:
    """The flat KV-pool slot of each token position: block_table[p // block_size] × block_size + p % block_size.

    Args:
        block_table: physical block ids; logical block i of the sequence is physical block block_table[i].
        positions: token positions in the sequence (>= 0), any order. block_size: tokens per block.
    Returns:
        one slot per position, in the order of `positions`.
    Raises:
        IndexError: a position at or past len(block_table) × block_size (no block of the table holds it).
    """
    slots = []
    for p in positions:
        logical, offset = divmod(p, block_size)  # which of the sequence's blocks, and where in it
        if not 0 <= logical < len(block_table):  # a wrapped or clamped index would name another sequence's slot
            raise IndexError(f"position {p} is past the {len(block_table)} block(s) of {block_size} tokens")
        slots.append(block_table[logical] * block_size + offset)
    return slots
