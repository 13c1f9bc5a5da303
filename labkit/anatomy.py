"""Memory math from a config alone: weights, KV cache and activations, before anything is allocated."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import AutoConfig, PretrainedConfig

from . import models

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 1, "int4": 0.5}


@dataclass(frozen=True)
class ModelMemory:
    params: int
    dtype: str
    weights_bytes: float
    kv_cache_bytes: float
    activation_bytes: float

    @property
    def total_gb(self) -> float:
        return (self.weights_bytes + self.kv_cache_bytes + self.activation_bytes) / 1e9


def _config(model_or_config) -> PretrainedConfig:
    if isinstance(model_or_config, PretrainedConfig):
        return model_or_config
    if isinstance(model_or_config, dict):  # a Hub config.json written out by hand
        cfg = dict(model_or_config)
        return AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    return models.get_config(model_or_config)


def _get(cfg, *names, default=None):
    for n in names:
        if getattr(cfg, n, None) is not None:
            return getattr(cfg, n)
    return default


def model_memory(model_or_config, dtype: str = "bfloat16", batch: int = 1, seq: int = 2048,
                 kv_dtype: str | None = None) -> ModelMemory:
    """Weights (parameters counted on the meta device) + KV cache + a one-layer activation estimate.

    KV cache = 2 (K and V) × layers × kv_heads × head_dim × bytes × tokens × batch.
    """
    if dtype not in BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {list(BYTES)}")
    if batch < 1 or seq < 1:
        raise ValueError(f"batch and seq must be >= 1, got {batch} and {seq}")
    cfg = _config(model_or_config)
    params = models.estimate_memory(cfg, "float32").params
    layers = _get(cfg, "num_hidden_layers", "n_layer")
    hidden = _get(cfg, "hidden_size", "n_embed")
    heads = _get(cfg, "num_attention_heads", "n_head")
    kv_heads = _get(cfg, "num_key_value_heads", default=heads)
    head_dim = _get(cfg, "head_dim", default=hidden // heads)
    kv_bytes = BYTES[kv_dtype or (dtype if dtype in ("float32", "bfloat16", "float16") else "bfloat16")]
    kv = 2 * layers * kv_heads * head_dim * kv_bytes * seq * batch
    act_bytes = BYTES[dtype if dtype in ("float32", "bfloat16", "float16") else "bfloat16"]
    # the widest live tensors of one layer during prefill: the MLP's intermediate and the attention scores
    inter = _get(cfg, "intermediate_size", default=4 * hidden)
    activations = batch * seq * (2 * hidden + inter) * act_bytes + batch * heads * seq * seq * act_bytes
    return ModelMemory(params, dtype, params * BYTES[dtype], kv, activations)


# Well-known configurations for the calculator (written out, no download needed).
KNOWN_CONFIGS = {
    "bloom-176b": {"model_type": "bloom", "n_layer": 70, "hidden_size": 14336, "n_head": 112, "vocab_size": 250880},
    "llama-30b": {"model_type": "llama", "num_hidden_layers": 60, "hidden_size": 6656, "intermediate_size": 17920,
                  "num_attention_heads": 52, "vocab_size": 32000},
    "llama-2-7b": {"model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096, "intermediate_size": 11008,
                   "num_attention_heads": 32, "vocab_size": 32000},
}
GPU_MEMORY_GB = {"T4 16GB": 16, "A100 40GB": 40, "A100/H100 80GB": 80, "H200 141GB": 141, "8×A100 80GB": 640}


def memory_calculator(model: str = "llama-30b", dtype: str = "float16", batch: int = 1, seq: int = 2048):
    """Weights + KV cache + activations of a model in GB, against common GPU memory sizes."""
    import pandas as pd
    import plotly.graph_objects as go

    from . import plots
    from .plots import Measured

    mem = model_memory(KNOWN_CONFIGS.get(model, model), dtype, batch, seq)
    parts = {"weights": mem.weights_bytes, "KV cache": mem.kv_cache_bytes, "activations": mem.activation_bytes}
    row = {"model": model, "dtype": dtype, "batch": batch, "seq": seq, "params_B": mem.params / 1e9}
    table = pd.DataFrame([{**row, **{f"{k}_GB": v / 1e9 for k, v in parts.items()}, "total_GB": mem.total_gb}])
    fig = go.Figure([go.Bar(name=k, x=[model], y=[v / 1e9]) for k, v in parts.items()])
    for name, gb in GPU_MEMORY_GB.items():
        if gb < 4 * mem.total_gb:
            fig.add_hline(y=gb, line_dash="dot", annotation_text=name, annotation_position="right")
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title="GB")
    title = f"{model} in {dtype}, batch {batch} × {seq} tokens: {mem.total_gb:.1f} GB"
    return Measured(table, plots._style(fig, title))
