"""Why int8 activations can lose what int8 weights keep: the inputs every Linear layer sees, counted the way LLM.int8()
counts outlier features, and int8 quantization simulated at two granularities for weights and for activations.

Source: Dettmers, Lewis, Belkada, Zettlemoyer, "LLM.int8(): 8-bit Matrix Multiplication for Transformers at Scale",
NeurIPS 2022 (arXiv:2208.07339). §4.1: an outlier *feature* is a hidden dimension whose magnitude reaches 6.0 in the
inputs of the attention projections and the FFN expansion, in the same dimension in at least 25 % of the layers and
at at least 6 % of the sequence positions (thresholds set so that their 125M model shows a single one). §4.2: such
features spread to every layer between 6 B and 6.7 B parameters, and there int8 quantization with one scale per
tensor (or per row) starts to fail: "most quantization bins are empty and small quantization values are quantized to
zero". The `zeroed_*` columns below count exactly that.

Simulated int8 here is quantize → dequantize in fp32: symmetric int8 weights ([-128, 127] with scale absmax / 127.5,
the convention of PyTorch's MinMaxObserver and torchao; one scale per tensor or per output channel) and asymmetric
uint8 activations ([0, 255] with a zero point, one scale per tensor or per token,
computed at every call as dynamic quantization does). It isolates *where* the error comes from; the real kernels
(`labkit.quant`) add their own details (e.g. torch.ao's dynamic Linear calls its kernel with `reduce_range=True`:
7-bit activations).
"""

from __future__ import annotations

import contextlib
import functools
import re
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from transformers import BitsAndBytesConfig

from labkit import plots
from labkit.experiments.quantization import quality
from labkit.models import specs
from labkit.quant import QuantizedModel

# The magnitude threshold: bitsandbytes' default `llm_int8_threshold`, the paper's 6.0 (§3.2, §4.1).
LLM_INT8_THRESHOLD = BitsAndBytesConfig().llm_int8_threshold
# The paper's systematic-feature criterion and emergence scale (§4.1, §4.2): published numbers, kept in specs.
LLM_INT8_MIN_LAYER_SHARE = specs.LLM_INT8_MIN_LAYER_SHARE
LLM_INT8_MIN_POSITION_SHARE = specs.LLM_INT8_MIN_POSITION_SHARE
LLM_INT8_EMERGENCE_PARAMS = specs.LLM_INT8_EMERGENCE_PARAMS
GRANULARITIES = {"weights": ("tensor", "channel"), "activations": ("tensor", "token")}
# What a Linear's input is, by the module's own name (Llama / BLOOM / GPT-2 / OPT spellings). k/v and up projections
# read the same input as q and gate: counted once. The census of §4.1 reads the attention and FFN-expansion inputs.
ROLES = {"q_proj": "attention in", "query_key_value": "attention in", "c_attn": "attention in",
         "o_proj": "attention out", "dense": "attention out", "out_proj": "attention out",
         "gate_proj": "mlp in", "dense_h_to_4h": "mlp in", "c_fc": "mlp in", "fc1": "mlp in",
         "down_proj": "mlp out", "dense_4h_to_h": "mlp out", "fc2": "mlp out", "lm_head": "lm head"}  # fmt: skip
CENSUS_ROLES = ("attention in", "attention out", "mlp in")
# The granularity ablation: (weights, activations) per row; None = left in float.
VARIANTS = {"float (no int8)": (None, None), "W8 per-tensor": ("tensor", None), "W8 per-channel": ("channel", None),
            "A8 per-tensor": (None, "tensor"), "A8 per-token": (None, "token"),
            "W8A8 per-tensor": ("tensor", "tensor"), "W8A8 per-channel, per-token": ("channel", "token")}  # fmt: skip


def _check(kind: str, granularity: str) -> None:
    if granularity not in GRANULARITIES[kind]:
        raise ValueError(f"unknown {kind} granularity {granularity!r}; choose from {list(GRANULARITIES[kind])}")


def fake_quant_weight(w: torch.Tensor, granularity: str = "channel") -> torch.Tensor:
    """Symmetric int8 quantize → dequantize of a (out_features, in_features) weight.

    Args:
        w: the weight. granularity: "tensor" (one scale, absmax / 127.5) or "channel" (one per output row).
    Returns:
        a float tensor like `w`, every value its scale times an integer in [-128, 127].
    Raises:
        ValueError: for an unknown granularity, naming the valid ones.
    """
    _check("weights", granularity)
    absmax = w.abs().amax(dim=-1, keepdim=True) if granularity == "channel" else w.abs().amax()
    scale = torch.where(absmax > 0, absmax / 127.5, torch.ones_like(absmax))
    return (w / scale).round().clamp(-128, 127) * scale


