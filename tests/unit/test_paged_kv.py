"""The paged engine's measurements (labkit.experiments.paged_kv) on tiny-llama, against formulas from the load."""

import itertools

import pytest

from labkit.experiments import paged_kv
from labkit.models import load_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


@pytest.fixture(scope="module")
def llama():
    """(model, tokenizer) of tiny-llama on the CPU, in eval mode (load_model's), for every test here."""
    return load_model("tiny-llama", device="cpu")


def test_reserved_schedule_steps_the_reservation_rule_by_hand():
    # 100 tokens: (30 + 20) and (40 + 10) fit together; (20 + 30) waits until the second is done after 10 steps,
    # then runs 30 steps; the first is done after 20
    assert paged_kv.reserved_schedule(100, [30, 40, 20], [20, 10, 30]) == [2] * 20 + [1] * 20
    with pytest.raises(ValueError, match="budget"):
        paged_kv.reserved_schedule(40, [30], [20])


def test_mixed_load_is_seeded_and_in_range():
    p, m = paged_kv.mixed_load(50, (8, 12), (3, 4), seed=1)
    assert (p, m) == paged_kv.mixed_load(50, (8, 12), (3, 4), seed=1)
    assert set(p) <= set(range(8, 13)) and set(m) <= {3, 4} and len(p) == len(m) == 50


def test_kv_waste_counts_padding_and_blocks(llama):
    res = paged_kv.kv_waste("tiny-llama", requests=6, max_batch=3, prompt_tokens=(5, 60), max_tokens=(3, 12),
                            block_size=8, device="cpu", loaded=llama)  # fmt: skip
    t = res.table.set_index("engine")
    assert t.same_tokens.all()
    assert t.max_unfilled_per_seq["paged"] <= 8 - 1  # never a whole empty block per sequence
    assert t.mean_waste_pct["paged"] < t.mean_waste_pct["padded (continuous)"]
    # the padded engine's first forward is the first max_batch prompts, left-padded to the longest
    lengths, _ = paged_kv.mixed_load(6, (5, 60), (3, 12))
    first = res.table.attrs["steps"].query("engine == 'padded (continuous)'").iloc[0]
    assert (first.seqs, first.slots, first.tokens) == (3, 3 * max(lengths[:3]), sum(lengths[:3]))


def test_budget_concurrency_first_step_follows_the_block_arithmetic(llama):
    res = paged_kv.budget_concurrency("tiny-llama", kv_tokens=256, requests=10, prompt_tokens=(10, 40),
                                      max_tokens=(4, 30), block_size=8, device="cpu", loaded=llama)  # fmt: skip
    t = res.table.set_index("rule")
    prompts, news = res.table.attrs["prompt_tokens"], res.table.attrs["max_tokens"]
    blocks = itertools.accumulate(-(-p // 8) for p in prompts)
    # FCFS while the prompts' blocks fit, with one block left for each sequence already running (its next token)
    assert t.first["paged"] == sum(n + i <= 256 // 8 for i, n in enumerate(blocks))
    reserved = itertools.accumulate(p + m for p, m in zip(prompts, news, strict=True))
    assert t.first["reserve prompt + max_tokens"] == sum(n <= 256 for n in reserved)
    assert t.first["paged"] > t.first["reserve prompt + max_tokens"]
    assert t.steps.min() >= max(news)  # no request can finish before it made its tokens
    with pytest.raises(ValueError, match="budget"):
        paged_kv.budget_concurrency("tiny-llama", kv_tokens=32, requests=2, device="cpu", loaded=llama)


def test_prefix_caching_hits_the_system_prompt_and_keeps_tokens(llama):
    res = paged_kv.prefix_ttft("tiny-llama", prefix_tokens=256, requests=3, block_size=16, device="cpu",
                               loaded=llama)  # fmt: skip
    t = res.table.set_index("setting")
    a = res.table.attrs
    assert a["same_tokens"]
    # each timed request finds the 16 full blocks of the system prompt; the warm-up computed them
    assert t.prefix_hit_rate["system prompt, caching on"] == pytest.approx(3 * 256 / a["prompt_tokens_sent"])
    assert t.prefix_hit_rate["system prompt, caching off"] == 0
    assert (t.ttft_p50_s > 0).all()


def test_chunked_prefill_bounds_the_decoders_stall(llama):
    res = paged_kv.chunked_prefill("tiny-llama", long_prompt=512, chunks=(None, 64), decoders=2, device="cpu",
                                   loaded=llama)  # fmt: skip
    t = res.table.set_index("prefill_chunk")
    assert t.same_tokens.all()
    assert t.gap_max_s["64"] < t.gap_max_s["whole"]  # one chunk's step, not the whole prompt's
    with pytest.raises(ValueError, match="decoders"):
        paged_kv.chunked_prefill("tiny-llama", chunks=(2,), decoders=2, device="cpu", loaded=llama)
