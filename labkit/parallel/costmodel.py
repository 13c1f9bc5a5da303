"""A cost model of LLM generation on several GPUs: tensor parallelism (DeepSpeed-Inference style) vs
naive pipeline parallelism (Accelerate's `device_map="auto"`), calibrated on published BLOOM-176B rows.

One decode step (one new token for each of `batch` sequences) costs, per strategy:

    TP (p GPUs, all busy):  weights/p / HBM  +  batch · 2·params/p / FLOP/s  +  KV reads/p / HBM
                            + 2 all-reduces per layer over the link  +  layers · per-layer overhead
    naive PP (one busy):    weights / HBM  +  batch · 2·params / FLOP/s  +  KV reads / HBM
                            + activation hops between GPUs  +  layers · overhead  (+ CPU→GPU streaming
                            of whatever does not fit in GPU memory: Accelerate's offload)

No overlap is assumed between the terms. The free constants — a matmul efficiency and a per-layer
overhead per engine, and a workspace factor for memory — are fitted to the published rows; the HBM
and link efficiencies are fixed (a batch-1 step cannot tell weight streaming from per-layer overhead:
both are constant in batch). ms/token follows the benchmark's definition: generation wall time /
(batch × new tokens), prefill included.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

# Published rows (ms/token, None = OOM): huggingface/transformers-bloom-inference, 8×A100-80GB.
PUBLISHED = {
    "accelerate": {1: 230.38, 8: 31.78, 16: 17.84, 32: 10.89, 64: None},
    "ds-inference": {1: 44.02, 8: 5.70, 16: 3.01, 32: 1.68, 64: 1.00, 128: 0.69, 256: None},
}
STRATEGY = {"accelerate": "naive-pp", "ds-inference": "tp"}
HBM_EFFICIENCY = 0.85  # streaming reads reach ~85 % of peak HBM bandwidth (fixed, see above)
LINK_EFFICIENCY = 0.7  # NCCL ring all-reduce bus bandwidth vs the link's peak (fixed)
RESERVED_GB = 2.0  # CUDA context, allocator slack: memory a GPU never gives to the model
ACCELERATE_BALANCE = 1.10  # bloom-accelerate-inference.py caps each GPU at weights/n × 1.10
OFFLOAD_ABOVE = 0.9  # Accelerate fills GPUs to ~90 % with weights before it offloads the rest to the CPU
HOST_GBPS = 12.0  # CPU→GPU copies of offloaded weights (pageable PCIe 4.0 x16, about half its peak)


@dataclass(frozen=True)
class GPU:
    name: str
    tflops: float  # dense fp16/bf16
    hbm_TBps: float
    memory_GB: float
    link_GBps: float  # GPU-to-GPU, per direction


A100_80GB = GPU("A100-80GB SXM", 312.0, 2.0, 80.0, 300.0)


@dataclass(frozen=True)
class Shape:
    """What the cost model needs from a model config."""

    name: str
    params: int
    layers: int
    hidden: int
    vocab: int
    bytes_per_param: int = 2

    @property
    def weight_bytes(self) -> float:
        return self.params * self.bytes_per_param

    @property
    def kv_bytes_per_token(self) -> float:  # K and V, every layer (no GQA in the models used here)
        return 2 * self.layers * self.hidden * self.bytes_per_param


@functools.lru_cache(maxsize=8)
def shape(model: str = "bloom-176b") -> Shape:
    """A model from anatomy.KNOWN_CONFIGS; parameters counted on the meta device."""
    from labkit import anatomy

    if model not in anatomy.KNOWN_CONFIGS:
        raise ValueError(f"unknown model {model!r}; choose from {list(anatomy.KNOWN_CONFIGS)}")
    cfg = anatomy._config(anatomy.KNOWN_CONFIGS[model])
    get = anatomy._get
    params = anatomy.model_memory(cfg, "bfloat16", 1, 1).params
    return Shape(model, params, get(cfg, "num_hidden_layers", "n_layer"), get(cfg, "hidden_size", "n_embed"),
                 cfg.vocab_size)  # fmt: skip


@dataclass(frozen=True)
class Engine:
    """An engine's fitted constants."""

    name: str
    strategy: str  # "tp" or "naive-pp"
    flop_efficiency: float  # fraction of peak FLOP/s its matmuls reach
    layer_overhead_ms: float  # per layer per step: kernel launches, Python, all-reduce latency
    workspace: float  # live activation/workspace bytes per (sequence × token × hidden × bytes)


