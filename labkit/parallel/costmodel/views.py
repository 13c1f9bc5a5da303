"""Widget-friendly views of the cost model: the fit and the held-out test next to the published rows, and a what-if
predictor for tensor parallelism vs the naive pipeline."""

from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd
import plotly.graph_objects as go

from labkit import plots
from labkit.models import specs
from labkit.models.specs import A100_80GB, GPU
from labkit.parallel.costmodel.calibration import calibrate
from labkit.parallel.costmodel.evaluation import evaluation, summary
from labkit.parallel.costmodel.generation import ms_per_token
from labkit.parallel.costmodel.memory import memory_gb, offloaded_bytes
from labkit.parallel.costmodel.model import shape

COMPARED = ("accelerate", "ds-inference")  # the what-if compares the pipeline with tensor parallelism


def published_vs_predicted() -> plots.Measured:
    """Every published row next to the model's prediction (ms/token vs batch, log-log); held-out rows dashed.

    Returns:
        Measured: `evaluation()` and a figure with published markers and one model line per row (dashed: a row
        with no fitted cell), OOM marked; the title gives the in-sample and held-out median |error|.
    """
    table = evaluation()
    fig = go.Figure()
    for i, (name, part) in enumerate(table.groupby("row", sort=False)):
        color, fitted = plots.COLORS[i % len(plots.COLORS)], (part.set == "in-sample").any()
        fig.add_trace(go.Scatter(x=part.batch, y=part.published_ms, mode="markers", name=f"{name} published",
                                 marker=dict(size=10, color=color, symbol="circle-open")))  # fmt: skip
        fig.add_trace(go.Scatter(x=part.batch, y=part.predicted_ms, mode="lines+markers", name=f"{name} model",
                                 line=dict(color=color, dash=None if fitted else "dash")))  # fmt: skip
        for b in part.batch[part.predicted_oom]:
            fig.add_annotation(x=math.log10(b), y=math.log10(table.predicted_ms.min()), text=f"{name}: OOM",
                               showarrow=False, font=dict(color=color), yshift=14 * i)  # fmt: skip
    fig.update_xaxes(title="batch size (ds-zero: per GPU)", type="log")
    fig.update_yaxes(title="ms per token", type="log")
    s = summary(table)
    title = (f"BLOOM-176B on A100-80GB: median |error| {s['in-sample']['median_abs_error_pct']:.1f} % in-sample, "
             f"{s['held-out']['median_abs_error_pct']:.1f} % held-out")  # fmt: skip
    return plots.Measured(table, plots.style(fig, title))


def predict(gpus: int = specs.BLOOM_BENCHMARK_GPUS, gpu_memory_gb: float = A100_80GB.memory_GB,
            link_GBps: float = A100_80GB.link_GBps, batch: int = 16, tflops: float = A100_80GB.tflops,
            hbm_TBps: float = A100_80GB.hbm_TBps, model: str = "bloom-176b", prompt: int = 10,
            new_tokens: int = specs.BLOOM_BENCHMARK_NEW_TOKENS) -> plots.Measured:
    """Predicted ms/token, throughput and memory per GPU for TP (DeepSpeed-Inference) and naive PP (Accelerate).

    Uses the fitted engine constants (`calibrate()`) on a GPU described by its datasheet numbers (defaults: the
    published A100-80GB, `specs.A100_80GB`), 16-bit weights.

    Args:
        gpus: GPUs (>= 1). gpu_memory_gb: memory per GPU (GB). link_GBps: GPU-to-GPU bandwidth per direction (GB/s).
        batch: sequences (>= 1). tflops: dense 16-bit TFLOP/s. hbm_TBps: memory bandwidth (TB/s).
        model: a name in `specs.MODEL_CONFIGS`. prompt, new_tokens: tokens per sequence (>= 1).
    Returns:
        Measured: one row per engine (fits, ms_per_token, tokens_per_s, memory_per_gpu_GB, offloaded_GB and each
        cause in ms per token) and a stacked bar of where the time goes (shown even when the batch will not fit).
    Raises:
        ValueError: for a count below 1, a non-positive hardware number or an unknown model (naming the choices).
    """
    if gpus < 1 or batch < 1 or new_tokens < 1 or prompt < 1:
        raise ValueError(f"gpus, batch, prompt and new_tokens must be >= 1; got {gpus}, {batch}, {prompt}, {new_tokens}"
                         )  # fmt: skip
    if min(gpu_memory_gb, link_GBps, tflops, hbm_TBps) <= 0:
        raise ValueError("gpu_memory_gb, link_GBps, tflops and hbm_TBps must be positive")
    m, gpu = shape(model), GPU("custom", tflops, hbm_TBps, gpu_memory_gb, link_GBps)
    rows, fig = [], go.Figure()
    for name in COMPARED:
        engine = calibrate()[name]
        mem = memory_gb(engine, m, gpu, gpus, batch, prompt + new_tokens)
        timing = ms_per_token(engine, m, gpu, gpus, batch, prompt, new_tokens)
        ok = not math.isnan(timing["ms_per_token"])
        if not ok:  # still show where the time would go, marked OOM
            timing = ms_per_token(replace(engine, workspace=0.0), m, replace(gpu, memory_GB=math.inf), gpus, batch,
                                  prompt, new_tokens)  # fmt: skip
        rows.append({"engine": name, "strategy": engine.strategy, "fits": ok,
                     "ms_per_token": timing["ms_per_token"] if ok else math.nan,
                     "tokens_per_s": 1e3 / timing["ms_per_token"] if ok else math.nan,
                     "memory_per_gpu_GB": sum(mem.values()),
                     "offloaded_GB": offloaded_bytes(engine, m, gpu, gpus) / 1e9,
                     **{f"{k}_ms": v for k, v in timing.items() if k != "ms_per_token"}})  # fmt: skip
    table = pd.DataFrame(rows)
    parts = [c for c in table.columns if c.endswith("_ms") and c != "ms_per_token"]
    labels = [f"{r.engine}{'' if r.fits else ' (will not fit: OOM)'}" for r in table.itertuples()]
    for part in parts:
        fig.add_trace(go.Bar(x=labels, y=table[part].fillna(0.0), name=part[:-3]))
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title="ms per token (per sequence)", type="log" if table[parts].sum(axis=1).max() > 1e3 else None)
    title = f"{model} on {gpus}×{gpu_memory_gb:g} GB, link {link_GBps:g} GB/s, batch {batch}"
    return plots.Measured(table, plots.style(fig, title))
