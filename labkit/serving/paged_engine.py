"""The paged engine behind the server's interface: scheduler "paged".

Each step: requests join while the batch has room (the continuous policy) -> the scheduler picks the step's tokens
(running sequences first, then waiting ones that fit the KV blocks; prompts in chunks under `prefill_chunk`) -> one
forward over the packed tokens (`paged.runner`) -> the sequences whose last token was computed sample their next
token (`batch_engine.sample_tokens`, the one sampling rule) -> finished sequences free their blocks.

What it reports (`kv_report()`): blocks used and in total, KV slots allocated vs tokens stored (waste %), the peak,
preemptions, prefix-cache hit rate. Logprobs are refused by name (`supports_logprobs` False).
"""

from __future__ import annotations

from labkit.serving.batch_engine import sample_tokens
from labkit.serving.engine import Engine
from labkit.serving.limits import Limits
from labkit.serving.paged.blocks import BlockManager
from labkit.serving.paged.runner import ModelRunner
from labkit.serving.paged.scheduler import Scheduler
from labkit.serving.paged.sequence import Sequence
from labkit.serving.policies import POLICIES

DEFAULT_KV_TOKENS_PER_SLOT = 256  # kv_tokens when unset: as 'hf-continuous' sizes its cache


class PagedEngine(Engine):
    """Continuous batching over a paged KV cache (labkit's from-scratch PagedAttention engine).

    Args:
        model: a transformers causal LM whose attention goes through transformers' AttentionInterface.
        tokenizer: its tokenizer.
        limits: max_batch (sequences per step), kv_tokens (the pool, tokens; default 256 per batch slot),
            kv_block_size, prefill_chunk (tokens per step; None: whole prompts), prefix_caching, max_queue, runner
            ('torch': `paged.runner.ModelRunner`; 'onnxruntime': `paged.ort_runner.OrtRunner`).
    Raises:
        ValueError: a model the chosen runner cannot drive (naming why).
    """

    supports_logprobs = False

    def __init__(self, model, tokenizer, limits: Limits | None = None):
        super().__init__(model, tokenizer, POLICIES["continuous"], limits, name="paged")
        lim = self.limits
        kv_tokens = lim.kv_tokens or DEFAULT_KV_TOKENS_PER_SLOT * self.max_batch
        num_blocks = -(-kv_tokens // lim.kv_block_size)
        self.runner = _runner(lim.runner)(model, num_blocks, lim.kv_block_size)
        self.blocks = BlockManager(num_blocks, lim.kv_block_size, lim.prefix_caching)
        self.scheduler = Scheduler(self.blocks, self.max_batch, lim.prefill_chunk)
        self.peak_waste = {"slots": 0, "tokens": 0}

    def step(self) -> None:
        """join -> schedule (KV capacity, chunks, preemption) -> one forward -> sample -> emit -> free finished."""
        for req in self._admit():
            try:
                self.scheduler.add(Sequence(list(req.prompt_ids), payload=req))
            except ValueError as err:  # a prompt bigger than the whole pool: refuse it, not the others
                self._finish(req, "error", str(err))
        for seq in [*self.scheduler.running, *self.scheduler.waiting]:
            if seq.payload.cancelled.is_set():
                self._finish(seq.payload, "cancelled")
                self.scheduler.finish(seq)
        work = self.scheduler.schedule()
        if not work:
            if self.scheduler.waiting and not self.scheduler.running:  # its tokens outgrew the whole pool
                seq = self.scheduler.waiting[0]
                self._finish(seq.payload, "length")
                self.scheduler.finish(seq)
            self._sync_running()
            return
        stats = self.scheduler.kv_stats()
        if stats["slots"] > self.peak_waste["slots"]:
            self.peak_waste = {"slots": stats["slots"], "tokens": stats["tokens"]}
        logits = self.runner.run(work)
        self.scheduler.computed(work)
        sampling = [w.seq for w in work if w.samples]
        if decoding := sum(w.tokens == 1 for w in work):  # a decode step of that many sequences (not a prefill)
            self.count_decode_step(decoding)
        for seq, token in zip(sampling, sample_tokens(logits, [s.payload for s in sampling]), strict=True):
            if self._emit(seq.payload, token):
                self.scheduler.finish(seq)
            else:
                seq.append(token)
        self._sync_running()

    def _sync_running(self) -> None:
        # every request the scheduler holds counts as running: preempted ones too (they hold a batch slot)
        self.running = [s.payload for s in (*self.scheduler.running, *self.scheduler.waiting)]

    def _reset(self) -> None:
        for seq in [*self.scheduler.running, *self.scheduler.waiting]:
            self.scheduler.finish(seq)
        self.running = []

    def kv_report(self) -> dict:
        """The KV cache's use: now, at the step with the most slots allocated, and over the engine's life.

        Returns:
            {"runner", "block_size", "blocks_total", "pool_MB", "blocks_used", "peak_blocks_used", "peak_slots",
            "peak_tokens", "peak_waste_pct" (unfilled slots / slots at that step), "preemptions",
            "prefix_hit_tokens", "prefix_queried_tokens", "prefix_hit_rate"}.
        """
        b, peak = self.blocks, self.peak_waste
        return {"runner": self.limits.runner, "block_size": b.block_size, "blocks_total": b.num_blocks,
                "pool_MB": self.runner.bytes / 1e6,
                "blocks_used": b.used, "peak_blocks_used": b.peak_used, "peak_slots": peak["slots"],
                "peak_tokens": peak["tokens"],
                "peak_waste_pct": 100 * (peak["slots"] - peak["tokens"]) / peak["slots"] if peak["slots"] else 0.0,
                "preemptions": self.scheduler.preemptions, "prefix_hit_tokens": b.hit_tokens,
                "prefix_queried_tokens": b.queried_tokens,
                "prefix_hit_rate": b.hit_tokens / b.queried_tokens if b.queried_tokens else 0.0}


def _runner(name: str) -> type[ModelRunner]:
    """The runner class for `Limits.runner`; the ONNX Runtime one is imported only when asked for (the `engines`
    extra holds onnxruntime, which a serving-only install lacks)."""
    if name != "onnxruntime":
        return ModelRunner
    try:
        from labkit.serving.paged.ort_runner import OrtRunner
    except ImportError as err:
        raise ValueError(f"runner 'onnxruntime' needs onnx and onnxruntime ({err.name} is missing): "
                         "pip install 'labkit[engines]', or use runner='torch'") from err
    return OrtRunner
