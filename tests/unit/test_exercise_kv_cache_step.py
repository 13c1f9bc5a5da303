"""The KV-cache exercise: its grader passes the reference answer, fails the usual mistakes with the failing case and
the mistake named, and never raises; decoding a sequence token by token with the reference answer reproduces
PyTorch's causal attention over the whole sequence at every position, not only the graded last one."""

import torch
import torch.nn.functional as F

from labkit.exercises import kv_cache_step
from labkit.exercises.solutions import kv_cache_step as solutions


def test_the_solution_passes_and_decoding_token_by_token_matches_causal_prefill():
    assert kv_cache_step.grade(solutions.attend_with_cache).ok
    gen = torch.Generator().manual_seed(1)
    batch, heads, kv_heads, seq, head_dim = 2, 8, 2, 12, 16
    q, k, v = (torch.randn(batch, h, seq, head_dim, generator=gen) for h in (heads, kv_heads, kv_heads))
    prefill = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)  # (batch, heads, seq, d)
    k_cache, v_cache = k[:, :, :0], v[:, :, :0]  # an empty cache
    for t in range(seq):
        out, k_cache, v_cache = solutions.attend_with_cache(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1],
                                                            k_cache, v_cache)  # fmt: skip
        torch.testing.assert_close(out, prefill[:, :, t:t + 1])
    assert torch.equal(k_cache, k) and torch.equal(v_cache, v)


def _sdpa_step(q, k_new, v_new, k_cache, v_cache, **kwargs):
    keys, values = torch.cat([k_cache, k_new], dim=2), torch.cat([v_cache, v_new], dim=2)
    group = q.shape[1] // keys.shape[1]
    out = F.scaled_dot_product_attention(q, keys.repeat_interleave(group, 1), values.repeat_interleave(group, 1),
                                         **kwargs)  # fmt: skip
    return out, keys, values


def test_wrong_answers_are_graded_wrong_with_the_mistake_named():
    stub = kv_cache_step.grade(lambda q, k_new, v_new, k_cache, v_cache: (q, k_cache, v_cache))
    assert not stub.ok and stub.cases == 1 and "key cache shape (1, 2, 0, 8), expected (1, 2, 1, 8)" in stub.message
    causal = kv_cache_step.grade(lambda *args: _sdpa_step(*args, is_causal=True))
    assert not causal.ok and causal.cases == 2 and "attends to the first key only" in causal.message
    unscaled = kv_cache_step.grade(lambda *args: _sdpa_step(*args, scale=1.0))
    assert not unscaled.ok and unscaled.cases == 2 and "not scaled by 1/√head_dim" in unscaled.message

    def tiled(q, k_new, v_new, k_cache, v_cache):  # KV heads 0, 1, 0, 1 instead of 0, 0, 1, 1
        keys, values = torch.cat([k_cache, k_new], dim=2), torch.cat([v_cache, v_new], dim=2)
        group = q.shape[1] // keys.shape[1]
        tiled_keys, tiled_values = keys.repeat(1, group, 1, 1), values.repeat(1, group, 1, 1)
        return F.scaled_dot_product_attention(q, tiled_keys, tiled_values), keys, values

    grouping = kv_cache_step.grade(tiled)
    assert not grouping.ok and grouping.cases == 4 and "repeat_interleave, not repeat" in grouping.message

    def new_first(*args):
        out, keys, values = solutions.attend_with_cache(*args)
        return out, keys.roll(1, dims=2), values.roll(1, dims=2)  # the new token first

    order = kv_cache_step.grade(new_first)
    assert not order.ok and order.cases == 2 and "the past first, the new token last" in order.message


def test_an_exception_in_the_learners_code_is_reported_not_raised():
    def without_grouping(q, k_new, v_new, k_cache, v_cache):  # 4 query heads against 2 KV heads: a shape error
        keys, values = torch.cat([k_cache, k_new], dim=2), torch.cat([v_cache, v_new], dim=2)
        return (q @ keys.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(-1) @ values, keys, values

    grade = kv_cache_step.grade(without_grouping)
    assert not grade.ok and grade.cases == 4 and grade.message.startswith("case 4 (grouped-query attention")
    assert "your function raised RuntimeError" in grade.message and str(grade).startswith("✗ ")
