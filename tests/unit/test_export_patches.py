"""The export patch for BLOOM attention: same function, one ONNX Attention node per layer, patch undone."""

import numpy as np
import pytest
import torch

from labkit import convert, engines, models
from labkit.convert import export_patches


def test_patched_forward_computes_the_same_logits_and_is_undone():
    graph = engines.graph_for("tiny-bloom", batch_size=2, seq_len=12)
    module = graph.module
    with torch.no_grad():
        before = module(*graph.example)
        with export_patches.patched_for_export(module) as n_patched:
            patched = module(*graph.example)
            assert all("forward" in vars(m) for m in module.modules() if type(m).__name__ == "BloomAttention")
        after = module(*graph.example)
    assert n_patched == models.get_config("tiny-bloom").n_layer
    torch.testing.assert_close(patched, before, atol=1e-5, rtol=1e-5)
    assert torch.equal(after, before)
    assert not any("forward" in vars(m) for m in module.modules())  # back to transformers' code


def test_the_custom_op_is_per_head_attention_with_an_additive_bias():
    torch.manual_seed(0)
    b, s, heads, d = 2, 5, 4, 8
    q, k, v = (torch.randn(b, s, heads * d) for _ in range(3))
    bias = torch.randn(b, heads, s, s)
    out = export_patches.alibi_attention(q, k, v, bias, heads, 0.3)
    split = lambda t: t.view(b, s, heads, d).transpose(1, 2)  # noqa: E731  (batch, heads, seq, head_dim)
    weights = torch.softmax(split(q) @ split(k).transpose(-1, -2) * 0.3 + bias, dim=-1)
    expected = (weights @ split(v)).transpose(1, 2).reshape(b, s, heads * d)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)


def test_fused_export_has_one_attention_node_per_layer_and_runs_any_shape():
    ort = pytest.importorskip("onnxruntime")
    graph = engines.graph_for("tiny-bloom", batch_size=1, seq_len=8)
    plain, fused = convert.export_onnx(graph, fused_attention=False), convert.export_onnx(graph)
    assert plain != fused and "-fused" in fused.name
    layers = models.get_config("tiny-bloom").n_layer
    plain_ops, fused_ops = convert.graph_stats(plain).op_counts, convert.graph_stats(fused).op_counts
    assert fused_ops["Attention"] == layers and plain_ops["Attention"] == 0
    assert plain_ops["Softmax"] == layers and fused_ops["Softmax"] == 0
    # what ONNX Runtime runs after its own optimisation: the fused graph is much smaller
    assert convert.graph_stats(convert.optimize_onnx(fused, "all")).nodes < 0.7 * convert.graph_stats(
        convert.optimize_onnx(plain, "all")).nodes
    session = ort.InferenceSession(str(fused), providers=["CPUExecutionProvider"])
    for batch, seq in [(1, 8), (3, 21)]:
        other = engines.graph_for("tiny-bloom", batch_size=batch, seq_len=seq)
        got = session.run(None, {"input_ids": other.example[0].numpy()})[0]
        np.testing.assert_allclose(got, other.reference(), atol=1e-4, rtol=1e-4)


def test_models_without_a_patch_export_as_before():
    graph = engines.graph_for("tiny-llama", batch_size=1, seq_len=8)
    assert export_patches.patchable(graph.module) == []
    assert export_patches.patchable(engines.graph_for("tiny-bloom").module) == ["BloomAttention"]
    assert convert.export_onnx(graph) == convert.export_onnx(graph, fused_attention=False)


def test_eager_can_run_the_patched_forward_for_comparison():
    graph = engines.graph_for("tiny-bloom", batch_size=1, seq_len=16)
    session = engines.get_engine("torch-eager").prepare(graph, export_patches=True)
    assert "export-patched" in session.info.provider
    assert engines.check_parity(session, graph).ok
    assert not any("forward" in vars(m) for m in graph.module.modules())
