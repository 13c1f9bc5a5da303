"""LLM inference anatomy, measured: the KV-cache formula against a real cache, prefill vs decode (TTFT / TPOT),
the decode roofline of this machine, and a memory calculator for big models against GPU memory sizes."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import torch

from labkit import anatomy, measure, models, plots
from labkit.decoding import timing
from labkit.models import specs
from labkit.plots import Measured
from labkit.precision import FLOAT_PRECISIONS, canonical


def kv_cache_check(model: str = "tiny-llama", batch: int = 2, seq: int = 64, precision: str = "fp32",
                   device: str = "auto") -> dict:
    """The KV-cache formula (`anatomy.kv_cache_bytes`) against the bytes of a real cache after one forward pass.

    Args:
        model: a registry name with weights. batch: sequences. seq: prompt tokens per sequence.
        precision: fp32 | bf16 | fp16 (or an alias): the model's and hence the cache's precision.
        device: "auto" (the GPU when there is one), "cpu", "cuda".
    Returns:
        {"model", "batch", "seq", "precision", "formula_bytes", "measured_bytes"}.
    Raises:
        ValueError: an unknown model or precision, batch or seq < 1.
    """
    name = canonical(precision)
    if name not in FLOAT_PRECISIONS:
        raise ValueError(f"a model runs in {list(FLOAT_PRECISIONS)}, not {name}")
    formula = anatomy.kv_cache_bytes(model, batch, seq, name)  # validates batch and seq before loading
    net, _ = models.load_model(model, name, device=device)
    ids = timing.random_prompt(batch, seq, net.config.vocab_size).to(net.device)
    with torch.no_grad():
        cache = net(input_ids=ids, use_cache=True).past_key_values
    return {"model": model, "batch": batch, "seq": seq, "precision": name, "formula_bytes": formula,
            "measured_bytes": anatomy.cache_bytes(cache)}


def prefill_decode(model: str = "tiny-llama", prompt_lens=(16, 64, 256), batch_sizes=(1, 4), new_tokens: int = 16,
                   repeat: int = 3, device: str = "auto") -> pd.DataFrame:
    """Time to first token and time per output token of greedy generate(), per batch size and prompt length.

    Every number comes from one `decoding.timing.time_greedy` run (1 warm-up, `repeat` timed generations, medians).

    Args:
        model: a registry name with weights. prompt_lens: prompt tokens to try. batch_sizes: sequences per batch.
        new_tokens: tokens generated per sequence (>= 2: the first ends the prefill). repeat: timed generations.
        device: "auto" (the GPU when there is one), "cpu", "cuda".
    Returns:
        DataFrame: batch, prompt_tokens, ttft_ms, tpot_ms, decode_tok_s (= batch / median step), new_tokens;
        attrs carry the hardware.
    Raises:
        ValueError: new_tokens < 2.
    """
    if new_tokens < 2:
        raise ValueError(f"new_tokens must be >= 2 (one prefill token, then decode steps), got {new_tokens}")
    net, _ = models.load_model(model, device=device)
    rows = []
    for bs in batch_sizes:
        for n in prompt_lens:
            ids = timing.random_prompt(bs, n, net.config.vocab_size, seed=n).to(net.device)
            run = timing.time_greedy(net, ids, new_tokens, warmup=1, repeat=repeat)
            rows.append({**run.row(), "prompt_tokens": n})
    table = measure.results_frame(rows, model=model)
    return table[["batch", "prompt_tokens", "ttft_ms", "tpot_ms", "decode_tok_s", "new_tokens"]].copy()


def decode_roofline(model: str = "smollm2-135m", precision: str = "fp32", bandwidth_gbps: float | None = None,
                    flops: float | None = None, batch_sizes=(1, 2, 4, 8, 16, 32, 64)) -> pd.DataFrame:
    """Per batch size: the bandwidth-bound and compute-bound decode limits (tokens/s) on this machine.

    Each decode step reads every weight once and does 2 FLOPs per weight per sequence, so arithmetic intensity =
    2 × batch × params / weight bytes (FLOP/byte) (Williams, Waterman & Patterson, "Roofline", 2009).

    Args:
        model: a model name or config. precision: the weights' precision (fp32 | bf16 | fp16 | int8 | int4).
        bandwidth_gbps: memory bandwidth, GB/s (None: measured). flops: matmul FLOP/s (None: measured, in
            `precision` when it is fp32 or bf16, else fp32). batch_sizes: sequences per step.
    Returns:
        DataFrame: batch, intensity_flop_per_byte, memory_bound_tok_s, compute_bound_tok_s, limit_tok_s, bound_by;
        attrs: bandwidth_GBps, tflops, weights_GB.
    """
    mem = anatomy.model_memory(model, precision)
    bw = (bandwidth_gbps or measure.memory_bandwidth()) * 1e9
    fl = flops or anatomy.matmul_flops(precision=mem.precision if mem.precision in ("fp32", "bf16") else "fp32")
    rows = []
    for b in batch_sizes:
        memory_bound = b * bw / mem.weights_bytes  # tokens/s if only weight reads mattered
        compute_bound = fl / (2 * mem.params)  # tokens/s if only the FLOPs mattered (batch-independent)
        rows.append({"batch": b, "intensity_flop_per_byte": 2 * b * mem.params / mem.weights_bytes,
                     "memory_bound_tok_s": memory_bound, "compute_bound_tok_s": compute_bound,
                     "limit_tok_s": min(memory_bound, compute_bound),
                     "bound_by": "memory" if memory_bound < compute_bound else "compute"})
    table = pd.DataFrame(rows)
    table.attrs.update(bandwidth_GBps=bw / 1e9, tflops=fl / 1e12, weights_GB=mem.weights_bytes / 1e9)
    return table


def kv_cache_curve(model: str = "llama-30b", precision: str = "fp16", batch: int = 8,
                   contexts=(512, 1024, 2048, 4096, 8192, 16384, 32768)) -> Measured:
    """KV-cache GB against context length, next to the weights: where the cache overtakes the model.

    Args:
        model: a model name (`models.specs.MODEL_CONFIGS` names included) or config. precision: weights and cache.
        batch: sequences. contexts: tokens per sequence.
    Returns:
        Measured: table (context, KV_cache_GB, weights_GB) and a log-x line figure.
    """
    config = anatomy.config_of(model)
    mems = {n: anatomy.model_memory(config, precision, batch, n) for n in contexts}
    rows = [{"context": n, "KV_cache_GB": m.kv_cache_bytes / 1e9, "weights_GB": m.weights_bytes / 1e9}
            for n, m in mems.items()]
    table = pd.DataFrame(rows)
    name = canonical(precision)
    fig = plots.line(table, "context", ["KV_cache_GB", "weights_GB"], log_x=True, xlabel="tokens per sequence",
                     ylabel="GB", title=f"{model} {name}, batch {batch}: KV cache vs weights")  # fmt: skip
    return Measured(table, fig)


def memory_calculator(model: str = "llama-30b", precision: str = "fp16", batch: int = 1, seq: int = 2048) -> Measured:
    """Weights + KV cache + activations of a model in GB (`anatomy.model_memory`), against GPU memory sizes
    (`models.specs.GPU_MEMORY_GB`).

    Args:
        model: a model name (`models.specs.MODEL_CONFIGS` names included) or config.
        precision: fp32 | bf16 | fp16 | int8 | int4 (or an alias such as "bfloat16"; shown canonically).
        batch: sequences. seq: tokens per sequence.
    Returns:
        Measured: one-row table (model, precision, batch, seq, params_B, weights_GB, KV cache_GB, activations_GB,
        total_GB) and a stacked bar with the GPU sizes below 4 × the total as dotted lines.
    Raises:
        ValueError: an unknown model or precision, batch or seq < 1.
    """
    mem = anatomy.model_memory(model, precision, batch, seq)
    parts = {"weights": mem.weights_bytes, "KV cache": mem.kv_cache_bytes, "activations": mem.activation_bytes}
    row = {"model": model, "precision": mem.precision, "batch": batch, "seq": seq, "params_B": mem.params / 1e9}
    table = pd.DataFrame([{**row, **{f"{k}_GB": v / 1e9 for k, v in parts.items()}, "total_GB": mem.total_gb}])
    fig = go.Figure([go.Bar(name=k, x=[model], y=[v / 1e9]) for k, v in parts.items()])
    for name, gb in specs.GPU_MEMORY_GB.items():
        if gb < 4 * mem.total_gb:
            fig.add_hline(y=gb, line_dash="dot", annotation_text=name, annotation_position="right")
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title="GB")
    title = f"{model} in {mem.precision}, batch {batch} × {seq} tokens: {mem.total_gb:.1f} GB"
    return Measured(table, plots.style(fig, title))


CALCULATOR_MODELS = (*specs.MODEL_CONFIGS, "smollm2-135m", "tiny-llama")  # the calculator widget's choices
