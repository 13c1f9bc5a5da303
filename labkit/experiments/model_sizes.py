"""Models of different sizes on paper: SmolLM2 135M / 360M / 1.7B from their published configs — weight bytes per
precision, KV-cache bytes per token (`anatomy.kv_cache_bytes`) and the bandwidth-bound decode tokens/s on a measured
bandwidth, with any measured tokens/s placed next to its bound.

    sizes = on_paper(bandwidth_gbps=limits["bandwidth_GBps"], measured={"SmolLM2-135M": ("fp32", 41.0)})
    sizes.table, sizes.figure

Offline, nothing here downloads: the configs are written out below. Online (or with the models in the local Hugging
Face cache), `from_hub` loads each one by its Hub id (`HUB_IDS`) and measures what `on_paper` predicts:

    measured = from_hub(device="cpu", precision="bf16")   # a row per model: measured, or why not
"""

from __future__ import annotations

import gc
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
import psutil
import torch
from transformers import LlamaConfig

from labkit import anatomy, devices, models, plots
from labkit.data.windows import eval_tokens
from labkit.experiments import quantization
from labkit.models import hub
from labkit.precision import PRECISIONS, bytes_per_value, canonical, torch_dtype
from labkit.quant import QuantizedModel

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


def hub_unavailable(name: str, precision: str = "bf16", device: str | torch.device = "cpu",
                    memory_share: float = 0.5) -> str | None:
    """Why `from_hub` cannot measure `name` here, or None when it can: checked before anything is downloaded or
    allocated.

    Args:
        name: a key of SMOLLM2_CONFIGS. precision: the weights' precision. device: where they would go.
        memory_share: the largest share of the device's free memory the weights may take (the rest: activations, KV
            cache, the other processes).
    Returns:
        None, or the reason: not in the local Hugging Face cache while the Hub is offline or out of reach
        (`models.hub.unavailable`), or weights (parameters from the config x bytes per value) larger than
        memory_share x the free memory (`psutil.virtual_memory().available`; on a GPU `torch.cuda.mem_get_info`).
    Raises:
        ValueError: an unknown name, precision or device, naming the choices.
    """
    weight_bytes = models.count_params(smollm2_config(name)) * bytes_per_value(precision)
    dev = devices.resolve(device)
    free = torch.cuda.mem_get_info(dev)[0] if dev.type == "cuda" else psutil.virtual_memory().available
    if weight_bytes > memory_share * free:
        return (f"its {precision} weights take {weight_bytes / 1e9:.1f} GB, more than {memory_share:.0%} of the "
                f"{free / 1e9:.1f} GB free on {dev}")
    why_not = hub.unavailable(HUB_IDS[name], "config.json")  # asked first: offline, the library retries for ~25 s
    return None if why_not is None else f"{HUB_IDS[name]} is {why_not}"


def from_hub(names=tuple(SMOLLM2_CONFIGS), device: str | torch.device = "cpu", precision: str = "bf16",
             decode_tokens: int = 16, eval_budget: int = 512, window: int = 128, repeat: int = 3) -> pd.DataFrame:
    """Each model loaded from the Hub (or the local cache) by its id and measured like the lab's SmolLM2-135M: weight
    bytes, batch-1 greedy decode tokens/s (`quantization.speed`: warm-up, medians, device sync) and perplexity on
    the held-out test plays (`quantization.quality`, teacher forcing). The weights load as safetensors, without
    remote code. A model that cannot be measured here (`hub_unavailable`, or a failed download) is a row that says why.

    Args:
        names: keys of SMOLLM2_CONFIGS. device: "cpu", "cuda", "auto"... precision: the weights' dtype (fp32, bf16,
            fp16). decode_tokens: tokens generated per timed run (>= 2). eval_budget, window: perplexity tokens, in
            windows of `window`. repeat: timed generations (median).
    Returns:
        DataFrame, one row per name: model, hub_id, measured (bool), reason (None when measured), precision,
        weights_MB (resident tensor bytes / 1e6), decode_tok_s (batch 1), perplexity; NaN where not measured.
        attrs["device"]: where it ran.
    Raises:
        ValueError: an unknown name, precision or device (before anything loads).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev, dtype = devices.resolve(device), torch_dtype(precision)
    for name in names:
        smollm2_config(name)  # raises on an unknown name, naming the choices
    rows = []
    for name in names:
        row = {"model": name, "hub_id": HUB_IDS[name], "measured": False, "precision": canonical(precision),
               "weights_MB": float("nan"), "decode_tok_s": float("nan"), "perplexity": float("nan")}
        row["reason"] = hub_unavailable(name, precision, dev)
        if row["reason"] is None:
            try:
                model = AutoModelForCausalLM.from_pretrained(HUB_IDS[name], dtype=dtype, use_safetensors=True)
                tokenizer = AutoTokenizer.from_pretrained(HUB_IDS[name])
            except OSError as e:  # no network, a gated or missing file: say so, measure the others
                row["reason"] = f"could not load {HUB_IDS[name]}: {str(e).splitlines()[0]}"
        if row["reason"] is None:
            model = model.to(dev).eval()
            tensors = {t.data_ptr(): t.numel() * t.element_size() for t in model.state_dict().values()}
            resident = sum(tensors.values())  # a tied embedding is one tensor under two names: counted once
            q = QuantizedModel(model, None, resident, resident, f"{precision}, from the Hub", name, device=dev)
            speed = quantization.speed(q, prefill_tokens=32, decode_tokens=decode_tokens, batch_sizes=(1,),
                                       vocab=len(tokenizer), repeat=repeat)
            tokens = eval_tokens(tokenizer, eval_budget, window)  # (windows, window)
            ppl = float(quantization.quality({name: q}, q, tokens).perplexity.iloc[0])
            row.update(measured=True, weights_MB=resident / 1e6, decode_tok_s=speed["decode_tok_s_b1"], perplexity=ppl)
            del model, q
            gc.collect()
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs["device"] = str(dev)
    return table
