"""anatomy: memory math from a config, checked against hand-counted parameters, published numbers (models.specs) and
the bytes of real transformers caches (DynamicCache and StaticCache, filled by a real forward) for every attention
variant: multi-head, grouped-query, multi-query, sliding-window, alternating windows, chunked."""

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    BloomConfig,
    DynamicCache,
    Gemma2Config,
    Gemma3TextConfig,
    GptOssConfig,
    Llama4TextConfig,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
    StaticCache,
)

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


def _real_caches(config, batch: int, seq: int, steps: int = 0) -> dict[str, int]:
    """Bytes of a DynamicCache and a StaticCache built from `config`, each filled by a real forward of a tiny random
    model built from it: a prefill of `seq` tokens, then `steps` one-token decode steps."""
    model = AutoModelForCausalLM.from_config(config).eval()
    ids = torch.randint(0, config.vocab_size, (batch, seq + steps), generator=torch.Generator().manual_seed(0))
    out = {}
    for kind, cache in (("dynamic", DynamicCache(config=config)),
                        ("static", StaticCache(config=config, max_cache_len=seq + steps))):
        with torch.no_grad():
            model(input_ids=ids[:, :seq], cache=cache, use_cache=True)
            for t in range(seq, seq + steps):
                model(input_ids=ids[:, t:t + 1], cache=cache, use_cache=True)
        out[kind] = anatomy.cache_bytes(cache)
    return out


SMALL = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=8)
FOUR = {**SMALL, "num_hidden_layers": 4}
VARIANTS = {  # every attention variant labkit knows, as transformers 5.x configs express it
    "mha-llama": models.get_config("tiny-llama"),
    "mha-bloom": models.get_config("tiny-bloom"),  # BLOOM's field names
    "gqa": LlamaConfig(**SMALL, num_key_value_heads=2),  # 2 K/V heads for 8 query heads
    "mqa": LlamaConfig(**SMALL, num_key_value_heads=1),
    "sliding-mistral": MistralConfig(**SMALL, num_key_value_heads=2, sliding_window=8),  # every layer windowed
    "alternating-gemma2": Gemma2Config(**FOUR, num_key_value_heads=2, head_dim=8, sliding_window=8),
    "alternating-gemma3": Gemma3TextConfig(**FOUR, num_key_value_heads=2, head_dim=8, sliding_window=8,
                                           sliding_window_pattern=3),  # every 3rd layer full
    "alternating-gpt-oss": GptOssConfig(**FOUR, num_key_value_heads=2, head_dim=8, sliding_window=8,
                                        num_local_experts=2, num_experts_per_tok=1),
    "alternating-qwen2": Qwen2Config(**SMALL, num_key_value_heads=2, use_sliding_window=True, sliding_window=8,
                                     max_window_layers=1),  # layers >= max_window_layers are windowed
    "chunked-llama4": Llama4TextConfig(**FOUR, num_key_value_heads=2, head_dim=8, attention_chunk_size=8,
                                       num_local_experts=2, intermediate_size_mlp=96),
}
# Which layers are windowed, written out from each architecture's documented rule (not read back from the config).
WINDOWED_LAYERS = {"sliding-mistral": [0, 1, 2], "alternating-gemma2": [0, 2], "alternating-gemma3": [0, 1, 3],
                   "alternating-gpt-oss": [0, 2], "alternating-qwen2": [1, 2], "chunked-llama4": [0, 1, 2]}


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("seq, steps", [(6, 0), (20, 3)], ids=["inside-window", "past-window+decode"])
def test_kv_cache_bytes_equal_real_dynamic_and_static_caches(name, seq, steps):
    config = VARIANTS[name]
    real = _real_caches(config, 2, seq, steps)
    for kind in anatomy.CACHE_KINDS:
        assert anatomy.kv_cache_bytes(config, 2, seq + steps, "fp32", cache=kind) == real[kind] > 0, kind


@pytest.mark.parametrize("name", VARIANTS)
def test_dims_finds_the_windowed_layers(name):
    d = anatomy.dims(VARIANTS[name])
    windowed = [i for i, w in enumerate(d.windows) if w is not None]
    assert windowed == WINDOWED_LAYERS.get(name, []) and d.sliding_window == (8 if windowed else None)


def test_the_issues_mistral_case_dynamic_keeps_window_minus_one():
    # MistralConfig with sliding_window=16, batch 2, 64 tokens, fp32: 4 layers × 2 (K, V) × 2 KV heads × 8 head_dim
    # × 4 bytes = 512 bytes per token kept. Counting all 64 tokens gave 65,536 B; transformers' DynamicCache keeps
    # 15 (window − 1) per layer: 15,360 B; a StaticCache allocates the window, 16: 16,384 B.
    config = MistralConfig(**FOUR, num_key_value_heads=2, sliding_window=16)
    real = _real_caches(config, 2, 64)
    assert anatomy.kv_cache_bytes(config, 2, 64, "fp32") == real["dynamic"] == 15_360 == 512 * 15 * 2
    assert anatomy.kv_cache_bytes(config, 2, 64, "fp32", cache="static") == real["static"] == 16_384
    no_window = MistralConfig(**FOUR, num_key_value_heads=2, sliding_window=None)
    assert anatomy.kv_cache_bytes(no_window, 2, 64, "fp32") == 65_536 == _real_caches(no_window, 2, 64)["dynamic"]
    # the cache a plain forward builds by itself is the dynamic one
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        out = model(input_ids=torch.randint(0, config.vocab_size, (2, 64)), use_cache=True)
    assert anatomy.cache_bytes(out.cache) == 15_360


def test_model_memory_counts_the_whole_window():
    config = MistralConfig(**FOUR, num_key_value_heads=2, sliding_window=16)
    assert anatomy.model_memory(config, "fp32", 2, 64).kv_cache_bytes == _real_caches(config, 2, 64)["static"]


def test_bad_cache_kind_and_uncounted_layer_kinds():
    with pytest.raises(ValueError, match=r"choose from \['dynamic', 'static'\]"):
        anatomy.kv_cache_bytes("tiny-llama", cache="paged")
    jamba_like = Qwen2Config(**SMALL, layer_types=["full_attention", "linear_attention", "full_attention"])
    with pytest.raises(ValueError, match="linear_attention"):
        anatomy.kv_cache_bytes(jamba_like, 1, 8)


def test_gqa_cache_is_smaller_by_the_head_ratio():
    mha, gqa = LlamaConfig(**SMALL), LlamaConfig(**SMALL, num_key_value_heads=2)
    assert anatomy.kv_cache_bytes(mha, 1, 64) == 4 * anatomy.kv_cache_bytes(gqa, 1, 64)
