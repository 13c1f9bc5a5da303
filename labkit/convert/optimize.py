"""Graph optimisation: what ONNX Runtime's levels and fusions do to an exported graph (op counts, fusions,
layout changes), and the MatMul-only model that no optimisation can shrink.

onnx and onnxruntime are optional (the `engines` extra): each function imports them when called.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from labkit import onnx_format
from labkit.hardware import Unavailable

# ONNX Runtime's graph optimisation levels, in order (`onnxruntime.GraphOptimizationLevel`; the C API's enum
# `GraphOptimizationLevel` in onnxruntime_c_api.h: ORT_DISABLE_ALL = 0, ORT_ENABLE_BASIC = 1, ORT_ENABLE_EXTENDED = 2,
# ORT_ENABLE_LAYOUT = 3 (since onnxruntime 1.23), ORT_ENABLE_ALL = 99). Each level runs every rewrite of the levels
# before it (onnxruntime.ai/docs/performance/model-optimizations/graph-optimizations.html).
ORT_LEVELS = ("disable", "basic", "extended", "layout", "all")
_ORT_ENUM = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
             "layout": "ORT_ENABLE_LAYOUT", "all": "ORT_ENABLE_ALL"}  # fmt: skip
# Standard-domain ops that appear in an optimised graph only as fusions of smaller ones. Ops in ORT's
# own domains (com.microsoft, com.microsoft.nchwc) exist only as fusions or layout rewrites.
FUSED_OPS = {"LayerNormalization", "Gelu", "Attention", "RotaryEmbedding", "GroupNormalization"}


def available_levels() -> tuple[str, ...]:
    """The levels of ORT_LEVELS that the installed onnxruntime has ("layout" needs onnxruntime >= 1.23).

    Returns:
        a sub-tuple of ORT_LEVELS, in order.
    """
    import onnxruntime as ort  # optional package

    return tuple(lv for lv in ORT_LEVELS if hasattr(ort.GraphOptimizationLevel, _ORT_ENUM[lv]))


def session_options(level: str = "all", num_threads: int | None = None):
    """ONNX Runtime session options at an optimisation level.

    Args:
        level: one of ORT_LEVELS: "disable"; "basic" (constant folding, redundant-node removal, simple fusions that
            any execution provider can run); "extended" (operator fusions into ORT's own kernels: GELU, LayerNorm,
            Conv+activation, ...); "layout" (+ layout changes such as the CPU's blocked NCHWc); "all" (every
            rewrite this onnxruntime has).
        num_threads: intra-op threads; None lets ONNX Runtime choose.
    Returns:
        an `onnxruntime.SessionOptions`.
    Raises:
        ValueError: for an unknown level, naming the valid ones.
        Unavailable: a level the installed onnxruntime does not have ("layout" before 1.23).
    """
    import onnxruntime as ort  # optional package

    if level not in ORT_LEVELS:
        raise ValueError(f"unknown optimisation level {level!r}; choose from {list(ORT_LEVELS)}")
    if level not in available_levels():
        raise Unavailable(f"onnxruntime {ort.__version__} has no {_ORT_ENUM[level]} (added in 1.23); "
                          f"choose from {list(available_levels())}")
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _ORT_ENUM[level])
    so.log_severity_level = 3  # errors only: the NCHWc "hardware specific" warning is expected
    if num_threads:
        so.intra_op_num_threads = num_threads
    return so


def optimize_onnx(path: Path | str, level: str = "all", num_threads: int | None = None) -> Path:
    """Let ONNX Runtime optimise the graph at `level` and write the result next to the input (cached).

    Args:
        path: an ONNX file. level: one of ORT_LEVELS (see `session_options`).
        num_threads: intra-op threads of the optimising session; None lets ONNX Runtime choose.
    Returns:
        the optimised file, `<stem>.ort-<level>.onnx`.
    Raises:
        ValueError: for an unknown level, naming the valid ones.
        Unavailable: a level the installed onnxruntime does not have.
    """
    import onnxruntime as ort  # optional package

    so = session_options(level, num_threads)  # validates the level before anything is written
    path = Path(path)
    out = path.with_name(f"{path.stem}.ort-{level}.onnx")
    if not out.exists():
        so.optimized_model_filepath = str(out)
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return out


@dataclass(frozen=True)
class GraphStats:
    nodes: int
    op_counts: Counter  # "Op" or "domain:Op" for non-standard domains (com.microsoft, nchwc)
    param_bytes: int
    file_bytes: int


def _op_name(node) -> str:
    return f"{node.domain}:{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type


def graph_stats(path: Path | str) -> GraphStats:
    """Node count, op-type counts and weight bytes of an ONNX file.

    Args:
        path: an ONNX file (weights inside it).
    Returns:
        GraphStats: nodes, op_counts ("Op", or "domain:Op" outside the standard domain), param_bytes (initializer
        bytes), file_bytes.
    """
    import onnx  # optional package
    from onnx import numpy_helper

    model = onnx.load(str(path))
    counts = Counter(_op_name(n) for n in model.graph.node)
    params = sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer)
    return GraphStats(len(model.graph.node), counts, params, Path(path).stat().st_size)


@dataclass(frozen=True)
class GraphDiff:
    nodes_before: int
    nodes_after: int
    removed: dict[str, int]  # op -> how many fewer
    added: dict[str, int]  # op -> how many more
    fused: list[str]  # added ops that are fusions / layout rewrites


def graph_diff(before: Path | str, after: Path | str) -> GraphDiff:
    """Which op types disappeared and which appeared between two ONNX files.

    Args:
        before, after: ONNX files, e.g. a raw export and its `optimize_onnx` result.
    Returns:
        GraphDiff: node counts, removed / added op counts, and the added ops that are fusions or layout rewrites
        (ORT's own domains, or FUSED_OPS).
    """
    a, b = graph_stats(before), graph_stats(after)
    removed, added = dict(a.op_counts - b.op_counts), dict(b.op_counts - a.op_counts)
    fused = sorted(op for op in added if ":" in op or op in FUSED_OPS)
    return GraphDiff(a.nodes, b.nodes, removed, added, fused)


def transformer_fusions(path: Path | str, num_heads: int, hidden_size: int, model_type: str = "gpt2") -> Path:
    """onnxruntime.transformers' optimizer: pattern-matches attention, LayerNorm, GELU into fused ops (cached).

    Args:
        path: an ONNX file. num_heads, hidden_size: the model's attention shape. model_type: the optimizer's
            pattern set (e.g. "gpt2", "bert").
    Returns:
        the fused file, `<stem>.fused-<model_type>.onnx`.
    """
    from onnxruntime.transformers import optimizer  # optional package

    path = Path(path)
    out = path.with_name(f"{path.stem}.fused-{model_type}.onnx")
    if not out.exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = optimizer.optimize_model(str(path), model_type=model_type, num_heads=num_heads,
                                             hidden_size=hidden_size, opt_level=0)
        model.save_model_to_file(str(out))
    return out


def weight_matmuls(path: Path | str, batch_size: int, seq_len: int):
    """A model of only the MatMuls with a constant weight in `path`: the work no graph optimisation removes.

    Args:
        path: an ONNX file of a transformer. batch_size, seq_len: the shape of the activations fed to it.
    Returns:
        an `onnx.ModelProto` with the same weights and one float input per inner dimension K, shaped
        (batch_size, seq_len, K), and one output per MatMul (timed by `experiments.engine_comparison.matmul_ceiling`).
    Raises:
        ValueError: when the file has no MatMul with a constant weight.
    """
    import onnx  # optional package
    from onnx import TensorProto, helper

    # after ORT's basic level every weight is a plain initializer (transposes of tied weights folded)
    model = onnx.load(str(optimize_onnx(path, "basic")))
    weights = {t.name: t for t in model.graph.initializer}
    nodes, inputs, used = [], {}, {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in weights:
            w = weights[node.input[1]]
            k = w.dims[0]  # (batch, seq, k) @ (k, n)
            inputs.setdefault(k, helper.make_tensor_value_info(f"x{k}", TensorProto.FLOAT, [batch_size, seq_len, k]))
            nodes.append(helper.make_node("MatMul", [f"x{k}", w.name], [f"y{len(nodes)}"]))
            used[w.name] = w
    if not nodes:
        raise ValueError(f"{path} has no MatMul with a constant weight")
    outputs = [helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT, None) for n in nodes]
    graph = helper.make_graph(nodes, "weight_matmuls", list(inputs.values()), outputs, list(used.values()))
    return onnx_format.make_model(graph)
