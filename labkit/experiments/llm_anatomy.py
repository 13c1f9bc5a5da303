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


ROOFLINE_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def decode_roofline(model: str = "smollm2-135m", precision: str = "fp32", bandwidth_gbps: float | None = None,
                    flops: float | None = None, batch_sizes=ROOFLINE_BATCHES, device: str = "auto") -> pd.DataFrame:
    """Per batch size: the bandwidth-bound and compute-bound decode limits (tokens/s) on one device.

    Each decode step reads every weight once and does 2 FLOPs per weight per sequence, so arithmetic intensity =
    2 × batch × params / weight bytes (FLOP/byte) (Williams, Waterman & Patterson, "Roofline", 2009); the step is
    memory-bound below the ridge point FLOP/s ÷ bytes/s.

    Args:
        model: a model name or config. precision: the weights' precision (fp32 | bf16 | fp16 | int8 | int4).
        bandwidth_gbps: memory bandwidth, GB/s (None: measured on `device`). flops: matmul FLOP/s (None: measured
            on `device`, in `precision` when it is a float, else in fp32). batch_sizes: sequences per step.
        device: the device measured when a number is not given ("auto", "cpu", "cuda", "cuda:N").
    Returns:
        DataFrame: batch, intensity_flop_per_byte, memory_bound_tok_s, compute_bound_tok_s, limit_tok_s, bound_by;
        attrs: bandwidth_GBps, tflops, weights_GB, ridge_flop_per_byte, ridge_batch (the batch whose intensity
        reaches the ridge), measured_on (the device the bandwidth was measured on).
    Raises:
        ValueError: an unknown precision or device (naming the valid ones).
    """
    mem = anatomy.model_memory(model, precision)
    measured = bandwidth_gbps or measure.memory_bandwidth(device=device)
    bw = measured * 1e9
    fl = flops or measure.matmul_flops(precision=mem.precision if mem.precision in FLOAT_PRECISIONS else "fp32",
                                       device=device)
    rows = []
    for b in batch_sizes:
        memory_bound = b * bw / mem.weights_bytes  # tokens/s if only weight reads mattered
        compute_bound = fl / (2 * mem.params)  # tokens/s if only the FLOPs mattered (batch-independent)
        rows.append({"batch": b, "intensity_flop_per_byte": 2 * b * mem.params / mem.weights_bytes,
                     "memory_bound_tok_s": memory_bound, "compute_bound_tok_s": compute_bound,
                     "limit_tok_s": min(memory_bound, compute_bound),
                     "bound_by": "memory" if memory_bound < compute_bound else "compute"})
    table = pd.DataFrame(rows)
    ridge = measure.ridge_point(fl, measured)
    table.attrs.update(bandwidth_GBps=bw / 1e9, tflops=fl / 1e12, weights_GB=mem.weights_bytes / 1e9,
                       ridge_flop_per_byte=ridge, ridge_batch=ridge * mem.weights_bytes / (2 * mem.params),
                       measured_on=getattr(measured, "device_name", "(bandwidth given)"))
    return table


