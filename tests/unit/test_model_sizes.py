"""Models of different sizes on paper: SmolLM2's published configs against hand counts, the KV formula by hand and
the bandwidth bound; bad input refused."""

import pytest

from labkit.experiments import model_sizes
from labkit.models import smollm2
from tests.hand_counts import llama_params


def test_the_135m_config_is_the_one_the_registry_publishes():
    ours, registry = model_sizes.smollm2_config("SmolLM2-135M"), smollm2.config()
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "tie_word_embeddings"):
        assert getattr(ours, key) == getattr(registry, key), key


def test_sizes_kv_and_bounds_against_hand_counts():
    sizes = model_sizes.on_paper(20.0, measured={"SmolLM2-135M": ("float32", 10.0)})
    t = sizes.table.set_index("model")
    assert list(t.index) == ["SmolLM2-135M", "SmolLM2-360M", "SmolLM2-1.7B"]
    for name, c in model_sizes.SMOLLM2_CONFIGS.items():
        params = llama_params({**c, "vocab_size": 49152}) - 49152 * c["hidden_size"]  # tied: one table
        assert t.params_M[name] * 1e6 == pytest.approx(params, abs=0.5)
        kv = 2 * c["num_hidden_layers"] * c["num_key_value_heads"] * 64 * 2  # K and V, head_dim 64, bf16
        assert t.kv_KB_per_token[name] * 1e3 == pytest.approx(kv)
        assert t.bound_tok_s_bf16[name] == pytest.approx(20e9 / (2 * params))
        assert t.bound_tok_s_int4[name] == pytest.approx(8 * t.bound_tok_s_fp32[name])
    assert round(t.params_M["SmolLM2-360M"], 2) == 361.82  # the published count, 361,821,120
    assert t.pct_of_bound["SmolLM2-135M"] == pytest.approx(100 * 10.0 / t.bound_tok_s_fp32["SmolLM2-135M"])
    assert t.measured_precision["SmolLM2-135M"] == "fp32" and t.pct_of_bound.isna().sum() == 2
    assert len(sizes.figure.data) == 4 + 1  # a bound per precision and the measured point


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="positive"):
        model_sizes.on_paper(0.0)
    with pytest.raises(ValueError, match="choose from"):
        model_sizes.on_paper(10.0, precisions=("fp64",))
    with pytest.raises(ValueError, match="SmolLM2-135M"):
        model_sizes.on_paper(10.0, names=("SmolLM2-7B",))
    with pytest.raises(ValueError, match="measured"):
        model_sizes.on_paper(10.0, precisions=("bf16",), measured={"SmolLM2-135M": ("fp32", 1.0)})
    with pytest.raises(ValueError, match="at least one"):
        model_sizes.on_paper(10.0, precisions=())
