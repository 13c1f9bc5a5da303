"""Decode on the roofline: measured tokens/s of each precision / engine against this machine's limits.

A decode step multiplies each weight once per sequence in the batch: 2 FLOPs per parameter per
sequence, while reading every weight byte once. Arithmetic intensity = 2·batch·params / weight bytes
(FLOP/byte); below the ridge point (peak FLOP/s ÷ bandwidth) the step is memory-bound.
"""

from __future__ import annotations

import time

import pandas as pd
import plotly.graph_objects as go
import torch

from labkit import anatomy, measure, models, plots, quant
from labkit.experiments import quantization

PRECISIONS = ("fp32", "bf16", "int8-dynamic")


def machine_limits(bandwidth_gbps: float | None = None, flops: float | None = None) -> dict:
    """Measured read bandwidth (GB/s) and fp32 matmul FLOP/s of this machine (pass numbers to skip measuring)."""
    return {"bandwidth_GBps": bandwidth_gbps or measure.memory_bandwidth(),
            "flops": flops or anatomy.matmul_flops()}  # fmt: skip


def precision_points(model: str = "smollm2-135m", precisions=PRECISIONS, batch_sizes=(1, 8), new_tokens: int = 16,
                     limits: dict | None = None) -> pd.DataFrame:
    """Per precision and batch: measured decode tokens/s, the bandwidth-bound limit and % of it reached."""
    from tqdm.auto import tqdm

    limits = limits or machine_limits()
    params = models.estimate_memory(model).params
    base, tok = models.load_model(model, device="cpu")
    rows = []
    for name in tqdm(precisions, desc=f"precisions ({model})"):
        q = quant.quantize(name, source=model, model=base)  # each quantizer works on its own copy
        speed = quantization.speed(q, decode_tokens=new_tokens, batch_sizes=batch_sizes, vocab=len(tok))
        read = bytes_read_per_step(q.model)
        for bs in batch_sizes:
            tok_s = speed[f"decode_tok_s_b{bs}"]
            bound = bs * limits["bandwidth_GBps"] * 1e9 / read  # every weight byte read once per step
            rows.append({"engine": f"torch eager {name}", "precision": name, "batch": bs,
                         "weight_MB": q.resident_bytes / 1e6, "read_per_step_MB": read / 1e6, "decode_tok_s": tok_s,
                         "bandwidth_bound_tok_s": bound, "pct_of_roofline": 100 * tok_s / bound,
                         "intensity_flop_per_byte": 2 * bs * params / read,
                         "achieved_gflops": 2 * params * tok_s / 1e9})  # fmt: skip
    return measure.results_frame(rows, model=model, **limits)


def bytes_read_per_step(model: torch.nn.Module) -> int:
    """Weight bytes a decode step reads: all of them, except an untied input embedding (one row per token)."""
    total = quant.resident_bytes(model)
    if getattr(model.config, "tie_word_embeddings", False):
        return total  # the same matrix is the LM head, read whole
    return total - quant.tensor_bytes(model.get_input_embeddings().weight)


def roofline_figure(points: pd.DataFrame, title: str = "Decode on this machine's roofline"):
    """Attainable GFLOP/s = min(peak, bandwidth × intensity), log-log, with each measured point."""
    bw, peak = points.attrs["bandwidth_GBps"], points.attrs["flops"] / 1e9
    lo = min(points.intensity_flop_per_byte.min() / 2, 0.1)
    hi = max(points.intensity_flop_per_byte.max() * 4, 4 * peak / bw)
    xs = [lo * (hi / lo) ** (i / 60) for i in range(61)]
    fig = go.Figure(go.Scatter(x=xs, y=[min(peak, bw * x) for x in xs], mode="lines", name="roofline",
                               line=dict(color="black")))  # fmt: skip
    for engine, part in points.groupby("engine", sort=False):
        fig.add_trace(go.Scatter(x=part.intensity_flop_per_byte, y=part.achieved_gflops, mode="markers+text",
                                 text=[f"b{b}" for b in part.batch], textposition="top center", name=engine,
                                 marker=dict(size=11)))  # fmt: skip
    fig.add_vline(x=peak / bw, line_dash="dot", annotation_text=f"ridge {peak / bw:.0f} FLOP/byte")
    fig.update_layout(xaxis=dict(title="arithmetic intensity (FLOP per weight byte)", type="log"),
                      yaxis=dict(title="GFLOP/s", type="log"))  # fmt: skip
    return plots._style(fig, title, plots._hardware(points))


def _decode_seconds(model, ids: torch.Tensor, new_tokens: int, **generate_kwargs) -> tuple[float, list[int]]:
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    with torch.inference_mode():
        start = time.perf_counter()
        out = model.generate(ids, **kwargs, **generate_kwargs)
    return time.perf_counter() - start, out[0, ids.shape[1]:].tolist()


def static_vs_dynamic(model: str = "tiny-llama", new_tokens: int = 32, compile: bool = True,
                      repeat: int = 3) -> plots.Measured:
    """Greedy decode with the default dynamic KV cache vs a static (pre-allocated) cache, eager and compiled.

    A static cache has fixed shapes, which is what lets `torch.compile` build one graph for every
    decode step; a dynamic cache grows by concatenation each step. The first compiled call pays the
    compilation, reported separately from the steady state. Every variant must produce the same tokens.
    """
    from transformers import CompileConfig

    net, tok = models.load_model(model, device="cpu")
    ids = tok("ROMEO:\n", return_tensors="pt").input_ids
    variants = {"dynamic cache": {}, "static cache": {"cache_implementation": "static", "disable_compile": True}}
    if compile:
        config = CompileConfig(fullgraph=False, dynamic=False)
        config._compile_all_devices = True  # transformers only auto-compiles on accelerators unless asked
        variants["static cache + torch.compile"] = {"cache_implementation": "static", "compile_config": config}
    rows, reference = [], None
    for label, kwargs in variants.items():
        first_s, tokens = _decode_seconds(net, ids, new_tokens, **kwargs)
        reference = reference or tokens
        runs = [_decode_seconds(net, ids, new_tokens, **kwargs)[0] for _ in range(repeat)]
        steady = measure.Stats.of(runs).median
        rows.append({"variant": label, "first_call_s": first_s, "decode_tok_s": new_tokens / steady,
                     "same_tokens_as_dynamic": tokens == reference})  # fmt: skip
    table = measure.results_frame(rows, model=model, new_tokens=new_tokens)
    fig = plots.bars(table, x="variant", y="decode_tok_s", ylabel="tokens/s (batch 1, steady state)",
                     title=f"{model}: dynamic vs static KV cache")  # fmt: skip
    return plots.Measured(table, fig)