def decode_step_cost(model: str = "smollm2-135m", batch_sizes=(1, 32), prompt_tokens: int = 16,
                     new_tokens: int = 8, repeat: int = 3, bandwidth_gbps: float | None = None,
                     flops: float | None = None, device: str = "auto", precision: str = "fp32") -> Measured:
    """How a decode step's time grows with the batch: measured against the roofline's prediction.

    The roofline (Williams, Waterman & Patterson, 2009) says a step takes max(bytes read / bandwidth,
    FLOPs / FLOP/s): bytes read = the weights (once, whatever the batch) + the KV cache (`anatomy.kv_cache_bytes`,
    at mid-generation); FLOPs = 2 × params × batch. Below the ridge point the first term wins and a step at batch B
    costs what one at batch 1 does; above it the step grows with B. Each measured time is the median decode step of
    one `decoding.timing.time_greedy` run (1 warm-up, `repeat` timed generations).

    Args:
        model: a registry name with weights. batch_sizes: sequences per step (the first is the reference of the
            ratios). prompt_tokens: random prompt length. new_tokens: tokens generated (>= 2).
        repeat: timed generations. bandwidth_gbps, flops: the device's read GB/s and matmul FLOP/s in `precision`
            (None: measured on `device`, `measure.memory_bandwidth` and `measure.matmul_flops`).
        device: "auto" (the GPU when there is one), "cpu", "cuda". precision: the weights, KV cache and matmuls:
            fp32 | bf16 | fp16 (`DeviceChoice.half` for the device's 16-bit float).
    Returns:
        Measured: table (batch, tpot_ms, step_vs_first: measured ratio to the first batch, roofline_ms,
        roofline_vs_first, bound_by, pct_of_bandwidth_bound: 100 × (bytes read ÷ bandwidth) ÷ measured step,
        pct_of_roofline: 100 × roofline_ms ÷ tpot_ms) and a figure of both times; attrs: bandwidth_GBps, flops,
        measured_on, precision, ridge_flop_per_byte (FLOP/s ÷ bandwidth) and ridge_batch (the batch whose intensity
        2·B·params / weight bytes reaches the ridge).
    Raises:
        ValueError: new_tokens < 2, a batch size < 1 or a precision that is not a float (before loading).
    """
    if new_tokens < 2 or min(batch_sizes) < 1:
        raise ValueError(f"need new_tokens >= 2 and batch sizes >= 1, got {new_tokens} and {list(batch_sizes)}")
    name = canonical(precision)
    if name not in FLOAT_PRECISIONS:
        raise ValueError(f"a model runs in {list(FLOAT_PRECISIONS)}, not {name}")
    net, _ = models.load_model(model, name, device=device)
    bw = bandwidth_gbps or measure.memory_bandwidth(device=net.device)
    fl = flops or measure.matmul_flops(precision=name, device=net.device)
    mem = anatomy.model_memory(model, name)
    rows = []
    for b in batch_sizes:
        ids = timing.random_prompt(b, prompt_tokens, net.config.vocab_size, seed=b).to(net.device)
        run = timing.time_greedy(net, ids, new_tokens, warmup=1, repeat=repeat)
        kv = anatomy.kv_cache_bytes(model, b, prompt_tokens + new_tokens // 2, name, cache="static")  # read per step
        memory_s, compute_s = (mem.weights_bytes + kv) / (bw * 1e9), 2 * mem.params * b / fl
        rows.append({"batch": b, "tpot_ms": run.tpot_s * 1e3, "roofline_ms": max(memory_s, compute_s) * 1e3,
                     "bound_by": "memory" if memory_s >= compute_s else "compute",
                     "pct_of_bandwidth_bound": 100 * memory_s / run.tpot_s,
                     "pct_of_roofline": 100 * max(memory_s, compute_s) / run.tpot_s})
    ridge = measure.ridge_point(fl, bw)
    table = measure.results_frame(rows, model=model, bandwidth_GBps=float(bw), flops=float(fl), precision=name,
                                  ridge_flop_per_byte=ridge, ridge_batch=ridge * mem.weights_bytes / (2 * mem.params),
                                  measured_on=getattr(bw, "device_name", "(bandwidth given)"))  # fmt: skip
    table.insert(2, "step_vs_first", table.tpot_ms / table.tpot_ms.iloc[0])
    table.insert(4, "roofline_vs_first", table.roofline_ms / table.roofline_ms.iloc[0])
    fig = plots.line(table, "batch", ["tpot_ms", "roofline_ms"], log_x=True, xlabel="sequences per decode step",
                     ylabel="ms per decode step", title=f"{model} ({name}): decode step time vs batch, measured "
                     "and roofline")
    fig.add_vline(x=table.attrs["ridge_batch"], line_dash="dot",
                  annotation_text=f"ridge: batch {table.attrs['ridge_batch']:.0f}")
    return Measured(table, fig)


def kv_cache_curve(model: str = "llama-30b", precision: str = "fp16", batch: int = 8,
                   contexts=(512, 1024, 2048, 4096, 8192, 16384, 32768)) -> Measured:
    """KV-cache GB against context length, next to the weights: where the cache overtakes the model.

    Args:
        model: a model name (`models.specs.MODEL_CONFIGS` names included) or config. precision: weights and cache.
        batch: sequences. contexts: tokens per sequence.
    Returns:
        Measured: table (context, KV_cache_GB, weights_GB) and a log-x line figure; attrs["crossover_tokens"]: the
        fewest tokens per sequence whose cache (`anatomy.kv_cache_bytes`) holds at least the weights' bytes (None
        when it never does, e.g. every layer has a sliding window shorter than that).
    """
    config = anatomy.config_of(model)
    mems = {n: anatomy.model_memory(config, precision, batch, n) for n in contexts}
    rows = [{"context": n, "KV_cache_GB": m.kv_cache_bytes / 1e9, "weights_GB": m.weights_bytes / 1e9}
            for n, m in mems.items()]
    table = pd.DataFrame(rows)
    name = canonical(precision)
    weights = anatomy.model_memory(config, precision).weights_bytes
    per_token = anatomy.kv_cache_bytes(config, batch, 1, name, cache="static")
    crossover = -(-int(weights) // per_token)  # ceil: linear in tokens ...
    grows = anatomy.kv_cache_bytes(config, batch, crossover, name, cache="static") >= weights  # ... unless windows cap
    table.attrs["crossover_tokens"] = crossover if grows else None
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
