"""transformers' own continuous batching (`ContinuousBatchingManager`, paged KV cache) behind the same
interface: the library version of what `continuous.py` does from scratch.

It runs on CPU for Llama-architecture models (tiny-llama, SmolLM2). On BLOOM it fails inside
transformers (`'PagedAttentionCache' object has no attribute 'get_seq_length'`): `check_supported`
says so before a request is lost. Greedy decoding only (its sampling settings are per manager).
"""

from __future__ import annotations

import threading
import time

from transformers import GenerationConfig
from transformers.generation.configuration_utils import ContinuousBatchingConfig

from labkit.serving.schedulers.base import GenRequest, QueueFull, Scheduler, ShuttingDown


def check_supported(model) -> None:
    """Raise ValueError when transformers' continuous batching cannot run this model."""
    if model.config.model_type == "bloom":
        raise ValueError(
            "transformers' continuous batching fails on BLOOM (ALiBi): AttributeError: 'PagedAttentionCache' "
            "object has no attribute 'get_seq_length'; use scheduler 'continuous' or a Llama-architecture model"
        )


class HFContinuousScheduler(Scheduler):
    name = "hf-continuous"
    supports_sampling = False

    def __init__(self, model, tokenizer, max_batch: int = 32, max_queue: int = 64, kv_tokens: int | None = None,
                 **_ignored):
        check_supported(model)
        super().__init__(model, tokenizer, max_batch=max_batch, max_queue=max_queue)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        config = GenerationConfig(do_sample=False, max_new_tokens=64, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=pad)
        # Size the paged cache ourselves: left alone it takes 90 % of free memory (on CPU: of the RAM).
        page = 32
        cb = ContinuousBatchingConfig(page_size=page, num_blocks=-(-(kv_tokens or 256 * max_batch) // page),
                                      max_batch_tokens=512, max_requests_per_batch=max_batch)
        self.manager = model.init_continuous_batching(generation_config=config, continuous_batching_config=cb)
        self.pending: dict[str, GenRequest] = {}
        self._router: threading.Thread | None = None

    def submit(self, req: GenRequest) -> None:
        if req.temperature > 0:
            raise ValueError("scheduler 'hf-continuous' serves greedy decoding only (temperature 0)")
        with self._cv:
            if self._closing:
                raise ShuttingDown("scheduler 'hf-continuous' is shutting down")
            waiting = len(self.pending) - self.max_batch
            if waiting >= self.max_queue:
                raise QueueFull(waiting, 1.0)
            req.t_submit = time.perf_counter()
            self.pending[req.id] = req
        eos = req.eos_token_id if req.eos_token_id is not None else -1
        self.manager.add_request(req.prompt_ids, request_id=req.id, max_new_tokens=req.max_new_tokens,
                                 streaming=True, eos_token_id=eos)

    @property
    def queue_depth(self) -> int:
        return max(0, len(self.pending) - self.max_batch)

    def start(self) -> Scheduler:
        if self._router is None:
            self.manager.start()
            self._router = threading.Thread(target=self._route, name="scheduler-hf-continuous", daemon=True)
            self._router.start()
        return self

    def cancel(self, req: GenRequest) -> None:
        req.cancel()
        with self._cv:
            self.pending.pop(req.id, None)
        self.manager.cancel_request(req.id)
        self._finish(req, "cancelled")

    def _route(self) -> None:
        """Deliver the manager's outputs (cumulative token lists) as per-token events."""
        while True:
            with self._cv:
                self.running = list(self.pending.values())[: self.max_batch]
                if self._closing and not self.pending:
                    break
            out = self.manager.get_result(timeout=0.05)
            if out is None:
                continue
            req = self.pending.get(out.request_id)
            if req is None:
                continue  # cancelled meanwhile
            for token in out.generated_tokens[len(req.tokens):]:
                self._emit(req, token)
            if out.error is not None:
                self._finish(req, "error", str(out.error))
            elif out.is_finished():
                self._finish(req, "length")  # ended without our EOS check firing: it hit max_new_tokens
            if req.finished.is_set():
                with self._cv:
                    self.pending.pop(req.id, None)
        self.manager.stop(block=True, timeout=10)

    def stop(self, drain: bool = True, timeout: float | None = 30) -> None:
        with self._cv:
            self._closing = True
            if not drain:
                for req in list(self.pending.values()):
                    self.cancel(req)
        if self._router is not None:
            self._router.join(timeout)

    def step(self) -> None:  # the manager runs its own loop
        raise NotImplementedError
