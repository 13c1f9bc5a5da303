"""Paged attention for a transformers model: keys and values live in blocks, found through each sequence's table.

The model runs with `attn_implementation` switched to ATTENTION (registered with transformers' AttentionInterface,
the hook its SDPA/flash/eager backends plug into) and gets a `PagedBatch` through the forward's keyword arguments.
The tokens of every scheduled sequence are packed into one row, (1, T), with their own positions; in every layer:

    1. write   the T new keys and values into their slots of the layer's pool, (num_blocks, block_size, kv_heads,
               head_dim), at `slot_mapping` (slot = block_table[position // block_size] × block_size + offset)
    2. gather  each sequence's keys and values back through its block table, (ctx, kv_heads, head_dim)
    3. attend  its queries to them with PyTorch SDPA; a query at position p sees keys 0..p (causal)

Decoding sequences (one query each) are gathered into one padded batch and attended in one SDPA call (the padding
is masked and never stored); prefill chunks are attended one sequence at a time. The slots to gather are computed
once per step (`build_batch`) and read by every layer. This gathers the blocks into a contiguous copy before SDPA:
the lesson is the indexing. vLLM's kernel reads the blocks in place (its
`paged_attention` CUDA kernel), which is what makes the copy unnecessary there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

ATTENTION = "labkit_paged"


@dataclass
class PagedBatch:
    """One step's packed tokens and where their keys and values are (built once per step, read by every layer).

    Attributes:
        k_pool, v_pool: per layer, (num_blocks, block_size, kv_heads, head_dim).
        slot_mapping: (T,) flat slot of each packed token (block id × block_size + offset).
        decode_rows: (S_d,) packed rows of the single-query sequences (attended together in one padded call);
            decode_slots (S_d, L) the flat slots of their cached tokens, padded; decode_mask (S_d, 1, 1, L) True
            on real tokens.
        chunks: the other sequences, one (first packed row, query tokens, (ctx,) slots of their cached tokens,
            (query tokens, ctx) causal mask) each.
    """

    k_pool: list[torch.Tensor]
    v_pool: list[torch.Tensor]
    slot_mapping: torch.Tensor
    decode_rows: torch.Tensor
    decode_slots: torch.Tensor
    decode_mask: torch.Tensor
    chunks: list[tuple[int, int, torch.Tensor, torch.Tensor]]


def slot(block_table: list[int], position: int, block_size: int) -> int:
    """The flat pool slot of a sequence's token at `position`: block block_table[position // block_size], offset
    position % block_size."""
    return block_table[position // block_size] * block_size + position % block_size


def context_slots(block_table: list[int], ctx: int, block_size: int) -> list[int]:
    """Flat pool slots of a sequence's first `ctx` tokens, through its block table (`slot` of each position)."""
    return [slot(block_table, p, block_size) for p in range(ctx)]


def build_batch(k_pool: list[torch.Tensor], v_pool: list[torch.Tensor], tables: list[list[int]],
                query_lens: list[int], context_lens: list[int]) -> PagedBatch:  # fmt: skip
    """The step's PagedBatch from each sequence's block table, its new tokens and its context after the step.

    Args:
        k_pool, v_pool: the pools. tables: block tables. query_lens: tokens computed now per sequence (packed in
            this order). context_lens: tokens in the cache per sequence once this step's are written.
    Returns:
        PagedBatch (index tensors on the pools' device).
    """
    size, dev = k_pool[0].shape[1], k_pool[0].device
    long = lambda xs: torch.tensor(xs, dtype=torch.long, device=dev)  # noqa: E731
    slots, decode, chunks, row = [], [], [], 0
    for table, n, c in zip(tables, query_lens, context_lens, strict=True):
        ctx = context_slots(table, c, size)
        slots += ctx[c - n:]
        if n == 1:
            decode.append((row, ctx))
        else:  # query j of this chunk sits at position c − n + j and sees keys 0 .. c − n + j
            causal = torch.arange(c, device=dev)[None, :] <= torch.arange(c - n, c, device=dev)[:, None]
            chunks.append((row, n, long(ctx), causal[None, None]))
        row += n
    width = max((len(ctx) for _, ctx in decode), default=0)
    padded = long([ctx + [0] * (width - len(ctx)) for _, ctx in decode]).reshape(len(decode), width)
    mask = torch.arange(width, device=dev)[None, :] < long([len(ctx) for _, ctx in decode])[:, None]
    return PagedBatch(k_pool, v_pool, long(slots), long([r for r, _ in decode]), padded, mask[:, None, None, :],
                      chunks)


def paged_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask=None,
                    scaling: float | None = None, dropout: float = 0.0, paged: PagedBatch | None = None,
                    **kwargs) -> tuple[torch.Tensor, None]:  # fmt: skip
    """transformers' attention-function signature over a paged KV cache.

    Args:
        module: the attention layer (its `layer_idx` picks the pool).
        query: (1, heads, T, head_dim); key, value: (1, kv_heads, T, head_dim), positions already applied (RoPE).
        attention_mask: ignored (ATTENTION's mask function returns None; causality comes from the contexts).
        scaling: the softmax scale. paged: the step's PagedBatch (passed as a keyword to the model's forward).
    Returns:
        ((1, T, heads, head_dim) attention output, None).
    Raises:
        ValueError: when called without `paged` (the model was run outside the paged engine).
    """
    if paged is None:
        raise ValueError(f"attn_implementation {ATTENTION!r} needs the paged engine's `paged=` batch")
    k_flat = paged.k_pool[module.layer_idx].flatten(0, 1)  # (num_blocks × block_size, kv_heads, head_dim)
    v_flat = paged.v_pool[module.layer_idx].flatten(0, 1)
    k_flat[paged.slot_mapping] = key[0].transpose(0, 1).to(k_flat.dtype)  # 1. write: (T, kv_heads, head_dim)
    v_flat[paged.slot_mapping] = value[0].transpose(0, 1).to(v_flat.dtype)
    q = query[0]  # (heads, T, head_dim)
    gqa = q.shape[0] != k_flat.shape[1]
    out = torch.empty_like(q)
    if len(paged.decode_rows):  # 2-3. gather and attend every single-query sequence in one padded call
        keys = k_flat[paged.decode_slots].transpose(1, 2)  # (S, kv_heads, L, head_dim)
        vals = v_flat[paged.decode_slots].transpose(1, 2)
        qs = q[:, paged.decode_rows].transpose(0, 1).unsqueeze(2)  # (S, heads, 1, head_dim)
        o = F.scaled_dot_product_attention(qs, keys, vals, attn_mask=paged.decode_mask, scale=scaling,
                                           enable_gqa=gqa)  # fmt: skip
        out[:, paged.decode_rows] = o.squeeze(2).transpose(0, 1)
    for row, n, slots, causal in paged.chunks:  # prefill chunks, one sequence at a time
        keys = k_flat[slots].transpose(0, 1)[None]  # (1, kv_heads, ctx, head_dim)
        vals = v_flat[slots].transpose(0, 1)[None]
        o = F.scaled_dot_product_attention(q[None, :, row:row + n], keys, vals, attn_mask=causal, scale=scaling,
                                           enable_gqa=gqa)  # fmt: skip
        out[:, row:row + n] = o[0]
    return out.transpose(0, 1).unsqueeze(0), None  # (1, T, heads, head_dim)


def _no_mask(*args, **kwargs) -> None:
    return None  # causality and padding are handled from the sequences' contexts, not from a mask tensor


AttentionInterface.register(ATTENTION, paged_attention)
AttentionMaskInterface.register(ATTENTION, _no_mask)
