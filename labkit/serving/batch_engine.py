"""labkit's engine: a batching policy (sync, dynamic or continuous) over one left-padded `KVBatch`.

Each step: admit (the policy) -> prefill the joiners -> drop cancelled -> decode one token for every running sequence
-> sample (`decoding.sampling.sample_next`) -> emit -> finished sequences leave (the policy's rule). The KV cache and
the inputs live on the model's device (`Engine.device`).
"""

from __future__ import annotations

import torch

from labkit.decoding.sampling import sample_next
from labkit.serving.engine import Engine
from labkit.serving.kv_batch import KVBatch
from labkit.serving.limits import Limits
from labkit.serving.logprobs import prompt_logprobs, step_logprobs
from labkit.serving.policies import Policy
from labkit.serving.request import Request


class BatchEngine(Engine):
    """labkit's engine: a policy over one left-padded `KVBatch` (sync, dynamic or continuous batching)."""

    def __init__(self, model, tokenizer, policy: Policy, limits: Limits | None = None):
        super().__init__(model, tokenizer, policy, limits)
        self.batch: KVBatch | None = None

    def step(self) -> None:
        """admit (policy) -> prefill the joiners -> drop cancelled -> decode one token each -> sample -> emit ->
        finished sequences leave (policy)."""
        self._join(self._admit())
        for req in self.running:
            if req.cancelled.is_set():
                self._finish(req, "cancelled")
        self._set_batch(self._leave(self.batch))
        if self.batch is None:
            return
        self.count_decode_step(len(self.batch))
        logits = self.batch.decode(self.model)  # one forward for every running sequence
        self._emit_all(self.batch, logits)
        self._set_batch(self._leave(self.batch))

    def _join(self, joiners: list[Request]) -> None:
        """Prefill the joiners as one batch (each one's first token comes out of it) and merge them in."""
        if not joiners:
            return
        every = any(r.params.prompt_logprobs for r in joiners)
        new, logits = KVBatch.prefill(self.model, joiners, every_position=every)
        for req, row in zip(joiners, logits, strict=True):
            if req.params.prompt_logprobs:  # stored before the first token event
                req.prompt_logprobs = prompt_logprobs(row, req.prompt_ids, req.params.logprobs or 0)
        self._emit_all(new, logits[:, -1])
        if (new := self._leave(new)) is None:
            return
        if self.batch is not None:
            self.batch.merge(new)
            new = self.batch
        self._set_batch(new)

    def _emit_all(self, batch: KVBatch, logits: torch.Tensor) -> None:
        batch.next_tokens = sample_tokens(logits, batch.reqs)  # what each row feeds into the next step
        entries = step_logprobs(logits, batch.next_tokens, batch.reqs)
        for req, token, entry in zip(batch.reqs, batch.next_tokens, entries, strict=True):
            self._emit(req, token, entry)

    def _leave(self, batch: KVBatch | None) -> KVBatch | None:
        """Finished sequences leave: each at once, or all together once every one is done (the policy's rule)."""
        if batch is None:
            return None
        alive = [i for i, req in enumerate(batch.reqs) if not req.finished.is_set()]
        if not alive:
            return None
        if not self.policy.leave_together:
            batch.keep(alive)
        return batch

    def _set_batch(self, batch: KVBatch | None) -> None:
        self.batch = batch
        self.running = list(batch.reqs) if batch is not None else []  # a copy: merge() extends batch.reqs

    def _reset(self) -> None:
        self._set_batch(None)


def sample_tokens(logits: torch.Tensor, reqs: list[Request]) -> list[int]:
    """Each row's next token under its request's settings: `decoding.sampling.sample_next`, the one sampling rule.

    Args:
        logits: (batch, vocab), one row per request, on any device.
        reqs: the requests, in row order (their SamplingParams and seeded generators).
    Returns:
        one token id per row.
    """
    greedy = logits.argmax(-1).tolist()  # sample_next's temperature-0 answer, for the whole batch in one call
    # Sampled rows are drawn on the CPU, where the request's seeded generator lives: a seed draws the same token on
    # every device (a CPU generator cannot drive a draw from a CUDA tensor).
    return [g if r.params.greedy else sample_next(logits[i].cpu(), r.params.temperature, r.params.top_k,
                                                  r.params.top_p, generator=r.generator())
            for i, (g, r) in enumerate(zip(greedy, reqs, strict=True))]
