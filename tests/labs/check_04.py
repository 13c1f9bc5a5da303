"""Lab 04: checks on the results its smoke run recorded."""

import pytest  # noqa: F401

from labkit import models, precision


def check(r: dict) -> None:
    assert {"torch-eager", "torchscript", "torch-compile", "onnxruntime", "openvino", "tensorrt"} <= set(r["engines"])
    assert all(r["unavailable"].values())  # every unavailable engine carries its reason
    assert r["max_relative_diff"] <= precision.tolerance("fp32")  # parity held for every session
    assert set(r["option_speedups"]) >= {"torch-eager", "ORT, plain export", "ORT, fused attention"}
    c = r["matmul_ceiling"]  # ORT's MatMuls alone: less time than the whole model, a higher ceiling
    assert c["matmuls"] == 4 * models.get_config("tiny-bloom").n_layer + 1  # qkv, dense, h->4h, 4h->h; LM head
    assert 0 < c["matmul_share"] < 1 and c["ceiling_speedup"] > c["ort_speedup"]
    # the profilers: eager's matrix multiplies are the same linear layers plus, per layer, BLOOM's two batched
    # attention products (scores: baddbmm, values: bmm); eager spends more time than ONNX Runtime outside its matrix
    # multiplies (dispatch, Python, unfused elementwise operators)
    p = r["profile_ms"]
    layers = models.get_config("tiny-bloom").n_layer
    assert set(p) == {"PyTorch eager", "ONNX Runtime"} and r["profile_eager_matmul_calls"] == c["matmuls"] + 2 * layers
    assert all(v["wall"] > 0 and v["unprofiled"] > 0 and v["matrix multiply"] > 0 for v in p.values()), p
    rest = {engine: v["wall"] - v["matrix multiply"] for engine, v in p.items()}
    assert rest["PyTorch eager"] > rest["ONNX Runtime"], rest

    # Same-device comparisons. The lab's device label starts with the torch device ("cpu (…)", "cuda:0 (NVIDIA …)").
    lab_device = r["device"].split(" ", 1)[0]
    rows = r["engine_rows"]
    assert rows and all(row["device"] and row["provider"] for row in rows)  # every row names its device and provider
    assert {row["device"] for row in rows} == {lab_device}  # section 2 ran on the lab's device, eager included
    shapes = {(row["workload"], row["batch_size"], row["seq_len"], row["threads"]) for row in rows}
    eager = {(row["workload"], row["batch_size"], row["seq_len"], row["threads"]) for row in rows
             if row["engine"] == "torch-eager"}
    assert eager == shapes  # every engine's speed-up has an eager baseline at its shape (on that same device)
    ort_provider = "CUDAExecutionProvider" if r["device_type"] == "cuda" else "CPUExecutionProvider"
    assert all(row["provider"].startswith(ort_provider) for row in rows if row["engine"] == "onnxruntime"), rows
    ran = {row["engine"] for row in rows}
    assert "tensorrt" not in ran or r["device_type"] == "cuda"  # TensorRT only ever against GPU eager
    assert "openvino" not in ran or r["device_type"] == "cpu"  # OpenVINO's plugin here is the CPU's
    # the sections that run on the CPU on purpose (OpenVINO's options, intra-op threads) or because ORT has no
    # provider on the GPU (the MatMul ceiling) record where they ran; eager ran there with them
    for where in (r["options_device"], c["device"]):
        assert where == lab_device or (where == "cpu" and r["device_type"] == "cuda"), (where, lab_device)
    assert {row["device"] for row in r["option_rows"]} == {r["options_device"]}
    assert r["threads_devices"] == ["cpu"]
    if r["device_type"] == "cpu":  # the measured claims of this lab about this CPU's runtimes
        assert r["ort_speedup_tiny_bloom_b1"] > 1.0  # ONNX Runtime beats eager on tiny-bloom
        assert set(r["cold_start_s"]) >= {"torch-eager", "onnxruntime", "openvino"}
    else:
        assert set(r["cold_start_s"]) >= {"torch-eager"}
