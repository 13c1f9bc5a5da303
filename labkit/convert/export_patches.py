"""Export patches: re-express a model's hot spot as one op a runtime has a fused kernel for.

No ONNX Runtime fusion (its graph levels, `onnxruntime.transformers`' optimizer, onnxscript's
`ort_fusions`) recognises BLOOM's attention: ALiBi adds a per-head linear bias to the scores, and
the exported attention stays a chain of small nodes in every layer (Split, Squeeze, Transpose,
Reshape, a baddbmm, Softmax, ...). Production exporters (optimum's model patchers, ORT GenAI's model
builder) solve this the same way: while exporting, swap the module's Python for code whose graph
maps onto a fused op.

Here a custom op `labkit::alibi_attention` stands for the whole attention; PyTorch runs it as
`scaled_dot_product_attention` (so `torch.export` can trace it) and the ONNX exporter writes it as a
single standard `Attention` node (ONNX opset 23) on (batch, seq, hidden) tensors — no transposes.
The patch lives only inside `patched_for_export`; eager PyTorch keeps running transformers' code.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

OPSET = 23  # the first ONNX opset with a standard Attention op


@torch.library.custom_op("labkit::alibi_attention", mutates_args=())
def alibi_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, num_heads: int, scale: float) -> Tensor:
    """softmax(q·kᵀ·scale + bias)·v per head; q, k, v: (batch, seq, hidden), bias: (batch, heads, seq, kv)."""
    b, s, hidden = q.shape

    def heads(t: Tensor) -> Tensor:  # (batch, seq, hidden) -> (batch, heads, seq, head_dim)
        return t.view(b, -1, num_heads, hidden // num_heads).transpose(1, 2)

    out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=bias, scale=scale)
    return out.transpose(1, 2).reshape(b, s, hidden)


@alibi_attention.register_fake
def _(q, k, v, bias, num_heads, scale):  # shapes only, for torch.export
    return torch.empty_like(q)


def alibi_attention_onnx(q, k, v, bias, num_heads: int, scale: float):
    """The ONNX translation: one standard Attention node with 3-D inputs and an additive float mask."""
    from onnxscript import opset23 as op

    return op.Attention(q, k, v, bias, q_num_heads=num_heads, kv_num_heads=num_heads, scale=scale)[0]


TRANSLATIONS = {torch.ops.labkit.alibi_attention.default: alibi_attention_onnx}


def _bloom_attention_forward(self, hidden_states, residual, alibi, attention_mask, layer_past=None,
                             use_cache=False, output_attentions=False, **kwargs):
    """BloomAttention.forward for export (no KV cache): the same function, written as one attention op."""
    if layer_past is not None or output_attentions:  # not what an export of logits needs: stay exact
        return type(self).forward(self, hidden_states, residual, alibi, attention_mask, layer_past, use_cache,
                                  output_attentions, **kwargs)
    b, s, _ = hidden_states.shape
    h, d = self.num_heads, self.head_dim
    # BLOOM interleaves q, k, v per head in its fused weight; regroup rows as [Q | K | V] so a Split
    # gives three (batch, seq, hidden) tensors (the exporter folds this reindexing into the weights).
    w = self.query_key_value.weight.view(h, 3, d, -1).transpose(0, 1).reshape(3 * h * d, -1)
    bias = self.query_key_value.bias.view(h, 3, d).transpose(0, 1).reshape(-1)
    q, k, v = F.linear(hidden_states, w, bias).split(h * d, dim=-1)  # each (batch, seq, hidden)
    mask = alibi.view(b, h, 1, -1)  # (batch, heads, 1, kv): ALiBi's per-head distance penalty
    if attention_mask is not None:
        mask = mask + attention_mask  # + the causal mask: (batch, heads, seq, kv)
    context = alibi_attention(q, k, v, mask, h, self.inv_norm_factor)
    return residual + self.dense(context), None  # dropout is the identity at inference


PATCHES = {"BloomAttention": _bloom_attention_forward}


def patchable(module: torch.nn.Module) -> list[str]:
    """Names of the module classes inside `module` that an export patch rewrites."""
    return sorted({type(m).__name__ for m in module.modules() if type(m).__name__ in PATCHES})


@contextlib.contextmanager
def patched_for_export(module: torch.nn.Module) -> Iterator[int]:
    """Inside the block, every patchable submodule runs its export forward; yields how many were patched."""
    patched = [m for m in module.modules() if type(m).__name__ in PATCHES]
    for m in patched:
        m.forward = types.MethodType(PATCHES[type(m).__name__], m)  # instance attribute shadows the class
    try:
        yield len(patched)
    finally:
        for m in patched:
            del m.forward
