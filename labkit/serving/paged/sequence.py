"""A sequence in the paged engine: its tokens, its block table and how far its keys and values are computed."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from enum import Enum

_ids = itertools.count()


class SeqStatus(Enum):
    WAITING = "waiting"  # no blocks (new, or preempted: it will be recomputed)
    RUNNING = "running"  # holds blocks; prefilling (some prompt tokens not computed yet) or decoding
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """One request's tokens in the paged engine.

    Attributes:
        token_ids: prompt + generated tokens so far. prompt_len: tokens of the prompt.
        block_table: physical block ids, logical block i -> block_table[i] (`BlockManager`).
        num_computed_tokens: tokens whose keys and values are in the cache (a prefill may take several steps).
        num_cached_tokens: of the prompt, tokens found in the prefix cache at admission (not computed).
        parent_hash, hashed_blocks: the prefix cache's bookkeeping (`BlockManager.mark_computed`).
        preemptions: times it was evicted and recomputed. payload: what the engine attaches (its request).
    """

    token_ids: list[int]
    payload: object = None
    seq_id: int = field(default_factory=lambda: next(_ids))
    status: SeqStatus = SeqStatus.WAITING
    block_table: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0
    parent_hash: int | None = None
    hashed_blocks: int = 0
    preemptions: int = 0
    prompt_len: int = -1

    def __post_init__(self) -> None:
        if not self.token_ids:
            raise ValueError("a sequence needs at least one token")
        self.token_ids = list(self.token_ids)
        if self.prompt_len < 0:
            self.prompt_len = len(self.token_ids)

    @property
    def num_uncomputed(self) -> int:
        """Tokens still to run through the model before the next token can be sampled."""
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def generated(self) -> list[int]:
        """The tokens generated so far."""
        return self.token_ids[self.prompt_len:]

    def append(self, token: int) -> None:
        """Add a sampled token (its keys and values are computed by the next step)."""
        self.token_ids.append(int(token))
