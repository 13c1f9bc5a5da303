"""Lab 03: checks on the results its smoke run recorded, against the model's config, the installed onnxruntime's
optimisation levels and the digits CNN's layers."""

import onnxruntime as ort
import pytest  # noqa: F401

from labkit import models, precision


def check(r: dict) -> None:
    layers = models.get_config("tiny-bloom").n_layer  # from the model's config, not from the notebook
    assert r["parity_ok"] and r["max_relative_diff"] <= precision.tolerance("fp32")  # every format computes the same
    nodes = r["bloom_nodes"]
    assert nodes["all"] < nodes["basic"] < nodes["exported (raw)"]  # optimisation shrinks the graph
    assert "com.microsoft:FastGelu" in r["bloom_fused_ops"]
    assert r["fastgelu_nodes"] == r["n_layers"] == layers  # one fused GELU per layer
    assert r["bn_folded"] == 2  # the digits CNN's two BatchNorms after convolutions
    assert "com.microsoft.nchwc:Conv" in r["cnn_layout_ops"]  # the NCHWc layout change
    assert any("Reorder" in op for op in r["cnn_reorders"])  # the graph leaves NCHWc through a Reorder node
    # every level the installed onnxruntime names was measured, in its order (five since onnxruntime added LAYOUT)
    assert len(r["ort_levels"]) == len(ort.GraphOptimizationLevel.__members__)
    assert list(r["bloom_nodes"]) == ["exported (raw)", *r["ort_levels"]] and list(r["cnn_nodes"]) == r["ort_levels"]
    assert r["loading_fused"] == []  # ORT_DISABLE_ALL fuses nothing (loading only turns Constant nodes into weights)
    assert r["folding_nodes"][1] < r["folding_nodes"][0]
    # BLOOM's ALiBi attention: no ORT fusion finds it; the export patch writes one Attention node per layer
    assert r["transformer_attention_fusions"] == 0
    assert r["attention_nodes"] == {"plain export": 0, "fused attention": layers}
    assert r["nodes_after_all"]["fused attention"] < 0.7 * r["nodes_after_all"]["plain export"]
    # section 7 ran on one device, eager included: the lab's own, or the CPU when ONNX Runtime has no provider there
    where = r["attention_device"]
    assert r["device"].startswith(where + " ") or (where == "cpu" and r["device_type"] == "cuda"), (where, r["device"])
    rows = {row["variant"]: row for row in r["attention_rows"]}
    assert set(rows) == {"torch-eager", "ORT, plain export", "ORT, fused attention", "eager, patched forward"}
    assert {row["device"] for row in rows.values()} == {where}  # the eager baseline is where the engines are
    provider = "CUDAExecutionProvider" if where.startswith("cuda") else "CPUExecutionProvider"
    assert all(row["provider"].startswith(provider) for row in rows.values() if row["engine"] == "onnxruntime"), rows
    if where == "cpu":  # the measured claim of this lab is about ORT's CPU kernels
        assert r["attention_speedups"]["ORT, fused attention"] > 1.2
    assert r["attention_max_relative_diff"] <= precision.tolerance("fp32")
