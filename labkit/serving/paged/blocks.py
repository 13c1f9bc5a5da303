"""The block manager: the KV cache as fixed-size blocks, a free list, reference counts and a prefix cache.

PagedAttention (Kwon et al., SOSP'23, §4.2) stores each sequence's keys and values in blocks of `block_size` tokens
anywhere in one pool; a per-sequence *block table* maps its logical blocks to physical ones, so a sequence only ever
wastes the unfilled tail of its last block. A full block is also named by the hash of its tokens and of every token
before it (vLLM's automatic prefix caching): a new sequence whose prompt starts with the same tokens reuses those
blocks, counting one more reference, instead of computing them again.

    manager = BlockManager(num_blocks=64, block_size=16)
    hits = manager.allocate(seq)          # blocks for seq's tokens; returns how many prompt tokens were cached
    manager.append_slot(seq)              # before a decode step: a new block when the last one is full
    manager.mark_computed(seq)            # after a forward: its full, written blocks become findable
    manager.free(seq)                     # references dropped; cached blocks stay findable until reused
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

from labkit.serving.paged.sequence import Sequence


@dataclass
class Block:
    """One physical block: its id, how many sequences use it, and its prefix hash once it is full (else None)."""

    block_id: int
    ref_count: int = 0
    hash: int | None = None


def block_hash(parent: int | None, tokens: tuple[int, ...]) -> int:
    """The name of a full block: its tokens and, through `parent`, every token before it.

    Args:
        parent: the previous block's hash (None for a sequence's first block). tokens: this block's token ids.
    Returns:
        an int that two blocks share only when their whole prefix is the same (Python's tuple hash).
    """
    return hash((parent, tokens))


class BlockManager:
    """Physical KV blocks: a free list, reference counts and the hashes of full blocks.

    Args:
        num_blocks: blocks in the pool (the KV budget / (block_size × one token's K and V bytes)).
        block_size: tokens per block.
        prefix_caching: reuse full blocks whose token prefix was computed before.
    Raises:
        ValueError: for num_blocks or block_size < 1.

    Counters: `hit_tokens` and `queried_tokens` (prompt tokens found cached / looked up), `peak_used`.
    """

    def __init__(self, num_blocks: int, block_size: int = 16, prefix_caching: bool = True):
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need num_blocks >= 1 and block_size >= 1, got {num_blocks} and {block_size}")
        self.block_size, self.prefix_caching = block_size, prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free_ids: deque[int] = deque(range(num_blocks))  # unused: never filled, or freed and evictable
        self.cached: OrderedDict[int, int] = OrderedDict()  # hash -> block id of a full block (evict oldest first)
        self.hit_tokens = self.queried_tokens = self.peak_used = 0

    # --- accounting ------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def used(self) -> int:
        """Blocks referenced by at least one sequence."""
        return self.num_blocks - len(self.free_ids)

    def blocks_needed(self, tokens: int) -> int:
        """Blocks that hold `tokens` tokens: ceil(tokens / block_size)."""
        return -(-tokens // self.block_size)

    def can_allocate(self, seq: Sequence, reserve: int = 0) -> bool:
        """Whether the free list holds blocks for all of seq's tokens (cached prefix blocks not counted), with
        `reserve` blocks left over."""
        need = self.blocks_needed(len(seq.token_ids)) - self._cached_prefix_blocks(seq)
        return need + reserve <= len(self.free_ids)

    def can_append(self, seqs: list[Sequence]) -> bool:
        """Whether every sequence in `seqs` can get the block its next token needs."""
        return sum(self._needs_block(s) for s in seqs) <= len(self.free_ids)

    # --- allocation ------------------------------------------------------------------------
    def allocate(self, seq: Sequence) -> int:
        """Give `seq` a block table for all its tokens, reusing cached full blocks of its prefix.

        Args:
            seq: a sequence without blocks.
        Returns:
            tokens of its prompt found in the cache (a multiple of block_size; never the whole prompt: the last
            token is always computed, its logits start the generation).
        Raises:
            RuntimeError: not enough free blocks (call `can_allocate` first), or seq already has blocks.
        """
        if seq.block_table:
            raise RuntimeError(f"sequence {seq.seq_id} already has blocks")
        if not self.can_allocate(seq):
            raise RuntimeError(f"sequence {seq.seq_id} needs more blocks than the {len(self.free_ids)} free")
        hits, parent = self._prefix_hits(seq)
        for block_id in hits:
            seq.block_table.append(self._take(block_id).block_id)
        for _ in range(self.blocks_needed(len(seq.token_ids)) - len(hits)):
            seq.block_table.append(self._take(None).block_id)
        cached = len(hits) * self.block_size
        seq.parent_hash, seq.hashed_blocks = parent, len(hits)
        seq.num_cached_tokens = seq.num_computed_tokens = cached
        self.hit_tokens += cached
        self.queried_tokens += len(seq.token_ids)
        return cached

    def append_slot(self, seq: Sequence) -> None:
        """Make room for seq's newest token: a new block when its last one is full.

        Raises:
            RuntimeError: no free block (call `can_append` first).
        """
        if self._needs_block(seq):
            if not self.free_ids:
                raise RuntimeError("no free KV block: preempt a sequence first")
            seq.block_table.append(self._take(None).block_id)

    def mark_computed(self, seq: Sequence) -> None:
        """Name seq's full blocks whose keys and values are now written (up to `seq.num_computed_tokens`), so later
        sequences can reuse them. Called after every forward; a block is never found before it is computed."""
        if not self.prefix_caching:
            return
        while (seq.hashed_blocks + 1) * self.block_size <= seq.num_computed_tokens:
            i = seq.hashed_blocks
            h = block_hash(seq.parent_hash, tuple(seq.token_ids[i * self.block_size:(i + 1) * self.block_size]))
            block = self.blocks[seq.block_table[i]]
            if h not in self.cached:
                block.hash = h
                self.cached[h] = block.block_id
            seq.parent_hash, seq.hashed_blocks = h, i + 1

    def free(self, seq: Sequence) -> None:
        """Drop seq's references; a block nobody uses goes back to the free list (its hash stays until reused)."""
        for block_id in reversed(seq.block_table):  # the tail first: it is the least likely to be shared
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free_ids.append(block_id)
        seq.block_table.clear()
        seq.parent_hash, seq.hashed_blocks = None, 0

    # --- internals -------------------------------------------------------------------------
    def _needs_block(self, seq: Sequence) -> bool:
        return len(seq.token_ids) > len(seq.block_table) * self.block_size

    def _prefix_hits(self, seq: Sequence) -> tuple[list[int], int | None]:
        """Cached blocks for seq's leading full blocks (never the one holding its last token), and the last hash."""
        hits: list[int] = []
        parent = None
        if not self.prefix_caching:
            return hits, parent
        while (len(hits) + 1) * self.block_size < len(seq.token_ids):
            n = len(hits)
            h = block_hash(parent, tuple(seq.token_ids[n * self.block_size:(n + 1) * self.block_size]))
            if h not in self.cached:
                break
            hits.append(self.cached[h])
            parent = h
        return hits, parent

    def _cached_prefix_blocks(self, seq: Sequence) -> int:
        """Cached prefix blocks seq would take without using a free block (those still referenced by others)."""
        hits, _ = self._prefix_hits(seq)
        return sum(self.blocks[b].ref_count > 0 for b in hits)

    def _take(self, block_id: int | None) -> Block:
        """A block for a sequence: the cached one named `block_id`, or the oldest free one (its old name dropped)."""
        if block_id is None:
            block_id = self.free_ids.popleft()
            old = self.blocks[block_id]
            if old.hash is not None and self.cached.get(old.hash) == block_id:
                del self.cached[old.hash]  # evicted: its contents are about to be overwritten
            old.hash = None
        elif self.blocks[block_id].ref_count == 0:
            self.free_ids.remove(block_id)  # a freed block still holding a cached prefix: taken back
        block = self.blocks[block_id]
        block.ref_count += 1
        self.peak_used = max(self.peak_used, self.used)
        return block
