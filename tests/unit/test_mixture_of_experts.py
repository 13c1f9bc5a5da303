"""Mixture of experts: the parameter formula against hand counts, the meta device and Mixtral's published sizes; the
tiny MoE's measured routing and bytes against the formula; bad input refused before anything is built."""

import pytest
import torch
from transformers import LlamaConfig

from labkit import models
from labkit.experiments import mixture_of_experts as moe
from labkit.models import specs
from tests.hand_counts import llama_params

pytestmark = pytest.mark.usefixtures("one_thread")


def moe_by_hand(c: dict, experts_used: int) -> int:
    """A Mixtral counted as a Llama whose MLP is `experts_used` experts wide, plus its routers (hidden × experts)."""
    dense = {**c, "intermediate_size": experts_used * c["intermediate_size"]}
    return llama_params(dense) + c["num_hidden_layers"] * c["hidden_size"] * c["num_local_experts"]


def test_mixtral_8x7b_formula_meta_device_and_published_sizes_agree():
    c = moe.MIXTRAL_8X7B
    s = moe.mixtral_sizing()
    assert s.meta == (moe_by_hand(c, c["num_local_experts"]), moe_by_hand(c, c["num_experts_per_tok"]))
    assert (s.count.total, s.count.active) == s.meta
    table = s.table.set_index("quantity")
    for q in ("total", "active"):  # "46.7B total, 12.9B per token" (Mistral AI), to the published digit
        assert table.meta_B[q] == pytest.approx(moe.MIXTRAL_PUBLISHED_B[q], abs=0.05)
    assert table.bf16_GB["total"] == pytest.approx(2 * s.meta[0] / 1e9)
    # a decode step reads the active weights less the embedding table it only looks one row up in
    assert s.table.attrs["read_per_token_B"] * 1e9 == s.meta[1] - (c["vocab_size"] - 1) * c["hidden_size"]


@pytest.mark.parametrize("name", ["llama-2-7b", "llama-3-70b"])
def test_dense_formula_equals_the_hand_count(name):
    count = moe.param_count(specs.MODEL_CONFIGS[name])
    assert count.total == count.active == llama_params(specs.MODEL_CONFIGS[name])
    assert (count.experts, count.top_k, count.router) == (1, 1, 0)


def test_tied_embeddings_are_counted_once():
    cfg = LlamaConfig(vocab_size=500, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, tie_word_embeddings=True)
    count = moe.param_count(cfg)
    assert count.total == models.count_params(cfg) == moe.meta_count(cfg)[0]
    assert count.read_per_step(1) == count.total  # a tied table is read whole as the LM head


def test_expected_experts_matches_simulated_uniform_routing():
    gen = torch.Generator().manual_seed(0)
    for experts, top_k, batch in [(8, 2, 1), (8, 2, 4), (8, 2, 8), (16, 1, 5)]:
        scores = torch.rand(4000, batch, experts, generator=gen)
        picked = scores.topk(top_k, dim=-1).indices.reshape(4000, -1)  # every token's top-k, a batch per trial
        distinct = torch.tensor([len(torch.unique(p)) for p in picked], dtype=torch.float).mean()
        assert moe.expected_experts(experts, top_k, batch) == pytest.approx(float(distinct), rel=0.02)
    assert moe.expected_experts(8, 2, 1) == 2


def test_tiny_moe_routing_bytes_and_parameters_against_the_formula():
    dims = dict(hidden=64, intermediate=128, layers=2, experts=8, top_k=2, vocab=256, heads=4, kv_heads=2)
    configs = moe.tiny_configs(**dims)
    run = moe.moe_vs_dense(configs, batch_sizes=(1, 3), prompt_tokens=8, repeat=2, bandwidth_gbps=10.0, flops=1e10,
                           device="cpu")
    t = run.table.set_index(["engine", "batch"])
    c = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "num_local_experts": 8}
    by_hand = {"MoE": moe_by_hand(c, 8), "dense, same active": llama_params({**c, "intermediate_size": 256}),
               "dense, same total": llama_params({**c, "intermediate_size": 1024})}
    assert t.params_counted.xs(1, level="batch").to_dict() == by_hand  # the built models' real parameters
    assert t.experts_per_layer["MoE", 1] == 2  # the router's own picks: exactly top_k at batch 1
    assert 2 < t.experts_per_layer["MoE", 3] <= 6  # at most batch × top_k (at least one of them differs here)
    unread = (256 - 1) * 64  # the untied embedding table: one row per sequence is looked up
    for engine, b, params in [("MoE", 1, moe_by_hand(c, 2) - unread),
                              ("dense, same active", 1, by_hand["dense, same active"] - unread),
                              ("dense, same total", 3, by_hand["dense, same total"] - unread + 2 * 64)]:
        assert t.read_per_step_MB[engine, b] * 1e6 == pytest.approx(4 * params)  # fp32: 4 bytes per weight
    moe_b3 = moe_by_hand(c, 0) - unread + 2 * 64 + 2 * t.experts_per_layer["MoE", 3] * 3 * 64 * 128
    assert t.read_per_step_MB["MoE", 3] * 1e6 == pytest.approx(4 * moe_b3)
    assert (t.decode_tok_s > 0).all() and (t.speed_vs_moe.xs("MoE") == 1).all()
    assert t.bandwidth_bound_tok_s["MoE", 1] == pytest.approx(10e9 / (t.read_per_step_MB["MoE", 1] * 1e6))
    assert len(run.figure.data) == 1 + 3  # the roof and one series per model


def test_bad_input_is_refused_before_anything_is_built(monkeypatch):
    monkeypatch.setattr(moe, "_build", lambda *a: pytest.fail("built a model before checking the input"))
    with pytest.raises(ValueError, match="top_k"):
        moe.tiny_configs(experts=8, top_k=9)
    with pytest.raises(ValueError, match="experts >= 2"):
        moe.tiny_configs(experts=1, top_k=1)
    with pytest.raises(ValueError, match="must divide"):
        moe.tiny_configs(hidden=100, heads=8)
    with pytest.raises(ValueError, match="fp32"):
        moe.moe_vs_dense(precision="int8")
    with pytest.raises(ValueError, match="choose from"):
        moe.moe_vs_dense(precision="fp64")
    with pytest.raises(ValueError, match="'MoE'"):
        moe.moe_vs_dense({"dense": LlamaConfig()})
    with pytest.raises(ValueError, match="batch sizes"):
        moe.moe_vs_dense(batch_sizes=(0,))
    with pytest.raises(ValueError, match="biases"):
        moe.param_count(LlamaConfig(attention_bias=True))
