"""Capstone: plan serving BLOOM-176B on a GPU budget, and explain why benchmarks disagree.

    plan("A100-80GB SXM", gpus=8, dtype="bfloat16", batch=16)   # what fits, how fast, per backend

Four backends, all priced by the cost model of `parallel.costmodel` (calibrated on the published
8×A100 rows, error < STATED_ERROR_PCT there):

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
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import pandas as pd
import torch
import torch.distributed as dist

from labkit import plots
from labkit.parallel import costmodel as cm

STATED_ERROR_PCT = 25.0  # the cost model's accuracy on the published rows (tests/test_costmodel.py)
# Dense bf16 TFLOP/s, HBM TB/s, memory GB, GPU-to-GPU GB/s per direction. A100-80GB from the reference
# numbers; the others from vendor datasheets (L4 has no NVLink: PCIe 4.0 x16).
GPU_TYPES = {
    "A100-80GB SXM": cm.A100_80GB,
    "A100-40GB SXM": cm.GPU("A100-40GB SXM", 312.0, 1.555, 40.0, 300.0),
    "H100-80GB SXM": cm.GPU("H100-80GB SXM", 989.0, 3.35, 80.0, 450.0),
    "H200-141GB SXM": cm.GPU("H200-141GB SXM", 989.0, 4.8, 141.0, 450.0),
    "L4-24GB PCIe": cm.GPU("L4-24GB PCIe", 121.0, 0.3, 24.0, 32.0),
}
DTYPES = {"bfloat16": 2, "float16": 2, "int8": 1}  # weight bytes; KV cache and activations stay 2 bytes
BACKENDS = {"accelerate": "naive PP (+ CPU offload)", "ds-inference": "tensor parallel",
            "zero-inference": "ZeRO-3, stream per GPU", "zero-offload": "ZeRO-3 + CPU offload, stream per GPU"}
# Published start-up to ready (s), 8×A100: reference numbers.
STARTUP_S = {"accelerate": 121.0, "ds-inference (pre-sharded)": 60.0, "ds-inference (unsharded)": 662.0}
PARTS = ("weights (HBM)", "matmuls", "KV cache (HBM)", "overhead", "communication", "CPU offload")


@dataclass(frozen=True)
class QShape(cm.Shape):
    """A model shape whose KV cache keeps 2-byte elements when the weights are quantized."""

    kv_bytes: int = 2

    @property
    def kv_bytes_per_token(self) -> float:
        return 2 * self.layers * self.hidden * self.kv_bytes


def _shape(model: str, dtype: str) -> QShape:
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {list(DTYPES)}")
    base = cm.shape(model)
    return QShape(base.name, base.params, base.layers, base.hidden, base.vocab, DTYPES[dtype])


def _gpu(gpu_type: str, gpu_memory_gb: float, link_GBps: float) -> cm.GPU:
    if gpu_type not in GPU_TYPES:
        raise ValueError(f"unknown gpu_type {gpu_type!r}; choose from {list(GPU_TYPES)}")
    if gpu_memory_gb < 0 or link_GBps < 0:
        raise ValueError("gpu_memory_gb and link_GBps must be >= 0 (0 = the GPU type's own)")
    gpu = GPU_TYPES[gpu_type]
    return replace(gpu, memory_GB=gpu_memory_gb or gpu.memory_GB, link_GBps=link_GBps or gpu.link_GBps)


# --- ZeRO-Inference ---------------------------------------------------------------------------
def zero_step_ms(m: cm.Shape, gpu: cm.GPU, gpus: int, seqs: int, context: int, new: int, offload: bool) -> dict:
    """One forward on each GPU for its own `seqs` sequences (ms, by cause): the whole model is gathered."""
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


def zero_memory_gb(m: cm.Shape, gpu: cm.GPU, gpus: int, seqs: int, tokens: int, offload: bool) -> dict:
    """Per GPU: its weight partition (none with offload), the largest gathered tensor group (a layer or
    the embedding) plus the prefetch bucket (0.9 h²), its own sequences' full-depth KV cache, workspace."""
    hf = cm.calibrate()["accelerate"]
    per_layer = (m.params - m.vocab * m.hidden) / m.layers
    parts = {
        "weights": 0.0 if offload else m.weight_bytes / gpus,
        "gathered": (max(per_layer, m.vocab * m.hidden) + 0.9 * m.hidden**2) * m.bytes_per_param,
        "KV cache": seqs * tokens * m.kv_bytes_per_token,
        "workspace": hf.workspace * seqs * tokens * m.hidden * 2,
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
def _backend(name: str, m: cm.Shape, gpu: cm.GPU, gpus: int, batch: int, prompt: int, new: int,
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
        engine = replace(engine, workspace=engine.workspace * 2 / m.bytes_per_param)  # activations stay 2 bytes
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


def plan(gpu_type: str = "A100-80GB SXM", gpus: int = 8, gpu_memory_gb: float = 0.0, link_GBps: float = 0.0,
         dtype: str = "bfloat16", batch: int = 16, prompt: int = 10, new_tokens: int = 100,
         host_memory_gb: float = 512.0, model: str = "bloom-176b") -> plots.Measured:
    """Per backend: memory on the fullest GPU, whether it fits, predicted ms/token (the benchmark's
    wall / (batch × new tokens)), throughput and per-request latency. 0 for memory or link = the type's."""
    if gpus < 1 or batch < 1 or prompt < 1 or new_tokens < 1:
        raise ValueError(f"gpus, batch, prompt and new_tokens must be >= 1; got {gpus}, {batch}, {prompt}, "
                         f"{new_tokens}")  # fmt: skip
    m, gpu = _shape(model, dtype), _gpu(gpu_type, gpu_memory_gb, link_GBps)
    table = pd.DataFrame([_backend(b, m, gpu, gpus, batch, prompt, new_tokens, host_memory_gb) for b in BACKENDS])
    table.attrs.update(gpu=gpu_type, gpus=gpus, dtype=dtype, batch=batch, weights_GB=m.weight_bytes / 1e9)
    return plots.Measured(table, plan_figure(table, f"{model} {dtype} on {gpus}×{gpu.name} ({gpu.memory_GB:g} GB, "
                                                    f"link {gpu.link_GBps:g} GB/s), batch {batch}"))  # fmt: skip


def plan_figure(table: pd.DataFrame, title: str):
    """Left: memory on the fullest GPU against its capacity. Right: where each fitting backend's time goes."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

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
    return plots._style(fig, title).update_layout(height=480)


def published_check() -> plots.Measured:
    """`plan()` on the published set-up (8×A100-80GB, 16-bit) for every published batch, next to the rows."""
    rows = []
    for batch in sorted({b for r in cm.PUBLISHED.values() for b in r}):
        predicted = plan("A100-80GB SXM", 8, dtype="bfloat16", batch=batch).table.set_index("backend")
        for engine, published in cm.PUBLISHED.items():
            if batch in published:
                pub, pred = published[batch], predicted.loc[engine, "ms_per_token"]
                err = None if pub is None or math.isnan(pred) else 100 * (pred / pub - 1)
                rows.append({"engine": engine, "batch": batch, "published_ms": pub, "predicted_ms": pred,
                             "error_pct": err, "oom_agrees": (pub is None) == math.isnan(pred),
                             "within_stated_error": err is not None and abs(err) < STATED_ERROR_PCT})  # fmt: skip
    table = pd.DataFrame(rows)
    wide = table.pivot(index="batch", columns="engine", values=["published_ms", "predicted_ms"])
    wide.columns = [f"{engine} {kind.split('_')[0]}" for kind, engine in wide.columns]
    wide = wide.reset_index()
    fig = plots.line(wide, "batch", list(wide.columns[1:]), "BLOOM-176B, 8×A100-80GB: capstone plan vs published",
                     ylabel="ms per token", log_x=True, log_y=True)  # fmt: skip
    return plots.Measured(table, fig)


def batch_sweep(gpu_type: str = "A100-80GB SXM", gpus: int = 8, dtype: str = "bfloat16",
                batches: tuple[int, ...] = (1, 8, 32, 128, 512, 2048)) -> plots.Measured:
    """Throughput and per-request latency vs batch for every backend (NaN where it will not fit)."""
    table = pd.concat([plan(gpu_type, gpus, dtype=dtype, batch=b).table.assign(batch=b) for b in batches])
    table = table[["batch", "backend", "fits", "ms_per_token", "tokens_per_s", "request_latency_s"]]
    wide = table.pivot(index="batch", columns="backend", values="tokens_per_s").reset_index()
    fig = plots.line(wide, "batch", list(BACKENDS), f"Throughput vs batch, {gpus}×{gpu_type} {dtype}",
                     ylabel="tokens / s (all sequences)", log_x=True, log_y=True)  # fmt: skip
    return plots.Measured(table, fig)


# --- why a benchmark can show Accelerate ahead of DeepSpeed-Inference ---------------------------
def crossover_link_GBps(batch: int = 1, gpus: int = 8) -> float:
    """The GPU-to-GPU bandwidth below which the model has naive PP beat TP (bisection, 8×A100 otherwise)."""
    m, engines = cm.shape("bloom-176b"), cm.calibrate()

    def tp_minus_pp(link: float) -> float:
        gpu = replace(cm.A100_80GB, link_GBps=link)
        ms = {n: cm.ms_per_token(e, m, gpu, gpus, batch)["ms_per_token"] for n, e in engines.items()}
        return ms["ds-inference"] - ms["accelerate"]

    lo, hi = 1e-4, cm.A100_80GB.link_GBps
    if tp_minus_pp(hi) >= 0 or tp_minus_pp(lo) <= 0:
        return math.nan
    for _ in range(60):  # geometric bisection: bandwidths span orders of magnitude
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if tp_minus_pp(mid) > 0 else (lo, mid)
    return math.sqrt(lo * hi)


def _row(comparison: str, acc: float, ds: float, unit: str, source: str) -> dict:
    return {"comparison": comparison, "accelerate": acc, "ds-inference": ds, "unit": unit, "source": source,
            "accelerate / ds-inference": acc / ds, "looks faster": "accelerate" if acc < ds else "ds-inference"}


def accounting_traps(big_batch: int = 32, new_tokens: int = 100, slow_link_GBps: float = 0.125) -> plots.Measured:
    """Ways one benchmark can rank Accelerate first, from the published rows and from the model: ms/token at
    mismatched batch, ms/token (throughput) read as latency, start-up time, a slow link."""
    pub = cm.PUBLISHED

    def predicted(batch: int, link: float = 0.0) -> pd.Series:
        return plan(batch=batch, link_GBps=link, new_tokens=new_tokens).table.set_index("backend").ms_per_token

    model = {b: predicted(b) for b in (1, big_batch)}
    slow = predicted(big_batch, slow_link_GBps)
    rows = []
    for source, ms in (("published", lambda e, b: pub[e][b]), ("model", lambda e, b: model[b][e])):
        rows += [
            _row(f"ms/token: accelerate at batch {big_batch} vs ds-inference at batch 1", ms("accelerate", big_batch),
                 ms("ds-inference", 1), "ms", source),
            _row(f"ms/token, both at batch {big_batch}", ms("accelerate", big_batch), ms("ds-inference", big_batch),
                 "ms", source),
            _row(f"request latency of those runs ({new_tokens} tokens)", ms("accelerate", big_batch) * big_batch
                 * new_tokens / 1e3, ms("ds-inference", 1) * new_tokens / 1e3, "s", source),
            _row(f"start-up + first {new_tokens} tokens at batch 1 (unsharded ds checkpoint)",
                 STARTUP_S["accelerate"] + ms("accelerate", 1) * new_tokens / 1e3,
                 STARTUP_S["ds-inference (unsharded)"] + ms("ds-inference", 1) * new_tokens / 1e3, "s", source),
        ]  # fmt: skip
    rows.append(_row(f"ms/token at batch {big_batch} over a {slow_link_GBps:g} GB/s link (1 Gb Ethernet)",
                     slow["accelerate"], slow["ds-inference"], "ms", "model"))  # fmt: skip
    table = pd.DataFrame(rows)
    saved = pub["accelerate"][1] - pub["ds-inference"][1]  # ms per token ds-inference saves at batch 1
    extra_startup_s = STARTUP_S["ds-inference (unsharded)"] - STARTUP_S["accelerate"]
    table.attrs["startup_crossover_tokens"] = extra_startup_s / saved * 1e3  # tokens before ds-inference catches up
    table.attrs["crossover_link_GBps"] = {b: crossover_link_GBps(b) for b in (1, big_batch)}
    return plots.Measured(table, traps_figure(table))


def traps_figure(table: pd.DataFrame):
    """One bar per comparison: Accelerate's time ÷ DeepSpeed-Inference's (log scale; left of 1 = Accelerate ahead)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, (source, part) in enumerate(table.groupby("source", sort=False)):
        ratio = part["accelerate / ds-inference"]
        fig.add_trace(go.Bar(y=part.comparison, x=ratio, name=source, orientation="h", marker_color=plots.COLORS[i],
                             text=[f"{r:.2f}×" for r in ratio], textposition="outside"))  # fmt: skip
    fig.add_vline(x=1.0, line_dash="dot")
    fig.update_xaxes(type="log", title="Accelerate time ÷ DeepSpeed-Inference time")
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(barmode="group")
    plots._style(fig, "When does Accelerate look ahead? (bars left of 1)")
    return fig.update_layout(height=560, margin=dict(l=430))  # room for the comparisons' names


def tp_vs_pipeline_rank(model_name: str = "tiny-llama", batches: tuple[int, ...] = (1, 16), seq: int = 16,
                        repeat: int = 5) -> dict:
    """Rank function: the same forward as one device, tensor parallel (from scratch) and naive pipeline, at
    each batch (median ms over `repeat`, all ranks in step); the TP and pipeline logits must agree."""
    from labkit.parallel import pp, tp

    rank, world = dist.get_rank(), dist.get_world_size()
    model = tp.load_llama(model_name)
    tp_model = tp.TPLlama(model)
    lo, hi = pp.split_layers(model.config.num_hidden_layers, world)[rank]
    stage = pp.LlamaStage(model, lo, hi).eval()
    rows, max_diff = [], 0.0
    for b in batches:
        ids = torch.randint(0, model.config.vocab_size, (b, seq), generator=torch.Generator().manual_seed(b))
        ids = ids.to(model.device)
        shape = (b, seq, model.config.hidden_size)  # (batch, seq, hidden) between the pipeline stages
        with torch.no_grad():
            single = pp._time_on_all(lambda ids=ids: model(input_ids=ids), repeat)
            tp_ms = pp._time_on_all(lambda ids=ids: tp_model(ids), repeat)
            naive_ms = pp._time_on_all(lambda ids=ids, s=shape: pp.naive_forward(stage, ids, s, pp.Recorder()), repeat)
            tp_out, pp_out = tp_model(ids), pp.naive_forward(stage, ids, shape, pp.Recorder())
        if rank == world - 1:  # the last stage holds the pipeline's logits (batch, seq, vocab)
            max_diff = max(max_diff, float((tp_out - pp_out).abs().max()))
        act = torch.zeros(shape, device=model.device)  # what each TP all-reduce carries
        dist.barrier()
        start = time.perf_counter()
        for _ in range(20):
            dist.all_reduce(act)
        all_reduce_ms = (time.perf_counter() - start) / 20 * 1e3
        rows.append({"batch": b, "one device": single, "tensor parallel": tp_ms, "naive pipeline": naive_ms,
                     "all_reduce_ms": all_reduce_ms})  # fmt: skip
    return {"rank": rank, "world_size": world, "threads": torch.get_num_threads(), "seq": seq, "rows": rows,
            "max_diff_tp_vs_pipeline": max_diff, "layers": model.config.num_hidden_layers}


def small_scale(ranks: list[dict]) -> plots.Measured:
    """The measured latencies (rank 0's: all ranks step together) in the benchmark's accounting: one forward
    stands in for one generation step, so ms/token = latency / batch."""
    wide = pd.DataFrame(ranks[0]["rows"])
    # Small-scale model: TP = half of one device's compute + (2 layers + 1) all-reduces (measured alone).
    all_reduces = 2 * ranks[0]["layers"] + 1
    tp_model = wide[["batch", "one device", "tensor parallel", "all_reduce_ms"]].assign(all_reduces=all_reduces)
    tp_model["tensor parallel (model)"] = wide["one device"] / 2 + all_reduces * wide.all_reduce_ms
    long = wide.drop(columns="all_reduce_ms").melt(id_vars="batch", var_name="strategy", value_name="latency_ms")
    long["ms_per_token"] = long.latency_ms / long.batch
    long["tokens_per_s"] = 1e3 / long.ms_per_token
    long.attrs.update(world_size=ranks[0]["world_size"], threads_per_rank=ranks[0]["threads"], tp_model=tp_model)
    long["label"] = "batch " + long.batch.astype(str)
    fig = plots.bars(long, "label", "ms_per_token", f"Measured here: {ranks[0]['world_size']} CPU ranks, tiny Llama, "
                     "ms per token (latency ÷ batch)", color="strategy", ylabel="ms per token")  # fmt: skip
    return plots.Measured(long, fig)

