"""Conversion: a PyTorch module to ONNX / OpenVINO IR / TorchScript, graph optimisation and statistics, export
patches, and the ONNX Runtime GenAI model builder."""

from labkit.convert.export import as_graph, export_onnx, export_openvino, export_torchscript, fingerprint
from labkit.convert.genai import GenAIModel, GenAIUnavailable, build_genai, load_genai
from labkit.convert.graph import Graph
from labkit.convert.optimize import (
    FUSED_OPS,
    ORT_LEVELS,
    GraphDiff,
    GraphStats,
    available_levels,
    graph_diff,
    graph_stats,
    optimize_onnx,
    session_options,
    transformer_fusions,
    weight_matmuls,
)

__all__ = [
    "FUSED_OPS", "ORT_LEVELS", "GenAIModel", "GenAIUnavailable", "Graph", "GraphDiff", "GraphStats", "as_graph",
    "available_levels", "build_genai", "export_onnx", "export_openvino", "export_torchscript", "fingerprint",
    "graph_diff", "graph_stats", "load_genai", "optimize_onnx", "session_options", "transformer_fusions",
    "weight_matmuls",
]  # fmt: skip
