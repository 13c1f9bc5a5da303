"""Implementation exercise: one decode step of attention with a KV cache, graded against PyTorch's
`scaled_dot_product_attention` run over the whole sequence without a cache.

A learner writes `attend_with_cache(q, k_new, v_new, k_cache, v_cache) -> (out, k_cache, v_cache)`: append the new
token's key and value to the caches along the sequence axis, then let the new token's query attend to every cached
position and itself: softmax(q Kᵀ / √head_dim) V (Vaswani et al. 2017, "Attention Is All You Need", eq. 1). With
grouped-query attention (Ainslie et al. 2023, "GQA", section 2.2) the caches hold kv_heads ≤ heads heads and query head
h reads KV head h // (heads / kv_heads), as transformers' `repeat_kv` and SDPA's `enable_gqa` do. The reference runs
causal attention over the full sequence, past and new token together, as a model without a cache (a prefill) would,
and keeps the last position; the earlier positions' queries are arbitrary, since the causal mask keeps them from
changing the last row. The cases catch the usual mistakes (an empty cache, the new token left out of its own
attention, a missing 1/√head_dim, `is_causal=True` on a single query, which SDPA aligns to the first key, not the last,
KV heads repeated in the wrong order, the caches concatenated on the wrong axis or in the wrong order).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from labkit.exercises import Case, Grade, grade_cases, tensor_shape_error

JUDGE = "PyTorch's scaled_dot_product_attention over the whole sequence, causal, without a cache"


def reference(q: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor, k_cache: torch.Tensor,
              v_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """The new token's attention output from causal SDPA over the whole sequence, and the caches it extends.

    Args:
        q: (batch, heads, 1, head_dim) the new token's query. k_new, v_new: (batch, kv_heads, 1, head_dim).
        k_cache, v_cache: (batch, kv_heads, past, head_dim), past ≥ 0. heads is a multiple of kv_heads.
    Returns:
        (out (batch, heads, 1, head_dim), keys (batch, kv_heads, past + 1, head_dim), values likewise).
    """
    keys, values = torch.cat([k_cache, k_new], dim=2), torch.cat([v_cache, v_new], dim=2)
    batch, heads, _, head_dim = q.shape
    past = k_cache.shape[2]
    gen = torch.Generator().manual_seed(past)  # queries of the earlier positions: any values, the mask hides them
    earlier = torch.randn(batch, heads, past, head_dim, generator=gen, dtype=q.dtype)
    out = F.scaled_dot_product_attention(torch.cat([earlier, q], dim=2), keys, values, is_causal=True,
                                         enable_gqa=heads != keys.shape[1])  # fmt: skip
    return out[:, :, -1:], keys, values


def _inputs(seed: int, batch: int, heads: int, kv_heads: int, past: int, head_dim: int) -> tuple:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, 1, head_dim, generator=gen) * 2  # * 2: sharp enough that the 1/√d scale matters
    k_new, v_new = (torch.randn(batch, kv_heads, 1, head_dim, generator=gen) for _ in range(2))
    k_cache, v_cache = (torch.randn(batch, kv_heads, past, head_dim, generator=gen) for _ in range(2))
    return q, k_new, v_new, k_cache, v_cache


def cases() -> list[Case]:
    """The grader's inputs: (q, k_new, v_new, k_cache, v_cache), each with what it tests."""
    return [
        Case("empty cache (past = 0): the first token attends to itself alone", _inputs(0, 1, 2, 2, 0, 8)),
        Case("a past of 5 tokens: the new token attends to all 6 positions, scores scaled by 1/√head_dim",
             _inputs(1, 1, 2, 2, 5, 8)),
        Case("a batch of 3 sequences, each with its own cache", _inputs(2, 3, 4, 4, 7, 16)),
        Case("grouped-query attention: 4 query heads share 2 KV heads, query head h reads KV head h // 2",
             _inputs(3, 2, 4, 2, 6, 8)),
        Case("Llama-like shapes: 6 query heads, 2 KV heads, head_dim 64, a past of 33 tokens",
             _inputs(4, 2, 6, 2, 33, 64)),
    ]  # fmt: skip


def _usual_mistake(got: torch.Tensor, case: Case) -> str:
    """Name the mistake `got` matches, if it matches one of the usual ones; else ""."""
    q, k_new, v_new, k_cache, v_cache = case.args
    keys, values = torch.cat([k_cache, k_new], dim=2), torch.cat([v_cache, v_new], dim=2)
    group = q.shape[1] // keys.shape[1]
    tiled = (keys.repeat(1, group, 1, 1), values.repeat(1, group, 1, 1))  # heads 0, 1, 0, 1: the wrong grouping
    grouped = (keys.repeat_interleave(group, 1), values.repeat_interleave(group, 1))
    d = q.shape[-1]
    mistakes = {
        "the new token is missing from its own attention (attend to the cache and the new key)":
            (q, *(x.repeat_interleave(group, 1) for x in (k_cache, v_cache)), {}),
        "the scores are not scaled by 1/√head_dim": (q, *grouped, {"scale": 1.0}),
        "is_causal=True with one query attends to the first key only (SDPA aligns the mask to the top left): with "
        "one new query no mask is needed": (q, *grouped, {"is_causal": True}),
        "query head h reads KV head h % kv_heads; it should read h // (heads / kv_heads) (repeat_interleave, "
        "not repeat)": (q, *tiled, {}),
        "the scores are divided by head_dim instead of √head_dim": (q, *grouped, {"scale": 1 / d}),
    }  # fmt: skip
    for what, (query, k, v, kwargs) in mistakes.items():
        if k.shape[2] and torch.allclose(got, F.scaled_dot_product_attention(query, k, v, **kwargs), atol=1e-5):
            return f": {what}"
    if k_cache.shape[2] == 0:
        return ": with an empty cache the new token attends to itself alone, so its output is its own value"
    return ""


def _compare(got, want, case: Case) -> str | None:
    if not isinstance(got, tuple | list) or len(got) != 3:
        return f"returned {type(got).__name__}, expected a tuple (out, k_cache, v_cache)"
    for name, g, w in zip(("the key cache", "the value cache"), got[1:], want[1:], strict=True):
        if wrong := tensor_shape_error(g, w):
            return f"{name} {wrong.removeprefix('returned ')}: append the new token along the sequence axis (dim 2)"
        if not torch.equal(g, w):
            return f"{name} is not torch.cat([cache, new], dim=2): the past first, the new token last"
    if wrong := tensor_shape_error(got[0], want[0]):
        return f"the output {wrong.removeprefix('returned ')}"
    if not torch.allclose(got[0], want[0], atol=1e-5, rtol=1e-4):
        err = (got[0] - want[0]).abs().max().item()
        return f"the output differs from SDPA's last position by up to {err:.3g}{_usual_mistake(got[0], case)}"
    return None


def grade(attend_with_cache) -> Grade:
    """Run a learner's cached attention step on `cases()` and compare each result with `reference`.

    Args:
        attend_with_cache: (q (batch, heads, 1, head_dim), k_new, v_new (batch, kv_heads, 1, head_dim), k_cache,
            v_cache (batch, kv_heads, past, head_dim)) -> (out (batch, heads, 1, head_dim), k_cache, v_cache with
            past + 1 positions).
    Returns:
        Grade: ok only if every case's caches equal the concatenation exactly and its output matches SDPA's last
        position (atol 1e-5, rtol 1e-4); otherwise the first failing case and what differs, naming the usual mistake
        when the output matches one. An exception inside the learner's code is reported, not raised.
    """
    return grade_cases(attend_with_cache, cases(), reference, _compare, JUDGE)
