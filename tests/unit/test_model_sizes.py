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


# Measured from the Hub: there is no network here, so a Hugging Face cache is built that holds what the Hub would
# serve for HuggingFaceTB/SmolLM2-135M (bf16 safetensors; the weights are the offline copy's, rounded to bf16), and
# `from_hub` runs in a fresh process whose HF_HOME points at it, with HF_HUB_OFFLINE=1.
HUB_SCRIPT = """
import json, sys
from labkit.experiments import model_sizes
table = model_sizes.from_hub(["SmolLM2-135M", "SmolLM2-1.7B"], precision="bf16", decode_tokens=3, eval_budget=128,
                             window=64, repeat=1)
print("RESULT " + table.to_json(orient="records"))
"""


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    from labkit import models
    from tests.hub_cache import hub_snapshot

    home = tmp_path_factory.mktemp("hf_home")
    hub_snapshot(home, model_sizes.HUB_IDS["SmolLM2-135M"], models.resolve(smollm2.NAME).checkpoint_dir)
    return home


def test_from_hub_measures_a_cached_model_and_says_why_it_skips_the_others(hub_cache):
    import json
    import os
    import subprocess
    import sys

    from labkit import models
    from labkit.data.windows import eval_tokens
    from labkit.experiments import quantization
    from labkit.quant import quantize

    env = {**os.environ, "HF_HOME": str(hub_cache), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    done = subprocess.run([sys.executable, "-c", HUB_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {r["model"]: r for r in json.loads(done.stdout.split("RESULT ", 1)[1])}
    small, big = rows["SmolLM2-135M"], rows["SmolLM2-1.7B"]
    assert small["measured"] and small["reason"] is None and small["decode_tok_s"] > 0
    # bf16 weights: 2 bytes per parameter counted on the meta device, the tied embedding once
    assert small["weights_MB"] * 1e6 == models.count_params(model_sizes.smollm2_config("SmolLM2-135M")) * 2
    # a second measurement: the offline fp32 copy on the same tokens; bf16 rounding moves perplexity by a few %
    _, tokenizer = models.load_model(smollm2.NAME, device="cpu")
    fp32 = quantize("fp32", smollm2.NAME)
    reference = quantization.quality({"fp32": fp32}, fp32, eval_tokens(tokenizer, 128, 64)).perplexity.iloc[0]
    assert small["perplexity"] == pytest.approx(reference, rel=0.1)
    assert not big["measured"] and "not in this machine's Hugging Face cache" in big["reason"]
    assert big["decode_tok_s"] is None or big["decode_tok_s"] != big["decode_tok_s"]  # NaN (JSON null)


def test_hub_unavailable_says_when_the_weights_do_not_fit_before_loading():
    reason = model_sizes.hub_unavailable("SmolLM2-1.7B", "fp32", "cpu", memory_share=1e-4)
    assert "take 6.8 GB, more than" in reason  # 1,711.4 M parameters x 4 bytes
    with pytest.raises(ValueError, match="choose from"):
        model_sizes.hub_unavailable("SmolLM2-7B")
