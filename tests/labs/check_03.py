"""Lab 03: checks on the results its smoke run recorded, against the model's config, the installed onnxruntime's
optimisation levels and the digits CNN's layers."""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from labkit import models, precision
from labkit.cache import cache_dir
from labkit.experiments import other_frontends

REPO = Path(__file__).resolve().parents[2]


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

    # section 8: scikit-learn through skl2onnx. A second measurement here: the same pipeline trained again in this
    # process, its predict_proba against a fresh ONNX Runtime session on the file the lab cached
    data = other_frontends.digits_arrays()
    tol = precision.tolerance("fp32")
    for kind, sk in r["sklearn"].items():
        path = Path(sk["onnx_path"])
        assert path.is_file() and path.is_relative_to(cache_dir()) and not path.is_relative_to(REPO)  # never in git
        model = other_frontends.classifier(kind).fit(data["x_train"], data["y_train"])
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        labels, probs = session.run(["label", "probabilities"], {"X": data["x_test"].astype(np.float32)})
        assert np.abs(probs - model.predict_proba(data["x_test"])).max() <= tol
        assert (labels == model.predict(data["x_test"])).all()
        assert sk["accuracy"] == pytest.approx((model.predict(data["x_test"]) == data["y_test"]).mean())
        # both engines do the same arithmetic: the multiply-adds counted on the model and on the graph are the
        # retrained model's weight sizes (features × classes for a linear model, Σ in × out for an MLP)
        final = model[-1]
        weights = sum(w.size for w in getattr(final, "coefs_", [getattr(final, "coef_", np.empty(0))]))
        assert sk["multiply_adds"] == {"sklearn": weights, "onnx": weights}
        if kind == "logistic-regression":
            assert weights == data["x_train"].shape[1] * len(np.unique(data["y_train"]))
        # the frontend wrote a classical model's steps in the ONNX-ML domain: one Scaler for the StandardScaler
        assert sk["op_counts"].get("ai.onnx.ml:Scaler") == 1
        if kind == "logistic-regression":
            assert sk["op_counts"].get("ai.onnx.ml:LinearClassifier") == 1
        parity = {row["engine"]: row for row in sk["parity"]}
        assert parity["onnxruntime"]["loaded"] and parity["onnxruntime"]["max_abs_prob_diff"] <= tol
        assert parity["onnxruntime"]["label_agreement"] == 1.0
        for name, row in parity.items():  # an engine either matched scikit-learn or said which ONNX-ML op it lacks
            assert (row["loaded"] and row["max_abs_prob_diff"] <= tol) or "ai.onnx.ml" in row["reason"], (name, row)
        # timed side by side: every engine that loaded, at batch 1 and the big batch; the speed-up is the medians' ratio
        times = {(t["engine"], t["batch"]): t for t in sk["timings"]}
        loaded = [name for name, row in parity.items() if row["loaded"]]
        assert set(times) == {(e, b) for e in loaded for b in (1, r["sklearn_big_batch"])}
        for (_engine, batch), t in times.items():
            base = times["scikit-learn", batch]["median_ms"]
            assert t["speedup_vs_sklearn"] == pytest.approx(base / t["median_ms"])
            assert t["us_per_row"] == pytest.approx(t["median_ms"] * 1e3 / batch) and t["p90_ms"] >= t["median_ms"]
        assert sk["device"].startswith("cpu")
    first = next(iter(r["sklearn"].values()))
    assert r["sklearn_speedup_batch_1"]["theory"] == first["multiply_adds"]["sklearn"] / first["multiply_adds"]["onnx"]
    assert r["sklearn_speedup_batch_1"]["measured"] == pytest.approx(
        next(t["speedup_vs_sklearn"] for t in first["timings"] if (t["engine"], t["batch"]) == ("onnxruntime", 1)))
