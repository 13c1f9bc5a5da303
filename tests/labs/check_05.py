"""Lab 05 (quantization): recorded results against the quantizers' formats, hand counts, published numbers, and the
simulated int8 against its library twin (torchao's per-channel weight-only int8)."""

import math

import pytest

from labkit import models, precision
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


def check_shrinking(r: dict) -> None:
    """Sections 8-9: parameter counts by hand, zeros counted against the asked sparsity, the shrunk MLP against the
    zeroed one, the edge table's perplexity against section 2's (the same models and tokens on another thread count)."""
    kd = {row["model"]: row for row in r["distill"]}
    teacher = kd["teacher"]
    config = models.get_config("tiny-bloom-shakespeare").to_dict()
    assert teacher["params"] == bloom_params(config)
    vocab = config["vocab_size"]
    for name in ("student (distilled)", "student (hard labels)"):
        s = kd[name]
        assert s["params"] == bloom_params({"vocab_size": vocab, "hidden_size": s["hidden"], "n_layer": s["layers"]})
        assert teacher["val_loss"] < s["val_loss"]  # a smaller model with fewer steps does not beat its teacher
    assert teacher["val_loss"] < math.log(vocab)  # the trained teacher beats a uniform guess
    prune = r["prune"]
    dense = next(p for p in prune if p["method"] == "dense")
    h, layers = teacher["hidden"], teacher["layers"]
    for p in prune:
        if p["method"] == "unstructured":
            assert p["zero_share"] == pytest.approx(p["sparsity"], abs=1e-3) and p["params"] == dense["params"]
            assert p["speedup_vs_dense"] < 2.0  # no sparse kernel: at 90 % zeros one would approach 10×
        elif p["method"] == "structured":  # each removed neuron: a row of h + a bias in, a column of h out
            removed = round(p["sparsity"] * 4 * h)
            assert p["params"] == dense["params"] - layers * removed * (2 * h + 1)
            assert p["masked_vs_shrunk"] < 1e-4  # the smaller matrices compute the zeroed model's function
        if p["sparsity"] == max(q["sparsity"] for q in prune) and p["method"] != "dense":
            assert p["val_loss"] > dense["val_loss"]  # removing most of the weights costs quality
    if r["semi_structured"] is not None:  # GPU only: the same 2:4 weights give the same product on sparse cores
        assert r["semi_structured"]["max_abs_diff"] < 0.5 and r["semi_structured"]["speedup"] > 0
    edge = {row["quantizer"]: row for row in r["edge"]}
    for name, row in edge.items():
        assert row["threads"] == 1
        assert row["perplexity"] == pytest.approx(r["perplexity"][name], rel=1e-3)  # section 2 measured it too
        estimate = models.estimate_memory(r["source"], "int8" if "int8" in name else name)
        assert row["estimate_MiB"] == pytest.approx(estimate.params * precision.bytes_per_value(estimate.dtype) / 2**20)
        assert row["fits_resident"] == (row["resident_MiB"] <= r["edge_cap_mib"])
    assert edge["int8-dynamic"]["resident_MiB"] < edge["fp32"]["resident_MiB"]
    assert not r["openvino_devices"] or "CPU" in r["openvino_devices"]


def check(r: dict) -> None:
    check_devices(r)
    check_shrinking(r)
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
