"""transformers' own continuous batching (`ContinuousBatchingManager`, paged KV cache) behind the engine interface:
the library version of what `BatchEngine` with the 'continuous' policy does from scratch.

The admission, queue bound, cancellation and worker loop are `Engine`'s; only the step differs: joiners are handed
to the manager (which runs the model on its own thread) and its outputs come back as token events.
It runs on CPU for Llama-architecture models (tiny-llama, SmolLM2). On BLOOM it fails inside transformers
(`'PagedAttentionCache' object has no attribute 'get_seq_length'`): `check_supported` says so before a request is
lost. Greedy decoding only (its sampling settings are per manager, not per request), and no logprobs (the manager
returns token ids only): the server refuses both by name.
"""

from __future__ import annotations

from transformers import GenerationConfig
from transformers.generation.configuration_utils import ContinuousBatchingConfig

from labkit.serving.engine import Engine
from labkit.serving.limits import Limits
from labkit.serving.policies import POLICIES

PAGE_TOKENS = 32  # tokens per KV-cache block
POLL_S = 0.05  # longest wait for the manager's next output in one step (s)


def check_supported(model) -> None:
    """Refuse a model transformers' continuous batching cannot run.

    Args:
        model: a transformers causal LM.
    Raises:
        ValueError: for BLOOM (ALiBi attention), with transformers' own error and the alternatives.
    """
    if model.config.model_type == "bloom":
        raise ValueError(
            "transformers' continuous batching fails on BLOOM (ALiBi): AttributeError: 'PagedAttentionCache' "
            "object has no attribute 'get_seq_length'; use scheduler 'continuous' or a Llama-architecture model"
        )


class HFEngine(Engine):
    """transformers' `ContinuousBatchingManager` as an engine: the 'continuous' policy decides who joins.

    Args:
        model: a transformers causal LM that `check_supported` accepts.
        tokenizer: its tokenizer.
        limits: max_batch (default 32), max_queue, kv_tokens (paged cache size; default 256 per batch slot).
    Raises:
        ValueError: for a model it cannot run (`check_supported`).
    """

    supports_sampling = False
    supports_logprobs = False

    def __init__(self, model, tokenizer, limits: Limits | None = None):
        check_supported(model)
        super().__init__(model, tokenizer, POLICIES["continuous"], limits, name="hf-continuous")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        config = GenerationConfig(do_sample=False, max_new_tokens=64, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=pad)
        # Size the paged cache ourselves: left alone it takes 90 % of free memory (on CPU: of the RAM).
        kv_tokens = self.limits.kv_tokens or 256 * self.max_batch
        cb = ContinuousBatchingConfig(page_size=PAGE_TOKENS, num_blocks=-(-kv_tokens // PAGE_TOKENS),
                                      max_batch_tokens=512, max_requests_per_batch=self.max_batch)
        self.manager = model.init_continuous_batching(generation_config=config, continuous_batching_config=cb)

    def start(self) -> HFEngine:
        if not self.manager.is_running():
            self.manager.start()
        super().start()
        return self

    def stop(self, drain: bool = True, timeout: float | None = 30) -> None:
        super().stop(drain, timeout)
        if self.manager.is_running():
            self.manager.stop(block=True, timeout=10)

    def step(self) -> None:
        for req in self._admit():
            eos = sorted(req.stop_ids) or -1  # -1: no EOS stop (transformers' convention)
            self.manager.add_request(req.prompt_ids, request_id=req.id, max_new_tokens=req.params.max_tokens,
                                     streaming=True, eos_token_id=eos)
        self._leave()
        if not self.running:
            return
        out = self.manager.get_result(timeout=POLL_S)  # cumulative tokens of one request
        if out is None and not self.manager.is_running():
            raise RuntimeError("transformers' generation thread has stopped")
        req = next((r for r in self.running if out is not None and r.id == out.request_id), None)
        if req is not None:
            for token in out.generated_tokens[len(req.tokens):]:
                self._emit(req, token)
            if out.error is not None:
                self._finish(req, "error", str(out.error))
            elif out.is_finished():
                self._finish(req, "length")  # ended without our EOS check firing: it hit max_tokens
        self._leave()

    def _leave(self) -> None:
        """Each finished request leaves at once; cancelled ones are cancelled in the manager too."""
        for req in self.running:
            if req.cancelled.is_set():
                self._finish(req, "cancelled")
            if req.finish_reason in ("cancelled", "error"):
                self.manager.cancel_request(req.id)
        self.running = [r for r in self.running if not r.finished.is_set()]

    def _reset(self) -> None:
        for req in self.running:
            self.manager.cancel_request(req.id)
        self.running = []
