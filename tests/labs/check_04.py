"""Lab 04: checks on the results its smoke run recorded."""

import pytest  # noqa: F401

from labkit import models, precision


def check(r: dict) -> None:
    assert {"torch-eager", "torchscript", "torch-compile", "onnxruntime", "openvino", "tensorrt"} <= set(r["engines"])
    assert all(r["unavailable"].values())  # every unavailable engine carries its reason
    assert r["ort_speedup_tiny_bloom_b1"] > 1.0  # ONNX Runtime beats eager on tiny-bloom
    assert r["max_relative_diff"] <= precision.tolerance("fp32")  # parity held for every session
    assert set(r["cold_start_s"]) >= {"torch-eager", "onnxruntime", "openvino"}
    assert set(r["option_speedups"]) >= {"torch-eager", "ORT, plain export", "ORT, fused attention"}
    c = r["matmul_ceiling"]  # ORT's MatMuls alone: less time than the whole model, a higher ceiling
    assert c["matmuls"] == 4 * models.get_config("tiny-bloom").n_layer + 1  # qkv, dense, h->4h, 4h->h; LM head
    assert 0 < c["matmul_share"] < 1 and c["ceiling_speedup"] > c["ort_speedup"]
