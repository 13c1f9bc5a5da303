"""A Llama forward step as one ONNX graph whose KV cache stays outside it, in labkit's paged pool.

    proto = step_graph(model)   # inputs: new tokens' embeddings, each layer's gathered past; outputs: logits, K/V

For B sequences computing T new tokens each (T = 1 for a decode step of B sequences; T = a prompt or a chunk of it
for one sequence), per layer, with the shapes in the comments:

    h = RMSNorm(x)                              SimplifiedLayerNormalization (the residual add fused in after the
                                                first layer: SkipSimplifiedLayerNormalization)
    qkv = h·W_qkv                               one MatMul for q, k and v (the three weights side by side)
    attend over [past; new] per sequence        GroupQueryAttention: RoPE on q and k at each token's true position,
                                                causal softmax(q·Kᵀ·scale)·V, grouped-query, right-padded past
    x += attn·W_o;  x += down(SiLU(gate(h)) · up(h))

GroupQueryAttention (com.microsoft) is ONNX Runtime's fused attention kernel, the one its own model builder emits
for ONNX Runtime GenAI; the arithmetic is transformers' Llama in fp32 (RMSNorm x/√(mean(x²)+ε)·w, rotate-half
RoPE from the model's own cos/sin, SiLU(gate)·up), so greedy tokens match `generate()` (tested). Where the kernel
does not take the model (head size not a multiple of 16, a RoPE that changes with length), `check_llama` says so.
The past keys and values are inputs and the present ones outputs: the block tables, the pool, the gather and the
write stay in labkit (`ort_runner`).
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from labkit import onnx_format

MS = "com.microsoft"
ROPE_TYPES = ("default", "linear", "llama3")  # cos/sin depend on the position only: one table serves every length


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


def rope_tables(model) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin), each (max_position_embeddings, head_dim / 2): the model's own rotary embedding at every position.

    transformers' Llama RoPE is rotate-half: cos and sin repeat their first half, which is all GroupQueryAttention
    reads (its `rotary_interleaved=0`). Any attention scaling of the RoPE type is already in them.
    """
    decoder = model.model
    n = model.config.max_position_embeddings
    x = torch.zeros(1, 1, dtype=torch.float32)
    cos, sin = decoder.rotary_emb(x, torch.arange(n)[None])  # (1, n, head_dim)
    half = cos.shape[-1] // 2
    return cos[0, :, :half].float().numpy(), sin[0, :, :half].float().numpy()


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
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    if hd % 16:
        raise ValueError(f"ONNX Runtime's GroupQueryAttention takes head sizes that are multiples of 16; this model's "
                         f"is {hd}: use runner='torch'")
    rope = getattr(model.model.rotary_emb, "rope_type", "default")
    if rope not in ROPE_TYPES:
        raise ValueError(f"RoPE type {rope!r} changes with the sequence's length; the graph's cos/sin table supports "
                         f"{list(ROPE_TYPES)}: use runner='torch'")
    size = sum(p.numel() * 4 for p in model.parameters())
    if size > 1.8e9:
        raise ValueError(f"{size / 1e9:.1f} GB of fp32 weights do not fit one ONNX protobuf (2 GB): use "
                         "runner='torch'")


def step_graph(model) -> onnx.ModelProto:
    """One forward step of every layer as one ONNX graph, the KV cache outside it (labkit's paged pool).

    Inputs: x (B, T, H) the new tokens' embeddings; seqlens_k (B,) int32, each sequence's cached tokens + T − 1;
    total_len () int32, W + T; past_k_i, past_v_i (B, kv_heads, W, head_dim) per layer i, each sequence's cached
    keys/values gathered through its block table and right-padded to W (W may be 0).
    Outputs: logits (B, vocab) at each sequence's last new token; present_k_i, present_v_i (B, kv_heads, W + T,
    head_dim): sequence b's T new keys/values are at positions past_b .. past_b + T − 1.

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
    inputs = [("x", f, ["B", "T", cfg.hidden_size]), ("seqlens_k", TensorProto.INT32, ["B"]),
              ("total_len", TensorProto.INT32, [])]
    g = _Graph()
    cos, sin = (g.const(t) for t in rope_tables(model))  # (max positions, hd / 2)
    x, skip = "x", None
    for i, layer in enumerate(layers):
        att, mlp = layer.self_attn, layer.mlp
        inputs += [(f"past_{kv}_{i}", f, ["B", kv_heads, "W", hd]) for kv in ("k", "v")]
        h, x = _norm(g, x, layer.input_layernorm, skip)
        w = np.concatenate([_weight(att.q_proj), _weight(att.k_proj), _weight(att.v_proj)]).T  # (H, (h+2kvh)·hd)
        qkv = g.op("MatMul", h, g.const(w))  # (B, T, (heads + 2·kv_heads)·hd), packed as the kernel takes it
        attn = g.op("GroupQueryAttention", qkv, "", "", f"past_k_{i}", f"past_v_{i}", "seqlens_k", "total_len",
                    cos, sin, outputs=[True, False, False], domain=MS, num_heads=heads, kv_num_heads=kv_heads,
                    scale=float(att.scaling), do_rotary=1, rotary_interleaved=0)  # fmt: skip
        g.nodes[-1].output[1:] = [f"present_k_{i}", f"present_v_{i}"]  # graph outputs as they are (no copy)
        o = g.op("MatMul", attn, g.const(_weight(att.o_proj).T))  # (B, T, H)
        h, x = _norm(g, x, layer.post_attention_layernorm, o)  # x + attention, normed
        inter = mlp.gate_proj.out_features
        gate, up = g.op("Split", g.op("MatMul", h, g.const(np.concatenate([_weight(mlp.gate_proj),
                                                                            _weight(mlp.up_proj)]).T)),
                        g.const(np.array([inter, inter], np.int64)), outputs=2, axis=-1)  # fmt: skip
        act = g.op("Mul", g.op("Mul", gate, g.op("Sigmoid", gate)), up)  # SiLU(gate) · up
        skip = g.op("MatMul", act, g.const(_weight(mlp.down_proj).T))  # added to x by the next norm
    last = lambda t: g.op("Slice", t, *(g.const(np.array([v], np.int64)) for v in (-1, 2**62, 1)))  # noqa: E731
    h, _ = _norm(g, last(x), model.model.norm, last(skip))  # (B, 1, H): only the last token is sampled
    logits = g.op("Squeeze", g.op("MatMul", h, g.const(_weight(model.lm_head).T)), g.const(np.array([1], np.int64)))
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"]))
    outputs = ["logits"] + [f"present_{kv}_{i}" for i in range(len(layers)) for kv in ("k", "v")]
    graph = helper.make_graph(g.nodes, "forward_step", [helper.make_tensor_value_info(*i) for i in inputs],
                              [helper.make_tensor_value_info(o, f, None) for o in outputs], g.inits)  # fmt: skip
    return onnx_format.make_model(graph, {MS: 1})
