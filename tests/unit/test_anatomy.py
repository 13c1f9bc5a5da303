"""anatomy: memory math from a config, checked against hand-counted parameters, published numbers (models.specs) and
the bytes of real transformers caches."""

import pytest
import torch
from transformers import AutoModelForCausalLM, BloomConfig, Gemma2Config, LlamaConfig, MistralConfig, StaticCache

from labkit import anatomy, models
from labkit.models import specs
from tests.hand_counts import bloom_params, llama_params


@pytest.mark.parametrize("name", ["smollm2-135m", "tiny-bloom"])
def test_weights_equal_parameter_count_times_bytes(name):
    params = models.estimate_memory(name).params
    for precision, nbytes in [("fp32", 4), ("bf16", 2), ("fp16", 2), ("int8", 1), ("int4", 0.5)]:
        mem = anatomy.model_memory(name, precision)
        assert mem.params == params and mem.weights_bytes == params * nbytes and mem.precision == precision


def test_old_precision_spellings_are_accepted_and_shown_canonically():
    assert anatomy.model_memory("tiny-bloom", "bfloat16").precision == "bf16"
    assert anatomy.model_memory("tiny-bloom", torch.float16).precision == "fp16"
    assert anatomy.kv_cache_bytes("tiny-bloom", 1, 8, "float32") == anatomy.kv_cache_bytes("tiny-bloom", 1, 8, "fp32")


def test_smollm2_parameter_count_is_the_real_one():
    assert anatomy.model_memory("smollm2-135m").params == 134_515_008


def test_model_memory_uses_the_one_kv_formula():
    # 2 (K, V) × 30 layers × 3 kv heads × 64 head_dim × 2 bytes × 2048 tokens × 4 sequences
    mem = anatomy.model_memory("smollm2-135m", "bf16", batch=4, seq=2048)
    assert mem.kv_cache_bytes == 2 * 30 * 3 * 64 * 2 * 2048 * 4
    assert mem.kv_cache_bytes == anatomy.kv_cache_bytes("smollm2-135m", 4, 2048, "bf16")
    int4 = anatomy.model_memory("smollm2-135m", "int4", seq=16)
    assert int4.kv_cache_bytes == anatomy.kv_cache_bytes("smollm2-135m", 1, 16, "bf16")  # 16-bit cache by default
    int8 = anatomy.model_memory("smollm2-135m", "int8", seq=16, kv_precision="int8")
    assert int8.kv_cache_bytes == anatomy.kv_cache_bytes("smollm2-135m", 1, 16, "int8")


def test_bloom_176b_matches_its_hand_count_and_the_published_352_gb():
    config = specs.MODEL_CONFIGS["bloom-176b"]
    mem = anatomy.model_memory(config, "bf16")
    assert mem.params == bloom_params(config)
    assert specs.BLOOM_176B_BF16_GB <= mem.weights_bytes / 1e9 < specs.BLOOM_176B_BF16_GB + 1
    assert anatomy.model_memory("bloom-176b", "bf16").params == mem.params  # by name: the same specs entry
    same = anatomy.model_memory(BloomConfig(**{k: v for k, v in config.items() if k != "model_type"}))
    assert same.params == mem.params


def test_llama_configs_match_their_hand_count():
    for name in ("llama-30b", "llama-2-7b", "llama-3-70b"):
        config = specs.MODEL_CONFIGS[name]
        assert anatomy.model_memory(config, "fp16").weights_bytes == 2 * llama_params(config), name


def test_config_of_and_dims_read_every_spelling():
    bloom = anatomy.dims("bloom-176b")
    assert (bloom.layers, bloom.hidden, bloom.heads, bloom.kv_heads, bloom.head_dim) == (70, 14336, 112, 112, 128)
    llama3 = anatomy.dims(specs.MODEL_CONFIGS["llama-3-70b"])
    assert (llama3.heads, llama3.kv_heads, llama3.head_dim, llama3.intermediate) == (64, 8, 128, 28672)
    config = LlamaConfig(num_hidden_layers=2)
    assert anatomy.config_of(config) is config
    assert anatomy.config_of("tiny-llama").num_hidden_layers == models.get_config("tiny-llama").num_hidden_layers
    with pytest.raises(ValueError, match="choose from"):
        anatomy.config_of("llama-31b")


def test_bad_inputs():
    with pytest.raises(ValueError, match="choose from"):
        anatomy.model_memory("tiny-bloom", "int3")
    with pytest.raises(ValueError, match="batch and seq must be >= 1"):
        anatomy.model_memory("tiny-bloom", batch=0)
    with pytest.raises(ValueError, match="batch and seq must be >= 1"):
        anatomy.kv_cache_bytes("tiny-bloom", seq=0)
    with pytest.raises(ValueError, match="float matmul"):
        anatomy.matmul_flops(64, "int8")


def _real_cache_bytes(config, batch: int, seq: int, static: bool = False) -> int:
    model = AutoModelForCausalLM.from_config(config).eval()
    ids = torch.randint(0, config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0))
    cache = StaticCache(config=config, max_cache_len=seq) if static else None
    with torch.no_grad():
        out = model(input_ids=ids, past_key_values=cache, use_cache=True)
    return anatomy.cache_bytes(cache if static else out.past_key_values)


SMALL = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=8)


@pytest.mark.parametrize("config, static", [
    (models.get_config("tiny-llama"), False),  # multi-head attention
    (models.get_config("tiny-bloom"), False),  # multi-head attention, BLOOM's field names
    (LlamaConfig(**SMALL, num_key_value_heads=2), False),  # grouped-query attention: 2 K/V heads for 8 query heads
    (LlamaConfig(**SMALL, num_key_value_heads=1), False),  # multi-query attention
    (MistralConfig(**SMALL, num_key_value_heads=2, sliding_window=8), True),  # every layer keeps 8 tokens
    (Gemma2Config(**SMALL, num_key_value_heads=2, head_dim=8, sliding_window=8), True),  # windowed / full alternate
], ids=["tiny-llama", "tiny-bloom", "gqa", "mqa", "sliding", "alternating"])  # fmt: skip
def test_kv_cache_bytes_equal_a_real_transformers_cache(config, static):
    assert anatomy.kv_cache_bytes(config, 2, 20, "fp32") == _real_cache_bytes(config, 2, 20, static) > 0


def test_gqa_cache_is_smaller_by_the_head_ratio():
    mha, gqa = LlamaConfig(**SMALL), LlamaConfig(**SMALL, num_key_value_heads=2)
    assert anatomy.kv_cache_bytes(mha, 1, 64) == 4 * anatomy.kv_cache_bytes(gqa, 1, 64)


def test_matmul_flops_measures_something():
    assert anatomy.matmul_flops(size=256, repeat=2) > 1e8
