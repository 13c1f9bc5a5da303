"""experiments.llm_anatomy: the KV formula against real caches, TTFT/TPOT through decoding.timing, the decode
roofline, the KV curve and the memory calculator."""

import pytest

from labkit import anatomy, hardware, models
from labkit.experiments import llm_anatomy
from labkit.models import specs
from tests.hand_counts import llama_params


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
    assert t.attrs["measured_on"] == "(bandwidth given)"
    measured = llm_anatomy.decode_roofline("smollm2-135m", flops=2.5e11, batch_sizes=(1,))
    assert measured.attrs["measured_on"] == hardware.detect().cpu_model  # the device the bound holds for
    assert t.memory_bound_tok_s.iloc[0] == pytest.approx(20e9 / (4 * 134_515_008))
    assert t.intensity_flop_per_byte.tolist() == [0.5, 4.0, 32.0]  # fp32: 2 FLOPs per 4-byte weight per sequence
    assert t.attrs["ridge_flop_per_byte"] == pytest.approx(2.5e11 / 20e9)  # FLOP/s ÷ bytes/s
    assert t.attrs["ridge_batch"] == pytest.approx(2.5e11 / 20e9 * 4 / 2)  # the batch whose intensity is the ridge
    assert list(llm_anatomy.decode_roofline("smollm2-135m", bandwidth_gbps=20.0, flops=2.5e11).batch) == [
        2**k for k in range(9)]  # 1 ... 256 by default
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


def test_decode_step_cost_against_the_roofline_by_hand():
    bw, flops = 20.0, 1e11  # given, so only the steps are measured
    cost = llm_anatomy.decode_step_cost("tiny-llama", batch_sizes=(1, 4, 32), prompt_tokens=8, new_tokens=4, repeat=1,
                                        bandwidth_gbps=bw, flops=flops, device="cpu")  # fmt: skip
    t = cost.table.set_index("batch")
    params = models.estimate_memory("tiny-llama").params
    kv = 2 * 4 * 4 * 32 * 4 * (8 + 2)  # layers × KV heads × head_dim × fp32 bytes × tokens at mid-generation, K and V
    for b in (1, 4, 32):
        by_hand = max((4 * params + b * kv) / (bw * 1e9), 2 * params * b / flops) * 1e3
        assert t.roofline_ms[b] == pytest.approx(by_hand)
        memory_ms = (4 * params + b * kv) / (bw * 1e9) * 1e3
        assert t.pct_of_bandwidth_bound[b] == pytest.approx(100 * memory_ms / t.tpot_ms[b])
        assert t.pct_of_roofline[b] == pytest.approx(100 * by_hand / t.tpot_ms[b])
    assert t.bound_by.tolist() == ["memory", "memory", "compute"]  # ridge: 1e11 / 20e9 = 5 FLOP/byte = batch 10
    assert cost.table.attrs["ridge_batch"] == pytest.approx(flops / (bw * 1e9) * 4 / 2)
    assert t.step_vs_first[1] == 1.0 and t.step_vs_first.tolist() == pytest.approx((t.tpot_ms / t.tpot_ms[1]).tolist())
    assert (t.tpot_ms > 0).all() and {tr.name for tr in cost.figure.data} == {"tpot_ms", "roofline_ms"}
    with pytest.raises(ValueError, match="new_tokens >= 2"):
        llm_anatomy.decode_step_cost("tiny-llama", new_tokens=1)


def test_kv_curve_says_where_the_cache_overtakes_the_weights():
    cfg = specs.MODEL_CONFIGS["llama-30b"]
    curve = llm_anatomy.kv_cache_curve("llama-30b", "fp16", batch=8)
    per_token = 2 * cfg["num_hidden_layers"] * cfg["hidden_size"] * 2 * 8  # K and V, every head, fp16, 8 sequences
    by_hand = -(-2 * llama_params(cfg) // per_token)  # the fewest tokens whose cache >= the fp16 weights
    assert curve.table.attrs["crossover_tokens"] == by_hand
    windowed = {"model_type": "mistral", "num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
                "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000, "sliding_window": 16}
    assert llm_anatomy.kv_cache_curve(windowed, "fp32", batch=1).table.attrs["crossover_tokens"] is None  # capped


def test_decode_step_cost_in_16_bit_reads_half_the_bytes():
    bw, flops = 20.0, 1e11
    fp32, bf16 = (llm_anatomy.decode_step_cost("tiny-llama", batch_sizes=(1,), prompt_tokens=8, new_tokens=3,
                                               repeat=1, bandwidth_gbps=bw, flops=flops, device="cpu", precision=p)
                  for p in ("fp32", "bfloat16"))
    assert bf16.table.attrs["precision"] == "bf16"
    assert bf16.table.roofline_ms.iloc[0] == pytest.approx(fp32.table.roofline_ms.iloc[0] / 2)  # memory-bound
    with pytest.raises(ValueError, match="not int8"):
        llm_anatomy.decode_step_cost("tiny-llama", precision="int8")
