"""GGUF blocks carried into MatMulNBits: the values against gguf's own dequantizer and transformers' GGUF loader, one
MatMulNBits node in ONNX Runtime against a matmul, and the converted SmolLM2 against the fp32 model it came from."""

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf", reason="the gguf package is not installed (labkit[quant])")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from gguf.quants import dequantize as gguf_dequantize  # noqa: E402

from labkit import models  # noqa: E402
from labkit.convert import gguf_blocks, gguf_nbits  # noqa: E402
from labkit.data import corpus  # noqa: E402
from labkit.models import smollm2  # noqa: E402

HEADS = {"attn_q": 9, "attn_k": 3}  # SmolLM2-135M


@pytest.fixture(scope="module")
def reader():
    path = smollm2.find_gguf() or smollm2.download_gguf()
    return gguf.GGUFReader(str(path))


def _tensor(reader, name):
    return next(t for t in reader.tensors if t.name == name)


@pytest.mark.parametrize("name", ["blk.0.ffn_up.weight", "blk.7.attn_v.weight", "token_embd.weight"])
def test_blocks_give_ggufs_own_values(reader, name):
    t = _tensor(reader, name)
    codes, d, m = gguf_blocks.decode_blocks(np.asarray(t.data), t.tensor_type.name)
    ours = (d[..., None] * codes.reshape(*d.shape, 32).astype(np.float32) + m[..., None]).reshape(codes.shape)
    reference = gguf_dequantize(np.asarray(t.data), t.tensor_type)  # the gguf package's dequantizer
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-6 * np.abs(reference).max())
    nbits = gguf_blocks.to_matmul_nbits(codes, d, m, gguf_blocks.BITS[t.tensor_type.name])
    np.testing.assert_allclose(gguf_blocks.dequantize(nbits, codes.shape[1]), reference, rtol=0,
                               atol=1e-6 * np.abs(reference).max())  # fmt: skip


@pytest.mark.parametrize(("part", "hf"), [("attn_q", "q_proj"), ("attn_k", "k_proj")])
def test_rows_come_back_in_the_order_transformers_loads(reader, part, hf):
    checkpoint = models.resolve("smollm2-135m").checkpoint_dir
    from safetensors.numpy import load_file

    weight = load_file(checkpoint / "model.safetensors")[f"model.layers.2.self_attn.{hf}.weight"]
    codes, d, m, bits = gguf_blocks.gguf_rows(reader, f"blk.2.{part}.weight", HEADS)
    ours = gguf_blocks.dequantize(gguf_blocks.to_matmul_nbits(codes, d, m, bits), codes.shape[1])
    np.testing.assert_allclose(ours, weight, rtol=0, atol=1e-6 * np.abs(weight).max())


