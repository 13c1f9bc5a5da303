"""A frontend that is not PyTorch: scikit-learn estimators and pipelines to ONNX with skl2onnx.

skl2onnx walks a fitted estimator (or a whole `Pipeline`) and writes one ONNX operator per step: preprocessing and
linear models go to the ONNX-ML domain (`ai.onnx.ml`: Scaler, LinearClassifier, Normalizer, TreeEnsemble...), neural
networks to standard ONNX ops (MatMul, Add, Relu, Softmax). Any runtime that implements the ops it uses can then run
the model — ONNX Runtime implements both domains; not every engine has the ONNX-ML one (`openvino_classifier` raises
`Unavailable` naming the operators OpenVINO's ONNX frontend refused).
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np

from labkit.cache import cache_dir
from labkit.convert.optimize import session_options
from labkit.hardware import Unavailable


def sklearn_fingerprint(estimator) -> str:
    """12 hex digits of a hash of the fitted estimator (its pickle: parameters and learned weights).

    Args:
        estimator: any picklable scikit-learn estimator or pipeline.
    Returns:
        the fingerprint: equal for equal fitted models, different when a weight or parameter differs.
    """
    return hashlib.sha1(pickle.dumps(estimator, protocol=5)).hexdigest()[:12]


def sklearn_to_onnx(estimator, n_features: int, name: str, target_opset: int | None = None) -> Path:
    """Convert a fitted scikit-learn classifier (or pipeline ending in one) to ONNX with skl2onnx; cached.

    The graph takes one float32 input "X" of shape (batch, n_features), batch dynamic, and returns "label" (batch,)
    int64 and "probabilities" (batch, classes) float32: skl2onnx's `zipmap` option is switched off, so the
    probabilities are a plain tensor instead of a list of {class: probability} maps.

    Args:
        estimator: a fitted classifier with predict_proba (or a Pipeline ending in one).
        n_features: columns of the input (>= 1).
        name: a label for the file name (letters, digits, "-" and "_").
        target_opset: the ONNX opset to target; None: skl2onnx's newest that the installed onnx supports.
    Returns:
        the .onnx file, under `labkit.cache.cache_dir("onnx", "sklearn")` (never in the repository), named after
        `name`, the estimator's fingerprint, the opset and skl2onnx's version; converted only when missing.
    Raises:
        ValueError: n_features < 1 or a name with other characters.
    """
    if n_features < 1:
        raise ValueError(f"n_features must be >= 1, got {n_features}")
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"name {name!r}: use letters, digits, '-' and '_' only")
    import skl2onnx  # optional (the engines extra)
    from skl2onnx.common.data_types import FloatTensorType

    path = cache_dir("onnx", "sklearn") / (f"{name}-{sklearn_fingerprint(estimator)}-opset{target_opset or 'auto'}"
                                           f"-skl2onnx{skl2onnx.__version__}.onnx")
    if not path.exists():
        model = skl2onnx.convert_sklearn(estimator, initial_types=[("X", FloatTensorType([None, n_features]))],
                                         options={"zipmap": False}, target_opset=target_opset)
        tmp = path.with_suffix(".part")
        tmp.write_bytes(model.SerializeToString())
        tmp.rename(path)  # atomic: a half-written file is never taken for a converted one
    return path


def as_float32(x) -> np.ndarray:
    """The input as the graph takes it: a C-contiguous float32 (batch, n_features) array."""
    return np.ascontiguousarray(x, dtype=np.float32)


def onnx_multiply_adds(path: Path) -> int:
    """Multiply-adds per input row of the graph's matrix products: Σ over MatMul / Gemm nodes of their weight's size
    (an initializer of shape (in, out): in × out per row), plus the `coefficients` of each ONNX-ML LinearClassifier /
    LinearRegressor (classes × features per row). Elementwise ops (Scaler, Add, Softmax) are not counted.

    Args:
        path: an ONNX file with its weights inside.
    Returns:
        the count (int).
    """
    import onnx  # optional (the engines extra)

    graph = onnx.load(str(path)).graph
    sizes = {t.name: int(np.prod(t.dims)) for t in graph.initializer}
    total = 0
    for node in graph.node:
        if node.op_type in ("MatMul", "Gemm"):
            total += max(sizes.get(name, 0) for name in node.input[:2])
        elif node.op_type in ("LinearClassifier", "LinearRegressor"):
            total += sum(len(a.floats) for a in node.attribute if a.name == "coefficients")
    return total


def onnxruntime_classifier(path: Path, threads: int | None = None):
    """The converted classifier in an ONNX Runtime CPU session (every graph optimisation on).

    Args:
        path: a `sklearn_to_onnx` file. threads: intra-op threads (None: ONNX Runtime's choice).
    Returns:
        fn(x (batch, n_features) float32) -> (labels (batch,) int64, probabilities (batch, classes) float32).
    """
    import onnxruntime as ort  # optional (the engines extra)

    session = ort.InferenceSession(str(path), session_options("all", threads), providers=["CPUExecutionProvider"])
    return lambda x: tuple(session.run(["label", "probabilities"], {"X": x}))


def openvino_classifier(path: Path, threads: int | None = None):
    """The converted classifier compiled by OpenVINO's CPU plugin in f32, if its ONNX frontend converts every operator.

    Args:
        path: a `sklearn_to_onnx` file. threads: inference threads (None: OpenVINO's choice).
    Returns:
        fn(x (batch, n_features) float32) -> (labels (batch,), probabilities (batch, classes)), as numpy arrays.
    Raises:
        Unavailable: OpenVINO's frontend could not convert the graph (most ONNX-ML operators have no conversion rule
            in it); the message is `openvino_refusal`'s summary. Any other error passes through.
    """
    import openvino as ov  # optional (the engines extra)

    config = {"INFERENCE_PRECISION_HINT": "f32", **({"INFERENCE_NUM_THREADS": threads} if threads else {})}
    try:
        compiled = ov.Core().compile_model(str(path), "CPU", config)
    except RuntimeError as e:  # OpenVINO raises RuntimeError for everything: only a conversion refusal means "cannot"
        if "OpConversionFailure" not in str(e) and "wasn't fully converted" not in str(e):
            raise
        raise Unavailable(openvino_refusal(str(e))) from e
    request = compiled.create_infer_request()

    def run(x):
        out = request.infer({0: x})
        return np.asarray(out[compiled.output("label")]), np.asarray(out[compiled.output("probabilities")])

    return run


def openvino_refusal(message: str) -> str:
    """The summary of OpenVINO's refusal to convert a graph: its "Summary:" lines ("No conversion rule found for
    operations: ai.onnx.ml.Scaler, ..."), joined by "; "; the message's last 300 characters when it has none."""
    summary = message.split("Summary:", 1)[1] if "Summary:" in message else ""
    lines = [line.strip().removeprefix("-- ") for line in summary.splitlines() if line.strip().startswith("--")]
    return "; ".join(lines) or " ".join(message.split())[-300:]
