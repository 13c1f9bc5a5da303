"""Lab 05 (quantization): recorded results against the quantizers' formats, hand counts, published numbers, and the
simulated int8 against its library twin (torchao's per-channel weight-only int8)."""

import pytest

from labkit.models import specs
from tests.hand_counts import bloom_params, llama_params


def check(r: dict) -> None:
    assert set(r["quantizers"]) >= {"fp32", "bf16", "int8-dynamic", "int4-weight", "bnb-nf4", "ort-int8", "ort-int4"}
    size = r["size_vs_fp32"]
    assert abs(size["bf16"] - 0.5) < 0.01 and size["int8-dynamic"] < 0.56 and size[r["smallest_4bit"]] < 0.45
    if r["source"] == "tiny-bloom-shakespeare":  # smoke: on the tiny BLOOM no quantizer moves perplexity 5 %
        assert all(v < 1.05 for v in r["perplexity_vs_fp32"].values())
    g = r["granularity_vs_fp32"]
    assert g["float (no int8)"] == 1.0  # the simulation harness without int8 is the model itself
    # the simulated per-channel int8 weights and torchao's int8-weight are the same scheme, built independently
    assert g["W8 per-channel"] == pytest.approx(r["perplexity_vs_fp32"]["int8-weight"], abs=2e-3)
    assert r["w8a8_vs_fp32"].keys() <= r["perplexity_vs_fp32"].keys() and r["weight_only_int8_vs_fp32"]
    zeroed = r["census_zeroed"]  # a token's uint8 step is never wider than the whole tensor's
    assert all(t <= p + 1e-9 for t, p in zip(zeroed["zeroed_per_token"], zeroed["zeroed_per_tensor"], strict=True))
    assert r["top1_agreement"]["fp32"] == 1.0
    assert all(r["errors"].values())  # a quantizer that could not run says why
    claims = r["claims_GB"]
    llama_30b = llama_params(specs.MODEL_CONFIGS["llama-30b"]) / 1e9
    assert claims["llama-30b/fp16"] == pytest.approx(2 * llama_30b)  # 2 bytes per weight
    assert claims["llama-30b/int8"] == pytest.approx(llama_30b)  # 1 byte per weight
    assert claims["bloom-176b/bf16"] == pytest.approx(2 * bloom_params(specs.MODEL_CONFIGS["bloom-176b"]) / 1e9)
    assert specs.BLOOM_176B_BF16_GB <= claims["bloom-176b/bf16"] < specs.BLOOM_176B_BF16_GB + 1  # the published 352 GB