def step_ms(engine: Engine, m: Shape, gpu: GPU, gpus: int, batch: int, context: int, new: int = 1) -> dict:
    """Time of one forward over `new` tokens per sequence with `context` tokens cached, split by cause (ms)."""
    tp = gpus if engine.strategy == "tp" else 1  # how many GPUs share each layer's work
    bw = gpu.hbm_TBps * 1e12 * HBM_EFFICIENCY
    tokens = batch * new
    out = {
        "weights (HBM)": m.weight_bytes / tp / bw,
        "matmuls": tokens * 2 * m.params / tp / (gpu.tflops * 1e12 * engine.flop_efficiency),
        "KV cache (HBM)": batch * context * m.kv_bytes_per_token / tp / bw,
        "overhead": m.layers * engine.layer_overhead_ms / 1e3,
    }
    act = tokens * m.hidden * m.bytes_per_param
    link = gpu.link_GBps * 1e9 * LINK_EFFICIENCY
    if engine.strategy == "tp":  # 2 ring all-reduces per layer, each moves 2(p−1)/p of the activations
        out["communication"] = 2 * m.layers * 2 * (tp - 1) / tp * act / link if tp > 1 else 0.0
        out["CPU offload"] = 0.0  # DeepSpeed-Inference keeps every weight on the GPUs
    else:  # one activation hop per GPU boundary, plus streaming whatever weights live on the CPU
        out["communication"] = (gpus - 1) * act / link
        out["CPU offload"] = offloaded_bytes(engine, m, gpu, gpus) / (HOST_GBPS * 1e9)
    return {k: v * 1e3 for k, v in out.items()}


def memory_gb(engine: Engine, m: Shape, gpu: GPU, gpus: int, batch: int, tokens: int) -> dict:
    """Memory on the fullest GPU (GB): weights + KV cache for `tokens` + workspace + reserve.

    TP splits everything p ways. Naive PP's most loaded GPU holds weights/n × 1.10 (a balanced device
    map) and its layers' KV cache, but full-width activations; weights beyond 90 % of a GPU stay on
    the CPU (Accelerate's offload), decided at load time, before any batch is known."""
    tp = engine.strategy == "tp"
    share = 1 / gpus if tp else ACCELERATE_BALANCE / gpus
    weights = m.weight_bytes * share
    if not tp:
        weights = min(weights, OFFLOAD_ABOVE * gpu.memory_GB * 1e9 - RESERVED_GB * 1e9)
    parts = {
        "weights": weights,
        "KV cache": batch * tokens * m.kv_bytes_per_token * share,
        "workspace": engine.workspace * batch * tokens * m.hidden * m.bytes_per_param / (gpus if tp else 1),
        "reserved": RESERVED_GB * 1e9,
    }
    return {k: v / 1e9 for k, v in parts.items()}


def offloaded_bytes(engine: Engine, m: Shape, gpu: GPU, gpus: int) -> float:
    """Weights that naive PP keeps in CPU memory and copies to the GPUs at every step."""
    if engine.strategy == "tp":
        return 0.0
    on_gpus = memory_gb(engine, m, gpu, gpus, 1, 1)["weights"] * 1e9 * gpus / ACCELERATE_BALANCE
    return max(0.0, m.weight_bytes - on_gpus)


def fits(engine: Engine, m: Shape, gpu: GPU, gpus: int, batch: int, tokens: int) -> bool:
    return sum(memory_gb(engine, m, gpu, gpus, batch, tokens).values()) <= gpu.memory_GB


