"""Decode on the roofline: measured tokens/s of each precision / engine against this machine's limits.

A decode step multiplies each weight once per sequence in the batch: 2 FLOPs per parameter per
sequence, while reading every weight byte once. Arithmetic intensity = 2·batch·params / weight bytes
(FLOP/byte); below the ridge point (peak FLOP/s ÷ bandwidth) the step is memory-bound.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import torch
from tqdm.auto import tqdm

from labkit import hardware, measure, models, plots, quant
from labkit.decoding import timing
from labkit.hardware import Unavailable
from labkit.precision import canonical

PRECISIONS = ("fp32", "bf16", "int8-dynamic")


def machine_limits(bandwidth_gbps: float | None = None, flops: float | None = None, device: str = "auto",
                   half: str | None = None, repeat: int = 5) -> dict:
    """Measured read bandwidth and matmul throughput of one device, and the ridge point they make (pass numbers to
    skip measuring them).

    Args:
        bandwidth_gbps: read bandwidth, GB/s (None: measured). flops: fp32 matmul FLOP/s (None: measured).
        device: the device measured: "auto" (the GPU when there is one), "cpu", "cuda", "cuda:N".
        half: also measure the matmul in this 16-bit float ("bf16" | "fp16", e.g. `DeviceChoice.half`; on a GPU the
            tensor-core rate). None: fp32 only. repeat: timed repeats of each measurement.
    Returns:
        {"bandwidth_GBps": `measure.memory_bandwidth`, GB/s; "flops": fp32 `measure.matmul_flops`, FLOP/s;
        "ridge_flop_per_byte": flops ÷ bytes/s (`measure.ridge_point`); "measured_on": the device the bandwidth was
        measured on (`measure.Bandwidth.device_name`); "device": its torch name ("cpu", "cuda:0")}; with `half`
        also "half", "flops_half" and "ridge_half_flop_per_byte".
    Raises:
        ValueError: an unknown device (naming the valid ones) or a `half` that is not bf16 / fp16, before measuring.
    """
    dev = hardware.resolve_device(device)
    if half is not None and canonical(half) not in ("bf16", "fp16"):
        raise ValueError(f"half must be bf16 or fp16, got {half!r}")
    bw = bandwidth_gbps or measure.memory_bandwidth(repeat=repeat, device=dev)
    fl = flops or measure.matmul_flops(repeat=repeat, device=dev)
    limits = {"bandwidth_GBps": bw, "flops": fl, "ridge_flop_per_byte": measure.ridge_point(fl, bw),
              "measured_on": getattr(bw, "device_name", "(bandwidth given)"), "device": getattr(bw, "device", str(dev))}
    if half is not None:
        fl_half = measure.matmul_flops(precision=half, repeat=repeat, device=dev)
        limits.update(half=fl_half.precision, flops_half=fl_half,
                      ridge_half_flop_per_byte=measure.ridge_point(fl_half, bw))
    return limits


def batch1_bounds(model: str = "smollm2-135m", precisions=("fp32",), devices=None, size_mib: int | None = None,
                  repeat: int = 5) -> pd.DataFrame:
    """The batch-1 decode bound of each device: its measured read bandwidth ÷ the model's weight bytes.

    A batch-1 decode step reads every weight once, so tokens/s ≤ bandwidth / weight bytes — on the device whose
    memory holds the weights. Each row says which device that is.

    Args:
        model: a registry name. precisions: weight precisions (`models.estimate_memory`).
        devices: devices to measure (default: the CPU, and the first GPU when there is one).
        size_mib, repeat: `measure.memory_bandwidth`'s buffer size (MiB) and timed repeats.
    Returns:
        DataFrame: device, measured_on (CPU model or GPU name), read_GBps, precision, weights_GB, bound_tok_s.
    Raises:
        ValueError: an unknown device (naming the valid ones) or model or precision.
    """
    devices = devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    devices = [hardware.resolve_device(d) for d in devices]  # every one checked before anything is measured
    weights = {p: models.estimate_memory(model, p).bytes for p in precisions}  # validates before measuring
    rows = []
    for device in devices:
        bw = measure.memory_bandwidth(size_mib, repeat, device=device)
        rows += [{"device": bw.device, "measured_on": bw.device_name, "read_GBps": float(bw), "precision": p,
                  "weights_GB": w / 1e9, "bound_tok_s": bw * 1e9 / w} for p, w in weights.items()]
    return measure.results_frame(rows, model=model)


def precision_points(model: str = "smollm2-135m", precisions=PRECISIONS, batch_sizes=(1, 8), new_tokens: int = 16,
                     limits: dict | None = None, prompt_tokens: int = 8, repeat: int = 3,
                     device: str = "auto") -> pd.DataFrame:
    """Per quantizer and batch: measured decode tokens/s, the bandwidth-bound limit and the share of it reached.

    Decode tokens/s is `decoding.timing.time_greedy`'s (batch / median step, after a warm-up). The bound is
    batch × bandwidth / bytes read per step (`bytes_read_per_step`): every weight byte read once per step.

    Args:
        model: a registry name with weights. precisions: `quant.QUANTIZERS` names whose result is a torch model.
        batch_sizes: sequences per step. new_tokens: tokens per generation (>= 2). limits: `machine_limits()` of
            the same device (measured there when None). prompt_tokens: random prompt length. repeat: timed
            generations. device: where the quantized models decode ("auto", "cpu", "cuda", "cuda:N").
    Returns:
        DataFrame: engine, precision, batch, weight_MB, read_per_step_MB, decode_tok_s, bandwidth_bound_tok_s,
        pct_of_roofline, intensity_flop_per_byte (2·batch·params / bytes read), achieved_gflops; attrs carry the
        limits, the hardware and "skipped" ({precision: why} for quantizers that cannot run on `device`, e.g.
        int8-dynamic on a GPU).
    Raises:
        ValueError: an unknown quantizer or device (naming the valid ones), before loading.
    """
    dev = hardware.resolve_device(device)
    unknown = [p for p in precisions if p not in quant.QUANTIZERS]
    if unknown:
        raise ValueError(f"unknown quantizers {unknown}; choose from {list(quant.QUANTIZERS)}")
    limits = limits or machine_limits(device=dev)
    params = models.estimate_memory(model).params
    base, tok = models.load_model(model, device="cpu")  # the quantizers' source: fp32 on the CPU
    rows, skipped = [], {}
    for name in tqdm(precisions, desc=f"precisions ({model})"):
        try:
            q = quant.quantize(name, source=model, device=dev, model=base)  # each quantizer works on its own copy
        except Unavailable as why:
            skipped[name] = str(why)
            print(f"{name} skipped on {dev}: {why}")
            continue
        read = bytes_read_per_step(q.model)
        for bs in batch_sizes:
            ids = timing.random_prompt(bs, prompt_tokens, len(tok), seed=bs).to(q.model.device)
            tok_s = timing.time_greedy(q.model, ids, new_tokens, warmup=1, repeat=repeat).decode_tok_s
            bound = bs * limits["bandwidth_GBps"] * 1e9 / read  # every weight byte read once per step
            rows.append({"engine": f"torch eager {name}", "precision": name, "batch": bs,
                         "weight_MB": q.resident_bytes / 1e6, "read_per_step_MB": read / 1e6, "decode_tok_s": tok_s,
                         "bandwidth_bound_tok_s": bound, "pct_of_roofline": 100 * tok_s / bound,
                         "intensity_flop_per_byte": 2 * bs * params / read,
                         "achieved_gflops": 2 * params * tok_s / 1e9})  # fmt: skip
    return measure.results_frame(rows, model=model, skipped=skipped, **limits)


def bytes_read_per_step(model: torch.nn.Module) -> int:
    """Weight bytes a decode step reads: all of them, except an untied input embedding (one row per token).

    Args:
        model: a transformers causal LM (quantized or not).
    Returns:
        bytes (int), from `quant.resident_bytes` minus the input embedding when it is not tied to the LM head.
    """
    total = quant.resident_bytes(model)
    if getattr(model.config, "tie_word_embeddings", False):
        return total  # the same matrix is the LM head, read whole
    return total - quant.tensor_bytes(model.get_input_embeddings().weight)


def roofline_figure(points: pd.DataFrame, title: str = "Decode on this machine's roofline") -> go.Figure:
    """Attainable GFLOP/s = min(peak, bandwidth × intensity), log-log, with each measured point.

    Args:
        points: `precision_points`' table (its attrs hold bandwidth_GBps and flops). title: the figure's title.
    Returns:
        the roof (named with the device its bandwidth was measured on), the ridge point and one marker series
        per engine.
    """
    bw, peak = points.attrs["bandwidth_GBps"], points.attrs["flops"] / 1e9
    lo = min(points.intensity_flop_per_byte.min() / 2, 0.1)
    hi = max(points.intensity_flop_per_byte.max() * 4, 4 * peak / bw)
    xs = [lo * (hi / lo) ** (i / 60) for i in range(61)]
    fig = go.Figure(go.Scatter(x=xs, y=[min(peak, bw * x) for x in xs], mode="lines", name="roofline",
                               line=dict(color="black")))  # fmt: skip
    measured_on = points.attrs.get("measured_on")
    fig.data[0].name = f"roofline ({measured_on})" if measured_on else "roofline"
    for engine, part in points.groupby("engine", sort=False):
        fig.add_trace(go.Scatter(x=part.intensity_flop_per_byte, y=part.achieved_gflops, mode="markers+text",
                                 text=[f"b{b}" for b in part.batch], textposition="top center", name=engine,
                                 marker=dict(size=11)))  # fmt: skip
    fig.add_vline(x=peak / bw, line_dash="dot", annotation_text=f"ridge {peak / bw:.0f} FLOP/byte")
    fig.update_layout(xaxis=dict(title="arithmetic intensity (FLOP per weight byte)", type="log"),
                      yaxis=dict(title="GFLOP/s", type="log"))  # fmt: skip
    return plots.style(fig, title, plots._hardware(points))


def static_vs_dynamic(model: str = "tiny-llama", new_tokens: int = 32, compile: bool = True,
                      repeat: int = 3, device: str = "auto", precision: str = "fp32") -> plots.Measured:
    """Greedy decode with the default dynamic KV cache vs a static (pre-allocated) cache, eager and compiled.

    A static cache has fixed shapes, which is what lets `torch.compile` build one graph for every decode step; a
    dynamic cache grows by concatenation each step. The compiled variant uses mode="reduce-overhead"
    (`timing.static_cache_compile`): on a GPU that captures the step as a CUDA graph, replayed with one launch per
    token. Each variant is one `decoding.timing.time_greedy` run: its warm-up generation (which pays any
    compilation and graph capture) is reported as first_call_s, apart from the steady state.

    Args:
        model: a registry name with weights. new_tokens: tokens per generation (>= 2). compile: add the
            static cache + torch.compile variant. repeat: timed generations.
        device: "auto" (the GPU when there is one), "cpu", "cuda", "cuda:N". precision: fp32 | bf16 | fp16.
    Returns:
        Measured: table (variant, first_call_s, decode_tok_s = batch 1 / median step, tpot_ms,
        speedup_vs_dynamic, same_tokens_as_dynamic) and a bar figure; attrs: device, precision. Every variant
        must produce the dynamic cache's tokens (16-bit on a GPU: compare `same_tokens_as_dynamic` knowing that
        fused kernels may round differently).
    Raises:
        ValueError: an unknown device or precision (naming the valid ones), before loading.
    """
    net, tok = models.load_model(model, precision, device=device)
    ids = tok("ROMEO:\n", return_tensors="pt").input_ids.to(net.device)
    variants = {"dynamic cache": {}, "static cache": {"cache_implementation": "static", "disable_compile": True}}
    if compile:
        variants["static cache + torch.compile"] = timing.static_cache_compile(mode="reduce-overhead")
    rows, reference = [], None
    for label, kwargs in variants.items():
        run = timing.time_greedy(net, ids, new_tokens, warmup=1, repeat=repeat, pad_token_id=0, **kwargs)
        reference = reference or run.tokens
        rows.append({"variant": label, "first_call_s": run.warmups_s[0], "decode_tok_s": run.decode_tok_s,
                     "tpot_ms": run.tpot_s * 1e3, "same_tokens_as_dynamic": run.tokens == reference})  # fmt: skip
    table = measure.results_frame(rows, model=model, new_tokens=new_tokens, device=str(net.device),
                                  precision=canonical(precision))
    table.insert(4, "speedup_vs_dynamic", table.decode_tok_s / table.decode_tok_s.iloc[0])
    fig = plots.bars(table, x="variant", y="decode_tok_s", ylabel="tokens/s (batch 1, steady state)",
                     title=f"{model} on {net.device}: dynamic vs static KV cache")  # fmt: skip
    return plots.Measured(table, fig)
