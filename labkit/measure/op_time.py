"""Where a call's time goes, by kind of operator: matrix multiplies, attention, collective communication (which
includes waiting for the other ranks), every other operator, and the time outside any operator (Python, module
calls, the framework's own bookkeeping between operators).

Two profilers feed the same five rows: `torch.profiler` for eager PyTorch (each ATen operator's *self* time, so a
nested call is counted once: aten::linear's own dispatch glue apart from the aten::addmm it calls) and ONNX
Runtime's own profiler (each graph node's duration). The fourth row is what the wall clock saw beyond the operators.
A profiler slows what it watches (it records every event), so each result also carries the same call's median time
unprofiled (`stats.benchmark`), and the overhead row is read against the profiled wall time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from labkit.measure.stats import benchmark, sync_device

CATEGORIES = ("matrix multiply", "attention", "communication", "other operators", "outside operators")
COMMUNICATION_PREFIXES = ("c10d::", "gloo:", "nccl:")  # collectives: time in them includes waiting for the peers
TORCH_MATMUL = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_weight_int4pack_mm",
                "aten::_weight_int8pack_mm", "aten::_int_mm"}  # fmt: skip
ORT_MATMUL = {"MatMul", "Gemm", "FusedMatMul", "MatMulNBits", "MatMulInteger", "DynamicQuantizeMatMul", "QGemm",
              "MatMulIntegerToFloat", "FusedGemm"}  # fmt: skip
ORT_ATTENTION = {"Attention", "MultiHeadAttention", "GroupQueryAttention", "PackedAttention"}


@dataclass(frozen=True)
class OpTime:
    """One call's time split by kind of operator.

    table: category, ms (per call), share (of the profiled wall time). ops: every operator, heaviest first (op,
    category, calls and ms per call). wall_ms: profiled wall time per call (mean). unprofiled_ms: the same call's
    median time without the profiler. engine: what ran ("PyTorch eager", "ONNX Runtime").
    """

    engine: str
    table: pd.DataFrame
    ops: pd.DataFrame
    wall_ms: float
    unprofiled_ms: float

    def ms(self, category: str) -> float:
        """Milliseconds per call spent in one of CATEGORIES."""
        return float(self.table.set_index("category").ms[category])


def torch_category(op: str) -> str:
    """The category of an ATen operator's name (CATEGORIES minus "outside operators")."""
    if op in TORCH_MATMUL:
        return "matrix multiply"
    if "scaled_dot_product" in op or "flash_attention" in op or "efficient_attention" in op:
        return "attention"
    return "communication" if op.startswith(COMMUNICATION_PREFIXES) else "other operators"


def ort_category(op_type: str) -> str:
    """The category of an ONNX operator type (CATEGORIES minus "outside operators")."""
    if op_type in ORT_MATMUL:
        return "matrix multiply"
    return "attention" if op_type in ORT_ATTENTION else "other operators"


def split(engine: str, op_ms: pd.DataFrame, wall_ms: float, unprofiled_ms: float) -> OpTime:
    """Sum per-operator times into CATEGORIES; the rest of the wall time is "outside operators".

    Args:
        engine: what ran. op_ms: one row per operator: op, category, calls, ms (all per call).
        wall_ms: profiled wall time per call. unprofiled_ms: median unprofiled time per call.
    Returns:
        OpTime (the outside row is clipped at 0: clock granularity can make the operators' sum exceed the wall).
    """
    sums = op_ms.groupby("category").ms.sum().reindex(CATEGORIES[:-1], fill_value=0.0)
    rows = [{"category": c, "ms": float(sums[c])} for c in CATEGORIES[:-1]]
    rows.append({"category": "outside operators", "ms": max(0.0, wall_ms - float(sums.sum()))})
    table = pd.DataFrame(rows)
    table["share"] = table.ms / wall_ms
    ops = op_ms.sort_values("ms", ascending=False).reset_index(drop=True)
    return OpTime(engine, table, ops, wall_ms, unprofiled_ms)


def profile_torch(fn: Callable[[], object], repeat: int = 5, warmup: int = 2) -> OpTime:
    """Profile `fn()` (eager PyTorch on the CPU) `repeat` times after `warmup` calls.

    Args:
        fn: the work, e.g. one forward. repeat: profiled calls (>= 1). warmup: unprofiled calls first.
    Returns:
        OpTime of one call: ATen operators' and collectives' (c10d, gloo, NCCL) self CPU time by category, the rest
        of the wall time outside them. Under torch.distributed every rank must call this in step (the same calls).
    Raises:
        ValueError: repeat < 1.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    unprofiled = benchmark(fn, warmup=warmup, repeat=max(repeat, 5)).median * 1e3
    from torch.profiler import ProfilerActivity, profile

    sync_device()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        sync_device()
        wall_ms = (time.perf_counter() - start) * 1e3 / repeat
    rows = [{"op": e.key, "category": torch_category(e.key), "calls": e.count / repeat,
             "ms": e.self_cpu_time_total / 1e3 / repeat}
            for e in prof.key_averages() if e.key.startswith(("aten::", *COMMUNICATION_PREFIXES))]  # fmt: skip
    return split("PyTorch eager", pd.DataFrame(rows), wall_ms, unprofiled)


def profile_onnxruntime(session_path: str, sess_options, feeds: dict, repeat: int = 5, warmup: int = 2,
                        providers: list | None = None) -> OpTime:  # fmt: skip
    """Profile an ONNX Runtime session on `feeds` with ONNX Runtime's own profiler.

    Args:
        session_path: the .onnx file. sess_options: an `onnxruntime.SessionOptions` (profiling is switched on in
            it). feeds: input name -> numpy array. repeat, warmup: as `profile_torch`. providers: default CPU.
    Returns:
        OpTime of one run: graph nodes' durations by their operator type, the rest of the wall time outside them
        (the session's own work between nodes, input and output copies).
    Raises:
        ValueError: repeat < 1.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    import onnxruntime as ort  # optional package

    providers = providers or ["CPUExecutionProvider"]
    plain = ort.InferenceSession(session_path, sess_options, providers=providers)
    unprofiled = benchmark(lambda: plain.run(None, feeds), warmup=warmup, repeat=max(repeat, 5)).median * 1e3
    sess_options.enable_profiling = True
    sess = ort.InferenceSession(session_path, sess_options, providers=providers)
    for _ in range(warmup):
        sess.run(None, feeds)
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        sess.run(None, feeds)
        runs.append((time.perf_counter() - start) * 1e3)
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    node = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_run = len(node) // (warmup + repeat)  # every run executes the same nodes
    node = node[len(node) - per_run * repeat:]  # the timed repeats, not the warm-up
    rows = pd.DataFrame([{"op": e["args"].get("op_name", "?"), "ms": e["dur"] / 1e3 / repeat} for e in node])
    if rows.empty:
        rows = pd.DataFrame(columns=["op", "ms"])
    ops = rows.groupby("op").agg(ms=("ms", "sum"), calls=("ms", "size")).reset_index()
    ops["calls"] = ops.calls / repeat
    ops["category"] = ops.op.map(ort_category)
    return split("ONNX Runtime", ops, sum(runs) / repeat, unprofiled)


def figure(results: list[OpTime], title: str):
    """Stacked bars: each engine's milliseconds per call by category (a plotly figure)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for category in CATEGORIES:
        fig.add_bar(name=category, y=[r.engine for r in results], x=[r.ms(category) for r in results],
                    orientation="h")  # fmt: skip
    fig.update_layout(barmode="stack", title=title, xaxis_title="ms per call (profiled)",
                      height=260 + 40 * len(results))
    return fig
