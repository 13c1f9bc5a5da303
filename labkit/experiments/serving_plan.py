"""Plan serving a large model on a GPU budget: what fits, how fast, per backend.

    plan("A100-80GB SXM", gpus=8, precision="bf16", batch=16)   # memory, fit, ms/token, latency per backend

Four backends, all priced by the cost model of `labkit.parallel.costmodel` (calibrated on the published
8×A100 rows; its in-sample residual is `costmodel.fit_residual_pct()`):

- accelerate      naive pipeline (`device_map="auto"`): one GPU busy at a time; weights that do not fit
                  on the GPUs stay on the CPU and are copied in at every step (offload).
- ds-inference    DeepSpeed-Inference tensor parallelism: every GPU works on every layer.
- zero-inference  ZeRO-3, one request stream per GPU: each GPU *stores* 1/N of the weights and
                  all-gathers every layer from its peers before using it (the BLOOM ds-zero script).
- zero-offload    the same with the partitions in CPU memory (`offload_param: cpu`): each GPU first
                  copies its partition in over its own PCIe link, then all-gathers.

ZeRO-Inference assumptions (no published row to fit it to): it runs Hugging Face's modeling code, so it
takes Accelerate's fitted matmul efficiency, per-layer overhead and workspace; the batch is split evenly
over the GPUs; all GPUs step together (`synced_gpus`), so every step all-gathers the whole model; PCIe
links are not shared between GPUs; no overlap of fetching and computing (like the rest of the model).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from labkit import plots
from labkit import precision as precisions
from labkit.models import specs
from labkit.parallel import costmodel as cm

PRECISIONS = ("bf16", "fp16", "int8")  # of the weights; the KV cache and activations stay 16-bit
ACTIVATION_BYTES = precisions.bytes_per_value("bf16")
BACKENDS = {"accelerate": "naive PP (+ CPU offload)", "ds-inference": "tensor parallel",
            "zero-inference": "ZeRO-3, stream per GPU", "zero-offload": "ZeRO-3 + CPU offload, stream per GPU"}
PARTS = ("weights (HBM)", "matmuls", "KV cache (HBM)", "overhead", "communication", "CPU offload")
# DeepSpeed's ZeRO-3 prefetch bucket as the Hugging Face integration sizes it ("auto"): 0.9 × hidden² values.
PREFETCH_BUCKET_HIDDEN2 = 0.9


def _shape(model: str, precision: str) -> cm.Shape:
    """The model's shape with weights in `precision` and a 16-bit KV cache (bf16 unless the weights are fp16)."""
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


# --- ZeRO-Inference ---------------------------------------------------------------------------
def zero_step_ms(m: cm.Shape, gpu: specs.GPU, gpus: int, seqs: int, context: int, new: int, offload: bool) -> dict:
    """One forward on each GPU for its own sequences, by cause: the whole model is gathered every step.

    Args:
        m: the model. gpu: one GPU's datasheet. gpus: how many. seqs: sequences per GPU. context: cached tokens.
        new: tokens computed per sequence. offload: the partitions live in CPU memory (copied in over PCIe).
    Returns:
        {cause: ms}, the causes of `costmodel.step_ms`.
    """
    hf = cm.calibrate()["accelerate"]  # same modeling code as Accelerate
    bw = gpu.hbm_TBps * 1e12 * cm.HBM_EFFICIENCY
    out = {
        "weights (HBM)": m.weight_bytes / bw,  # every GPU reads every (gathered) weight
        "matmuls": seqs * new * 2 * m.params / (gpu.tflops * 1e12 * hf.flop_efficiency),
        "KV cache (HBM)": seqs * context * m.kv_bytes_per_token / bw,
        "overhead": m.layers * hf.layer_overhead_ms / 1e3,
        "communication": (gpus - 1) / gpus * m.weight_bytes / (gpu.link_GBps * 1e9 * cm.LINK_EFFICIENCY),
        "CPU offload": m.weight_bytes / gpus / (cm.HOST_GBPS * 1e9) if offload else 0.0,  # own partition in
    }
    return {k: v * 1e3 for k, v in out.items()}


def zero_memory_gb(m: cm.Shape, gpu: specs.GPU, gpus: int, seqs: int, tokens: int, offload: bool) -> dict:
    """Memory per GPU under ZeRO-Inference.

    Its weight partition (none with offload), the largest gathered tensor group (a layer or the embedding) plus the
    prefetch bucket, its own sequences' full-depth KV cache, workspace and the reserve.

    Args:
        m, gpu, gpus, seqs, offload: as for `zero_step_ms`. tokens: prompt + generated tokens per sequence.
    Returns:
        {"weights", "gathered", "KV cache", "workspace", "reserved"} in GB.
    """
    hf = cm.calibrate()["accelerate"]
    per_layer = (m.params - m.vocab * m.hidden) / m.layers
    bucket = PREFETCH_BUCKET_HIDDEN2 * m.hidden**2
    parts = {
        "weights": 0.0 if offload else m.weight_bytes / gpus,
        "gathered": (max(per_layer, m.vocab * m.hidden) + bucket) * m.bytes_per_param,
        "KV cache": seqs * tokens * m.kv_bytes_per_token,
        "workspace": hf.workspace * seqs * tokens * m.hidden * ACTIVATION_BYTES,
        "reserved": cm.RESERVED_GB * 1e9,
    }
    return {k: v / 1e9 for k, v in parts.items()}


