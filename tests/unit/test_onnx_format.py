"""Graphs labkit builds by hand carry one ONNX format version, old enough for any recent ONNX Runtime: onnx 1.23's
default (IR 14) was refused by onnxruntime 1.30 on the GPU box ("max supported IR version: 13")."""

import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import numpy as np  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from labkit import onnx_format  # noqa: E402
from labkit.models import load_model  # noqa: E402
from labkit.serving.paged import onnx_layers  # noqa: E402


def test_a_hand_built_graph_is_stamped_and_runs():
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])  # fmt: skip
    model = onnx_format.make_model(graph, {"com.microsoft": 1})
    assert model.ir_version == onnx_format.IR_VERSION < onnx.IR_VERSION  # older than what onnx stamps by default
    assert {(o.domain, o.version) for o in model.opset_import} == {("", onnx_format.OPSET), ("com.microsoft", 1)}
    onnx.checker.check_model(model)  # IR 8 can carry opset 17
    out = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": np.array([-1.0, 2.0], np.float32)})[0]  # fmt: skip
    np.testing.assert_array_equal(out, [0.0, 2.0])


def test_the_paged_step_graph_uses_it():
    model, _ = load_model("tiny-llama", device="cpu")
    proto = onnx_layers.step_graph(model.eval())
    assert proto.ir_version == onnx_format.IR_VERSION