@pytest.mark.parametrize("kind", ["Q4_1", "Q4_0", "Q8_0"])
def test_one_matmulnbits_node_computes_the_blocks_matmul(kind):
    """MatMulNBits (default zero point) + the block-sum residual branch in ONNX Runtime equals x @ Wᵀ, W from
    gguf's dequantizer; only Q4_1 needs the residual."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    n, k = 8, 64
    raw = rng.integers(0, 256, (n, k // 32 * gguf_blocks.BLOCK_BYTES[kind]), dtype=np.uint8)
    raw.reshape(n, k // 32, -1)[..., 0:2] = np.array([0.05], np.float16).view(np.uint8)  # d
    if kind == "Q4_1":
        raw.reshape(n, k // 32, -1)[..., 2:4] = np.array([-0.3], np.float16).view(np.uint8)  # m
    codes, d, m = gguf_blocks.decode_blocks(raw, kind)
    w = gguf_dequantize(raw, gguf.GGMLQuantizationType[kind])  # (n, k)
    arrays = gguf_blocks.to_matmul_nbits(codes, d, m, gguf_blocks.BITS[kind])
    assert bool(np.any(arrays["residual"])) == (kind == "Q4_1")
    node = helper.make_node("MatMulNBits", ["A", "B", "scales"], ["Y"], domain="com.microsoft", K=k, N=n,
                            bits=gguf_blocks.BITS[kind], block_size=32, accuracy_level=1)  # fmt: skip
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [1, 3, k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 3, n])],
                              [numpy_helper.from_array(arrays["B"], "B"),
                               numpy_helper.from_array(arrays["scales"], "scales")])  # fmt: skip
    if kind == "Q4_1":
        gguf_nbits.add_residual(graph, "Y", arrays["residual"], "w")
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    a = rng.standard_normal((1, 3, k)).astype(np.float32)
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"A": a})[0]
    np.testing.assert_allclose(y, a @ w.T, rtol=1e-5, atol=1e-5)


def test_rounded_zero_points_drop_the_residual_and_move_each_block_by_at_most_half_a_step():
    """zero_point="rounded": one MatMulNBits node with 4-bit zero points (no residual branch) in ONNX Runtime equals
    x @ Wᵀ for the weights `dequantize` says; those differ from gguf's values by one shift per block, |shift| ≤ d/2."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    n, k = 6, 96  # 3 blocks per row: an odd count, so the last zero-point byte holds one
    raw = rng.integers(0, 256, (n, k // 32 * gguf_blocks.BLOCK_BYTES["Q4_1"]), dtype=np.uint8)
    raw.reshape(n, k // 32, -1)[..., 0:2] = np.array([0.05], np.float16).view(np.uint8)  # d
    raw.reshape(n, k // 32, -1)[..., 2:4] = np.array([-0.33], np.float16).view(np.uint8)  # m: −m/d = 6.6
    codes, d, m = gguf_blocks.decode_blocks(raw, "Q4_1")
    arrays = gguf_blocks.to_matmul_nbits(codes, d, m, 4, zero_point="rounded")
    assert arrays["zero_points"].shape == (n * 2,) and not np.any(arrays["residual"])
    w = gguf_dequantize(raw, gguf.GGMLQuantizationType["Q4_1"])
    ours = gguf_blocks.dequantize(arrays, k)
    shift = np.repeat(arrays["shift"], 32, axis=1)  # (n, k): the block's shift at every value
    np.testing.assert_allclose(ours + shift, w, rtol=0, atol=1e-6)
    assert np.all(np.abs(arrays["shift"]) <= d / 2 + 1e-6) and np.any(arrays["shift"])
    node = helper.make_node("MatMulNBits", ["A", "B", "scales", "zp"], ["Y"], domain="com.microsoft", K=k, N=n,
                            bits=4, block_size=32, accuracy_level=1)  # fmt: skip
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [1, 2, k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2, n])],
                              [numpy_helper.from_array(arrays[a], b) for a, b in
                               (("B", "B"), ("scales", "scales"), ("zero_points", "zp"))])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(
        "com.microsoft", 1)])  # fmt: skip
    a = rng.standard_normal((1, 2, k)).astype(np.float32)
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"A": a})[0]
    np.testing.assert_allclose(y, a @ ours.T, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="exact"):
        gguf_blocks.to_matmul_nbits(codes, d, m, 8, zero_point="rounded")


def test_unsupported_blocks_are_named():
    with pytest.raises(gguf_blocks.Unavailable, match="Q4_1"):
        gguf_blocks.decode_blocks(np.zeros((1, 34), np.uint8), "Q5_K")


def test_converted_smollm2_equals_the_dequantized_model():
    """The converted model against the fp32 model made from the same GGUF: logits within fp32 accumulation error,
    top-1 agreement on held-out plays, and the same greedy tokens."""
    from labkit.generation import get_backend

    model, tok = models.load_model("smollm2-135m", device="cpu")
    backend = get_backend("ort-genai-gguf-q4_1", "smollm2-135m")
    backend.load("smollm2-135m", threads=2)
    text = corpus.shakespeare("test", max_chars=4000)  # held-out plays
    ids = tok(text)["input_ids"][:256]
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy()
    got = backend.logits([ids])[0]
    assert np.abs(got - ref).max() < 1e-2 * np.abs(ref).max()
    assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.99
    prompt = tok("The capital of France is")["input_ids"]
    want = model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False)[0, len(prompt):].tolist()
    assert backend.generate([prompt], 12, warmup=0, repeat=1).tokens == [want]
    # the file holds the GGUF's blocks once (the tied embedding too): the same codes, with an fp32 scale and residual
    # per block of 32 where ggml keeps fp16 ones (24 bytes per Q4_1 block instead of 20: at most 1.2× the GGUF's)
    assert backend.weight_bytes <= 1.2 * smollm2.gguf_tensor_bytes()
