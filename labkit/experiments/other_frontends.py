"""Converting from another framework: a scikit-learn pipeline trained on the digits, converted to ONNX by skl2onnx
(`convert.from_sklearn`), run by the engines that load it, checked against scikit-learn's own predict_proba and
timed beside it at batch 1 and at a big batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from labkit import convert, devices, measure, plots
from labkit.convert.from_sklearn import (
    as_float32,
    onnx_multiply_adds,
    onnxruntime_classifier,
    openvino_classifier,
    sklearn_to_onnx,
)
from labkit.hardware import Unavailable
from labkit.models import cnn

CLASSIFIERS = ("logistic-regression", "mlp")


def classifier(kind: str = "logistic-regression", seed: int = 0):
    """An unfitted scikit-learn pipeline: StandardScaler, then the classifier `kind`.

    Args:
        kind: "logistic-regression" (LogisticRegression, lbfgs, max_iter 1000) or "mlp" (MLPClassifier, one hidden
            layer of 64 ReLU units, Adam, max_iter 400). seed: the MLP's initialisation and shuffling.
    Returns:
        a `sklearn.pipeline.Pipeline`.
    Raises:
        ValueError: an unknown kind, naming the choices.
    """
    if kind not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {kind!r}; choose from {list(CLASSIFIERS)}")
    from sklearn.linear_model import LogisticRegression  # optional (the engines extra)
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = (LogisticRegression(max_iter=1000) if kind == "logistic-regression"
             else MLPClassifier((64,), max_iter=400, random_state=seed))
    return make_pipeline(StandardScaler(), model)


def multiply_adds(pipeline) -> int:
    """Multiply-adds per row of the fitted classifier's matrix products, from its own weights: LogisticRegression's
    coef_ (classes × features; one row for two classes), MLPClassifier's coefs_ (Σ in × out). The scaler's
    elementwise work is not counted (as in `convert.from_sklearn.onnx_multiply_adds`, its independent count on the
    converted graph)."""
    model = pipeline[-1]
    weights = model.coefs_ if hasattr(model, "coefs_") else [model.coef_]
    return int(sum(w.size for w in weights))


def digits_arrays() -> dict[str, np.ndarray]:
    """The digits split the lab's CNN uses (`models.cnn.digits`: scikit-learn's bundled 8×8 images in [0, 1], 80/20),
    flattened to (n, 64) float32 rows for scikit-learn; labels (n,) int64."""
    d = cnn.digits()
    return {k: (v.flatten(1) if v.ndim > 1 else v).numpy() for k, v in d.items()}


def _sessions(path: Path, threads: int) -> tuple[dict, dict]:
    """The engines' callables on the file ({name: fn(x) -> (labels, probabilities)}), and for each engine that cannot
    load it the reason."""
    runs, failed = {"onnxruntime": onnxruntime_classifier(path, threads)}, {}
    try:
        runs["openvino"] = openvino_classifier(path, threads)
    except Unavailable as e:  # the reason is the lesson: reported in the parity table, never hidden
        failed["openvino"] = str(e)
    return runs, failed


@dataclass(frozen=True)
class FrontendRun:
    """What `sklearn_frontend` measured.

    table: timing rows per engine and batch. parity: one row per engine. figure: µs per row, engines side by side.
    onnx_path: the converted file (in labkit's cache). op_counts: its operators, "domain:op" → count (standard ONNX
    ops without a domain). accuracy: scikit-learn's on the held-out digits. sklearn_multiply_adds, onnx_multiply_adds:
    multiply-adds per row of the matrix products, counted on the fitted model (`multiply_adds`) and on the graph
    (`convert.from_sklearn.onnx_multiply_adds`): the arithmetic both engines do.
    """

    table: pd.DataFrame
    parity: pd.DataFrame
    figure: go.Figure
    onnx_path: Path
    op_counts: dict
    accuracy: float
    sklearn_multiply_adds: int
    onnx_multiply_adds: int


def sklearn_frontend(kind: str = "logistic-regression", batches: Sequence[int] = (1, 1024), repeat: int = 50,
                     rounds: int = 3, threads: int = 2) -> FrontendRun:
    """Train `classifier(kind)` on the digits, convert it with skl2onnx, check every engine that loads the file
    against scikit-learn, and time them side by side (`measure.benchmark_rounds`) per batch, on the CPU.

    Parity: on the held-out digits, max |p_engine − p_sklearn| over every probability (float32 graph vs scikit-learn's
    float64 arithmetic) and the share of labels equal to `predict`'s. A batch of b rows repeats the held-out rows
    (numpy.resize). scikit-learn's BLAS is limited to `threads` threads (threadpoolctl) while timed, as ONNX Runtime's
    and OpenVINO's intra-op pools are.

    Args:
        kind: one of CLASSIFIERS. batches: rows per call, each >= 1. repeat: timed calls per engine and batch (>= 1).
        rounds: rounds the calls are split over. threads: threads per engine (>= 1).
    Returns:
        FrontendRun. table: engine, batch, median_ms, p90_ms, us_per_row, speedup_vs_sklearn (scikit-learn's median ÷
        the engine's, same batch), device; parity: engine, loaded, max_abs_prob_diff, label_agreement, reason (why an
        engine could not load the file; "" when it did).
    Raises:
        ValueError: an unknown kind, a batch < 1, repeat, rounds or threads < 1 (before any training).
    """
    classifier(kind)  # the kind is checked first
    if not batches or min(batches) < 1 or repeat < 1 or rounds < 1 or threads < 1:
        raise ValueError(f"need batches >= 1 (at least one), repeat, rounds and threads >= 1; got {list(batches)}, "
                         f"{repeat}, {rounds}, {threads}")
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    data = digits_arrays()
    with threadpool_limits(threads):
        model = classifier(kind).fit(data["x_train"], data["y_train"])
    path = sklearn_to_onnx(model, data["x_train"].shape[1], f"digits-{kind}")
    runs, failed = _sessions(path, threads)
    x_test = as_float32(data["x_test"])
    reference, labels = model.predict_proba(x_test), model.predict(x_test)
    parity = [{"engine": "scikit-learn", "loaded": True, "max_abs_prob_diff": 0.0, "label_agreement": 1.0,
               "reason": ""}]
    for name, run in runs.items():
        got_labels, probs = run(x_test)
        parity.append({"engine": name, "loaded": True, "max_abs_prob_diff": float(np.abs(probs - reference).max()),
                       "label_agreement": float((got_labels.ravel() == labels).mean()), "reason": ""})
    parity += [{"engine": name, "loaded": False, "max_abs_prob_diff": float("nan"), "label_agreement": float("nan"),
                "reason": reason} for name, reason in failed.items()]
    rows = []
    for batch in batches:
        x = as_float32(np.resize(x_test, (batch, x_test.shape[1])))
        fns = {"scikit-learn": lambda x=x: model.predict_proba(x),
               **{name: (lambda run=run, x=x: run(x)) for name, run in runs.items()}}
        with threadpool_limits(threads):
            stats = measure.benchmark_rounds(fns, warmup=3, repeat=repeat, rounds=rounds, warmup_s=0.05)
        base = stats["scikit-learn"].median
        rows += [{"engine": name, "batch": batch, "median_ms": s.median * 1e3, "p90_ms": s.p90 * 1e3,
                  "us_per_row": s.median * 1e6 / batch, "speedup_vs_sklearn": base / s.median}
                 for name, s in stats.items()]
    table = measure.results_frame(rows, model=f"digits {kind}", threads=threads)
    table["device"] = devices.device_label("cpu")
    long = table.assign(batch=table.batch.map(lambda b: f"batch {b}"))
    fig = plots.bars(long, "batch", "us_per_row", f"scikit-learn vs its ONNX export ({kind}, {threads} threads)",
                     color="engine", ylabel="µs per row (median)")
    fig.update_yaxes(type="log")  # batch 1 and a big batch differ by orders of magnitude per row
    accuracy = float((labels == data["y_test"]).mean())
    return FrontendRun(table, pd.DataFrame(parity), fig, path, dict(convert.graph_stats(path).op_counts), accuracy,
                       multiply_adds(model), onnx_multiply_adds(path))
