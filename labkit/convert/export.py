"""Frontends and graph optimisation: PyTorch -> ONNX / OpenVINO IR / TorchScript, and what
ONNX Runtime's optimisation levels do to a graph (op counts, fusions, layout changes).

Converted files are cached under `LABKIT_CACHE/onnx` and keyed by a fingerprint of the weights,
so a retrained model is exported again and an unchanged one is not.
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from labkit.cache import cache_dir

if TYPE_CHECKING:  # engines import this module: no runtime import back
    from labkit.engines.base import Graph

ORT_LEVELS = ("disable", "basic", "extended", "all")


def fingerprint(graph: Graph, *options) -> str:
    """A short hash of the weights, input shapes and export options."""
    h = hashlib.sha1(f"{graph.name}|{options}|{[tuple(t.shape) for t in graph.example]}".encode())
    for name, t in graph.module.state_dict().items():
        t = t.detach().float()
        h.update(f"{name}{tuple(t.shape)}{t.sum().item():.6e}{t.abs().sum().item():.6e}".encode())
    return h.hexdigest()[:12]


def as_graph(model: torch.nn.Module | Graph, example: tuple[torch.Tensor, ...] | torch.Tensor | None = None) -> Graph:
    """A `Graph` as is, or a plain module + example inputs wrapped as one (axis 0 of each input dynamic)."""
    from labkit.engines.base import Graph

    if isinstance(model, Graph):
        return model
    if example is None:
        raise ValueError("pass example inputs with a plain module: export_onnx(model, (x,))")
    example = example if isinstance(example, tuple) else (example,)
    names = tuple(f"input_{i}" for i in range(len(example)))
    return Graph(type(model).__name__.lower(), model, example, names, {n: {0: "batch"} for n in names}, "output")


def export_onnx(model: torch.nn.Module | Graph, example=None, dynamic: bool = True, optimize: bool = True,
                path: Path | None = None, fused_attention: bool = True) -> Path:
    """Export with `torch.onnx.export(dynamo=True)` (torch.export + onnxscript); cached.

    `model` is a `Graph` (see `engines.graph_for`) or a module with `example` inputs.
    optimize=False keeps the graph as traced: no constant folding or BatchNorm folding by the exporter,
    so ONNX Runtime's own optimisation levels have something to show.
    fused_attention=True writes attention that no ONNX Runtime fusion recognises (BLOOM's ALiBi) as one
    standard `Attention` node (opset 23; see `export_patches`); other models are unaffected.
    """
    from labkit.convert import export_patches

    graph = as_graph(model, example)
    fuse = fused_attention and bool(export_patches.patchable(graph.module))
    suffix = ("" if optimize else "-raw") + ("-fused" if fuse else "")
    key = fingerprint(graph, dynamic, optimize, *(["fused-attention"] if fuse else []))
    path = path or cache_dir("onnx") / f"{graph.name}{suffix}-{key}.onnx"
    if path.exists():
        return path
    from torch.export import Dim

    dynamic_shapes = None
    if dynamic and graph.dynamic_axes:
        dims: dict[str, Dim] = {}
        dynamic_shapes = tuple(  # positional, so it works whatever forward()'s argument names are
            {axis: dims.setdefault(sym, Dim(sym)) for axis, sym in graph.dynamic_axes.get(name, {}).items()}
            for name in graph.input_names
        )
    patch = export_patches.patched_for_export(graph.module) if fuse else contextlib.nullcontext()
    fused = {"opset_version": export_patches.OPSET, "custom_translation_table": export_patches.TRANSLATIONS}
    tmp = path.with_suffix(".part.onnx")
    with warnings.catch_warnings(), torch.no_grad(), patch:
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph.module.eval(), graph.example, tmp, dynamo=True, input_names=list(graph.input_names),
            output_names=[graph.output_name], dynamic_shapes=dynamic_shapes, external_data=False,
            optimize=optimize, verbose=False, **(fused if fuse else {}),
        )  # fmt: skip
    tmp.rename(path)
    return path


def export_openvino(model: torch.nn.Module | Graph, example=None, path: Path | None = None) -> Path:
    """OpenVINO IR (.xml + .bin) converted from the ONNX export."""
    import openvino as ov

    onnx_path = export_onnx(model, example)
    path = path or onnx_path.with_suffix(".xml")
    if not path.exists():
        tmp = path.with_name(path.stem + ".part.xml")
        ov.save_model(ov.convert_model(str(onnx_path)), str(tmp), compress_to_fp16=False)
        tmp.with_suffix(".bin").rename(path.with_suffix(".bin"))
        tmp.rename(path)
    return path


def export_torchscript(model: torch.nn.Module | Graph, example=None, path: Path | None = None) -> Path:
    """A traced TorchScript file, loadable without the Python class (torch.jit.load)."""
    graph = as_graph(model, example)
    path = path or cache_dir("torchscript") / f"{graph.name}-{fingerprint(graph)}.pt"
    if not path.exists():
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(graph.module.eval(), graph.example, strict=False, check_trace=False)
            tmp = path.with_suffix(".part")
            torch.jit.save(traced, tmp)
            tmp.rename(path)  # a failed save never leaves a broken file in the cache
    return path


def weight_matmuls(path: Path | str, batch_size: int, seq_len: int):
    """A model of only the MatMuls with a constant weight in `path` (same weights, one input per K):
    the work no graph optimisation removes, to time on its own (`runtimes.matmul_ceiling`)."""
    import onnx
    from onnx import TensorProto, helper

    # after ORT's basic level every weight is a plain initializer (transposes of tied weights folded)
    model = onnx.load(str(optimize_onnx(path, "basic")))
    weights = {t.name: t for t in model.graph.initializer}
    nodes, inputs, used = [], {}, {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in weights:
            w = weights[node.input[1]]
            k = w.dims[0]  # (batch, seq, k) @ (k, n)
            inputs.setdefault(k, helper.make_tensor_value_info(f"x{k}", TensorProto.FLOAT, [batch_size, seq_len, k]))
            nodes.append(helper.make_node("MatMul", [f"x{k}", w.name], [f"y{len(nodes)}"]))
            used[w.name] = w
    if not nodes:
        raise ValueError(f"{path} has no MatMul with a constant weight")
    outputs = [helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT, None) for n in nodes]
    graph = helper.make_graph(nodes, "weight_matmuls", list(inputs.values()), outputs, list(used.values()))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@dataclass(frozen=True)
class GraphStats:
    nodes: int
    op_counts: Counter  # "Op" or "domain:Op" for non-standard domains (com.microsoft, nchwc)
    param_bytes: int
    file_bytes: int


def _op_name(node) -> str:
    return f"{node.domain}:{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type


def graph_stats(path: Path | str) -> GraphStats:
    """Node count, op-type counts and weight bytes of an ONNX file."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    counts = Counter(_op_name(n) for n in model.graph.node)
    params = sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer)
    return GraphStats(len(model.graph.node), counts, params, Path(path).stat().st_size)


