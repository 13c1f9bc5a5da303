"""Graph runtimes compared: every engine on one workload over batch × sequence × threads, options of one engine
side by side, and the MatMul-only ceiling of a graph runtime.

Every comparison runs on one device, eager baseline included (a GPU speed-up is over GPU eager), and every row names
its device and provider. Cold start (export, optimisation, compilation, first run) is reported apart from
steady-state latency; engines that cannot run on the device stay in the table with the reason.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from labkit import convert, measure, plots
from labkit.engines import ENGINES, check_parity, engine_device, get_engine, graph_for
from labkit.engines.ort import execution_providers
from labkit.plots import Measured
from labkit.precision import canonical

# Each round re-warms an engine for this long: after another runtime ran, one takes a few hundred
# calls to get back to its steady speed on a 2-core machine (measured with ONNX Runtime after eager).
WARMUP_S = 0.2


def compare_engines(workload: str = "tiny-bloom", engines: Sequence[str] | None = None,
                    batch_sizes: Sequence[int] = (1,), seq_lens: Sequence[int] = (32,),
                    threads: Sequence[int] = (2,), precision: str = "fp32", repeat: int = 20, rounds: int = 5,
                    warmup_s: float = WARMUP_S, progress: bool = True, device: str | torch.device = "cpu") -> Measured:
    """Latency of each engine on one device (median, p90 over `repeat` runs after warm-up) and its speed-up over
    eager on that same device.

    All engines of one shape are prepared first and then timed in `rounds` alternating rounds
    (`measure.benchmark_rounds`), so a machine that slows down mid-run skews no ratio.

    Args:
        workload: one of `engines.WORKLOADS`.
        engines: engine names (default all of `engines.ENGINES`); torch-eager is always added as the baseline.
        batch_sizes, seq_lens, threads: the grid of shapes and thread counts (the CNN has no sequence axis).
        precision: "fp32", "bf16" or "fp16" (or an alias such as "bfloat16"); engines without it get a row saying so.
        repeat: timed calls per round. rounds: alternating rounds. warmup_s: re-warm each engine this long per round.
        progress: show a progress bar.
        device: "cpu", "cuda", "cuda:N" or "auto": where every engine runs, eager included (`Engine.prepare`).
    Returns:
        Measured: one row per engine and shape (workload, engine, device, batch_size, seq_len, threads, precision,
        available, reason, relative_diff, cold_start_s (s), provider, median_ms, p90_ms, speedup_vs_eager) and a
        speed-up chart; attrs["device"] is the device. Engines that cannot run on it keep a row with
        available=False and the reason.
    Raises:
        ValueError: for unknown engine names, an unknown precision or device, naming the valid ones.
        CapabilityMissing: a CUDA device on a machine without one.
        ParityError: when a session computes something else than eager (beyond the precision's tolerance).
    """
    names = list(engines or ENGINES)
    unknown = [n for n in names if n not in ENGINES]
    if unknown:
        raise ValueError(f"unknown engines {unknown}; choose from {list(ENGINES)}")
    precision = canonical(precision)  # "float32" and friends accepted here, "fp32" shown
    dev = engine_device(device)
    if "torch-eager" not in names:
        names.insert(0, "torch-eager")  # the baseline every speed-up is measured against
    if workload == "digits-cnn":
        seq_lens = (1,)  # images have no sequence axis
    rows = []
    shapes = list(itertools.product(batch_sizes, seq_lens, threads))
    bar = tqdm(total=len(shapes) * len(names), desc=f"engines on {workload}", disable=not progress)
    for batch, seq, n_threads in shapes:
        graph = graph_for(workload, batch, seq)
        sessions, ran = {}, {}
        for name in names:
            engine = ENGINES[name]
            row = {"workload": workload, "engine": name, "device": str(dev), "batch_size": batch, "seq_len": seq,
                   "threads": n_threads, "precision": precision}
            ok, reason = engine.supports(dev)
            if ok and precision not in engine.precisions:
                ok, reason = False, f"no {precision} (supports {', '.join(engine.precisions)})"
            if not ok:
                rows.append({**row, "available": False, "reason": reason})
            else:
                sessions[name] = engine.prepare(graph, precision=precision, num_threads=n_threads, device=dev)
                parity = check_parity(sessions[name], graph)  # raises if the engine computes something else
                ran[name] = {**row, "available": True, "reason": reason, "relative_diff": parity.relative_diff,
                             "cold_start_s": sessions[name].info.prepare_s, "provider": sessions[name].info.provider}
            bar.update()
        timed = _time_sessions(sessions, graph, repeat, rounds, warmup_s)
        rows += [{**ran[n], "median_ms": st.median * 1e3, "p90_ms": st.p90 * 1e3} for n, st in timed.items()]
    bar.close()
    order = {name: i for i, name in enumerate(names)}
    rows.sort(key=lambda r: (order[r["engine"]], r["batch_size"], r["seq_len"], r["threads"]))
    table = measure.results_frame(rows, workload=workload, device=str(dev))
    table["speedup_vs_eager"] = table.apply(lambda r: _speedup(table, r), axis=1)
    return Measured(table, speedup_figure(table))


def _time_sessions(sessions: Mapping[str, object], graph, repeat: int, rounds: int,
                   warmup_s: float) -> dict[str, measure.Stats]:
    """Every session on the graph's example inputs, in alternating rounds (`measure.benchmark_rounds`)."""
    fns = {name: (lambda s=s: s.run(*graph.example)) for name, s in sessions.items()}
    return measure.benchmark_rounds(fns, warmup=3, repeat=repeat, rounds=rounds, warmup_s=warmup_s)


def compare_variants(workload: str, variants: Mapping[str, tuple[str, dict]], batch_size: int = 1,
                     seq_len: int = 32, threads: int = 2, repeat: int = 100, rounds: int = 5,
                     warmup_s: float = WARMUP_S, device: str | torch.device = "cpu") -> Measured:
    """One shape, several configurations of engines: {label: (engine, prepare options)}, next to plain eager, all on
    one device.

    E.g. {"ORT, plain export": ("onnxruntime", {"fused_attention": False}), "ORT": ("onnxruntime", {})}
    shows what one option is worth, timed in the same alternating rounds as `compare_engines`.

    Args:
        workload: one of `engines.WORKLOADS`. variants: label -> (engine name, options for `Engine.prepare`).
        batch_size, seq_len, threads: the one shape and thread count.
        repeat, rounds, warmup_s: as for `compare_engines`.
        device: where every variant and the eager baseline run ("cpu", "cuda", "cuda:N", "auto").
    Returns:
        Measured: one row per variant, "torch-eager" first (variant, engine, options, device, provider, median_ms,
        p90_ms, speedup_vs_eager, relative_diff), and a chart of the speed-ups.
    Raises:
        ValueError: for unknown engine names, or a variant that names its own device (all run on `device`).
        EngineUnavailable: a variant's engine cannot run on `device` here. ParityError: a variant computes
        something else than eager.
    """
    bad = {label: engine for label, (engine, _) in variants.items() if engine not in ENGINES}
    if bad:
        raise ValueError(f"unknown engines {bad}; choose from {list(ENGINES)}")
    if any("device" in options for _, options in variants.values()):
        raise ValueError("variants run on the comparison's `device`, next to eager there: "
                         "remove 'device' from their options")
    dev = engine_device(device)
    graph = graph_for(workload, batch_size, seq_len)
    specs = {"torch-eager": ("torch-eager", {}), **variants}
    sessions = {label: ENGINES[engine].prepare(graph, num_threads=threads, device=dev, **options)
                for label, (engine, options) in specs.items()}  # fmt: skip
    parity = {label: check_parity(s, graph).relative_diff for label, s in sessions.items()}
    timed = _time_sessions(sessions, graph, repeat, rounds, warmup_s)
    eager = timed["torch-eager"].median
    rows = [{"variant": label, "engine": specs[label][0], "options": str(specs[label][1] or ""),
             "device": sessions[label].info.device, "provider": sessions[label].info.provider,
             "median_ms": st.median * 1e3, "p90_ms": st.p90 * 1e3,
             "speedup_vs_eager": eager / st.median, "relative_diff": parity[label]} for label, st in timed.items()]
    table = measure.results_frame(rows, workload=workload, batch_size=batch_size, seq_len=seq_len, threads=threads,
                                  device=str(dev))
    fig = plots.bars(table, x="variant", y="speedup_vs_eager", ylabel=f"× faster than torch eager on {dev}",
                     title=f"{workload} b{batch_size}×s{seq_len}, {threads} threads: what each option is worth")
    return Measured(table, fig)


def matmul_ceiling(workload: str = "tiny-bloom", batch_size: int = 1, seq_len: int = 32, threads: int = 2,
                   repeat: int = 100, rounds: int = 5, warmup_s: float = WARMUP_S,
                   device: str | torch.device = "cpu") -> dict:
    """How far a graph runtime could go: ONNX Runtime running only the model's weight MatMuls, next to
    the whole model and eager, all three on one device.

    The MatMuls (same weights and shapes, in one session) are work no graph optimisation removes, so
    eager ÷ (MatMuls alone) is the speed-up ORT would reach if every other op cost nothing.

    Args:
        workload: a transformer of `engines.WORKLOADS`. batch_size, seq_len, threads: the shape and thread count.
        repeat, rounds, warmup_s: as for `compare_engines`.
        device: where all three run ("cpu", "cuda", "cuda:N", "auto"); on a GPU, ORT's CUDA provider.
    Returns:
        {"matmuls": number of weight MatMuls, "eager_ms", "ort_ms", "matmuls_only_ms": medians in ms,
        "matmul_share": MatMuls' time / ORT's, "ort_speedup": eager / ORT, "ceiling_speedup": eager / MatMuls,
        "device": the device all three ran on}.
    Raises:
        EngineUnavailable: when onnxruntime is not installed, or cannot run on `device` (naming its providers).
    """
    ort_engine = get_engine("onnxruntime")  # EngineUnavailable, before any work, when it is not installed
    import onnxruntime as ort  # optional package

    dev = engine_device(device)
    providers = execution_providers(dev)  # EngineUnavailable, naming the providers there are, before any work
    graph = graph_for(workload, batch_size, seq_len)
    mm_model = convert.weight_matmuls(convert.export_onnx(graph), batch_size, seq_len)
    inputs = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in mm_model.graph.input}
    matmuls = ort.InferenceSession(mm_model.SerializeToString(), convert.session_options("all", threads),
                                   providers=providers)  # fmt: skip
    rng = np.random.default_rng(0)
    binding = matmuls.io_binding()  # inputs and outputs stay in ORT's buffers on the device: no per-call copies
    place = (dev.type, dev.index or 0)  # ORT's (device_type, device_id)
    for name, shape in inputs.items():
        x = rng.standard_normal(shape, dtype=np.float32)  # (batch, seq, k)
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(x, *place))
    for out in mm_model.graph.output:
        binding.bind_output(out.name, *place)
    eager = ENGINES["torch-eager"].prepare(graph, num_threads=threads, device=dev)
    full = ort_engine.prepare(graph, num_threads=threads, device=dev)
    t = measure.benchmark_rounds({"eager": lambda: eager.run(*graph.example), "ort": lambda: full.run(*graph.example),
                                  "matmuls": lambda: matmuls.run_with_iobinding(binding)},
                                 repeat=repeat, rounds=rounds, warmup_s=warmup_s)  # fmt: skip
    return {"matmuls": len(mm_model.graph.node), "eager_ms": t["eager"].median * 1e3, "ort_ms": t["ort"].median * 1e3,
            "matmuls_only_ms": t["matmuls"].median * 1e3, "matmul_share": t["matmuls"].median / t["ort"].median,
            "ort_speedup": t["eager"].median / t["ort"].median,
            "ceiling_speedup": t["eager"].median / t["matmuls"].median, "device": str(dev)}


