"""Managing model versions: the trained tiny model, its ONNX export and an int8 copy in a registry, each with its
content hash, lineage and measurements, promoted to production only through a gate fixed up front.

    demo = model_versions(PromotionRule(0.02, 0.10), eval_budget=1024, repeat=30)
    demo.table          # one row per version: format, size, sha256, parent, transformation, measurements, gate
    demo.figure         # the lineage as a graph, from the training data to the deployed copy
    demo.tamper         # one byte changed in the deployed copy: the hashes before and after, the bits that differ

Lineage: v1 is the `tiny-bloom-shakespeare` safetensors checkpoint (trained by `models.train_default_checkpoint`
on the training plays, whose text is hashed too); v2 is v1 exported to ONNX (`convert.export_onnx`); v3 is v2 with
its weight matrices quantized to 8 bits by ONNX Runtime's dynamic quantizer (`quantize_dynamic`: the linear
layers' weights int8, the tied embedding / LM head uint8); v4 is a byte-for-byte copy of v3 in a deployment folder,
registered, then one of its bytes changed, which the gate must catch. Quality is perplexity on the
held-out test plays and top-1 agreement with v1 (`experiments.quantization.quality`); latency is one forward pass of
(1, latency_seq) tokens, p50 and p99 of `measure.benchmark_rounds`, all versions timed side by side on the CPU
(ONNX Runtime's CPU provider runs the ONNX files), with the same thread count.
"""

from __future__ import annotations

import hashlib
import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import torch

from labkit import measure, plots
from labkit.cache import cache_dir
from labkit.convert import Graph, export_onnx
from labkit.convert.optimize import session_options
from labkit.data import shakespeare
from labkit.data.windows import eval_tokens
from labkit.engines.workloads import LogitsOnly
from labkit.experiments.quantization import quality
from labkit.models import checkpoint_dir, load_model
from labkit.quant import QuantizedModel
from labkit.serving.promotion import GateResult, PromotionRule, promote_if_passes
from labkit.serving.registry import ModelRegistry, file_sha256

NAME = "tiny-bloom-shakespeare"  # the model the registry tracks: lab 01's trained checkpoint
TRAINING_SPLIT = "train"


@dataclass(frozen=True)
class ModelVersions:
    """`model_versions`' results.

    Attributes:
        table: one row per version: version, format, stage, size_MB, sha256, parent (12 hex digits each),
            transformation, perplexity, top1_agreement (with v1), kl_vs_v1 (nats/token), p50_ms, p99_ms, gate
            ("promote"/"refuse"), reasons ("; "-joined). figure: the lineage graph.
        gates: every check of every gate: version, compared_with, check, candidate, limit, passed.
        decisions: version -> its GateResult, in the order the gate ran.
        tamper: the deployed copy's sha256 before and after one byte changed, the byte's offset, its old and new
            value, bits_changed (of 256) and the file's path.
        data_sha256: SHA-256 of the training split's text (UTF-8). params: parameters of the model.
        registry: the ModelRegistry (entries persisted under its root).
    """

    table: pd.DataFrame
    figure: go.Figure
    gates: pd.DataFrame
    decisions: dict[str, GateResult]
    tamper: dict
    data_sha256: str
    params: int
    registry: ModelRegistry


def _session(path: Path, threads: int):
    import onnxruntime as ort  # optional package: only when the ONNX versions are measured

    return ort.InferenceSession(str(path), session_options("all", threads), providers=["CPUExecutionProvider"])