def _generation(step: Callable[[int, int], dict], prompt: int, new_tokens: int) -> dict:
    """Wall ms of a whole generation by cause: prefill (`prompt` tokens) then new_tokens − 1 decode steps."""
    parts = step(0, prompt)
    for t in range(1, new_tokens):
        for k, v in step(prompt + t, 1).items():
            parts[k] += v
    return parts


# --- the plan ---------------------------------------------------------------------------------
def _backend(name: str, m: cm.Shape, gpu: specs.GPU, gpus: int, batch: int, prompt: int, new: int,
             host_gb: float) -> dict:  # fmt: skip
    """One backend's row: memory on the fullest GPU, whether it fits, wall time by cause."""
    tokens = prompt + new
    if name.startswith("zero"):
        offload, seqs = name == "zero-offload", math.ceil(batch / gpus)
        mem = zero_memory_gb(m, gpu, gpus, seqs, tokens, offload)
        on_host = m.weight_bytes / 1e9 if offload else 0.0
        wall = _generation(lambda ctx, n: zero_step_ms(m, gpu, gpus, seqs, ctx, n, offload), prompt, new)
    else:
        engine = cm.calibrate()[name]
        # the fitted workspace is per weight byte; activations stay 16-bit when the weights are smaller
        engine = replace(engine, workspace=engine.workspace * ACTIVATION_BYTES / m.bytes_per_param)
        mem = cm.memory_gb(engine, m, gpu, gpus, batch, tokens)
        on_host = cm.offloaded_bytes(engine, m, gpu, gpus) / 1e9
        wall = _generation(lambda ctx, n: cm.step_ms(engine, m, gpu, gpus, batch, ctx, n), prompt, new)
    need = sum(mem.values())
    if need > gpu.memory_GB:
        why = f"will not fit: needs {need:.0f} GB per GPU, has {gpu.memory_GB:g}"
    elif on_host > host_gb:
        why = f"will not fit: {on_host:.0f} GB of weights offloaded to a {host_gb:g} GB host"
    else:
        why = f"fits; {on_host:.0f} GB of weights streamed from the CPU every step" if on_host else "fits"
    fits = why.startswith("fits")
    total = sum(wall.values()) if fits else math.nan
    return {"backend": name, "how": BACKENDS[name], "fits": fits, "why": why, "memory_per_gpu_GB": need,
            "gpu_memory_GB": gpu.memory_GB, "offloaded_GB": on_host, "ms_per_token": total / (batch * new),
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
        fig.add_trace(go.Bar(x=labels, y=share, name=part, marker_color=plots.COLORS[6 + i]), 1, 2)
    fig.update_layout(barmode="stack")
    return plots.style(fig, title).update_layout(height=480)


def published_check() -> plots.Measured:
    """`plan()` on the published set-up (8×A100-80GB, bf16) at every published batch, next to the published rows.

    Returns:
        Measured: one row per (engine, batch) of `specs.PUBLISHED_MS_PER_TOKEN`: published_ms (None = OOM),
        predicted_ms (NaN = will not fit), error_pct = 100 × (predicted / published − 1) and oom_agrees.
    """
    rows, published = [], specs.PUBLISHED_MS_PER_TOKEN
    for batch in sorted({b for r in published.values() for b in r}):
        predicted = plan(specs.A100_80GB.name, specs.BLOOM_BENCHMARK_GPUS, batch=batch).table.set_index("backend")
        for engine, row in published.items():
            if batch in row:
                pub, pred = row[batch], predicted.loc[engine, "ms_per_token"]
                err = None if pub is None or math.isnan(pred) else 100 * (pred / pub - 1)
                rows.append({"engine": engine, "batch": batch, "published_ms": pub, "predicted_ms": pred,
                             "error_pct": err, "oom_agrees": (pub is None) == math.isnan(pred)})  # fmt: skip
    table = pd.DataFrame(rows)
    wide = table.pivot(index="batch", columns="engine", values=["published_ms", "predicted_ms"])
    wide.columns = [f"{engine} {kind.split('_')[0]}" for kind, engine in wide.columns]
    wide = wide.reset_index()
    title = f"BLOOM-176B, {specs.BLOOM_BENCHMARK_GPUS}×{specs.A100_80GB.name}: plan vs published"
    fig = plots.line(wide, "batch", list(wide.columns[1:]), title, ylabel="ms per token", log_x=True, log_y=True)
    return plots.Measured(table, fig)


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