def optimize_onnx(path: Path | str, level: str = "all", num_threads: int | None = None) -> Path:
    """Let ONNX Runtime optimise the graph at `level` and write the result next to the input."""
    import onnxruntime as ort

    if level not in ORT_LEVELS:
        raise ValueError(f"unknown optimisation level {level!r}; choose from {list(ORT_LEVELS)}")
    path = Path(path)
    out = path.with_name(f"{path.stem}.ort-{level}.onnx")
    if not out.exists():
        so = session_options(level, num_threads)
        so.optimized_model_filepath = str(out)
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return out


def session_options(level: str = "all", num_threads: int | None = None):
    import onnxruntime as ort

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,  # constant folding, redundant-node removal
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,  # operator fusions
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,  # + layout changes (NCHWc)
    }
    if level not in levels:
        raise ValueError(f"unknown optimisation level {level!r}; choose from {list(levels)}")
    so = ort.SessionOptions()
    so.graph_optimization_level = levels[level]
    so.log_severity_level = 3  # errors only: the NCHWc "hardware specific" warning is expected
    if num_threads:
        so.intra_op_num_threads = num_threads
    return so


# Standard-domain ops that appear in an optimised graph only as fusions of smaller ones. Ops in ORT's
# own domains (com.microsoft, com.microsoft.nchwc) exist only as fusions or layout rewrites.
FUSED_OPS = {"LayerNormalization", "Gelu", "Attention", "RotaryEmbedding", "GroupNormalization"}


@dataclass(frozen=True)
class GraphDiff:
    nodes_before: int
    nodes_after: int
    removed: dict[str, int]  # op -> how many fewer
    added: dict[str, int]  # op -> how many more
    fused: list[str]  # added ops that are fusions / layout rewrites


def graph_diff(before: Path | str, after: Path | str) -> GraphDiff:
    """Which op types disappeared and which appeared between two ONNX files."""
    a, b = graph_stats(before), graph_stats(after)
    removed, added = dict(a.op_counts - b.op_counts), dict(b.op_counts - a.op_counts)
    fused = sorted(op for op in added if ":" in op or op in FUSED_OPS)
    return GraphDiff(a.nodes, b.nodes, removed, added, fused)


def transformer_fusions(path: Path | str, num_heads: int, hidden_size: int, model_type: str = "gpt2") -> Path:
    """onnxruntime.transformers' optimizer: pattern-matches attention, LayerNorm, GELU into fused ops."""
    from onnxruntime.transformers import optimizer

    path = Path(path)
    out = path.with_name(f"{path.stem}.fused-{model_type}.onnx")
    if not out.exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = optimizer.optimize_model(str(path), model_type=model_type, num_heads=num_heads,
                                             hidden_size=hidden_size, opt_level=0)
        model.save_model_to_file(str(out))
    return out
