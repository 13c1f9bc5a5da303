"""Conversion: a PyTorch module to ONNX / OpenVINO IR / TorchScript, graph statistics, export patches."""

from labkit.convert.export import (  # noqa: F401  (the package's public names)
    FUSED_OPS,
    ORT_LEVELS,
    GraphDiff,
    GraphStats,
    as_graph,
    export_onnx,
    export_openvino,
    export_torchscript,
    fingerprint,
    graph_diff,
    graph_stats,
    optimize_onnx,
    session_options,
    transformer_fusions,
    weight_matmuls,
)
