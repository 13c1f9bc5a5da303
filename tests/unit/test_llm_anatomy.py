"""experiments.llm_anatomy: the KV formula against real caches, TTFT/TPOT through decoding.timing, the decode
roofline, the KV curve and the memory calculator."""

import pytest

from labkit import anatomy, models
from labkit.experiments import llm_anatomy
from labkit.models import specs


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-bloom", "smollm2-135m"])
def test_kv_formula_equals_a_real_cache_exactly(name):
    check = llm_anatomy.kv_cache_check(name, batch=2, seq=24, device="cpu")
    assert check["formula_bytes"] == check["measured_bytes"] > 0 and check["precision"] == "fp32"


def test_kv_formula_in_bf16():
    check = llm_anatomy.kv_cache_check("tiny-llama", batch=1, seq=16, precision="bfloat16", device="cpu")
    assert check["precision"] == "bf16"
    assert check["formula_bytes"] == check["measured_bytes"] == 2 * 4 * 4 * 32 * 2 * 16
    with pytest.raises(ValueError, match="a model runs in"):
        llm_anatomy.kv_cache_check("tiny-llama", precision="int4")


def test_time_to_first_token_grows_with_the_prompt():
    t = llm_anatomy.prefill_decode("tiny-llama", prompt_lens=(8, 512), batch_sizes=(1,), new_tokens=4, repeat=3,
                                   device="cpu")  # fmt: skip
    assert list(t.columns) == ["batch", "prompt_tokens", "ttft_ms", "tpot_ms", "decode_tok_s", "new_tokens"]
    assert t.ttft_ms.iloc[1] > t.ttft_ms.iloc[0]
    assert (t.tpot_ms > 0).all() and t.decode_tok_s.tolist() == pytest.approx((1e3 / t.tpot_ms).tolist())
    with pytest.raises(ValueError, match="new_tokens must be >= 2"):
        llm_anatomy.prefill_decode("tiny-llama", new_tokens=1)


def test_roofline_turns_compute_bound_as_the_batch_grows():
    t = llm_anatomy.decode_roofline("smollm2-135m", bandwidth_gbps=20.0, flops=2.5e11, batch_sizes=(1, 8, 64))
    assert list(t.bound_by) == ["memory", "memory", "compute"]
    assert t.memory_bound_tok_s.iloc[0] == pytest.approx(20e9 / (4 * 134_515_008))
    assert t.intensity_flop_per_byte.tolist() == [0.5, 4.0, 32.0]  # fp32: 2 FLOPs per 4-byte weight per sequence
    bf16 = llm_anatomy.decode_roofline("smollm2-135m", "bfloat16", bandwidth_gbps=20.0, flops=2.5e11, batch_sizes=(1,))
    assert bf16.memory_bound_tok_s.iloc[0] == pytest.approx(2 * t.memory_bound_tok_s.iloc[0])  # half the bytes


def test_kv_curve_grows_linearly_past_the_weights():
    curve = llm_anatomy.kv_cache_curve("llama-30b", "float16", batch=8, contexts=(1024, 2048, 32768)).table
    per_token = anatomy.kv_cache_bytes(specs.MODEL_CONFIGS["llama-30b"], 8, 1, "fp16") / 1e9
    assert curve.KV_cache_GB.tolist() == pytest.approx([per_token * n for n in (1024, 2048, 32768)])
    assert curve.KV_cache_GB.iloc[-1] > curve.weights_GB.iloc[-1] > curve.KV_cache_GB.iloc[0]


def test_calculator_shows_canonical_precision_and_marks_gpu_sizes():
    result = llm_anatomy.memory_calculator("llama-30b", "float16")
    row = result.table.iloc[0]
    assert row.precision == "fp16" and row.total_GB > 65
    assert row.weights_GB == pytest.approx(models.estimate_memory("llama-30b").params * 2 / 1e9)
    shown = {a.text for a in result.figure.layout.annotations}
    assert {n for n, gb in specs.GPU_MEMORY_GB.items() if gb < 4 * row.total_GB} == shown
    assert set(llm_anatomy.CALCULATOR_MODELS) >= set(specs.MODEL_CONFIGS)
