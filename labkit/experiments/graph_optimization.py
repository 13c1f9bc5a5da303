"""Conversion and graph optimisation measured: one model converted three ways, what each ONNX Runtime optimisation
level changes in the graph, constant folding on a hand-made graph, and small drawings of subgraphs."""

from __future__ import annotations

import importlib.util
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import torch

from labkit import convert, measure, plots
from labkit.convert import Graph
from labkit.convert.optimize import available_levels
from labkit.engines import graph_for
from labkit.plots import Measured
from labkit.precision import tolerance


def _size(*paths: Path) -> float:
    return sum(p.stat().st_size for p in paths) / 2**20


def convert_three_ways(workload: str = "tiny-bloom") -> Measured:
    """ONNX, OpenVINO IR and TorchScript files of one model: time to convert, size, parity with eager.

    Args:
        workload: one of `engines.WORKLOADS`.
    Returns:
        Measured: one row per format (format, file, seconds to convert (cached files: ~0), MiB on disk,
        max_abs_diff, relative_diff, parity_ok: relative_diff <= the fp32 tolerance of `labkit.precision`), and a
        chart of the file sizes; attrs["skipped"]: {format: reason} for a converter not installed (OpenVINO).
    """
    import onnxruntime as ort  # optional package (labkit[engines])

    graph = graph_for(workload)
    ref = graph.reference()
    rows = []
    outputs = {}
    start = time.perf_counter()
    onnx_path = convert.export_onnx(graph)
    rows.append({"format": "ONNX", "file": onnx_path.name, "seconds": time.perf_counter() - start,
                 "MiB": _size(onnx_path)})
    sess = ort.InferenceSession(str(onnx_path), convert.session_options("disable"), providers=["CPUExecutionProvider"])
    outputs["ONNX"] = sess.run(None, graph.feeds(graph.example))[0]
    skipped = {}
    if importlib.util.find_spec("openvino") is None:  # e.g. a GPU box without it: the other two formats still run
        skipped["OpenVINO IR"] = "openvino is not installed here (pip install 'labkit[engines]')"
        print(f"OpenVINO IR skipped: {skipped['OpenVINO IR']}")
    else:
        import openvino as ov  # optional package

        start = time.perf_counter()
        xml = convert.export_openvino(graph)
        rows.append({"format": "OpenVINO IR", "file": xml.name, "seconds": time.perf_counter() - start,
                     "MiB": _size(xml, xml.with_suffix(".bin"))})
        compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        outputs["OpenVINO IR"] = compiled({i: t.numpy() for i, t in enumerate(graph.example)})[0]
    start = time.perf_counter()
    ts = convert.export_torchscript(graph)
    rows.append({"format": "TorchScript", "file": ts.name, "seconds": time.perf_counter() - start, "MiB": _size(ts)})
    with torch.no_grad():
        outputs["TorchScript"] = torch.jit.load(str(ts))(*graph.example).numpy()
    scale = float(np.abs(ref).max()) or 1.0
    for row in rows:
        diff = float(np.abs(outputs[row["format"]] - ref).max())
        row.update(max_abs_diff=diff, relative_diff=diff / scale, parity_ok=diff / scale <= tolerance("fp32"))
    table = measure.results_frame(rows, workload=workload)
    table.attrs["skipped"] = skipped
    fig = plots.bars(table, x="format", y="MiB", title=f"{workload}: file size per format", ylabel="MiB")
    return Measured(table, fig)


def optimization_levels(workload: str = "tiny-bloom", top: int = 10, fused_attention: bool = False) -> Measured:
    """Node and op-type counts of the raw ONNX graph after each ONNX Runtime optimisation level.

    Args:
        workload: one of `engines.WORKLOADS`.
        top: op types shown by name (the most frequent over all levels); the others are summed as "other".
        fused_attention: start from the export patch's graph (see `convert.export_patches`) instead of the plain
            export that any model gets.
    Returns:
        Measured: one row per level ("exported (raw)", then every level of `convert.ORT_LEVELS` the installed
        onnxruntime has) with nodes and per-op counts, and a stacked bar chart.
    """
    path = convert.export_onnx(graph_for(workload), optimize=False, fused_attention=fused_attention)
    stats = {"exported (raw)": convert.graph_stats(path)}
    for level in available_levels():
        stats[level] = convert.graph_stats(convert.optimize_onnx(path, level))
    totals = Counter()
    for s in stats.values():
        totals.update(s.op_counts)
    common = [op for op, _ in totals.most_common(top)]
    rows = []
    for level, s in stats.items():
        counts = {op: s.op_counts.get(op, 0) for op in common}
        counts["other"] = s.nodes - sum(counts.values())
        rows.append({"level": level, "nodes": s.nodes, **counts})
    table = measure.results_frame(rows, workload=workload)
    fig = go.Figure([go.Bar(name=op, x=table.level, y=table[op]) for op in [*common, "other"]])
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title="nodes")
    return Measured(table, plots.style(fig, f"{workload}: ONNX graph after each ORT optimisation level",
                                       table.attrs["hardware"]))