def ms_per_token(engine: Engine, m: Shape, gpu: GPU, gpus: int, batch: int, prompt: int = 10,
                 new_tokens: int = 100) -> dict:
    """The benchmark's ms/token (wall time / (batch × new tokens)) and its breakdown; NaN when it will not fit."""
    if not fits(engine, m, gpu, gpus, batch, prompt + new_tokens):
        return {"ms_per_token": math.nan}
    parts = step_ms(engine, m, gpu, gpus, batch, 0, new=prompt)  # prefill gives the first token
    for t in range(1, new_tokens):
        for k, v in step_ms(engine, m, gpu, gpus, batch, prompt + t).items():
            parts[k] += v
    scale = 1 / (batch * new_tokens)
    return {"ms_per_token": sum(parts.values()) * scale, **{k: v * scale for k, v in parts.items()}}


# --- calibration -----------------------------------------------------------------------------
def _fit_time(name: str, m: Shape, gpu: GPU, gpus: int) -> tuple[float, float]:
    """Least squares on relative error: ms/token is linear in (1/flop_efficiency, layer overhead)."""
    rows = [(b, ms) for b, ms in PUBLISHED[name].items() if ms is not None]
    unit_flop = Engine(name, STRATEGY[name], 1.0, 0.0, 0.0)
    A, y = [], []
    for b, ms in rows:
        base = ms_per_token(unit_flop, m, gpu, gpus, b)
        overhead_per_ms = ms_per_token(replace(unit_flop, layer_overhead_ms=1.0), m, gpu, gpus, b)["overhead"]
        fixed = base["ms_per_token"] - base["matmuls"]
        A.append([base["matmuls"] / ms, overhead_per_ms / ms])
        y.append((ms - fixed) / ms)
    (inv_eff, overhead), *_ = np.linalg.lstsq(np.array(A), np.array(y), rcond=None)
    return 1 / inv_eff, max(0.0, overhead)


def _fit_workspace(engine: Engine, m: Shape, gpu: GPU, gpus: int, tokens: int) -> tuple[float, float, float]:
    """The workspace factor's feasible interval (every published batch fits, the OOM one does not) and
    its geometric middle."""
    rows = PUBLISHED[engine.name]
    ok = max(b for b, ms in rows.items() if ms is not None)
    oom = min(b for b, ms in rows.items() if ms is None)

    def spare(b: int) -> float:  # GB left for the workspace at batch b
        mem = memory_gb(replace(engine, workspace=0.0), m, gpu, gpus, b, tokens)
        return gpu.memory_GB - sum(mem.values())

    per_unit = lambda b: memory_gb(replace(engine, workspace=1.0), m, gpu, gpus, b, tokens)["workspace"]  # noqa: E731
    hi = spare(ok) / per_unit(ok)  # largest factor at which the last published batch still fits
    lo = max(0.0, spare(oom) / per_unit(oom))  # smallest at which the OOM batch no longer fits
    return lo, hi, math.sqrt(max(lo, 1e-9) * hi)


@functools.lru_cache(maxsize=4)
def calibrate(gpus: int = 8, prompt: int = 10, new_tokens: int = 100) -> dict[str, Engine]:
    """Fit each engine's constants to its published row (BLOOM-176B, 8×A100-80GB)."""
    m = replace(shape("bloom-176b"), bytes_per_param=2)
    engines = {}
    for name in PUBLISHED:
        eff, overhead = _fit_time(name, m, A100_80GB, gpus)
        engine = Engine(name, STRATEGY[name], float(eff), float(overhead), 0.0)
        lo, hi, mid = _fit_workspace(engine, m, A100_80GB, gpus, prompt + new_tokens)
        if lo > hi:
            raise RuntimeError(f"no workspace factor makes {name} fit and OOM where published ({lo:.1f} > {hi:.1f})")
        engines[name] = replace(engine, workspace=float(mid))
    return engines


def workspace_interval(name: str, gpus: int = 8, tokens: int = 110) -> tuple[float, float]:
    """Workspace factors consistent with the published fit/OOM cells (for the lab's explanation)."""
    engine = calibrate()[name]
    lo, hi, _ = _fit_workspace(engine, shape("bloom-176b"), A100_80GB, gpus, tokens)
    return lo, hi


