import math

import numpy as np
import pytest
import torch

from labkit import convert, engines
from labkit.experiments import graph_optimization

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed here (install labkit[engines])")


@pytest.fixture(scope="module")
def bloom_raw():
    return convert.export_onnx(engines.graph_for("tiny-bloom"), optimize=False)


def test_export_is_cached_by_weights(bloom_raw):
    graph = engines.graph_for("tiny-bloom")
    assert convert.export_onnx(graph, optimize=False) == bloom_raw  # same weights: same file
    assert convert.fingerprint(graph) != convert.fingerprint(engines.graph_for("tiny-llama"))


def test_one_dynamic_export_serves_every_shape_and_a_fixed_one_each(bloom_raw):
    other = engines.graph_for("tiny-bloom", batch_size=3, seq_len=20)
    assert convert.export_onnx(other, optimize=False) == bloom_raw  # batch and seq are symbolic in the file
    first = engines.graph_for("tiny-bloom")
    assert convert.fingerprint(other, symbolic=True) == convert.fingerprint(first, symbolic=True)
    assert convert.fingerprint(other) != convert.fingerprint(first)  # a fixed-shape export (dynamic=False) is not
    import onnxruntime as ort

    session = ort.InferenceSession(str(bloom_raw), providers=["CPUExecutionProvider"])
    for graph in (first, other):
        got = session.run(None, graph.feeds(graph.example))[0]
        np.testing.assert_allclose(got, graph.reference(), rtol=1e-4, atol=1e-4)


def test_graph_stats(bloom_raw):
    stats = convert.graph_stats(bloom_raw)
    assert stats.nodes == sum(stats.op_counts.values()) > 100
    n_params = sum(p.numel() for p in engines.graph_for("tiny-bloom").module.parameters())
    assert stats.param_bytes >= 4 * n_params * 0.99
    assert stats.file_bytes > stats.param_bytes * 0.9


def test_enable_all_shrinks_tiny_bloom_and_names_fusions(bloom_raw):
    optimized = convert.optimize_onnx(bloom_raw, "all")
    diff = convert.graph_diff(bloom_raw, optimized)
    assert diff.nodes_after < diff.nodes_before * 0.5
    assert "com.microsoft:FastGelu" in diff.fused and "com.microsoft:SkipLayerNormalization" in diff.fused
    assert diff.removed["Tanh"] == 4  # the tanh-GELU of 4 layers became 4 FastGelu nodes


def test_every_ort_level_is_named_once():
    import onnxruntime as ort

    from labkit.convert.optimize import available_levels

    # the installed onnxruntime's enum is the independent source: each of its levels has exactly one labkit name
    chosen = [convert.session_options(lv).graph_optimization_level for lv in available_levels()]
    assert sorted(map(int, chosen)) == sorted(map(int, ort.GraphOptimizationLevel.__members__.values()))
    assert list(available_levels()) == [lv for lv in convert.ORT_LEVELS if lv in available_levels()]  # in order


def test_cnn_fusions_and_layout_per_level():
    from labkit.convert.optimize import available_levels

    raw = convert.export_onnx(engines.graph_for("digits-cnn"), optimize=False)
    level = {lv: convert.optimize_onnx(raw, lv) for lv in available_levels()}
    assert convert.graph_diff(level["disable"], level["basic"]).removed == {"BatchNormalization": 2}  # BN folded
    ext = convert.graph_diff(level["basic"], level["extended"])
    assert ext.added == {"com.microsoft:FusedConv": 2} and ext.removed == {"Conv": 2, "Relu": 2}  # conv+relu
    layout = convert.graph_diff(level["extended"], level["layout" if "layout" in level else "all"])
    assert "com.microsoft.nchwc:Conv" in layout.fused and "com.microsoft.nchwc:ReorderOutput" in layout.fused


def test_constant_folding_demo():
    demo = graph_optimization.constant_folding_demo()
    assert demo["ops_before"]["Mul"] == 1 and demo["ops_before"]["Add"] == 1
    assert demo["ops_after"] == {"MatMul": 1}


def test_three_formats_agree_with_eager():
    pytest.importorskip("openvino", reason="openvino is not installed here (install labkit[engines])")
    result = graph_optimization.convert_three_ways("digits-cnn")
    assert list(result.table.format) == ["ONNX", "OpenVINO IR", "TorchScript"]
    assert result.table.parity_ok.all()
    assert (result.table.MiB > 0.05).all()


