"""The model runner: the KV pool, and one forward over a step's packed tokens.

    runner = ModelRunner(model, num_blocks=64, block_size=16)
    logits = runner.run(work)     # work: the scheduler's [Scheduled]; logits (S, vocab) of those that sample

The pool is allocated once, for every layer: 2 × layers × num_blocks × block_size × kv_heads × head_dim values in
the model's dtype (`anatomy.kv_cache_bytes` of one block, times the blocks). A step packs every scheduled sequence's
new tokens into one row with their own positions (RoPE sees the true position; no padding), maps each token to its
slot through the sequence's block table, and runs the model with attention switched to `attention.ATTENTION`.
"""

from __future__ import annotations

import contextlib

import torch

from labkit import anatomy
from labkit.serving.paged.attention import ATTENTION, PagedBatch, build_batch
from labkit.serving.paged.scheduler import Scheduled


class ModelRunner:
    """A transformers causal LM over a paged KV pool.

    Args:
        model: a transformers causal LM whose attention goes through transformers' attention interface (Llama,
            Mistral, Qwen2, ...; `_supports_attention_backend`). It stays where it is; the pool is put beside it.
        num_blocks, block_size: the pool's size.
    Raises:
        ValueError: a model whose attention cannot be replaced (naming its type), or a model with sliding-window
            layers (every layer here keeps every token).
    """

    def __init__(self, model, num_blocks: int, block_size: int):
        if not getattr(model, "_supports_attention_backend", False):
            raise ValueError(f"the paged engine needs a model whose attention goes through transformers' "
                             f"AttentionInterface (Llama, Mistral, Qwen2, ...); {model.config.model_type!r} does not")
        d = anatomy.dims(model.config)
        if any(d.windows):
            raise ValueError(f"{model.config.model_type!r} has sliding-window layers; the paged engine keeps "
                             "every token")
        self.model = model
        p = next(model.parameters())
        shape = (d.layers, num_blocks, block_size, d.kv_heads, d.head_dim)
        # one tensor per K and V (a step can gather every layer at once); k_pool[i] is layer i's view of it
        self.k_all, self.v_all = (torch.zeros(shape, dtype=p.dtype, device=p.device) for _ in range(2))
        self.k_pool, self.v_pool = list(self.k_all.unbind(0)), list(self.v_all.unbind(0))
        self.bytes = 2 * self.k_all.numel() * self.k_all.element_size()

    @property
    def device(self) -> torch.device:
        return self.k_pool[0].device

    def prepare(self, work: list[Scheduled]) -> tuple[torch.Tensor, torch.Tensor, PagedBatch, torch.Tensor]:
        """Pack a step: (input_ids (1, T), position_ids (1, T), PagedBatch, indices of the sampling tokens (S,))."""
        ids, pos, last = [], [], []
        for w in work:
            ids += w.seq.token_ids[w.start:w.start + w.tokens]
            pos += range(w.start, w.start + w.tokens)
            if w.samples:
                last.append(len(ids) - 1)
        batch = build_batch(self.k_pool, self.v_pool, [w.seq.block_table for w in work], [w.tokens for w in work],
                            [w.start + w.tokens for w in work])  # fmt: skip
        as_tensor = lambda xs: torch.tensor(xs, dtype=torch.long, device=self.device)  # noqa: E731
        return as_tensor(ids)[None], as_tensor(pos)[None], batch, as_tensor(last)

    @torch.no_grad()
    def run(self, work: list[Scheduled]) -> torch.Tensor:
        """One forward over the step's tokens; writes their keys and values into the pool.

        Args:
            work: the scheduler's entries for this step (non-empty).
        Returns:
            (S, vocab) float logits at the last token of each entry that samples (`Scheduled.samples`), in order.
        """
        ids, pos, batch, last = self.prepare(work)
        with paged_attention_on(self.model):
            out = self.model(input_ids=ids, position_ids=pos, use_cache=False, paged=batch, logits_to_keep=last)
        return out.logits[0].float()


@contextlib.contextmanager
def paged_attention_on(model):
    """Switch `model`'s attention to the paged implementation for the duration (restored after, even on errors)."""
    configs = [c for c in (model.config, getattr(model.config, "get_text_config", lambda: None)()) if c is not None]
    before = [c._attn_implementation for c in configs]
    try:
        for c in configs:
            c._attn_implementation = ATTENTION
        yield model
    finally:
        for c, b in zip(configs, before, strict=True):
            c._attn_implementation = b
