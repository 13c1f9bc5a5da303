"""Lab 04's measurement: every engine on one workload over batch × sequence × threads.

Cold start (export, optimisation, compilation, first run) is reported apart from steady-state
latency; engines that cannot run here stay in the table with the reason.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import pandas as pd

from . import measure, plots
from .engines import ENGINES, check_parity, graph_for
from .plots import Measured


def compare_engines(workload: str = "tiny-bloom", engines: Sequence[str] | None = None,
                    batch_sizes: Sequence[int] = (1,), seq_lens: Sequence[int] = (32,),
                    threads: Sequence[int] = (2,), precision: str = "fp32", repeat: int = 20,
                    progress: bool = True) -> Measured:
    """Latency of each engine (median, p90 over `repeat` runs after warm-up) and its speed-up over eager."""
    from tqdm.auto import tqdm

    names = list(engines or ENGINES)
    unknown = [n for n in names if n not in ENGINES]
    if unknown:
        raise ValueError(f"unknown engines {unknown}; choose from {list(ENGINES)}")
    if "torch-eager" not in names:
        names.insert(0, "torch-eager")  # the baseline every speed-up is measured against
    if workload == "digits-cnn":
        seq_lens = (1,)  # images have no sequence axis
    rows = []
    grid = list(itertools.product(names, batch_sizes, seq_lens, threads))
    for name, batch, seq, n_threads in tqdm(grid, desc=f"engines on {workload}", disable=not progress):
        engine = ENGINES[name]
        row = {"workload": workload, "engine": name, "batch_size": batch, "seq_len": seq, "threads": n_threads,
               "precision": precision}
        ok, reason = engine.available()
        if ok and precision not in engine.precisions:
            ok, reason = False, f"no {precision} (supports {', '.join(engine.precisions)})"
        if not ok:
            rows.append({**row, "available": False, "reason": reason})
            continue
        graph = graph_for(workload, batch, seq)
        session = engine.prepare(graph, precision=precision, num_threads=n_threads)
        parity = check_parity(session, graph)  # raises if the engine computes something else
        stats = measure.benchmark(lambda s=session, g=graph: s.run(*g.example), warmup=3, repeat=repeat)
        rows.append({**row, "available": True, "reason": reason, "cold_start_s": session.info.prepare_s,
                     "median_ms": stats.median * 1e3, "p90_ms": stats.p90 * 1e3,
                     "relative_diff": parity.relative_diff})
    table = measure.results_frame(rows, workload=workload)
    table["speedup_vs_eager"] = table.apply(lambda r: _speedup(table, r), axis=1)
    return Measured(table, speedup_figure(table))


def _speedup(table: pd.DataFrame, row) -> float:
    if not row.get("available"):
        return math.nan
    base = table[(table.engine == "torch-eager") & (table.batch_size == row.batch_size)
                 & (table.seq_len == row.seq_len) & (table.threads == row.threads)]
    return float(base.median_ms.iloc[0] / row.median_ms) if len(base) else math.nan


def speedup_figure(table: pd.DataFrame):
    ran = table[table.available].copy()
    ran["shape"] = ran.apply(lambda r: f"b{r.batch_size}×s{r.seq_len}, {r.threads} thr", axis=1)
    ran.attrs = table.attrs
    workload = table.attrs.get("workload", "")
    return plots.bars(ran, x="engine", y="speedup_vs_eager", color="shape", ylabel="× faster than torch eager",
                      title=f"{workload}: speed-up over PyTorch eager (median latency)")


def cold_start_figure(table: pd.DataFrame):
    """What the first request pays: export / optimisation / compilation, per engine."""
    ran = table[table.available].groupby("engine", sort=False, as_index=False).cold_start_s.max()
    ran.attrs = table.attrs
    fig = plots.bars(ran, x="engine", y="cold_start_s", ylabel="seconds (log scale)",
                     title=f"{table.attrs.get('workload', '')}: cold start (export + compile + first run)")
    fig.update_yaxes(type="log")
    return fig


def engine_latency(workload: str = "tiny-bloom", engine: str = "onnxruntime", batch_size: int = 1,
                   seq_len: int = 32, threads: int = 2, precision: str = "fp32", repeat: int = 20) -> Measured:
    """One engine at one shape, next to eager: the widget-sized version of `compare_engines`."""
    return compare_engines(workload, [engine], (batch_size,), (seq_len,), (threads,), precision, repeat,
                           progress=False)
