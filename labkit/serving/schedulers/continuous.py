"""Continuous (iteration-level) batching, as in Orca: the batch is re-formed at every decode step.

Between two steps, finished or cancelled sequences leave and queued ones join (their prompts are
prefilled together, then their KV caches are merged into the running batch). A short request no
longer waits for a long one, and a free slot is filled one step after it opens.
"""

from __future__ import annotations

from labkit.serving.schedulers.base import Scheduler, pick_tokens
from labkit.serving.schedulers.batch import Batch


class ContinuousScheduler(Scheduler):
    name = "continuous"

    def __init__(self, model, tokenizer, max_batch: int = 32, max_queue: int = 64, **_ignored):
        super().__init__(model, tokenizer, max_batch=max_batch, max_queue=max_queue)
        self.batch: Batch | None = None

    def _admit(self) -> None:
        """Prefill queued requests into free slots; each one's first token comes out of its prefill."""
        joiners = self._take(self.max_batch - len(self.running))
        if not joiners:
            return
        new, logits = Batch.prefill(self.model, joiners)
        new.next_tokens = pick_tokens(logits, joiners)
        alive = [i for i, (r, t) in enumerate(zip(joiners, new.next_tokens, strict=True)) if not self._emit(r, t)]
        new.keep(alive)
        if not alive:
            return
        if self.batch is None:
            self.batch = new
        else:
            self.batch.merge(new)
        self.running = self.batch.reqs

    def step(self) -> None:
        self._admit()
        if self.batch is None:
            return
        cancelled = [r for r in self.batch.reqs if r.cancelled.is_set()]
        for r in cancelled:
            self._finish(r, "cancelled")
        if cancelled:
            self._leave([i for i, r in enumerate(self.batch.reqs) if not r.finished.is_set()])
            if self.batch is None:
                return
        self.batch_sizes[len(self.batch)] += 1
        logits = self.batch.decode(self.model)  # one forward for every running sequence
        tokens = pick_tokens(logits, self.batch.reqs)
        self.batch.next_tokens = tokens
        self._leave([i for i, (r, t) in enumerate(zip(self.batch.reqs, tokens, strict=True)) if not self._emit(r, t)])

    def _reset(self) -> None:
        self.batch, self.running = None, []

    def _leave(self, rows: list[int]) -> None:
        if rows:
            self.batch.keep(rows)
            self.running = self.batch.reqs
        else:
            self.batch, self.running = None, []
