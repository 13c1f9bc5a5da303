"""Dynamic (request-level) batching: wait for up to `max_batch` requests or `max_wait_ms`, then run
them as one batch until the longest is done (Triton's dynamic batcher, TF-Serving, HF `generate` on a list).

Sequences that finish early keep their slot (their extra tokens are thrown away) and new arrivals
wait for the whole batch: the two costs continuous batching removes.
"""

from __future__ import annotations

import time

from labkit.serving.schedulers.base import Scheduler, pick_tokens
from labkit.serving.schedulers.batch import Batch


class DynamicScheduler(Scheduler):
    name = "dynamic"

    def __init__(self, model, tokenizer, max_batch: int = 8, max_queue: int = 64, max_wait_ms: float = 20.0,
                 **_ignored):
        super().__init__(model, tokenizer, max_batch=max_batch, max_queue=max_queue)
        self.max_wait_s = max_wait_ms / 1e3

    def _deadline(self) -> float:
        return self.queue[0].t_submit + self.max_wait_s

    def _has_work(self) -> bool:
        if not self.queue:
            return False
        return len(self.queue) >= self.max_batch or self._closing or time.perf_counter() >= self._deadline()

    def _wait_s(self) -> float | None:
        return max(0.0, self._deadline() - time.perf_counter()) + 1e-4 if self.queue else None

    def step(self) -> None:
        reqs = self._take(self.max_batch)
        if not reqs:
            return
        self.running = reqs
        batch, logits = Batch.prefill(self.model, reqs)
        while True:
            tokens = pick_tokens(logits, reqs)
            done = [self._emit(r, t) for r, t in zip(reqs, tokens, strict=True)]
            if all(done):
                break
            batch.next_tokens = tokens
            self.batch_sizes[len(reqs)] += 1  # finished rows still occupy the batch
            logits = batch.decode(self.model)
        self.running = []
