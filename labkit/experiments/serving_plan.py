"""Plan serving a large model on a GPU budget: what fits, how fast, per backend.

    plan("A100-80GB SXM", gpus=8, precision="bf16", batch=16)   # memory, fit, ms/token, latency per backend

Four backends, all priced by the cost model of `labkit.parallel.costmodel` (fitted on some published BLOOM-176B
cells, tested on the others: `costmodel.evaluation()`):

- accelerate      naive pipeline (`device_map`): one GPU busy at a time; weights that do not fit on the
                  GPUs stay on the CPU and are copied in at every step (offload).
- ds-inference    DeepSpeed-Inference tensor parallelism: every GPU works on every layer.
- zero-inference  ZeRO-3, one request stream per GPU: each GPU *stores* 1/N of the weights and
                  all-gathers every layer from its peers before using it (the BLOOM ds-zero script).
- zero-offload    the same with the partitions in pinned CPU memory (`offload_param: cpu`): each GPU first
                  copies its own partition in over its PCIe link, then all-gathers.

`batch` is the number of sequences in flight. ZeRO-Inference splits them evenly over the GPUs (the ds-zero
script's --batch_size is per GPU: its batch 1 on 8 GPUs is batch 8 here); its constants are Accelerate's (the
same Hugging Face modeling code). ms/token is the published benchmark's accounting: wall time / (batch × new tokens).
"""

from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from labkit import plots
from labkit import precision as precisions
from labkit.models import specs
from labkit.parallel import costmodel as cm

PRECISIONS = ("bf16", "fp16", "int8")  # of the weights; the KV cache and activations stay 16-bit
BACKENDS = {"accelerate": "naive PP (+ CPU offload)", "ds-inference": "tensor parallel",
            "zero-inference": "ZeRO-3, stream per GPU", "zero-offload": "ZeRO-3 + CPU offload, stream per GPU"}
PARTS = cm.PARTS


def _shape(model: str, precision: str) -> cm.Shape:
    """The model's shape with weights in `precision` and a 16-bit KV cache (fp16 with fp16 weights, else bf16)."""
    p = precisions.canonical(precision)
    if p not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} for the weights; choose from {list(PRECISIONS)}")
    return cm.shape(model, p, p if p == "fp16" else "bf16")


def _gpu(gpu_type: str, gpu_memory_gb: float, link_GBps: float) -> specs.GPU:
    if gpu_type not in specs.GPUS:
        raise ValueError(f"unknown gpu_type {gpu_type!r}; choose from {list(specs.GPUS)}")
    if gpu_memory_gb < 0 or link_GBps < 0:
        raise ValueError("gpu_memory_gb and link_GBps must be >= 0 (0 = the GPU type's own)")
    gpu = specs.GPUS[gpu_type]
    return replace(gpu, memory_GB=gpu_memory_gb or gpu.memory_GB, link_GBps=link_GBps or gpu.link_GBps)


# --- the plan ---------------------------------------------------------------------------------
def engine(backend: str) -> cm.Engine:
    """The cost model's engine behind a backend (ZeRO-Inference takes Accelerate's fitted constants).

    Args:
        backend: a key of BACKENDS.
    Returns:
        the fitted `costmodel.Engine`.
    Raises:
        ValueError: for an unknown backend (naming the choices).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {list(BACKENDS)}")
    fitted = cm.calibrate()
    if backend.startswith("zero"):
        return replace(fitted["ds-zero"], name=backend, strategy="zero" if backend == "zero-inference" else backend)
    return fitted[backend]


def _backend(name: str, m: cm.Shape, gpu: specs.GPU, gpus: int, batch: int, prompt: int, new: int,
             host_gb: float) -> dict:  # fmt: skip
    """One backend's row: memory on the fullest GPU, whether it fits, wall time by cause."""
    e = engine(name)
    per_stream = math.ceil(batch / gpus) if name.startswith("zero") else batch  # ZeRO: the batch split over GPUs
    mem = cm.memory_gb(e, m, gpu, gpus, per_stream, prompt + new)
    on_host = cm.offloaded_bytes(e, m, gpu, gpus) / 1e9
    wall = cm.generation_ms(e, m, gpu, gpus, per_stream, prompt, new)
    need, capacity = sum(mem.values()), cm.capacity_gb(gpu)
    if need > capacity:
        why = f"will not fit: needs {need:.0f} GB per GPU, has {capacity:.0f}"
    elif on_host > host_gb:
        why = f"will not fit: {on_host:.0f} GB of weights offloaded to a {host_gb:g} GB host"
    else:
        why = f"fits; {on_host:.0f} GB of weights streamed from the CPU every step" if on_host else "fits"
    fits = why.startswith("fits")
    total = sum(wall.values()) if fits else math.nan
    return {"backend": name, "how": BACKENDS[name], "fits": fits, "why": why, "memory_per_gpu_GB": need,
            "gpu_memory_GB": capacity, "offloaded_GB": on_host, "ms_per_token": total / (batch * new),
            "tokens_per_s": batch * new / total * 1e3, "request_latency_s": total / 1e3,
            **{f"{k}_GB": v for k, v in mem.items()},
            **{f"{k}_ms": (v / (batch * new) if fits else math.nan) for k, v in wall.items()}}  # fmt: skip