def activation_step(x: torch.Tensor, granularity: str = "tensor") -> torch.Tensor:
    """The uint8 step (scale) of dynamic asymmetric quantization: (max(x, 0) − min(x, 0)) / 255.

    Args:
        x: (..., features) activations. granularity: "tensor" (one step) or "token" (one per row of features).
    Returns:
        the step, broadcastable to `x` (1 where a row is all zeros).
    Raises:
        ValueError: for an unknown granularity, naming the valid ones.
    """
    _check("activations", granularity)
    dims = (-1,) if granularity == "token" else tuple(range(x.dim()))
    span = x.amax(dim=dims, keepdim=True).clamp(min=0) - x.amin(dim=dims, keepdim=True).clamp(max=0)
    return torch.where(span > 0, span / 255, torch.ones_like(span))


def fake_quant_activation(x: torch.Tensor, granularity: str = "tensor") -> torch.Tensor:
    """Dynamic asymmetric uint8 quantize → dequantize, as dynamic int8 kernels do at every call.

    Args:
        x: (..., features) activations. granularity: "tensor" or "token" (see `activation_step`).
    Returns:
        a float tensor like `x`: zero stays exactly zero, every other value moves by at most half a step.
    Raises:
        ValueError: for an unknown granularity, naming the valid ones.
    """
    step = activation_step(x, granularity)
    dims = (-1,) if granularity == "token" else tuple(range(x.dim()))
    zero_point = (-x.amin(dim=dims, keepdim=True).clamp(max=0) / step).round()
    return ((x / step).round() + zero_point).clamp(0, 255).sub(zero_point).mul(step)


def _linear(module: torch.nn.Linear, weight: torch.Tensor, activations: str | None, x: torch.Tensor) -> torch.Tensor:
    return F.linear(fake_quant_activation(x, activations) if activations else x, weight, module.bias)


@contextlib.contextmanager
def simulated_int8(model: torch.nn.Module, weights: str | None = None, activations: str | None = None):
    """Inside the block, every nn.Linear of `model` (the LM head too, as torch.ao's dynamic int8 does) runs with
    simulated int8 weights and/or activations; the model's own weights are never changed.

    Args:
        model: a torch module. weights, activations: a granularity of GRANULARITIES, or None to keep it in float.
    Raises:
        ValueError: for an unknown granularity, before anything changes.
    """
    if weights:
        _check("weights", weights)
    if activations:
        _check("activations", activations)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    try:
        for m in linears:  # an instance attribute shadows the class's forward until it is deleted
            w = fake_quant_weight(m.weight.detach(), weights) if weights else m.weight
            m.forward = functools.partial(_linear, m, w, activations)
        yield model
    finally:
        for m in linears:
            m.__dict__.pop("forward", None)


@dataclass
class _Simulated(QuantizedModel):
    """A model evaluated under `simulated_int8`, for `quantization.quality`."""

    weights: str | None = None
    activations: str | None = None

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        with simulated_int8(self.model, self.weights, self.activations):
            return super().logits(input_ids)


def int8_granularity(model: torch.nn.Module, tokens: torch.Tensor, variants: dict | None = None) -> pd.DataFrame:
    """Perplexity, agreement and KL of simulated int8 at each granularity, against the same model in float.

    Args:
        model: a causal LM in fp32, on any device (left unchanged; the simulation runs there). tokens: (n_windows,
            window) evaluation ids, on any device.
        variants: name -> (weights, activations) granularities (None = float); default VARIANTS.
    Returns:
        DataFrame: variant, weights, activations, perplexity, top1_agreement, kl_vs_fp32, perplexity_vs_fp32.
    Raises:
        ValueError: for an unknown granularity, naming the valid ones.
    """
    variants = variants or VARIANTS
    for w, a in variants.values():  # bad input fails before any forward
        if w:
            _check("weights", w)
        if a:
            _check("activations", a)
    reference = QuantizedModel(model.eval(), None, 0, 0, name="fp32", device=model.device)
    candidates = {n: _Simulated(model, None, 0, 0, name=n, device=model.device, weights=w, activations=a)
                  for n, (w, a) in variants.items()}
    plain = next((n for n, (w, a) in variants.items() if not w and not a), None)  # scores as the reference does
    if plain is None:
        candidates[_REFERENCE] = reference
    table = quality(candidates, reference, tokens).rename(columns={"quantizer": "variant"})
    ref_ppl = table.set_index("variant").perplexity[plain or _REFERENCE]
    table = table[table.variant != _REFERENCE].reset_index(drop=True)
    table.insert(1, "weights", [variants[n][0] or "float" for n in table.variant])
    table.insert(2, "activations", [variants[n][1] or "float" for n in table.variant])
    table["perplexity_vs_fp32"] = table.perplexity / ref_ppl
    return table


