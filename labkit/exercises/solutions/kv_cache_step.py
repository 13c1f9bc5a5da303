"""The KV-cache exercise's answer: one decode step of (grouped-query) attention over the cache and the new token
(Vaswani et al. 2017, eq. 1; Ainslie et al. 2023, section 2.2, for the grouping)."""

from __future__ import annotations

import math

import torch


def attend_with_cache(q: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor, k_cache: torch.Tensor,
                      v_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Append the new token's key and value to the caches, then attend from its query to every position.

    Args:
        q: (batch, heads, 1, head_dim) the new token's query. k_new, v_new: (batch, kv_heads, 1, head_dim).
        k_cache, v_cache: (batch, kv_heads, past, head_dim), past ≥ 0; heads is a multiple of kv_heads.
    Returns:
        (out (batch, heads, 1, head_dim), k_cache, v_cache (batch, kv_heads, past + 1, head_dim)).
    """
    k_cache = torch.cat([k_cache, k_new], dim=2)  # (batch, kv_heads, past + 1, head_dim)
    v_cache = torch.cat([v_cache, v_new], dim=2)
    group = q.shape[1] // k_cache.shape[1]  # query heads per KV head
    keys = k_cache.repeat_interleave(group, dim=1)  # (batch, heads, past + 1, head_dim): head h reads h // group
    values = v_cache.repeat_interleave(group, dim=1)
    scores = q @ keys.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (batch, heads, 1, past + 1)
    # no mask: the one new query is the last position, so every cached position is in its past
    out = scores.softmax(dim=-1) @ values  # (batch, heads, 1, head_dim)
    return out, k_cache, v_cache
