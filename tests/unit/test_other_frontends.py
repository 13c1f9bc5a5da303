"""A non-PyTorch frontend: scikit-learn through skl2onnx, run by ONNX Runtime, checked against scikit-learn itself."""

import numpy as np
import pytest

from labkit import precision
from labkit.convert import from_sklearn
from labkit.experiments import other_frontends

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("skl2onnx")


@pytest.fixture
def blobs():
    """Three well-separated Gaussian classes in five features: data no lab uses, built here."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    x = (rng.normal(size=(120, 5)) + 3 * y[:, None]).astype(np.float32)
    return x, y


def test_converted_pipeline_computes_what_sklearn_computes_and_is_cached(blobs, tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))
    x, y = blobs
    model = other_frontends.classifier("logistic-regression").fit(x, y)
    path = from_sklearn.sklearn_to_onnx(model, x.shape[1], "blobs")
    assert path.is_relative_to(tmp_path / "onnx" / "sklearn") and path.suffix == ".onnx"
    stamp = path.stat().st_mtime_ns
    assert from_sklearn.sklearn_to_onnx(model, x.shape[1], "blobs") == path and path.stat().st_mtime_ns == stamp
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    labels, probs = session.run(["label", "probabilities"], {"X": x})
    assert probs.shape == (120, 3) and np.abs(probs - model.predict_proba(x)).max() <= precision.tolerance("fp32")
    assert (labels == model.predict(x)).all()
    assert from_sklearn.onnx_multiply_adds(path) == 3 * 5 == other_frontends.multiply_adds(model)  # classes × features
    other = other_frontends.classifier("logistic-regression").fit(x, (y + 1) % 3)  # other weights: another file
    assert from_sklearn.sklearn_fingerprint(other) != from_sklearn.sklearn_fingerprint(model)


def test_bad_conversion_input_is_refused(blobs):
    x, y = blobs
    model = other_frontends.classifier("logistic-regression").fit(x, y)
    with pytest.raises(ValueError, match="n_features"):
        from_sklearn.sklearn_to_onnx(model, 0, "blobs")
    with pytest.raises(ValueError, match="letters, digits"):
        from_sklearn.sklearn_to_onnx(model, 5, "../escape")


def test_sklearn_frontend_parity_and_side_by_side_timings():
    r = other_frontends.sklearn_frontend("logistic-regression", batches=(1, 16), repeat=3, rounds=1, threads=1)
    data = other_frontends.digits_arrays()
    assert data["x_train"].shape[1] == 64 and len(data["x_test"]) == len(data["y_test"])
    model = other_frontends.classifier("logistic-regression").fit(data["x_train"], data["y_train"])
    assert r.accuracy == pytest.approx((model.predict(data["x_test"]) == data["y_test"]).mean())
    parity = r.parity.set_index("engine")
    assert parity.loc["onnxruntime", "loaded"] and parity.loc["onnxruntime", "label_agreement"] == 1.0
    assert parity.loc["onnxruntime", "max_abs_prob_diff"] <= precision.tolerance("fp32")
    tol = precision.tolerance("fp32")
    for engine, row in parity.iterrows():  # OpenVINO either matched or named the ONNX-ML operator it lacks
        assert (row.loaded and row.max_abs_prob_diff <= tol) or "ai.onnx.ml" in row.reason, engine
    assert r.op_counts["ai.onnx.ml:Scaler"] == 1 and r.op_counts["ai.onnx.ml:LinearClassifier"] == 1
    assert r.sklearn_multiply_adds == r.onnx_multiply_adds == 64 * 10  # 8×8 pixels × ten digits
    t = r.table.set_index(["engine", "batch"])
    loaded = list(parity.index[parity.loaded])
    assert set(t.index) == {(e, b) for e in loaded for b in (1, 16)}
    for (engine, batch), row in t.iterrows():
        assert row.speedup_vs_sklearn == pytest.approx(t.loc[("scikit-learn", batch), "median_ms"] / row.median_ms)
        assert row.us_per_row == pytest.approx(row.median_ms * 1e3 / batch), engine
    assert len(r.figure.data) == len(loaded)  # one bar series per engine


@pytest.mark.filterwarnings("ignore:Stochastic Optimizer")  # 20 iterations: the weights' shapes are what counts
def test_mlp_multiply_adds_count_every_layer(blobs, tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))
    x, y = blobs
    model = other_frontends.classifier("mlp").set_params(mlpclassifier__max_iter=20).fit(x, y)
    path = from_sklearn.sklearn_to_onnx(model, x.shape[1], "blobs-mlp")
    assert from_sklearn.onnx_multiply_adds(path) == 5 * 64 + 64 * 3 == other_frontends.multiply_adds(model)


def test_openvino_refusal_keeps_its_summary():
    message = ("Exception from core.cpp:132:\nModel wasn't fully converted.\nSummary:\n-- No conversion rule found "
               "for operations: ai.onnx.ml.Scaler\n-- Conversion is failed for: ai.onnx.ml.Normalizer\n\n")
    assert from_sklearn.openvino_refusal(message) == ("No conversion rule found for operations: ai.onnx.ml.Scaler; "
                                                     "Conversion is failed for: ai.onnx.ml.Normalizer")
    assert from_sklearn.openvino_refusal("short  failure\nmessage") == "short failure message"


@pytest.mark.parametrize("kwargs, match", [({"kind": "svm"}, "choose from"), ({"batches": (1, 0)}, "batches >= 1"),
                                           ({"batches": ()}, "batches >= 1"), ({"threads": 0}, "threads >= 1"),
                                           ({"repeat": 0}, "repeat")])
def test_bad_input_is_refused_before_training(kwargs, match, monkeypatch):
    monkeypatch.setattr(other_frontends, "digits_arrays", lambda: pytest.fail("trained before checking"))
    with pytest.raises(ValueError, match=match):
        other_frontends.sklearn_frontend(**kwargs)
