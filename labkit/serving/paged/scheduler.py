"""The scheduler: which sequences compute how many tokens in the next step, admitted by KV capacity.

One step of the paged engine runs a packed batch of tokens: one for each decoding sequence and a chunk of each
prompt being prefilled. The scheduler fills that batch under two budgets, the way vLLM's (v1) scheduler does:

    tokens   at most `max_batched_tokens` per step. A prompt longer than what is left is split into chunks over
             several steps (chunked prefill), so a long prompt never stalls the decoding sequences for a whole
             prefill; None = no chunking (a prompt is prefilled in one step).
    KV       a sequence is admitted only when the free list holds blocks for all its tokens and one more for each
             running sequence's next token (not merely when a batch slot is free). When a decoding sequence needs a
             new block and none is free, the most recently admitted sequence is preempted: its blocks are freed and
             it waits at the head of the queue, to be recomputed from its tokens (vLLM's recompute preemption;
             Kwon et al. 2023, §4.5).

Running sequences are scheduled first (oldest first), then waiting ones in arrival order (FCFS: a sequence that does
not fit blocks the ones behind it, as vLLM does). `max_seqs` caps the sequences in a step.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from labkit.serving.paged.blocks import BlockManager
from labkit.serving.paged.sequence import SeqStatus, Sequence


@dataclass(frozen=True)
class Scheduled:
    """One sequence's work in a step: compute `tokens` of its tokens, from `start` (= its computed tokens)."""

    seq: Sequence
    start: int
    tokens: int

    @property
    def samples(self) -> bool:
        """Whether this step reaches the sequence's last token, so its logits give the next token."""
        return self.start + self.tokens == len(self.seq.token_ids)


class Scheduler:
    """Admission by KV capacity, recompute preemption and chunked prefill over one `BlockManager`.

    Args:
        blocks: the block manager (the KV budget).
        max_seqs: most sequences running at once.
        max_batched_tokens: most tokens computed in one step (None: unlimited, whole prompts in one step).
    Raises:
        ValueError: for max_seqs or max_batched_tokens < 1.

    Counters: `preemptions`, `steps`.
    """

    def __init__(self, blocks: BlockManager, max_seqs: int = 32, max_batched_tokens: int | None = None):
        if max_seqs < 1 or (max_batched_tokens is not None and max_batched_tokens < 1):
            raise ValueError(f"need max_seqs >= 1 and max_batched_tokens >= 1, got {max_seqs}, {max_batched_tokens}")
        self.blocks, self.max_seqs, self.max_batched_tokens = blocks, max_seqs, max_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.preemptions = self.steps = 0

    def add(self, seq: Sequence) -> None:
        """Queue a new sequence.

        Raises:
            ValueError: a sequence that could never fit: more blocks than the whole pool.
        """
        need = self.blocks.blocks_needed(len(seq.token_ids))
        if need > self.blocks.num_blocks:
            raise ValueError(f"a prompt of {len(seq.token_ids)} tokens needs {need} KV blocks; the pool has "
                             f"{self.blocks.num_blocks} of {self.blocks.block_size} tokens")
        seq.status = SeqStatus.WAITING
        self.waiting.append(seq)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> list[Scheduled]:
        """The next step's work: running sequences first (preempting the newest when blocks run out), then
        waiting ones while blocks, tokens and sequence slots last.

        Returns:
            Scheduled entries, at least one whenever `has_work` and a sequence fits the empty pool.
        """
        budget = self.max_batched_tokens if self.max_batched_tokens is not None else float("inf")
        out: list[Scheduled] = []
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            while not self.blocks.can_append([seq]):  # its next token needs a block and none is free
                victim = self.running.pop()
                self._preempt(victim)
                if victim is seq:
                    break
            if seq.status is not SeqStatus.RUNNING:
                break
            self.blocks.append_slot(seq)
            n = int(min(seq.num_uncomputed, budget))
            out.append(Scheduled(seq, seq.num_computed_tokens, n))
            budget -= n
            i += 1
        while self.waiting and budget > 0 and len(self.running) < self.max_seqs:
            seq = self.waiting[0]
            # headroom: each running sequence may need one new block for its next token; admitting into that room
            # would preempt the newcomer a step later and waste its prefill (vLLM keeps a watermark for the same)
            if not self.blocks.can_allocate(seq, reserve=len(self.running)):
                break  # FCFS: it waits for blocks, and so does everyone behind it
            self.waiting.popleft()
            self.blocks.allocate(seq)
            seq.status = SeqStatus.RUNNING
            self.running.append(seq)
            n = int(min(seq.num_uncomputed, budget))
            out.append(Scheduled(seq, seq.num_computed_tokens, n))
            budget -= n
        self.steps += bool(out)
        return out

    def computed(self, work: list[Scheduled]) -> None:
        """After the forward: the scheduled tokens' keys and values are in the cache."""
        for w in work:
            w.seq.num_computed_tokens = w.start + w.tokens
            self.blocks.mark_computed(w.seq)

    def finish(self, seq: Sequence) -> None:
        """A sequence is done (or cancelled): its blocks go back."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.blocks.free(seq)
        seq.status = SeqStatus.FINISHED

    def _preempt(self, seq: Sequence) -> None:
        self.blocks.free(seq)
        seq.num_computed_tokens = seq.num_cached_tokens = 0
        seq.status, seq.preemptions = SeqStatus.WAITING, seq.preemptions + 1
        self.waiting.appendleft(seq)
        self.preemptions += 1

    def kv_stats(self) -> dict:
        """KV use now: blocks used, slots allocated to running sequences vs tokens they store, waste %.

        Returns:
            {"blocks_used", "blocks_total", "slots", "tokens", "waste_pct"}; waste = (slots − tokens) / slots,
            the unfilled tails of last blocks (shared prefix blocks counted once per sequence using them).
        """
        size = self.blocks.block_size
        slots = sum(len(s.block_table) * size for s in self.running)
        tokens = sum(len(s.token_ids) for s in self.running)
        return {"blocks_used": self.blocks.used, "blocks_total": self.blocks.num_blocks, "slots": slots,
                "tokens": tokens, "waste_pct": 100 * (slots - tokens) / slots if slots else 0.0}