def _onnx_versions(model: torch.nn.Module, folder: Path) -> tuple[Path, Path]:
    """v1 exported to `folder`/model.onnx, and its int8 copy model.int8.onnx (each made once: `folder` is named after
    v1's hash, so a retrained checkpoint gets new files)."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = torch.zeros(1, 8, dtype=torch.long)
    graph = Graph(NAME, LogitsOnly(model).eval(), (ids,), ("input_ids",), {"input_ids": {0: "batch", 1: "seq"}})
    # the plain export (no opset-23 Attention node): ORT's quantizer mistakes that node for its own and writes an
    # invalid graph (see quant._ort)
    fp32 = export_onnx(graph, fused_attention=False, path=folder / "model.onnx")
    int8 = folder / "model.int8.onnx"
    if not int8.exists():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = folder / "model.int8.part.onnx"
        quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8)
        tmp.replace(int8)
    return fp32, int8


def flip_byte(path: Path, offset: int | None = None) -> tuple[int, int, int]:
    """Change one byte of a file in place (XOR 0xFF: every bit of it flips).

    Args:
        path: the file. offset: which byte (default: the middle one).
    Returns:
        (offset, old value, new value).
    Raises:
        ValueError: an empty file or an offset outside it.
    """
    size = path.stat().st_size
    offset = size // 2 if offset is None else offset
    if not 0 <= offset < size:
        raise ValueError(f"offset must be in [0, {size}), got {offset}")
    with open(path, "r+b") as f:
        f.seek(offset)
        old = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([old ^ 0xFF]))
    return offset, old, old ^ 0xFF


def _tamper(reg: ModelRegistry, source: Path, parent_version: str) -> dict:
    """Copy v3 to a deployment folder, register the copy as v4, then change one byte of it."""
    parent = reg.get(NAME, parent_version)
    deployed = reg.root / "deploy" / source.name
    deployed.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, deployed)  # a fresh copy on every run
    reg.register(NAME, "v4", "onnx", deployed, parent=parent.sha256, measurements=parent.measurements,
                 transformation=f"copied to the deployment folder (the same bytes as {parent_version}: the same "
                                "measurements)")
    before = file_sha256(deployed)
    offset, old, new = flip_byte(deployed)
    after = file_sha256(deployed)
    return {"sha256_before": before, "sha256_after": after, "offset": offset, "old_byte": old, "new_byte": new,
            "bits_changed": (int(before, 16) ^ int(after, 16)).bit_count(), "path": str(deployed)}


def _measure(reg: ModelRegistry, runners: dict[str, QuantizedModel], tokens: torch.Tensor, latency_seq: int,
             repeat: int, rounds: int) -> None:
    """Attach perplexity, agreement and KL against v1, and p50/p99 latency, to every version in `runners`."""
    q = quality(runners, runners["v1"], tokens).set_index("quantizer")
    ids = tokens[:1, :latency_seq]
    fns = {v: (lambda r=r: r.logits(ids)) for v, r in runners.items()}
    stats = measure.benchmark_rounds(fns, warmup=2, repeat=repeat, rounds=rounds)
    for v in runners:
        reg.attach(NAME, v, perplexity=q.perplexity[v], top1_agreement=q.top1_agreement[v],
                   kl_vs_v1=q.kl_vs_fp32[v], p50_ms=stats[v].median * 1e3, p99_ms=stats[v].p99 * 1e3)


def lineage_figure(reg: ModelRegistry, gates: dict[str, GateResult], data_label: str) -> go.Figure:
    """The lineage as a chain of boxes, data first, each arrow labelled with its transformation; colour = gate."""
    entries = [reg.get(NAME, v) for v in reg.versions(NAME)]
    colour = {"production": plots.COLORS[2], "archived": plots.COLORS[0], "candidate": plots.COLORS[1]}  # refused
    fig = go.Figure()
    xs = list(range(len(entries) + 1))
    labels = [data_label] + [f"{e.version} · {e.format}<br>{e.short}<br>{e.size_bytes / 1e6:.1f} MB" for e in entries]
    marks = [plots.COLORS[5]] + [colour[e.stage] for e in entries]
    fig.add_trace(go.Scatter(x=xs, y=[0] * len(xs), mode="markers+text", text=labels, textposition="bottom center",
                             marker=dict(size=28, color=marks, symbol="square"), hoverinfo="text", showlegend=False))
    for i, e in enumerate(entries):
        fig.add_annotation(x=i + 1, y=0, ax=i, ay=0, xref="x", yref="y", axref="x", ayref="y", showarrow=True,
                           arrowhead=3, standoff=16, startstandoff=16, text="")
        verdict = f"gate: {gates[e.version].action}" + (f" → {e.stage}" if gates[e.version].promote else "")
        label = "<br>".join(textwrap.wrap(e.transformation.split(" (")[0], 22))  # fits between two boxes
        fig.add_annotation(x=i + 0.5, y=0.3, text=label, showarrow=False, font=dict(size=10))
        fig.add_annotation(x=i + 1, y=-0.9, text=verdict, showarrow=False, font=dict(size=10))
    fig.update_xaxes(visible=False, range=[-0.6, len(entries) + 0.6])
    fig.update_yaxes(visible=False, range=[-1.2, 0.7])
    return plots.style(fig, f"Lineage of {NAME}: training data → checkpoint → ONNX → int8 → deployed copy",
                       "green: production now; blue: production before, archived; red: refused by the gate")


def model_versions(rule: PromotionRule, eval_budget: int = 1024, window: int = 128, latency_seq: int = 64,
                   repeat: int = 30, rounds: int = 2, root: Path | None = None) -> ModelVersions:
    """Register, measure and gate four versions of the trained tiny model (see the module docstring).

    Args:
        rule: the promotion rule, fixed before anything is measured.
        eval_budget: held-out test tokens scored for perplexity (whole windows of `window` tokens).
        latency_seq: tokens in the timed forward pass. repeat, rounds: `measure.benchmark_rounds`' timed calls per
            version and the rounds they are spread over (p99 of `repeat` samples: with 30, about the largest).
        root: the registry's folder (default: cache_dir("registry", "lab02")); its entries are cleared first, its
            artifacts (named after their parent's hash) kept.
    Returns:
        ModelVersions.
    Raises:
        ValueError: eval_budget < window, window < 2, latency_seq outside [1, window], repeat or rounds < 1 (before
            anything is loaded).
    """
    if window < 2 or eval_budget < window or not 1 <= latency_seq <= window or repeat < 1 or rounds < 1:
        raise ValueError(f"need window >= 2, eval_budget >= window, 1 <= latency_seq <= window, repeat >= 1 and "
                         f"rounds >= 1; got {window}, {eval_budget}, {latency_seq}, {repeat}, {rounds}")
    reg = ModelRegistry(root or cache_dir("registry", "lab02"))
    reg.clear()
    text = shakespeare(TRAINING_SPLIT)
    data_sha = hashlib.sha256(text.encode()).hexdigest()
    v1 = reg.register(NAME, "v1", "safetensors", checkpoint_dir(NAME), transformation=(
        f"trained on the Shakespeare {TRAINING_SPLIT} split (sha256 {data_sha[:12]}, {len(text):,} characters; "
        "models.train_default_checkpoint)"))
    model, tok = load_model(NAME, device="cpu")
    fp32, int8 = _onnx_versions(model, reg.root / "artifacts" / v1.short)
    reg.register(NAME, "v2", "onnx", fp32, parent=v1.sha256, transformation="exported to ONNX (torch.export, fp32)")
    reg.register(NAME, "v3", "onnx", int8, parent=reg.get(NAME, "v2").sha256,
                 transformation="quantized int8 dynamic (ONNX Runtime: 8-bit weight matrices, activations per call)")
    threads = torch.get_num_threads()  # ONNX Runtime gets the threads PyTorch has: a like-for-like timing
    runners = {"v1": QuantizedModel(model, None, 0, 0), "v2": QuantizedModel(None, _session(fp32, threads), 0, 0),
               "v3": QuantizedModel(None, _session(int8, threads), 0, 0)}
    _measure(reg, runners, eval_tokens(tok, eval_budget, window), latency_seq, repeat, rounds)
    tamper = _tamper(reg, int8, "v3")
    gates = {v: promote_if_passes(reg, NAME, v, rule) for v in reg.versions(NAME)}  # in order: v1 first
    table = reg.table(NAME).drop(columns="name")
    table["gate"] = table.version.map(lambda v: gates[v].action)
    table["reasons"] = table.version.map(lambda v: "; ".join(gates[v].reasons))
    checks = pd.concat([g.table().assign(version=v, compared_with=g.production) for v, g in gates.items()])
    checks = checks[["version", "compared_with", "check", "candidate", "limit", "passed"]].reset_index(drop=True)
    data = f"data · {TRAINING_SPLIT} split<br>{data_sha[:12]}<br>{len(text) / 1e6:.1f} M chars"
    params = sum(p.numel() for p in model.parameters())
    return ModelVersions(table, lineage_figure(reg, gates, data), checks, gates, tamper, data_sha, params, reg)
