"""The ONNX format version of every graph labkit writes by hand (not through an exporter).

    from labkit import onnx_format
    model = onnx_format.make_model(graph)                        # opset 17, IR version 8
    model = onnx_format.make_model(graph, {"com.microsoft": 1})  # plus ONNX Runtime's contrib ops

`onnx.helper.make_model` stamps a model with the newest IR version the installed `onnx` knows (IR 14 with onnx 1.23),
and ONNX Runtime refuses a model newer than it reads ("Unsupported model IR version: 14, max supported IR version:
13", seen with onnxruntime 1.30 beside onnx 1.23). The ops labkit's graphs use exist in opset 17, which IR version
8 carries (the ONNX versioning table: docs/Versioning.md in github.com/onnx/onnx), so any ONNX Runtime since 1.13
reads them, whatever `onnx` wrote them.
"""

from __future__ import annotations

OPSET = 17  # the default ("ai.onnx") operator set of labkit's hand-built graphs
IR_VERSION = 8  # the IR version that introduced opset 17 (onnx 1.12)


def make_model(graph, opsets: dict[str, int] | None = None):
    """An ONNX model around `graph`, stamped with OPSET and IR_VERSION.

    Args:
        graph: an `onnx.GraphProto` (`onnx.helper.make_graph`).
        opsets: other operator-set domains it uses, {domain: version}, e.g. {"com.microsoft": 1}.
    Returns:
        onnx.ModelProto (`.SerializeToString()` for `onnxruntime.InferenceSession`).
    """
    from onnx import helper  # optional package (the engines extra)

    imports = [helper.make_opsetid("", OPSET)] + [helper.make_opsetid(d, v) for d, v in (opsets or {}).items()]
    return helper.make_model(graph, opset_imports=imports, ir_version=IR_VERSION)
