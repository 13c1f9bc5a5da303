"""Paged attention for a transformers model: keys and values live in blocks, found through each sequence's table.

The model runs with `attn_implementation` switched to ATTENTION (registered with transformers' AttentionInterface,
the hook its SDPA/flash/eager backends plug into) and gets a `PagedBatch` through the forward's keyword arguments.
The tokens of every scheduled sequence are packed into one row, (1, T), with their own positions; in every layer:

    1. write   the T new keys and values into their slots of the layer's pool, (num_blocks, block_size, kv_heads,
               head_dim), at `slot_mapping` (slot = block_table[position // block_size] × block_size + offset)
    2. gather  each sequence's keys and values back through its block table, (ctx, kv_heads, head_dim)
    3. attend  its queries to them with PyTorch SDPA; a query at position p sees keys 0..p (causal)

Decoding sequences (one query each) are gathered into one padded batch and attended in one SDPA call (the padding
is masked and never stored); prefill chunks are attended one sequence at a time. This gathers blocks into a
contiguous copy before SDPA: the lesson is the indexing. vLLM's kernel reads the blocks in place (its
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
    """One step's packed tokens and where their keys and values go.

    Attributes:
        k_pool, v_pool: per layer, (num_blocks, block_size, kv_heads, head_dim).
        slot_mapping: (T,) flat slot of each packed token (block id × block_size + offset).
        query_lens, context_lens: per sequence, its tokens in this step and its tokens in the cache after it.
        block_tables: (S, max_blocks) long, padded with 0 (only the first ceil(context / block_size) are read).
    """

    k_pool: list[torch.Tensor]
    v_pool: list[torch.Tensor]
    slot_mapping: torch.Tensor
    query_lens: list[int]
    context_lens: list[int]
    block_tables: torch.Tensor

    @property
    def block_size(self) -> int:
        return self.k_pool[0].shape[1]


def _gather(pool: torch.Tensor, table: torch.Tensor, ctx: int) -> torch.Tensor:
    """(ctx, kv_heads, head_dim): a sequence's cached keys (or values), its blocks in table order."""
    size = pool.shape[1]
    blocks = pool[table[: -(-ctx // size)]]  # (n_blocks, block_size, kv_heads, head_dim)
    return blocks.flatten(0, 1)[:ctx]


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
    layer = module.layer_idx
    k_pool, v_pool = paged.k_pool[layer], paged.v_pool[layer]
    new_k = key[0].transpose(0, 1)  # (T, kv_heads, head_dim)
    new_v = value[0].transpose(0, 1)
    k_pool.view(-1, *k_pool.shape[2:])[paged.slot_mapping] = new_k.to(k_pool.dtype)
    v_pool.view(-1, *v_pool.shape[2:])[paged.slot_mapping] = new_v.to(v_pool.dtype)
    q = query[0]  # (heads, T, head_dim)
    gqa = q.shape[0] != k_pool.shape[2]
    out = torch.empty_like(q)
    decode = [i for i, n in enumerate(paged.query_lens) if n == 1]
    starts = torch.tensor([0, *paged.query_lens]).cumsum(0).tolist()
    if len(decode) > 1:  # one padded SDPA call for every single-query sequence
        ctx = [paged.context_lens[i] for i in decode]
        longest = max(ctx)
        keys = torch.stack([F.pad(_gather(k_pool, paged.block_tables[i], c), (0, 0, 0, 0, 0, longest - c))
                            for i, c in zip(decode, ctx, strict=True)]).transpose(1, 2)  # (S, kv_heads, L, head_dim)
        vals = torch.stack([F.pad(_gather(v_pool, paged.block_tables[i], c), (0, 0, 0, 0, 0, longest - c))
                            for i, c in zip(decode, ctx, strict=True)]).transpose(1, 2)
        mask = torch.arange(longest, device=q.device)[None, :] < torch.tensor(ctx, device=q.device)[:, None]
        rows = [starts[i] for i in decode]
        qs = q[:, rows].transpose(0, 1).unsqueeze(2)  # (S, heads, 1, head_dim)
        o = F.scaled_dot_product_attention(qs, keys, vals, attn_mask=mask[:, None, None, :], scale=scaling,
                                           enable_gqa=gqa)  # fmt: skip
        out[:, rows] = o.squeeze(2).transpose(0, 1)
        done = set(decode)
    else:
        done = set()
    for i, (n, c) in enumerate(zip(paged.query_lens, paged.context_lens, strict=True)):
        if i in done:
            continue
        keys = _gather(k_pool, paged.block_tables[i], c).transpose(0, 1)  # (kv_heads, ctx, head_dim)
        vals = _gather(v_pool, paged.block_tables[i], c).transpose(0, 1)
        # query j of this chunk sits at position c − n + j and sees keys 0 .. c − n + j
        causal = torch.arange(c, device=q.device)[None, :] <= torch.arange(c - n, c, device=q.device)[:, None]
        o = F.scaled_dot_product_attention(q[None, :, starts[i]:starts[i] + n], keys[None], vals[None],
                                           attn_mask=causal[None, None], scale=scaling, enable_gqa=gqa)
        out[:, starts[i]:starts[i] + n] = o[0]
    return out.transpose(0, 1).unsqueeze(0), None  # (1, T, heads, head_dim)


def _no_mask(*args, **kwargs) -> None:
    return None  # causality and padding are handled from the sequences' contexts, not from a mask tensor


AttentionInterface.register(ATTENTION, paged_attention)
AttentionMaskInterface.register(ATTENTION, _no_mask)
