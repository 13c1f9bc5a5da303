"""Frontends: a PyTorch module to ONNX, OpenVINO IR or TorchScript, each file written once.

Converted files are cached under `LABKIT_CACHE/onnx` (and `.../torchscript`) and keyed by a fingerprint of the
weights, so a retrained model is exported again and an unchanged one is not.
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from pathlib import Path

import torch
from torch.export import Dim

from labkit.cache import cache_dir
from labkit.convert import export_patches
from labkit.convert.graph import Graph


def fingerprint(graph: Graph, *options, symbolic: bool = False) -> str:
    """A short hash of the weights, input shapes and export options.

    Args:
        graph: the graph to export.
        *options: anything else the file depends on (export flags).
        symbolic: the file keeps the graph's dynamic axes symbolic, so their sizes in the example are left out:
            one export then serves every shape (the fixed axes still count).
    Returns:
        12 hex digits.
    """
    shapes = [tuple(graph.dynamic_axes.get(n, {}).get(axis, size) if symbolic else size
                    for axis, size in enumerate(t.shape))
              for n, t in zip(graph.input_names, graph.example, strict=True)]
    h = hashlib.sha1(f"{graph.name}|{options}|{shapes}".encode())
    for name, t in graph.module.state_dict().items():
        t = t.detach().float()
        h.update(f"{name}{tuple(t.shape)}{t.sum().item():.6e}{t.abs().sum().item():.6e}".encode())
    return h.hexdigest()[:12]


def as_graph(model: torch.nn.Module | Graph, example: tuple[torch.Tensor, ...] | torch.Tensor | None = None) -> Graph:
    """A `Graph` as is, or a plain module + example inputs wrapped as one (axis 0 of each input dynamic).

    Raises:
        ValueError: for a plain module without example inputs.
    """
    if isinstance(model, Graph):
        return model
    if example is None:
        raise ValueError("pass example inputs with a plain module: export_onnx(model, (x,))")
    example = example if isinstance(example, tuple) else (example,)
    names = tuple(f"input_{i}" for i in range(len(example)))
    return Graph(type(model).__name__.lower(), model, example, names, {n: {0: "batch"} for n in names}, "output")


def _widen(graph: Graph) -> tuple[torch.Tensor, ...]:
    """The example with every dynamic axis of size 1 repeated to size 2: torch.export specialises a dimension it sees
    as 1 to the constant 1 (the "0/1 specialisation"), which would fix e.g. a Llama graph's batch to 1."""
    out = []
    for name, t in zip(graph.input_names, graph.example, strict=True):
        for axis in graph.dynamic_axes.get(name, {}):
            if t.shape[axis] == 1:
                t = torch.cat([t, t], dim=axis)
        out.append(t)
    return tuple(out)


def export_onnx(model: torch.nn.Module | Graph, example=None, dynamic: bool = True, optimize: bool = True,
                path: Path | None = None, fused_attention: bool = True) -> Path:
    """Export with `torch.onnx.export(dynamo=True)` (torch.export + onnxscript); cached.

    Args:
        model: a `Graph` (see `engines.graph_for`) or a plain module with `example` inputs.
        example: example inputs of a plain module (one tensor or a tuple).
        dynamic: keep the graph's dynamic axes (batch, seq) symbolic; False fixes the example's shapes.
        optimize: False keeps the graph as traced (no constant or BatchNorm folding by the exporter), so ONNX
            Runtime's own optimisation levels have something to show.
        path: where to write; default a file in the cache named after the graph and its fingerprint.
        fused_attention: write attention that no ONNX Runtime fusion recognises (BLOOM's ALiBi) as one standard
            `Attention` node (opset 23; see `export_patches`); other models are unaffected.
    Returns:
        the .onnx file (weights inside it).
    Raises:
        ValueError: for a plain module without example inputs.
    """
    graph = as_graph(model, example)
    fuse = fused_attention and bool(export_patches.patchable(graph.module))
    suffix = ("" if optimize else "-raw") + ("-fused" if fuse else "")
    tags = (["fused-attention"] if fuse else []) + (["example>=2"] if dynamic else [])  # a new tag: a new cached file
    key = fingerprint(graph, dynamic, optimize, *tags, symbolic=dynamic)  # a dynamic file serves every shape
    path = path or cache_dir("onnx") / f"{graph.name}{suffix}-{key}.onnx"
    if path.exists():
        return path
    dynamic_shapes = None
    if dynamic and graph.dynamic_axes:
        dims: dict[str, Dim] = {}
        dynamic_shapes = tuple(  # positional, so it works whatever forward()'s argument names are
            {axis: dims.setdefault(sym, Dim(sym)) for axis, sym in graph.dynamic_axes.get(name, {}).items()}
            for name in graph.input_names
        )
    example = _widen(graph) if dynamic_shapes else graph.example
    patch = export_patches.patched_for_export(graph.module) if fuse else contextlib.nullcontext()
    fused = {"opset_version": export_patches.OPSET, "custom_translation_table": export_patches.TRANSLATIONS}
    tmp = path.with_suffix(".part.onnx")
    with warnings.catch_warnings(), torch.no_grad(), patch:
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph.module.eval(), example, tmp, dynamo=True, input_names=list(graph.input_names),
            output_names=[graph.output_name], dynamic_shapes=dynamic_shapes, external_data=False,
            optimize=optimize, verbose=False, **(fused if fuse else {}),
        )  # fmt: skip
    tmp.rename(path)
    return path


def export_openvino(model: torch.nn.Module | Graph, example=None, path: Path | None = None) -> Path:
    """OpenVINO IR converted from the ONNX export (weights kept in fp32); cached.

    Args:
        model, example: as for `export_onnx`.
        path: the .xml to write (its .bin goes next to it); default next to the ONNX file.
    Returns:
        the .xml file.
    """
    import openvino as ov  # optional and heavy: only when converting

    onnx_path = export_onnx(model, example)
    path = path or onnx_path.with_suffix(".xml")
    if not path.exists():
        tmp = path.with_name(path.stem + ".part.xml")
        ov.save_model(ov.convert_model(str(onnx_path)), str(tmp), compress_to_fp16=False)
        tmp.with_suffix(".bin").rename(path.with_suffix(".bin"))
        tmp.rename(path)
    return path


def export_torchscript(model: torch.nn.Module | Graph, example=None, path: Path | None = None) -> Path:
    """A traced TorchScript file, loadable without the Python class (`torch.jit.load`); cached.

    TorchScript is deprecated in favour of `torch.export` (PyTorch docs, "TorchScript Language Reference": "TorchScript
    is deprecated, please use torch.export instead"); it is kept because it is still a deployed format to compare.

    Args:
        model, example: as for `export_onnx`.
        path: the .pt file to write; default in the cache, named after the graph and its fingerprint.
    Returns:
        the .pt file.
    """
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
