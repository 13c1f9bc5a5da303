"""A Llama decode step as one ONNX graph whose KV cache stays outside it, in labkit's paged pool.

    proto = decode_step_graph(model)   # inputs: new tokens, RoPE, each layer's gathered past; outputs: logits, new K/V

For S sequences decoding one token each (per layer, the shapes in the comments):

    h = RMSNorm(x)                                  SimplifiedLayerNormalization (the residual add fused in after the
    q, k, v = h·W_qkv, RoPE on q and k                                            first layer: SkipSimplified...)
    attend over [past; new] per sequence            softmax(q·Kᵀ/√d + bias)·V, grouped-query, right-padded past
    x += attn·W_o;  x += down(SiLU(gate(h)) · up(h))

The same ops, in the same order and in fp32, as transformers' Llama (RMSNorm x/√(mean(x²)+ε)·w, rotate-half RoPE
with the model's own cos/sin, SiLU(gate)·up), so greedy tokens match `generate()` (tested). The past keys and
values are inputs and the new ones outputs: the block tables, the pool, the gather and the write stay in labkit.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from labkit import onnx_format

MS = "com.microsoft"


class _Graph:
    """Accumulates nodes and initializers; names every value uniquely."""

    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def op(self, kind: str, *inputs: str, outputs: int | list = 1, domain: str = "", **attrs) -> str | list[str]:
        """Add a node; `outputs` a count, or a list of True (a named output) / False (left out: "")."""
        self.n += 1
        wanted = [True] * outputs if isinstance(outputs, int) else outputs
        names = [f"{kind}_{self.n}_{i}" if w else "" for i, w in enumerate(wanted)]
        self.nodes.append(helper.make_node(kind, list(inputs), names, domain=domain or None, **attrs))
        kept = [n for n in names if n]
        return kept[0] if len(kept) == 1 else kept

    def const(self, array) -> str:
        self.n += 1
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), f"c{self.n}"))
        return f"c{self.n}"


def _weight(module) -> np.ndarray:
    w = module.weight if hasattr(module, "weight") else module
    return w.detach().to("cpu", torch.float32).numpy()


def _norm(g: _Graph, x: str, norm, skip: str | None = None) -> tuple[str, str]:
    """RMSNorm of x (+ skip, when given). Returns (normed, the sum it normed)."""
    eps, w = float(norm.variance_epsilon), g.const(_weight(norm))
    if skip is None:
        return g.op("SimplifiedLayerNormalization", x, w, axis=-1, epsilon=eps), x
    normed, total = g.op("SkipSimplifiedLayerNormalization", x, skip, w, outputs=[True, False, False, True],
                         domain=MS, epsilon=eps)  # fmt: skip
    return normed, total


def _rope(g: _Graph, t: str, cos: str, sin: str, half: int) -> str:
    """t·cos + rotate_half(t)·sin on (S, heads, hd), cos/sin (S, 1, hd); rotate_half(t) = [−t2, t1]."""
    t1, t2 = g.op("Split", t, g.const(np.array([half, half], np.int64)), outputs=2, axis=2)
    rotated = g.op("Concat", g.op("Neg", t2), t1, axis=2)
    return g.op("Add", g.op("Mul", t, cos), g.op("Mul", rotated, sin))


def _attention(g: _Graph, q: str, k: str, v: str, past_k: str, past_v: str, dims, scale: float) -> str:
    """softmax(q·Kᵀ·scale + bias)·V over K = [past; new], grouped-query. Returns (S, heads·hd).

    q (S, heads, hd); k, v (S, 1, kv_heads, hd); past_k, past_v (S, P, kv_heads, hd); the graph input `bias`
    (S, 1, 1, P + 1) is 0 on real keys and −inf on padding. Query head j reads kv head j // group (transformers'
    repeat_kv order).
    """
    heads, kv_heads, hd = dims
    keys = g.op("Concat", past_k, k, axis=1)  # (S, P + 1, kv_heads, hd)
    vals = g.op("Concat", past_v, v, axis=1)
    qg = g.op("Reshape", q, g.const(np.array([0, kv_heads, heads // kv_heads, hd], np.int64)))  # (S, kvh, group, hd)
    scores = g.op("MatMul", qg, g.op("Transpose", keys, perm=[0, 2, 3, 1]))  # (S, kv_heads, group, P + 1)
    scores = g.op("Add", g.op("Mul", scores, g.const(np.float32(scale))), "bias")
    out = g.op("MatMul", g.op("Softmax", scores, axis=-1), g.op("Transpose", vals, perm=[0, 2, 1, 3]))
    return g.op("Reshape", out, g.const(np.array([0, heads * hd], np.int64)))  # (S, heads·hd)


def check_llama(model) -> None:
    """Raise ValueError unless `model` is a Llama-layout fp32 decoder this graph reproduces exactly."""
    cfg = model.config
    layers = getattr(getattr(model, "model", None), "layers", None)
    att = layers[0].self_attn if layers else None
    ok = (att is not None and all(hasattr(att, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
          and not hasattr(att, "q_norm") and att.q_proj.bias is None and layers[0].mlp.gate_proj.bias is None
          and getattr(cfg, "hidden_act", "silu") == "silu")  # fmt: skip
    if not ok:
        raise ValueError(f"the onnxruntime runner builds Llama-layout decoders (no biases, no q/k norms, SiLU); "
                         f"{cfg.model_type!r} is not one: use runner='torch'")
    if next(model.parameters()).dtype != torch.float32:
        raise ValueError(f"the onnxruntime runner is the exact fp32 path; the model is "
                         f"{next(model.parameters()).dtype}: load it in fp32 or use runner='torch'")
    size = sum(p.numel() * 4 for p in model.parameters())
    if size > 1.8e9:
        raise ValueError(f"{size / 1e9:.1f} GB of fp32 weights do not fit one ONNX protobuf (2 GB): use "
                         "runner='torch'")


def decode_step_graph(model) -> onnx.ModelProto:
    """One decode step of every layer as one ONNX graph, the KV cache outside it (labkit's paged pool).

    Inputs: x (S, H) the new tokens' embeddings; cos, sin (S, head_dim) their RoPE (the model's rotary_emb);
    past_k_i, past_v_i (S, P, kv_heads, head_dim) per layer i, each sequence's cached keys/values gathered through
    its block table, right-padded to P; bias (S, 1, 1, P + 1), 0 on real keys and −inf on padding (the new token,
    last, is always real).
    Outputs: logits (S, vocab); k_new, v_new (S, layers, kv_heads, head_dim) to write into the pool.

    Args:
        model: a transformers Llama-layout causal LM in fp32 (`check_llama`).
    Returns:
        the ModelProto (weights as initializers: a copy, about the model's fp32 bytes).
    Raises:
        ValueError: from `check_llama`.
    """
    check_llama(model)
    cfg, layers = model.config, model.model.layers
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    f = TensorProto.FLOAT
    inputs = [("x", f, ["S", cfg.hidden_size]), ("cos", f, ["S", hd]), ("sin", f, ["S", hd]),
              ("bias", f, ["S", 1, 1, "P1"])]
    g = _Graph()
    axis1 = g.const(np.array([1], np.int64))
    cos, sin = g.op("Unsqueeze", "cos", axis1), g.op("Unsqueeze", "sin", axis1)  # (S, 1, hd)
    shape = lambda *dims: g.const(np.array(dims, np.int64))  # noqa: E731
    x, skip, new_k, new_v = "x", None, [], []
    for i, layer in enumerate(layers):
        att, mlp = layer.self_attn, layer.mlp
        inputs += [(f"past_{kv}_{i}", f, ["S", "P", kv_heads, hd]) for kv in ("k", "v")]
        h, x = _norm(g, x, layer.input_layernorm, skip)
        w = np.concatenate([_weight(att.q_proj), _weight(att.k_proj), _weight(att.v_proj)]).T  # (H, (h+2kvh)·hd)
        qk, v = g.op("Split", g.op("MatMul", h, g.const(w)), g.const(np.array([(heads + kv_heads) * hd,
                                                                               kv_heads * hd], np.int64)),
                     outputs=2, axis=1)  # fmt: skip
        qk = _rope(g, g.op("Reshape", qk, shape(0, heads + kv_heads, hd)), cos, sin, hd // 2)  # (S, h + kvh, hd)
        q, k = g.op("Split", qk, g.const(np.array([heads, kv_heads], np.int64)), outputs=2, axis=1)
        k, v = g.op("Reshape", k, shape(0, 1, kv_heads, hd)), g.op("Reshape", v, shape(0, 1, kv_heads, hd))
        attn = _attention(g, q, k, v, f"past_k_{i}", f"past_v_{i}", (heads, kv_heads, hd), float(att.scaling))
        o = g.op("MatMul", attn, g.const(_weight(att.o_proj).T))
        h, x = _norm(g, x, layer.post_attention_layernorm, o)  # x + attention, normed
        inter = mlp.gate_proj.out_features
        gate, up = g.op("Split", g.op("MatMul", h, g.const(np.concatenate([_weight(mlp.gate_proj),
                                                                            _weight(mlp.up_proj)]).T)),
                        g.const(np.array([inter, inter], np.int64)), outputs=2, axis=1)  # fmt: skip
        act = g.op("Mul", g.op("Mul", gate, g.op("Sigmoid", gate)), up)  # SiLU(gate) · up
        skip = g.op("MatMul", act, g.const(_weight(mlp.down_proj).T))  # added to x by the next norm
        new_k.append(k)
        new_v.append(v)
    h, _ = _norm(g, x, model.model.norm, skip)
    logits = g.op("MatMul", h, g.const(_weight(model.lm_head).T))
    outs = [("logits", logits), ("k_new", g.op("Concat", *new_k, axis=1)), ("v_new", g.op("Concat", *new_v, axis=1))]
    for public, value in outs:
        g.nodes.append(helper.make_node("Identity", [value], [public]))
    graph = helper.make_graph(g.nodes, "decode_step", [helper.make_tensor_value_info(*i) for i in inputs],
                              [helper.make_tensor_value_info(p, f, None) for p, _ in outs], g.inits)  # fmt: skip
    return onnx_format.make_model(graph, {MS: 1})