def fit_table() -> pd.DataFrame:
    """Published vs predicted ms/token for every calibration cell, with the relative error."""
    m, rows = shape("bloom-176b"), []
    for name, engine in calibrate().items():
        for b, published in PUBLISHED[name].items():
            pred = ms_per_token(engine, m, A100_80GB, 8, b)["ms_per_token"]
            rows.append({"engine": name, "batch": b, "published_ms": published, "predicted_ms": pred,
                         "predicted_oom": math.isnan(pred), "published_oom": published is None,
                         "error_pct": None if published is None or math.isnan(pred) else 100 * (pred / published - 1)})
    return pd.DataFrame(rows)


# --- widget-friendly views ---------------------------------------------------------------------
def published_vs_predicted():
    """The calibration rows next to the model's predictions (ms/token vs batch, log-log)."""
    import plotly.graph_objects as go

    from labkit import plots

    table = fit_table()
    fig = go.Figure()
    for i, (name, part) in enumerate(table.groupby("engine", sort=False)):
        color = plots.COLORS[i]
        fig.add_trace(go.Scatter(x=part.batch, y=part.published_ms, mode="markers", name=f"{name} published",
                                 marker=dict(size=11, color=color, symbol="circle-open")))  # fmt: skip
        fig.add_trace(go.Scatter(x=part.batch, y=part.predicted_ms, mode="lines+markers", name=f"{name} model",
                                 line=dict(color=color)))  # fmt: skip
        for b in part.batch[part.predicted_oom]:
            fig.add_annotation(x=math.log10(b), y=math.log10(part.predicted_ms.min()), text=f"{name}: OOM",
                               showarrow=False, font=dict(color=color), yshift=20 * i)  # fmt: skip
    fig.update_xaxes(title="batch size", type="log")
    fig.update_yaxes(title="ms per token", type="log")
    worst = table.error_pct.abs().max()
    return plots.Measured(table, plots._style(fig, f"BLOOM-176B on 8×A100-80GB: model vs published (worst error "
                                                   f"{worst:.1f} %)"))  # fmt: skip


def predict(gpus: int = 8, gpu_memory_gb: float = 80.0, link_GBps: float = 300.0, batch: int = 16,
            tflops: float = 312.0, hbm_TBps: float = 2.0, model: str = "bloom-176b", prompt: int = 10,
            new_tokens: int = 100):
    """Predicted ms/token, throughput and memory per GPU for TP (DeepSpeed-Inference) and naive PP
    (Accelerate) on `gpus` GPUs, with the calibrated engine constants; where the time goes."""
    import plotly.graph_objects as go

    from labkit import plots

    if gpus < 1 or batch < 1 or new_tokens < 1 or prompt < 1:
        raise ValueError(f"gpus, batch, prompt and new_tokens must be >= 1; got {gpus}, {batch}, {prompt}, {new_tokens}"
                         )  # fmt: skip
    if min(gpu_memory_gb, link_GBps, tflops, hbm_TBps) <= 0:
        raise ValueError("gpu_memory_gb, link_GBps, tflops and hbm_TBps must be positive")
    m, gpu = shape(model), GPU("custom", tflops, hbm_TBps, gpu_memory_gb, link_GBps)
    rows, fig = [], go.Figure()
    for name, engine in calibrate().items():
        mem = memory_gb(engine, m, gpu, gpus, batch, prompt + new_tokens)
        timing = ms_per_token(engine, m, gpu, gpus, batch, prompt, new_tokens)
        if math.isnan(timing["ms_per_token"]):  # still show where the time would go, marked OOM
            timing = ms_per_token(replace(engine, workspace=0.0), m, replace(gpu, memory_GB=math.inf), gpus, batch,
                                  prompt, new_tokens)  # fmt: skip
            ok = False
        else:
            ok = True
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
    return plots.Measured(table, plots._style(fig, title))