def plan(gpu_type: str = specs.A100_80GB.name, gpus: int = specs.BLOOM_BENCHMARK_GPUS, gpu_memory_gb: float = 0.0,
         link_GBps: float = 0.0, precision: str = "bf16", batch: int = 16, prompt: int = 10,
         new_tokens: int = specs.BLOOM_BENCHMARK_NEW_TOKENS, host_memory_gb: float = specs.BLOOM_BENCHMARK_HOST_GB,
         model: str = "bloom-176b") -> plots.Measured:
    """Per backend: memory on the fullest GPU, whether it fits, predicted ms/token, throughput and request latency.

    ms/token is the published benchmark's accounting: generation wall time / (batch × new tokens).

    Args:
        gpu_type: a key of `labkit.models.specs.GPUS`. gpus: how many (>= 1).
        gpu_memory_gb: memory per GPU in GB (0 = the type's own). link_GBps: GPU-to-GPU GB/s (0 = the type's own).
        precision: of the weights, one of PRECISIONS (aliases such as "bfloat16" accepted); the KV cache stays 16-bit.
        batch: sequences (>= 1). prompt, new_tokens: tokens per sequence (>= 1).
        host_memory_gb: CPU memory for offloaded weights (GB). model: a name in `specs.MODEL_CONFIGS`.
    Returns:
        Measured: one row per backend (fits, why, memory_per_gpu_GB, offloaded_GB, ms_per_token, tokens_per_s,
        request_latency_s, memory parts in GB and time causes in ms per token; NaN times where it will not fit);
        the table's attrs hold the set-up and weights_GB. Figure: memory per GPU and where the time goes.
    Raises:
        ValueError: for counts below 1, negative memory or link, an unknown GPU type, precision or model.
    """
    if gpus < 1 or batch < 1 or prompt < 1 or new_tokens < 1:
        raise ValueError(f"gpus, batch, prompt and new_tokens must be >= 1; got {gpus}, {batch}, {prompt}, "
                         f"{new_tokens}")  # fmt: skip
    gpu, m = _gpu(gpu_type, gpu_memory_gb, link_GBps), _shape(model, precision)
    shown = precisions.canonical(precision)
    table = pd.DataFrame([_backend(b, m, gpu, gpus, batch, prompt, new_tokens, host_memory_gb) for b in BACKENDS])
    table.attrs.update(gpu=gpu_type, gpus=gpus, precision=shown, batch=batch, weights_GB=m.weight_bytes / 1e9)
    return plots.Measured(table, plan_figure(table, f"{model} {shown} on {gpus}×{gpu.name} ({gpu.memory_GB:g} GB, "
                                                    f"link {gpu.link_GBps:g} GB/s), batch {batch}"))  # fmt: skip


