import pytest
from transformers import BloomConfig

from labkit import anatomy, models


@pytest.mark.parametrize("name", ["smollm2-135m", "tiny-bloom"])
def test_weights_equal_parameter_count_times_bytes(name):
    params = models.estimate_memory(name).params
    for dtype, nbytes in [("float32", 4), ("bfloat16", 2), ("int8", 1), ("int4", 0.5)]:
        mem = anatomy.model_memory(name, dtype)
        assert mem.params == params and mem.weights_bytes == params * nbytes


def test_smollm2_parameter_count_is_the_real_one():
    assert anatomy.model_memory("smollm2-135m").params == 134_515_008


def test_kv_cache_formula():
    # 2 (K, V) × 30 layers × 3 kv heads × 64 head_dim × 2 bytes × 2048 tokens × 4 sequences
    mem = anatomy.model_memory("smollm2-135m", "bfloat16", batch=4, seq=2048)
    assert mem.kv_cache_bytes == 2 * 30 * 3 * 64 * 2 * 2048 * 4


def test_bloom_176b_from_a_hand_written_config():
    mem = anatomy.model_memory(anatomy.KNOWN_CONFIGS["bloom-176b"], "bfloat16")
    assert 176.0e9 < mem.params < 176.5e9
    assert 352 <= mem.weights_bytes / 1e9 < 353  # "BLOOM needs 352 GB in bf16"
    same = anatomy.model_memory(BloomConfig(n_layer=70, hidden_size=14336, n_head=112, vocab_size=250880))
    assert same.params == mem.params


def test_30b_llama_is_32gb_only_at_8_bits():
    cfg = anatomy.KNOWN_CONFIGS["llama-30b"]
    assert 60 < anatomy.model_memory(cfg, "float16").weights_bytes / 1e9 < 70
    assert 30 < anatomy.model_memory(cfg, "int8").weights_bytes / 1e9 < 35


def test_bad_inputs():
    with pytest.raises(ValueError, match="choose from"):
        anatomy.model_memory("tiny-bloom", "int3")
    with pytest.raises(ValueError, match="batch and seq must be >= 1"):
        anatomy.model_memory("tiny-bloom", batch=0)


def test_calculator_figure_marks_gpu_sizes():
    result = anatomy.memory_calculator("llama-30b", "float16")
    assert result.table.total_GB.iloc[0] > 65
    assert any("80GB" in (a.text or "") for a in result.figure.layout.annotations)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-bloom", "smollm2-135m"])
def test_kv_formula_equals_a_real_cache_exactly(name):
    check = anatomy.kv_cache_check(name, batch=2, seq=24)
    assert check["formula_bytes"] == check["measured_bytes"] > 0


def test_kv_formula_in_bfloat16():
    check = anatomy.kv_cache_check("tiny-llama", batch=1, seq=16, dtype="bfloat16")
    assert check["formula_bytes"] == check["measured_bytes"] == 2 * 4 * 4 * 32 * 2 * 16


def test_time_to_first_token_grows_with_the_prompt():
    t = anatomy.prefill_decode("tiny-llama", prompt_lens=(8, 512), batch_sizes=(1,), new_tokens=4, repeat=3)
    assert t.ttft_ms.iloc[1] > t.ttft_ms.iloc[0]
    assert (t.tpot_ms > 0).all() and (t.decode_tok_s > 0).all()


def test_roofline_turns_compute_bound_as_the_batch_grows():
    t = anatomy.decode_roofline("smollm2-135m", bandwidth_gbps=20.0, flops=2.5e11, batch_sizes=(1, 8, 64))
    assert list(t.bound_by) == ["memory", "memory", "compute"]
    assert t.memory_bound_tok_s.iloc[0] == pytest.approx(20e9 / (4 * 134_515_008))
    assert t.intensity_flop_per_byte.tolist() == [0.5, 4.0, 32.0]  # fp32: 2 FLOPs per 4-byte weight per sequence
    assert anatomy.matmul_flops(size=256, repeat=2) > 1e8