def torchscript_deprecation() -> str | None:
    """What the installed PyTorch says when a model is traced into TorchScript.

    Returns:
        the text of the DeprecationWarning `torch.jit.trace` raises, or None when this PyTorch raises none. (The
        PyTorch documentation marks TorchScript deprecated in favour of `torch.export`:
        docs.pytorch.org/docs/stable/jit_language_reference.html.)
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.jit.trace(torch.nn.Linear(2, 2), torch.zeros(1, 2))
    return next((str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)), None)


class _Folding(torch.nn.Module):
    """y = x @ (W·2 + 1)ᵀ: the weight expression depends only on constants."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(16, 16, generator=torch.Generator().manual_seed(0)))

    def forward(self, x):
        return x @ (self.weight * 2.0 + 1.0).t()


def constant_folding_demo() -> dict:
    """A hand-made graph whose weight arithmetic ORT's BASIC level precomputes once.

    Returns:
        {"ops_before", "ops_after": op -> count, "nodes_before", "nodes_after": node counts} of the raw export and
        of the graph after ORT's basic level.
    """
    g = Graph("folding-demo", _Folding().eval(), (torch.randn(4, 16),), ("x",), {"x": {0: "batch"}}, "y")
    path = convert.export_onnx(g, optimize=False)
    before, after = convert.graph_stats(path), convert.graph_stats(convert.optimize_onnx(path, "basic"))
    return {"ops_before": dict(before.op_counts), "ops_after": dict(after.op_counts),
            "nodes_before": before.nodes, "nodes_after": after.nodes}


def neighbourhood(path: Path, op: str, radius: int = 2) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The subgraph within `radius` edges of the first `op` node of an ONNX file.

    Args:
        path: an ONNX file. op: an op type, e.g. "FastGelu". radius: edges to walk, up- and downstream.
    Returns:
        ([(node id, op_type)], [(from id, to id)]) for `dag_figure`.
    Raises:
        ValueError: when the graph has no `op` node.
    """
    import onnx  # optional package

    nodes = list(onnx.load(str(path)).graph.node)
    names = {id(n): f"n{i}" for i, n in enumerate(nodes)}
    producer = {out: n for n in nodes for out in n.output}
    consumers: dict[str, list] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    start = next((n for n in nodes if n.op_type == op), None)
    if start is None:
        raise ValueError(f"no {op} node in {Path(path).name}")
    seen, frontier = {id(start): start}, [start]
    for _ in range(radius):
        nxt = []
        for n in frontier:
            near = [producer[i] for i in n.input if i in producer]
            near += [c for o in n.output for c in consumers.get(o, [])]
            for m in near:
                if id(m) not in seen:
                    seen[id(m)] = m
                    nxt.append(m)
        frontier = nxt
    kept = list(seen.values())
    edges = [(names[id(producer[i])], names[id(n)]) for n in kept for i in n.input
             if i in producer and id(producer[i]) in seen]
    return [(names[id(n)], n.op_type) for n in kept], edges


def dag_figure(nodes: list[tuple[str, str]], edges: list[tuple[str, str]], title: str) -> go.Figure:
    """A small left-to-right drawing of a subgraph: columns are topological depth.

    Args:
        nodes, edges: a subgraph as `neighbourhood` returns it. title: the figure's title.
    Returns:
        a plotly figure, one labelled square per node and an arrow per edge.
    """
    depth = {n: 0 for n, _ in nodes}
    for _ in nodes:  # longest-path layering; the graphs drawn here are tiny
        for a, b in edges:
            depth[b] = max(depth[b], depth[a] + 1)
    rows: Counter = Counter()
    pos = {}
    for n, _ in sorted(nodes, key=lambda x: depth[x[0]]):
        pos[n] = (depth[n], rows[depth[n]])
        rows[depth[n]] += 1
    fig = go.Figure()
    for a, b in edges:
        fig.add_annotation(x=pos[b][0], y=-pos[b][1], ax=pos[a][0], ay=-pos[a][1], xref="x", yref="y",
                           axref="x", ayref="y", showarrow=True, arrowhead=2, opacity=0.6)
    xs, ys = [pos[n][0] for n, _ in nodes], [-pos[n][1] for n, _ in nodes]
    fig.add_trace(go.Scatter(x=xs, y=ys, text=[t for _, t in nodes], mode="markers+text", textposition="top center",
                             marker=dict(size=18, symbol="square")))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(showlegend=False, height=300)
    return plots.style(fig, title)