def test_optimization_levels_table_and_drawing(bloom_raw):
    result = graph_optimization.optimization_levels("tiny-bloom")
    nodes = result.table.set_index("level").nodes
    assert nodes["all"] < nodes["basic"] < nodes["exported (raw)"]
    nodes_, edges = graph_optimization.neighbourhood(convert.optimize_onnx(bloom_raw, "all"), "FastGelu", radius=1)
    assert ("FastGelu" in dict(nodes_).values()) and len(edges) >= 2
    fig = graph_optimization.dag_figure(nodes_, edges, "after")
    assert len(fig.layout.annotations) == len(edges)
    with pytest.raises(ValueError, match="no Conv node"):
        graph_optimization.neighbourhood(bloom_raw, "Conv")


def test_plain_module_and_example_export(tmp_path):
    import onnxruntime as ort
    import torch

    module = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()).eval()
    path = convert.export_onnx(module, (torch.randn(2, 8),), path=tmp_path / "mlp.onnx")
    x = torch.randn(5, 8)  # another batch size: axis 0 is dynamic
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input_0": x.numpy()})[0]
    np.testing.assert_allclose(out, module(x).detach().numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="pass example inputs"):
        convert.export_onnx(module)


def test_bad_level(bloom_raw):
    choices = r"choose from \['disable', 'basic', 'extended', 'layout', 'all'\]"
    with pytest.raises(ValueError, match=choices):
        convert.session_options("max")
    with pytest.raises(ValueError, match=choices):
        convert.optimize_onnx(bloom_raw, "max")


def test_transformer_optimizer_fuses(bloom_raw):
    fused = convert.transformer_fusions(convert.export_onnx(engines.graph_for("tiny-bloom")), num_heads=8,
                                        hidden_size=256)
    ops = convert.graph_stats(fused).op_counts
    # Which fusions fire depends on the onnxruntime version (SkipLayerNorm needs its symbolic shape
    # inference); at least one fused op per layer must appear.
    assert sum(n for op, n in ops.items() if op.startswith("com.microsoft:")) >= 4, ops


def test_weight_matmuls_keeps_every_weight_matmul_and_nothing_else():
    model = convert.weight_matmuls(convert.export_onnx(engines.graph_for("tiny-bloom")), batch_size=1, seq_len=8)
    assert {n.op_type for n in model.graph.node} == {"MatMul"} and len(model.graph.node) == 4 * 4 + 1
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    assert shapes == {"x256": [1, 8, 256], "x1024": [1, 8, 1024]}  # hidden 256; the MLP's 4h input
    n_params = sum(p.numel() for n, p in engines.graph_for("tiny-bloom").module.named_parameters() if p.dim() == 2)
    assert sum(math.prod(t.dims) for t in model.graph.initializer) == n_params  # every 2-D weight, once (LM head tied)


@pytest.mark.parametrize("name", ["tiny-bloom", "tiny-llama"])
@pytest.mark.parametrize("fused", [True, False])
def test_exported_graph_runs_at_any_batch_and_sequence(name, fused):
    """Reported: a Llama graph exported from a batch-1 example declared `batch` dynamic but fixed it to 1
    (torch.export's 0/1 specialisation), so ONNX Runtime refused batch 2 with INVALID_ARGUMENT."""
    import onnxruntime as ort

    graph = engines.graph_for(name, 1, 8)
    session = ort.InferenceSession(str(convert.export_onnx(graph, fused_attention=fused)),
                                   providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    for batch in (1, 2, 3):
        for seq in (1, 5):
            ids = torch.randint(0, 100, (batch, seq), generator=generator)
            (got,) = session.run(None, {graph.input_names[0]: ids.numpy()})
            with torch.no_grad():
                want = graph.module(ids).numpy()
            assert got.shape == want.shape and abs(got - want).max() <= 1e-4 * abs(want).max(), (batch, seq)


def test_convert_three_ways_without_openvino_keeps_the_other_formats(monkeypatch):
    """A machine without openvino (the bare GPU box) still converts to ONNX and TorchScript, and says why not IR."""
    import importlib.util

    from labkit.experiments import graph_optimization

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    result = graph_optimization.convert_three_ways("tiny-bloom")
    assert list(result.table.format) == ["ONNX", "TorchScript"] and result.table.parity_ok.all()
    assert "openvino is not installed" in result.table.attrs["skipped"]["OpenVINO IR"]
