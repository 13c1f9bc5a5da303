"""The BLOOM inference-server design: one request at a time, first come first served.

Everyone else waits in the queue until the request in front has produced its last token, so time
to first token grows with the queue while the hardware decodes a batch of one.
"""

from __future__ import annotations

from labkit.serving.schedulers.base import Scheduler, pick_tokens
from labkit.serving.schedulers.batch import Batch


class SyncScheduler(Scheduler):
    name = "sync"

    def __init__(self, model, tokenizer, max_queue: int = 64, **_ignored):
        super().__init__(model, tokenizer, max_batch=1, max_queue=max_queue)

    def step(self) -> None:
        reqs = self._take(1)
        if not reqs:
            return
        self.running = reqs
        batch, logits = Batch.prefill(self.model, reqs)
        while True:
            token = pick_tokens(logits, reqs)[0]
            if self._emit(reqs[0], token):
                break
            batch.next_tokens = [token]
            self.batch_sizes[1] += 1
            logits = batch.decode(self.model)
        self.running = []
