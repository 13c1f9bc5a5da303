"""Lab 05 (quantization): recorded results against the quantizers' formats, hand counts, published numbers, and the
simulated int8 against its library twin (torchao's per-channel weight-only int8)."""

import pytest

from labkit.models import specs
from labkit.quant import QUANTIZERS
from tests.hand_counts import bloom_params, llama_params


def check_devices(r: dict) -> None:
    """Every row that ran names its device: the lab's device where the registry says the quantizer runs there, else
    the CPU; a speed-up divides by fp32's speed on the row's own device."""
    ran = r["perplexity"].keys()
    assert r["devices"].keys() == ran, "a quantizer that ran has no device recorded"
    for name, label in r["devices"].items():
        expected = r["device"] if r["device_type"] in QUANTIZERS[name].devices else "cpu ("
        assert label.startswith(expected), f"{name} ran on {label!r}, expected {expected!r}"
    b = next(k for k in r if k.startswith("decode_speedup_b")).removeprefix("decode_speedup_")
    fp32 = r["fp32_decode_tok_s"]
    assert fp32[r["device"]][f"decode_tok_s_{b}"] == pytest.approx(r[f"decode_tok_s_{b}"]["fp32"])
    for name, speedup in r[f"decode_speedup_{b}"].items():  # side by side only with fp32 on the same device
        assert speedup == pytest.approx(r[f"decode_tok_s_{b}"][name] / fp32[r["devices"][name]][f"decode_tok_s_{b}"])
    if r["ladder"] is not None:  # the GPU section: one device, against its native 16-bit float
        assert r["device_type"] == "cuda" and {row["device"] for row in r["ladder"]} == {r["device"]}
        half = next(row for row in r["ladder"] if row["quantizer"] == r["half_precision"])
        assert half["bytes_vs_half"] == 1.0 and {"bnb-int8", "bnb-nf4"} <= {row["quantizer"] for row in r["ladder"]}


def check(r: dict) -> None:
    check_devices(r)
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
    # section 7 (SmolLM2 on the CPU): the GGUF's own blocks in MatMulNBits with fp32 activations are the dequantized
    # model's arithmetic: its greedy tokens equal the fp32 reference's (which is that file dequantized offline)
    same4 = r["same4_top1_agreement"]
    if same4 and r["source"] == "smollm2-135m":
        assert r["same4_prefix_agreement"]["ort-genai-gguf-q4_1"] == 1.0
        assert same4["ort-genai-gguf-q4_1"] >= 0.99