def plan_figure(table: pd.DataFrame, title: str) -> go.Figure:
    """Left: memory on the fullest GPU against its capacity. Right: where each fitting backend's time goes.

    Args:
        table: `plan().table`. title: the figure's title.
    Returns:
        a plotly Figure with two stacked-bar panels.
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=("memory per GPU (GB)", "share of ms/token by cause (%)"))
    labels = [f"{b}<br>{f'{ms:.3g} ms/token' if ok else 'will not fit'}"
              for b, ok, ms in zip(table.backend, table.fits, table.ms_per_token, strict=True)]  # fmt: skip
    for i, part in enumerate(("weights", "gathered", "KV cache", "workspace", "reserved")):
        if f"{part}_GB" in table:
            fig.add_trace(go.Bar(x=labels, y=table[f"{part}_GB"], name=part, marker_color=plots.COLORS[i]), 1, 1)
    fig.add_hline(y=float(table.gpu_memory_GB.iloc[0]), line_dash="dot", annotation_text="GPU memory", row=1, col=1)
    for i, part in enumerate(PARTS):
        share = (100 * table[f"{part}_ms"] / table.ms_per_token).fillna(0.0)
        color = plots.COLORS[(5 + i) % len(plots.COLORS)]
        fig.add_trace(go.Bar(x=labels, y=share, name=part, marker_color=color), 1, 2)
    fig.update_layout(barmode="stack")
    return plots.style(fig, title).update_layout(height=480)


ROW_BACKEND = {"accelerate": "accelerate", "ds-inference": "ds-inference", "ds-zero": "zero-inference"}


def published_check() -> plots.Measured:
    """The plan on every published BLOOM-176B cell (`specs.BLOOM_ROWS`), in-sample and held-out kept apart.

    A ds-zero cell of batch b (per GPU, as its script counts) is planned as zero-inference with b × GPUs sequences.

    Returns:
        Measured: one row per published cell: row, backend, gpus, batch (the published one), sequences (in
        flight), set (in-sample | held-out, from the row's `fit`), published_ms (NaN = OOM), predicted_ms (NaN =
        will not fit), error_pct = 100 × (predicted / published − 1), published_oom, predicted_oom and oom_agrees
        (`costmodel.side_by_side` and `costmodel.summary` read it as they read `costmodel.evaluation()`); figure:
        published vs planned.
    """
    rows, fig = [], go.Figure()
    for i, (key, row) in enumerate(specs.BLOOM_ROWS.items()):
        backend = ROW_BACKEND[row.engine]
        m = _shape("bloom-176b", row.precision)
        for b, pub in row.ms_per_token.items():
            seqs = b * row.gpus if backend.startswith("zero") else b
            pred = _backend(backend, m, specs.A100_80GB, row.gpus, seqs, cm.PROMPT, specs.BLOOM_BENCHMARK_NEW_TOKENS,
                            specs.BLOOM_BENCHMARK_HOST_GB)["ms_per_token"]  # fmt: skip
            rows.append({"row": key, "backend": backend, "gpus": row.gpus, "batch": b, "sequences": seqs,
                         "set": cm.SETS[0] if b in row.fit else cm.SETS[1],
                         "published_ms": math.nan if pub is None else pub, "predicted_ms": pred,
                         "error_pct": math.nan if pub is None or math.isnan(pred) else 100 * (pred / pub - 1),
                         "published_oom": pub is None, "predicted_oom": math.isnan(pred),
                         "oom_agrees": (pub is None) == math.isnan(pred)})  # fmt: skip
        part = pd.DataFrame(rows[-len(row.ms_per_token):])
        color = plots.COLORS[i % len(plots.COLORS)]
        fig.add_trace(go.Scatter(x=part.batch, y=part.published_ms, mode="markers", name=f"{key} published",
                                 marker=dict(size=10, color=color, symbol="circle-open")))  # fmt: skip
        fig.add_trace(go.Scatter(x=part.batch, y=part.predicted_ms, mode="lines", name=f"{key} plan",
                                 line=dict(color=color, dash=None if row.fit else "dash")))  # fmt: skip
    fig.update_xaxes(title="published batch (ds-zero: per GPU)", type="log")
    fig.update_yaxes(title="ms per token", type="log")
    title = "BLOOM-176B on A100-80GB: plan vs published (dashed: rows with no fitted cell)"
    return plots.Measured(pd.DataFrame(rows), plots.style(fig, title))


def batch_sweep(gpu_type: str = specs.A100_80GB.name, gpus: int = specs.BLOOM_BENCHMARK_GPUS,
                precision: str = "bf16", batches: tuple[int, ...] = (1, 8, 32, 128, 512, 2048)) -> plots.Measured:
    """Throughput and per-request latency vs batch for every backend (NaN where it will not fit).

    Args:
        gpu_type, gpus, precision: as for `plan`. batches: batch sizes to plan.
    Returns:
        Measured: rows (batch, backend, fits, ms_per_token, tokens_per_s, request_latency_s); a log-log line figure
        of throughput per backend.
    """
    table = pd.concat([plan(gpu_type, gpus, precision=precision, batch=b).table.assign(batch=b) for b in batches])
    table = table[["batch", "backend", "fits", "ms_per_token", "tokens_per_s", "request_latency_s"]]
    wide = table.pivot(index="batch", columns="backend", values="tokens_per_s").reset_index()
    title = f"Throughput vs batch, {gpus}×{gpu_type} {precisions.canonical(precision)}"
    fig = plots.line(wide, "batch", list(BACKENDS), title, ylabel="tokens / s (all sequences)", log_x=True, log_y=True)
    return plots.Measured(table, fig)
