"""Models of different sizes on paper: SmolLM2 135M / 360M / 1.7B from their published configs — weight bytes per
precision, KV-cache bytes per token (`anatomy.kv_cache_bytes`) and the bandwidth-bound decode tokens/s on a measured
bandwidth, with any measured tokens/s placed next to its bound.

    sizes = on_paper(bandwidth_gbps=limits["bandwidth_GBps"], measured={"SmolLM2-135M": ("fp32", 41.0)})
    sizes.table, sizes.figure

Offline, nothing here downloads: the configs are written out below. Online, the same names load from the Hub
(`HUB_IDS`) and their decode can be timed like any other model (`experiments.llm_anatomy.prefill_decode`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
from transformers import LlamaConfig

from labkit import anatomy, models, plots
from labkit.precision import PRECISIONS, bytes_per_value, canonical

# The config.json of HuggingFaceTB/SmolLM2-135M, -360M and -1.7B on the Hugging Face Hub (LlamaForCausalLM, tied
# embeddings, head_dim 64; the 1.7B model has as many KV heads as query heads: no grouped-query attention).
_SHARED = {"vocab_size": 49152, "max_position_embeddings": 8192, "tie_word_embeddings": True, "rms_norm_eps": 1e-5}
SMOLLM2_CONFIGS = {
    "SmolLM2-135M": {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                     "num_attention_heads": 9, "num_key_value_heads": 3},
    "SmolLM2-360M": {"hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": 32,
                     "num_attention_heads": 15, "num_key_value_heads": 5},
    "SmolLM2-1.7B": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24,
                     "num_attention_heads": 32, "num_key_value_heads": 32},
}  # fmt: skip
HUB_IDS = {name: f"HuggingFaceTB/{name}" for name in SMOLLM2_CONFIGS}


def smollm2_config(name: str) -> LlamaConfig:
    """A SmolLM2 architecture from its published config (no download).

    Args:
        name: a key of SMOLLM2_CONFIGS.
    Returns:
        the LlamaConfig.
    Raises:
        ValueError: an unknown name, naming the choices.
    """
    if name not in SMOLLM2_CONFIGS:
        raise ValueError(f"unknown SmolLM2 size {name!r}; choose from {list(SMOLLM2_CONFIGS)}")
    return LlamaConfig(**_SHARED, **SMOLLM2_CONFIGS[name])


@dataclass(frozen=True)
class ModelSizes:
    """table: one row per model (see `on_paper`); figure: bandwidth-bound tokens/s against parameters."""

    table: pd.DataFrame
    figure: go.Figure


def on_paper(bandwidth_gbps: float, precisions=("fp32", "bf16", "int8", "int4"), kv_precision: str = "bf16",
             names=tuple(SMOLLM2_CONFIGS), measured: dict | None = None) -> ModelSizes:
    """Bytes and bandwidth-bound batch-1 decode speed of each model, from its config alone.

    A batch-1 decode step reads every weight once (a tied embedding is the LM head, read whole), so tokens/s ≤
    bandwidth ÷ weight bytes (the roofline's memory side, Williams, Waterman & Patterson, 2009). Weight bytes =
    parameters (counted on the meta device, `models.count_params`) × bytes per value (int8: 1, int4: 0.5, block
    scales left out).

    Args:
        bandwidth_gbps: the read bandwidth, GB/s (e.g. the lab's `measure.memory_bandwidth`).
        precisions: weight precisions, of fp32 | bf16 | fp16 | int8 | int4. kv_precision: the KV cache's.
        names: keys of SMOLLM2_CONFIGS. measured: {name: (precision, tokens/s)} of decodes timed elsewhere at batch 1
            (e.g. the lab's own SmolLM2-135M), shown against their bound.
    Returns:
        ModelSizes; table columns model, params_M, layers, hidden, kv_heads, kv_KB_per_token (one sequence, all
        layers), then per precision p: weights_MB_<p> and bound_tok_s_<p>; measured_precision, measured_tok_s and
        pct_of_bound (NaN where nothing was measured). attrs: bandwidth_GBps, kv_precision.
    Raises:
        ValueError: a bandwidth <= 0, no precision, an unknown precision or name, or a measured entry for a model
            or precision not in the table.
    """
    if bandwidth_gbps <= 0:
        raise ValueError(f"bandwidth_gbps must be positive, got {bandwidth_gbps}")
    precisions = tuple(canonical(p) for p in precisions)  # raises on an unknown precision, naming the valid ones
    if not precisions:
        raise ValueError(f"give at least one precision of {list(PRECISIONS)}")
    configs = {n: smollm2_config(n) for n in names}
    measured = measured or {}
    for n, (p, _) in measured.items():
        if n not in configs or canonical(p) not in precisions:
            raise ValueError(f"measured {n!r} in {p!r}: choose a model of {list(configs)} and a precision of "
                             f"{list(precisions)}")
    rows = []
    for n, cfg in configs.items():
        d, params = anatomy.dims(cfg), models.count_params(cfg)
        row = {"model": n, "params_M": params / 1e6, "layers": d.layers, "hidden": d.hidden, "kv_heads": d.kv_heads,
               "kv_KB_per_token": anatomy.kv_cache_bytes(cfg, 1, 1, kv_precision) / 1e3}
        for p in precisions:
            weight_bytes = params * bytes_per_value(p)
            row[f"weights_MB_{p}"] = weight_bytes / 1e6
            row[f"bound_tok_s_{p}"] = bandwidth_gbps * 1e9 / weight_bytes
        p, tok_s = measured.get(n, (None, float("nan")))
        row.update(measured_precision=canonical(p) if p else None, measured_tok_s=tok_s,
                   pct_of_bound=100 * tok_s / row[f"bound_tok_s_{canonical(p)}"] if p else float("nan"))
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs.update(bandwidth_GBps=float(bandwidth_gbps), kv_precision=canonical(kv_precision))
    fig = plots.line(table, "params_M", [f"bound_tok_s_{p}" for p in precisions], log_x=True, log_y=True,
                     xlabel="parameters (millions)", ylabel="decode tokens/s at batch 1 (bound)",
                     title=f"SmolLM2 sizes on {bandwidth_gbps:.1f} GB/s: tokens/s ≤ bandwidth ÷ weight bytes")
    done = table.dropna(subset=["measured_tok_s"])
    if len(done):
        fig.add_trace(go.Scatter(x=done.params_M, y=done.measured_tok_s, mode="markers", marker=dict(size=12),
                                 name="measured", text=done.measured_precision))
    return ModelSizes(table, fig)
