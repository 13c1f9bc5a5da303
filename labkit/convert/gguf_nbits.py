"""GGUF's quantized blocks carried into ONNX Runtime's MatMulNBits, block for block: the same bits, another engine.

A GGUF file stores a weight row in blocks of 32 values (ggml's `block_q4_1`: a scale d and a minimum m as fp16, then
32 4-bit codes, element j in the low nibble of byte j and element j + 16 in the high nibble; w = d·q + m). ONNX
Runtime's `MatMulNBits` stores the same blocks (B: codes packed two per byte, element 2j low and 2j + 1 high; one
scale s per block and, left out, the zero point 2^(bits−1); w = s·(q − 2^(bits−1))). With s = d every block differs
from ggml's by a constant r = m + 2^(bits−1)·d, and Σ_j (d·q_j + m)·x_j = MatMulNBits(x) + r·Σ_j x_j: the block sums of
x times r, a matmul 32 times smaller, added after. So the codes are carried over as they are:

    kind   ggml block                                  MatMulNBits (s = d)        residual r per block
    Q4_1   d, m (fp16), 32 × 4-bit q:  w = d·q + m      bits 4, codes q            m + 8d
    Q4_0   d (fp16),    32 × 4-bit q:  w = d·(q − 8)    bits 4, codes q            0
    Q8_0   d (fp16),    32 × int8 q:   w = d·q          bits 8, codes q + 128      0

(A floating-point zero point −m/d would say the same in one op, but ONNX Runtime's CPU kernels then dequantize the
whole matrix at every call — measured 15× slower — and refuse it at 8 bits.) `zero_point="rounded"` drops the
residual instead: each Q4_1 block gets the integer zero point z = round(−m/d) clipped to 0..15, one op on the fast
kernel, and every value of the block moves by d·(−m/d − z), at most d/2 when −m/d is in range: not exact, so its
agreement with the reference is measured (`benchmarks/decode.py`). Measured on SmolLM2 (2-core Xeon, int8
activations): 1.05× the residual path's tokens/s, top-1 agreement 0.70 against its 0.98. A shift shared by the 32
values of a block does not average out the way independent rounding errors do: the residual stays the default.

llama.cpp's converter reorders the rows of attn_q / attn_k for its RoPE layout; whole rows move, so the blocks are
carried over and only their row order is undone (transformers' GGUF loader's `_reverse_permute_weights`).
`convert()` takes ONNX Runtime GenAI's int4 build of the same checkpoint as the graph (fused QKV,
GroupQueryAttention, its generation loop) and replaces every MatMulNBits' weights, and the embedding lookup's, with
the GGUF's own blocks.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from labkit.cache import cache_dir
from labkit.convert.gguf_blocks import QK, ZERO_POINTS, gguf_rows, to_matmul_nbits
from labkit.hardware import Unavailable

# ONNX Runtime GenAI's weight names -> the GGUF tensors whose rows they hold, in order (llama architecture)
GGUF_SOURCES = {"attn.qkv_proj": ("attn_q", "attn_k", "attn_v"), "attn.o_proj": ("attn_output",),
                "mlp.gate_proj": ("ffn_gate",), "mlp.up_proj": ("ffn_up",), "mlp.down_proj": ("ffn_down",)}


def convert(gguf_path: Path | str, template_dir: Path | str, accuracy_level: int = 0,
            zero_point: str = "exact") -> Path:
    """An ONNX Runtime GenAI model folder whose MatMulNBits weights are the GGUF file's own blocks.

    Args:
        gguf_path: a llama-architecture GGUF with Q4_0 / Q4_1 / Q8_0 matrices (SmolLM2: Q4_1, a Q8_0 embedding).
        template_dir: ONNX Runtime GenAI's int4 build of the same model (`genai.build_genai(checkpoint, "int4")`):
            its graph, config and tokenizer are kept, its MatMulNBits weights replaced.
        accuracy_level: MatMulNBits' compute type: 0 / 1 = fp32 activations (exact), 4 = int8 activations.
        zero_point: "exact" or "rounded" (`to_matmul_nbits`; Q4_0 and Q8_0 blocks need no zero point either way).
    Returns:
        the folder (cached under LABKIT_CACHE/genai; built once per GGUF file, template and accuracy level).
    Raises:
        Unavailable: the `gguf` or `onnx` package is missing, or a block type is not supported.
        KeyError: a template weight with no GGUF tensor behind it.
    """
    try:
        import gguf  # optional packages
        import onnx
        from onnx import numpy_helper
    except ImportError as err:
        raise Unavailable(f"converting GGUF needs the gguf and onnx packages: {err}") from err
    gguf_path, template_dir = Path(gguf_path), Path(template_dir)
    if zero_point not in ZERO_POINTS:
        raise ValueError(f"zero_point must be one of {ZERO_POINTS}, got {zero_point!r}")
    rounded = zero_point == "rounded"
    key = hashlib.sha256(f"{gguf_path.resolve()}|{template_dir.resolve()}|{accuracy_level}{'|zp' * rounded}"
                         .encode()).hexdigest()  # fmt: skip
    out = cache_dir("genai") / f"{gguf_path.stem}-nbits-a{accuracy_level}{'-zp' * rounded}-{key[:8]}"
    if (out / "genai_config.json").exists():
        return out
    reader = gguf.GGUFReader(str(gguf_path))
    arch = reader.fields["general.architecture"].contents()
    heads = {"attn_q": int(reader.fields[f"{arch}.attention.head_count"].contents()),
             "attn_k": int(reader.fields[f"{arch}.attention.head_count_kv"].contents())}
    model = onnx.load(str(template_dir / "model.onnx"))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    for node in [n for n in graph.node if n.op_type == "MatMulNBits"]:
        weight = node.input[1]  # e.g. model.layers.3.attn.qkv_proj.MatMul.weight_Q4
        parts = _gguf_names(weight)
        blocks = [gguf_rows(reader, p, heads) for p in parts]
        if len({b[3] for b in blocks}) != 1:
            raise Unavailable(f"{weight}: its GGUF parts {parts} mix block types")
        codes, d, m = (np.concatenate([b[i] for b in blocks]) for i in range(3))
        bits = blocks[0][3]
        arrays = to_matmul_nbits(codes, d, m, bits, zero_point if bits == 4 and np.any(m + 8 * d) else "exact")
        for old in node.input[1:]:
            graph.initializer.remove(inits.pop(old))
        stem = weight.rsplit(".weight", 1)[0] + ".gguf"
        graph.initializer.extend([numpy_helper.from_array(arrays["B"], f"{stem}.B"),
                                  numpy_helper.from_array(arrays["scales"], f"{stem}.scales")])
        del node.input[1:]
        node.input.extend([f"{stem}.B", f"{stem}.scales"])  # no zero points: the default, 2^(bits−1)
        if "zero_points" in arrays:
            graph.initializer.append(numpy_helper.from_array(arrays["zero_points"], f"{stem}.zero_points"))
            node.input.append(f"{stem}.zero_points")
        attrs = {"bits": blocks[0][3], "block_size": QK, "accuracy_level": accuracy_level, "N": codes.shape[0],
                 "K": codes.shape[1]}  # fmt: skip
        for a in node.attribute:
            if a.name in attrs:
                a.i = attrs.pop(a.name)
        node.attribute.extend(onnx.helper.make_attribute(k, v) for k, v in attrs.items())
        if np.any(arrays["residual"]):
            add_residual(graph, node.output[0], arrays["residual"], stem)
    _embedding_from_gguf(model, reader, heads)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(template_dir, tmp, ignore=shutil.ignore_patterns("model.onnx*", "build.log", "tmp"))
    onnx.save(model, str(tmp / "model.onnx"), save_as_external_data=True, location="model.onnx.data")
    (tmp / "gguf_source.json").write_text(json.dumps({"gguf": str(gguf_path), "template": str(template_dir),
                                                      "accuracy_level": accuracy_level,
                                                      "zero_point": zero_point}))  # fmt: skip
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def add_residual(graph, output: str, residual: np.ndarray, stem: str) -> None:
    """After the MatMulNBits node of `graph` that writes `output` (over x of (batch, seq, K)), add
    (block sums of x) @ residualᵀ to what it writes.

    x (batch, seq, K) -> Reshape (batch, seq, K/32, 32) -> ReduceSum over the 32 -> (batch, seq, K/32) -> MatMul with
    residualᵀ (K/32, N) -> Add to MatMulNBits' (batch, seq, N), under the old output name.

    Args:
        graph: an onnx GraphProto (changed in place). output: the node's output name. residual: (N, K/32) float32.
        stem: a prefix for the new initializers and nodes.
    """
    from onnx import helper, numpy_helper

    at, node = next((i, n) for i, n in enumerate(graph.node) if output in n.output)
    nb = residual.shape[1]
    out, raw = output, f"{stem}/nbits_out"
    node.output[0] = raw
    graph.initializer.extend([numpy_helper.from_array(np.array([0, 0, nb, QK], np.int64), f"{stem}.block_shape"),
                              numpy_helper.from_array(np.array([-1], np.int64), f"{stem}.last_axis"),
                              numpy_helper.from_array(np.ascontiguousarray(residual.T), f"{stem}.residual_T")])
    new = [helper.make_node("Reshape", [node.input[0], f"{stem}.block_shape"], [f"{stem}/blocks"]),
           helper.make_node("ReduceSum", [f"{stem}/blocks", f"{stem}.last_axis"], [f"{stem}/block_sums"], keepdims=0),
           helper.make_node("MatMul", [f"{stem}/block_sums", f"{stem}.residual_T"], [f"{stem}/residual_out"]),
           helper.make_node("Add", [raw, f"{stem}/residual_out"], [out])]
    for i, n in enumerate(new):
        n.name = f"{stem}/{n.op_type}"
        graph.node.insert(at + 1 + i, n)


def _embedding_from_gguf(model, reader, heads: dict[str, int]) -> None:
    """Point the template's embedding lookup (GatherBlockQuantized over the tied LM head's int4 blocks) at the GGUF
    embedding's own blocks. Q8_0: the LM head's 8-bit codes and scales themselves, reshaped (stored once, as in the
    GGUF), zero point 128; other kinds: the rows dequantized to fp32 and a plain Gather. Exact either way."""
    from onnx import helper, numpy_helper

    graph = model.graph
    gather = next((n for n in graph.node if n.op_type == "GatherBlockQuantized"), None)
    if gather is None:
        return  # the template keeps a float embedding (an untied model): nothing to replace
    reshape = next((n for n in graph.node if gather.input[0] in n.output and n.op_type == "Reshape"), None)
    codes, d, m, bits = gguf_rows(reader, "token_embd.weight", heads)
    name, head = "model.embed_tokens.gguf", "lm_head.MatMul.gguf"  # the LM head's stem (`convert`)
    shared = {i.name for i in graph.initializer} >= {f"{head}.B", f"{head}.scales"}
    if bits == 8 and np.all(m == -128 * d) and shared:  # Q8_0, tied
        arrays = {"shape": np.array(codes.shape, np.int64), "zero_points": np.full(d.shape, 128, np.uint8)}
        views = [helper.make_node("Reshape", [f"{head}.{k}", f"{name}.shape" if k == "B" else f"{name}.sshape"],
                                  [f"{name}/{k}"], name=f"{name}/Reshape_{k}") for k in ("B", "scales")]
        arrays["sshape"] = np.array(d.shape, np.int64)
        node = helper.make_node("GatherBlockQuantized", [f"{name}/B", gather.input[1], f"{name}/scales",
                                                         f"{name}.zero_points"], list(gather.output), name=gather.name,
                                domain="com.microsoft", bits=8, block_size=QK, gather_axis=0, quantize_axis=1)
    else:
        arrays = {"data": (d[..., None] * codes.reshape(*d.shape, QK) + m[..., None]).reshape(codes.shape)}
        views = []
        node = helper.make_node("Gather", [f"{name}.data", gather.input[1]], list(gather.output), name=gather.name)
    graph.initializer.extend(numpy_helper.from_array(np.ascontiguousarray(a), f"{name}.{k}") for k, a in arrays.items())
    index = list(graph.node).index(gather)
    graph.node.remove(gather)
    for i, n in enumerate([*views, node]):
        graph.node.insert(index + i, n)
    if reshape is not None:
        graph.node.remove(reshape)


def _gguf_names(weight: str) -> tuple[str, ...]:
    """GGUF tensor names behind an ONNX Runtime GenAI MatMulNBits weight name."""
    if weight.startswith("lm_head."):
        return ("token_embd.weight",)  # tied: llama.cpp multiplies by the embedding's own blocks
    for onnx_part, gguf_parts in GGUF_SOURCES.items():
        if f".{onnx_part}." in weight:
            layer = weight.split("model.layers.")[1].split(".")[0]
            return tuple(f"blk.{layer}.{p}.weight" for p in gguf_parts)
    raise KeyError(f"no GGUF tensor known for the template weight {weight!r}")