_REFERENCE = "fp32 (reference)"


@dataclass(frozen=True)
class OutlierCensus:
    """The inputs of a model's Linear layers on some text, and LLM.int8()'s outlier features among them.

    table: one row per Linear input (module, layer, role, features, max_abs, median_abs, max_over_median,
        dims_at_threshold: feature dims with some |x| >= threshold, zeroed_per_tensor / zeroed_per_token: share of
        the non-zero values that uint8 quantization with one step per tensor / per token rounds to 0).
    systematic_dims: hidden dimensions that meet §4.1's criterion (threshold, layer share, position share).
    layers: transformer layers seen. positions: token positions per input. threshold: the magnitude used.
    """

    table: pd.DataFrame
    systematic_dims: tuple[int, ...]
    layers: int
    positions: int
    threshold: float

    def figure(self) -> go.Figure:
        """Largest |input| per layer, one line per role, log scale."""
        fig = go.Figure()
        for role, part in self.table.dropna(subset=["layer"]).groupby("role", sort=False):
            fig.add_trace(go.Scatter(x=part.layer, y=part.max_abs, mode="lines+markers", name=role))
        fig.add_hline(y=self.threshold, line_dash="dot", annotation_text=f"LLM.int8() threshold {self.threshold:g}")
        fig.update_xaxes(title="layer")
        fig.update_yaxes(title="largest |input value|", type="log")
        return plots.style(fig, "The largest value each Linear layer receives", self.table.attrs.get("source"))


def _zeroed(x: torch.Tensor, granularity: str) -> float:
    nonzero = x != 0
    return float(((x.abs() < activation_step(x, granularity) / 2) & nonzero).sum() / nonzero.sum().clamp(min=1))


def _layer(name: str) -> int | None:
    found = re.search(r"\.(\d+)\.", f".{name}.")
    return int(found.group(1)) if found else None


@torch.no_grad()
def census(model: torch.nn.Module, tokens: torch.Tensor, threshold: float = LLM_INT8_THRESHOLD) -> OutlierCensus:
    """What every Linear layer receives on `tokens`, and which hidden dimensions are LLM.int8() outlier features.

    Args:
        model: a causal LM, on any device (the census is taken there). tokens: (batch, seq) ids, run in one forward.
        threshold: the magnitude of an outlier value (default: LLM.int8()'s, from bitsandbytes).
    Returns:
        OutlierCensus (see its fields). A dimension is systematic when some input of CENSUS_ROLES reaches
        `threshold` in it in at least LLM_INT8_MIN_LAYER_SHARE of the layers, and at at least
        LLM_INT8_MIN_POSITION_SHARE of the positions over all those inputs.
    Raises:
        ValueError: when no Linear of `model` has a name in ROLES.
    """
    seen: dict[str, torch.Tensor] = {}
    modules = {n: m for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in ROLES}  # fmt: skip
    if not modules:
        raise ValueError(f"no Linear layer named like one of {sorted(ROLES)}")
    hooks = [m.register_forward_pre_hook(lambda _m, args, n=n: seen.__setitem__(n, args[0].detach().flatten(0, -2)))
             for n, m in modules.items()]  # fmt: skip
    try:
        model(input_ids=tokens.to(model.device), use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    rows, hits = [], {}  # hits: layer -> (positions, hidden) bool of census inputs at or above the threshold
    for name, x in seen.items():
        role, layer, a = ROLES[name.rsplit(".", 1)[-1]], _layer(name), x.abs()
        rows.append({"module": name, "layer": layer, "role": role, "features": x.shape[-1],
                     "max_abs": float(a.max()), "median_abs": float(a.median()),
                     "dims_at_threshold": int((a.amax(0) >= threshold).sum()),
                     "zeroed_per_tensor": _zeroed(x, "tensor"), "zeroed_per_token": _zeroed(x, "token")})
        if role in CENSUS_ROLES and layer is not None and x.shape[-1] == model.config.hidden_size:
            hits[layer] = hits.get(layer, torch.zeros_like(a, dtype=torch.bool)) | (a >= threshold)
    table = pd.DataFrame(rows)
    table["max_over_median"] = table.max_abs / table.median_abs
    layers = len(hits)
    if layers:
        stacked = torch.stack(list(hits.values()))  # (layers, positions, hidden)
        layer_share = stacked.any(1).float().mean(0)
        position_share = stacked.any(0).float().mean(0)
        systematic = (layer_share >= LLM_INT8_MIN_LAYER_SHARE) & (position_share >= LLM_INT8_MIN_POSITION_SHARE)
        dims = tuple(int(d) for d in systematic.nonzero().flatten())
    else:
        dims = ()
    return OutlierCensus(table, dims, layers, tokens.numel(), threshold)