def device_for(engine: str, device: str | torch.device) -> tuple[torch.device, str]:
    """Where a comparison centred on one engine runs: on `device` when the engine runs there, else on the CPU,
    eager included, so that the comparison stays same-device.

    Args:
        engine: one of `engines.ENGINES`. device: the lab's device ("cpu", "cuda", "cuda:N", "auto").
    Returns:
        (the device to pass to the comparison, "" or the one sentence to print when it is not `device`).
    Raises:
        ValueError: an unknown engine or device, naming the valid ones.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose from {list(ENGINES)}")
    dev = engine_device(device)
    ok, reason = ENGINES[engine].supports(dev)
    if ok or dev.type == "cpu":
        return dev, ""
    return torch.device("cpu"), (f"{engine} cannot run on {dev} here ({reason}), so this comparison runs on the "
                                 "CPU, eager included.")


def payback(table: pd.DataFrame) -> pd.DataFrame:
    """Build time vs steady state: how many requests each engine must serve before its cold start is paid back by
    what it saves per request over eager on the same device and shape.

    Args:
        table: `compare_engines`' table (cold_start_s in s, median_ms in ms).
    Returns:
        one row per engine that ran, other than eager, and shape: engine, device, batch_size, seq_len, threads,
        cold_start_s, median_ms, eager_ms, saved_ms (per request) and break_even_requests = cold_start_s × 1000 /
        saved_ms (infinite when the engine saves nothing).
    """
    ran = table[table.available]
    keys = ["device", "batch_size", "seq_len", "threads"]
    eager = ran[ran.engine == "torch-eager"][[*keys, "median_ms"]].rename(columns={"median_ms": "eager_ms"})
    rows = ran[ran.engine != "torch-eager"].merge(eager, on=keys)
    rows["saved_ms"] = rows.eager_ms - rows.median_ms
    rows["break_even_requests"] = [c * 1e3 / s if s > 0 else math.inf
                                   for c, s in zip(rows.cold_start_s, rows.saved_ms, strict=True)]
    out = rows[["engine", *keys, "cold_start_s", "median_ms", "eager_ms", "saved_ms", "break_even_requests"]]
    out.attrs = table.attrs
    return out


def _speedup(table: pd.DataFrame, row) -> float:
    if not row.get("available"):
        return math.nan
    base = table[(table.engine == "torch-eager") & (table.batch_size == row.batch_size)
                 & (table.seq_len == row.seq_len) & (table.threads == row.threads)]
    return float(base.median_ms.iloc[0] / row.median_ms) if len(base) else math.nan


def speedup_figure(table: pd.DataFrame):
    """Speed-up over eager of each engine that ran, one bar per shape.

    Args:
        table: `compare_engines`' table.
    Returns:
        a bar figure.
    """
    ran = table[table.available].copy()
    ran["shape"] = ran.apply(lambda r: f"b{r.batch_size}×s{r.seq_len}, {r.threads} thr", axis=1)
    ran.attrs = table.attrs
    workload = table.attrs.get("workload", "")
    return plots.bars(ran, x="engine", y="speedup_vs_eager", color="shape", ylabel="× faster than torch eager",
                      title=f"{workload}: speed-up over PyTorch eager (median latency)")


def cold_start_figure(table: pd.DataFrame):
    """What the first request pays: export / optimisation / compilation, per engine (log scale).

    Args:
        table: `compare_engines`' table (cold_start_s, seconds).
    Returns:
        a bar figure with the largest cold start of each engine.
    """
    ran = table[table.available].groupby("engine", sort=False, as_index=False).cold_start_s.max()
    ran.attrs = table.attrs
    fig = plots.bars(ran, x="engine", y="cold_start_s", ylabel="seconds (log scale)",
                     title=f"{table.attrs.get('workload', '')}: cold start (export + compile + first run)")
    fig.update_yaxes(type="log")
    return fig


def engine_latency(workload: str = "tiny-bloom", engine: str = "onnxruntime", batch_size: int = 1,
                   seq_len: int = 32, threads: int = 2, precision: str = "fp32", repeat: int = 20,
                   device: str | torch.device = "cpu") -> Measured:
    """One engine at one shape, next to eager on the same device: the widget-sized version of `compare_engines`.

    Args:
        workload, engine: what to run. batch_size, seq_len, threads, precision, repeat, device: as for
            `compare_engines`.
    Returns:
        Measured: `compare_engines`' table and figure for eager and `engine`.
    """
    return compare_engines(workload, [engine], (batch_size,), (seq_len,), (threads,), precision, repeat,
                           progress=False, device=device)
