"""An engine's limits, validated once: a misspelled limit is an error, never silently dropped.

    Limits.of(max_batch=8, max_queue=16)        # Limits(max_batch=8, max_queue=16, max_wait_ms=20.0, kv_tokens=None)
    Limits.of(max_wiat_ms=5)                    # ValueError: unknown limit 'max_wiat_ms'; valid limits: [...]

Every scheduler accepts every limit (one repository serves versions with different schedulers from one set of
limits); each uses the ones that mean something to it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

RUNNERS = ("torch", "onnxruntime")  # the paged engine's model runners (`serving.paged`)


@dataclass(frozen=True)
class Limits:
    """Capacity settings of one engine.

    Args:
        max_batch: sequences that decode together; None = the scheduler's default ('sync' always runs 1).
        max_queue: requests allowed to wait for a batch slot; one more is refused with QueueFull (HTTP 429).
        max_wait_ms: 'dynamic' only: how long the oldest queued request waits for the batch to fill (ms).
        kv_tokens: 'hf-continuous' and 'paged': size of the paged KV cache in tokens (None = 256 per slot).
        kv_block_size: 'paged' only: tokens per KV block.
        prefill_chunk: 'paged' only: most tokens computed in one step; longer prompts are prefilled in chunks
            alongside the decoding sequences (None = a prompt is prefilled whole in one step).
        prefix_caching: 'paged' only: reuse the KV blocks of a prompt prefix computed before.
        runner: 'paged' only: what computes a step. 'torch': the transformers model with paged attention (any
            device); 'onnxruntime': decode steps and single-prompt prefills as one ONNX Runtime graph over the
            same pool (CPU, fp32 Llama-layout models; several prompts in one step are packed into one transformers
            forward).

    Raises:
        ValueError: for max_batch < 1, max_queue < 0, max_wait_ms < 0, or kv_tokens, kv_block_size or
            prefill_chunk < 1.
    """

    max_batch: int | None = None
    max_queue: int = 64
    max_wait_ms: float = 20.0
    kv_tokens: int | None = None
    kv_block_size: int = 16
    prefill_chunk: int | None = None
    prefix_caching: bool = True
    runner: str = "torch"

    def __post_init__(self) -> None:
        if (self.max_batch is not None and self.max_batch < 1) or self.max_queue < 0 or self.max_wait_ms < 0 \
                or (self.kv_tokens is not None and self.kv_tokens < 1) or self.kv_block_size < 1 \
                or (self.prefill_chunk is not None and self.prefill_chunk < 1):
            raise ValueError(f"need max_batch >= 1, max_queue >= 0, max_wait_ms >= 0, and kv_tokens, kv_block_size "
                             f"and prefill_chunk >= 1; got {self}")
        if self.runner not in RUNNERS:
            raise ValueError(f"unknown runner {self.runner!r}; choose from {list(RUNNERS)}")

    @classmethod
    def of(cls, base: Limits | None = None, **limits) -> Limits:
        """Limits from keyword arguments, on top of `base` (default: the defaults above).

        Args:
            base: limits to start from.
            **limits: any of max_batch, max_queue, max_wait_ms, kv_tokens, kv_block_size, prefill_chunk,
                prefix_caching, runner.
        Returns:
            a new, validated Limits.
        Raises:
            ValueError: naming the valid limits, for an unknown keyword; or for a value out of range.
        """
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(limits) - set(valid))
        if unknown:
            raise ValueError(f"unknown limit(s) {unknown}; valid limits: {valid}")
        return dataclasses.replace(base or cls(), **limits)

    def batch(self, default: int) -> int:
        """max_batch, or `default` when it was left unset."""
        return self.max_batch if self.max_batch is not None else default
