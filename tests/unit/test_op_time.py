"""Time by kind of operator: the operators each profiler saw are the ones the work runs (counted independently
from the code), categories follow operator names, and the four rows add up to the profiled wall time."""

import pandas as pd
import pytest
import torch

from labkit.measure import op_time


def test_torch_profile_sees_the_operators_the_code_runs():
    a, b = torch.randn(64, 64), torch.randn(64, 64)

    def work():  # three matrix multiplies (mm, addmm, bmm) and one relu
        return (a @ b + torch.addmm(a, a, b)).relu() + torch.bmm(a[None], b[None])[0]

    r = op_time.profile_torch(work, repeat=3, warmup=1)
    calls = r.ops.set_index("op").calls
    assert calls.get("aten::mm") == 1 and calls.get("aten::addmm") == 1 and calls.get("aten::bmm") == 1
    assert r.ms("matrix multiply") > 0 and r.ms("other operators") > 0 and r.wall_ms > 0 and r.unprofiled_ms > 0
    operators = r.table.ms[:-1].sum()
    assert r.table.ms.sum() == pytest.approx(max(r.wall_ms, operators))  # the outside row fills the wall time
    assert list(r.table.category) == list(op_time.CATEGORIES)


def test_categories_follow_operator_names():
    assert op_time.torch_category("aten::addmm") == "matrix multiply"
    assert op_time.torch_category("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert op_time.torch_category("aten::linear") == "other operators"  # its own glue; the addmm inside is counted
    assert op_time.torch_category("c10d::allreduce_") == "communication"
    assert op_time.ort_category("MatMulNBits") == "matrix multiply" and op_time.ort_category("Attention") == "attention"
    assert op_time.ort_category("LayerNormalization") == "other operators"


def test_outside_is_the_wall_time_beyond_the_operators_and_never_negative():
    ops = pd.DataFrame([{"op": "a", "category": "matrix multiply", "calls": 1, "ms": 3.0},
                        {"op": "b", "category": "other operators", "calls": 2, "ms": 1.0}])  # fmt: skip
    r = op_time.split("engine", ops, wall_ms=5.0, unprofiled_ms=4.0)
    assert r.ms("outside operators") == 1.0 and r.ms("attention") == 0.0 and r.table.share.sum() == pytest.approx(1)
    assert op_time.split("engine", ops, wall_ms=3.5, unprofiled_ms=3.0).ms("outside operators") == 0.0


def test_onnxruntime_profile_sees_the_graphs_nodes(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8)).eval()
    path = tmp_path / "mlp.onnx"
    torch.onnx.export(model, (torch.randn(1, 32),), str(path), input_names=["x"], dynamo=False)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep Gemm, Relu, Gemm as exported
    opts.profile_file_prefix = str(tmp_path / "prof")
    r = op_time.profile_onnxruntime(str(path), opts, {"x": torch.randn(1, 32).numpy()}, repeat=4, warmup=2)
    calls = r.ops.set_index("op").calls
    assert calls["Gemm"] == 2 and calls["Relu"] == 1 and r.engine == "ONNX Runtime"
    assert r.ms("matrix multiply") > 0 and r.wall_ms > 0


def test_bad_repeat_is_refused_before_running():
    with pytest.raises(ValueError, match="repeat must be >= 1"):
        op_time.profile_torch(lambda: 1 / 0, repeat=0)
