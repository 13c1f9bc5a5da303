"""Lab 05: checks on the results its smoke run recorded."""

import pytest  # noqa: F401


def check(r: dict) -> None:
    assert set(r["quantizers"]) >= {"fp32", "bf16", "int8-dynamic", "int4-weight", "bnb-nf4", "ort-int8", "ort-int4"}
    size = r["size_vs_fp32"]
    assert abs(size["bf16"] - 0.5) < 0.01 and size["int8-dynamic"] < 0.56 and size[r["smallest_4bit"]] < 0.45
    assert all(v < 1.05 for v in r["perplexity_vs_fp32"].values())  # no quantizer broke the model
    assert r["top1_agreement"]["fp32"] == 1.0
    assert all(r["errors"].values())  # a quantizer that could not run says why
    claims = r["claims_GB"]
    assert 60 < claims["llama-30b/float16"] < 70 and 30 < claims["llama-30b/int8"] < 35
    assert 352 <= claims["bloom-176b/bfloat16"] < 353
