"""An edge device, played on this machine: one CPU thread, a memory budget, int8 weights.

Phones, single-board computers and NPUs run a model with few cores and a fixed memory budget. The table puts the
three sides of the trade next to each other at that setting: size (estimated before loading, on disk, in memory),
latency (one token's forward and a prompt's, batch 1) and quality (perplexity on held-out plays). OpenVINO lists the
inference devices it can see here (CPU, GPU, NPU) — the runtime an Intel laptop's NPU is reached through.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass

import plotly.graph_objects as go
import torch

from labkit import measure, models, plots
from labkit.data.windows import eval_tokens
from labkit.engines.base import torch_threads
from labkit.experiments.quantization import quality
from labkit.plots import Measured
from labkit.quant import quantize

# Quantizers that run on a CPU as PyTorch modules, and the precision `models.estimate_memory` sizes each at.
ESTIMATE_PRECISION = {"fp32": "fp32", "bf16": "bf16", "fp16": "fp16", "int8-dynamic": "int8", "int8-weight": "int8"}
EDGE_QUANTIZERS = ("fp32", "int8-dynamic")


@dataclass
class EdgeResult(Measured):
    """`edge_table`'s table and figure, and the devices OpenVINO sees (empty with the reason when it cannot look)."""

    openvino_devices: tuple[str, ...] = ()
    openvino_note: str = ""


def openvino_devices() -> tuple[tuple[str, ...], str]:
    """The inference devices OpenVINO finds here (`openvino.Core().available_devices`: "CPU", "GPU", "NPU", ...).

    Returns:
        (devices, note): the device names, and a note naming each device's full name, or why none was listed
        (OpenVINO not installed).
    """
    if importlib.util.find_spec("openvino") is None:
        return (), "OpenVINO is not installed here (pip install openvino)"
    import openvino as ov  # optional and heavy: only when asked

    core = ov.Core()
    found = tuple(core.available_devices)
    names = [f"{d}: {core.get_property(d, 'FULL_DEVICE_NAME')}" for d in found]
    return found, "; ".join(names)


def edge_table(source: str = "tiny-bloom-shakespeare", quantizers: Sequence[str] = EDGE_QUANTIZERS, threads: int = 1,
               memory_cap_mib: float = 256, budget: int = 512, prompt_tokens: int = 64,
               repeat: int = 10) -> EdgeResult:
    """Each quantizer on the CPU with `threads` threads: size against a memory cap, batch-1 latency, perplexity.

    Args:
        source: a registry model. quantizers: keys of ESTIMATE_PRECISION ("fp32" first: the reference).
        threads: torch intra-op threads while building, timing and scoring (restored afterwards).
        memory_cap_mib: the device's budget for the weights, MiB. budget: evaluation tokens (`eval_tokens`, windows
            of 256). prompt_tokens: the timed prompt's length. repeat: timed forwards per model (side by side).
    Returns:
        EdgeResult: table (quantizer, threads, estimate_MiB = `models.estimate_memory` at the quantizer's precision
        (parameters × bytes per value, before loading), stored_MiB (state_dict), resident_MiB (tensors in memory),
        fits_estimate / fits_resident: <= the cap, perplexity, top1_agreement and kl_vs_fp32 (`quantization.quality`),
        step_ms: a 1-token forward (batch 1: every weight read for one token), prefill_ms: a 1 × prompt_tokens
        forward, size_vs_fp32, step_speedup_vs_fp32 = fp32 step ms / step ms), a figure of resident MiB vs step ms
        with the cap, and OpenVINO's device list. attrs: memory_cap_mib, threads, hardware.
    Raises:
        ValueError: before any work, for an unknown quantizer (naming ESTIMATE_PRECISION), a list not starting with
            "fp32", threads, repeat or prompt_tokens < 1, or a cap <= 0; for an unknown model (the registry).
    """
    unknown = [q for q in quantizers if q not in ESTIMATE_PRECISION]
    if unknown or not quantizers or quantizers[0] != "fp32":
        raise ValueError(f"quantizers must start with 'fp32' and come from {list(ESTIMATE_PRECISION)}; "
                         f"got {list(quantizers)}")
    if min(threads, repeat, prompt_tokens) < 1 or memory_cap_mib <= 0:
        raise ValueError(f"threads, repeat and prompt_tokens must be >= 1 and memory_cap_mib > 0; got {threads}, "
                         f"{repeat}, {prompt_tokens}, {memory_cap_mib}")
    with torch_threads(threads):
        base, tok = models.load_model(source, device="cpu")
        built = {name: quantize(name, source, device="cpu", model=base) for name in quantizers}
        scores = quality(built, built["fp32"], eval_tokens(tok, budget)).set_index("quantizer")
        one = torch.tensor([[tok.bos_token_id or 1]])
        prompt = torch.randint(10, min(len(tok), 1000), (1, prompt_tokens), generator=torch.Generator().manual_seed(0))
        fns = {f"{n} {kind}": (lambda m=q.model, ids=ids: m(input_ids=ids, use_cache=False))
               for n, q in built.items() for kind, ids in (("step", one), ("prefill", prompt))}
        with torch.no_grad():  # no_grad, not inference_mode: some quantized modules refuse inference tensors
            stats = measure.benchmark_rounds(fns, warmup=2, repeat=repeat, rounds=min(repeat, 3))
    rows = []
    for name, q in built.items():
        estimate = models.estimate_memory(source, ESTIMATE_PRECISION[name]).bytes / 2**20
        resident = q.resident_bytes / 2**20
        rows.append({"quantizer": name, "threads": threads, "estimate_MiB": estimate,
                     "stored_MiB": q.stored_bytes / 2**20, "resident_MiB": resident,
                     "fits_estimate": estimate <= memory_cap_mib, "fits_resident": resident <= memory_cap_mib,
                     **scores.loc[name, ["perplexity", "top1_agreement", "kl_vs_fp32"]].to_dict(),
                     "step_ms": stats[f"{name} step"].median * 1e3,
                     "prefill_ms": stats[f"{name} prefill"].median * 1e3})
    table = measure.results_frame(rows, source=source, memory_cap_mib=memory_cap_mib, threads=threads)
    table["size_vs_fp32"] = table.stored_MiB / table.stored_MiB.iloc[0]
    table["step_speedup_vs_fp32"] = table.step_ms.iloc[0] / table.step_ms
    found, note = openvino_devices()
    return EdgeResult(table, _figure(table, memory_cap_mib), found, note)


def _figure(table, cap: float) -> go.Figure:
    fig = go.Figure(go.Scatter(x=table.resident_MiB, y=table.step_ms, text=table.quantizer, mode="markers+text",
                               textposition="top center", marker=dict(size=11), name="measured"))
    fig.add_vline(x=cap, line_dash="dash", annotation_text=f"memory cap {cap:g} MiB")
    fig.update_xaxes(title="weights in memory (MiB)", rangemode="tozero")
    fig.update_yaxes(title="one-token forward, batch 1 (ms, median)")
    threads = table.attrs.get("threads")
    return plots.style(fig, f"{table.attrs.get('source')} on {threads} thread(s): size vs latency",
                       table.attrs.get("hardware"))


__all__ = ["EDGE_QUANTIZERS", "ESTIMATE_PRECISION", "EdgeResult", "edge_table", "openvino_devices"]
