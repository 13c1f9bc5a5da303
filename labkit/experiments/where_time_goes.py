"""Where the time goes, shown by a profiler rather than asserted: eager PyTorch against ONNX Runtime on the same
input, and one decode step of a language model, each split into matrix multiplies, attention, every other operator,
and the time outside any operator (`measure.op_time`).

Both run on the CPU: ONNX Runtime here is its CPU build, and on a GPU the CPU-side operator times of an eager model
measure dispatch and kernel launches, not the kernels (the launch counts of `cuda_graphs` tell that story there).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pandas as pd
import torch

from labkit.measure import op_time


@dataclass(frozen=True)
class WhereTimeGoes:
    """results: one OpTime per engine. table: engine × category, ms per call and share. ops: each engine's heaviest
    operators. figure: stacked bars of the table."""

    results: list
    table: pd.DataFrame
    ops: pd.DataFrame
    figure: object

    def ms(self, engine: str, category: str) -> float:
        """Milliseconds per call one engine spent in one category (`op_time.CATEGORIES`)."""
        return next(r for r in self.results if r.engine == engine).ms(category)


def _bundle(results: list, title: str, top: int) -> WhereTimeGoes:
    table = pd.concat([r.table.assign(engine=r.engine, wall_ms=r.wall_ms, unprofiled_ms=r.unprofiled_ms)
                       for r in results], ignore_index=True)  # fmt: skip
    ops = pd.concat([r.ops.head(top).assign(engine=r.engine) for r in results], ignore_index=True)
    return WhereTimeGoes(results, table[["engine", "category", "ms", "share", "wall_ms", "unprofiled_ms"]],
                         ops[["engine", "op", "category", "calls", "ms"]], op_time.figure(results, title))  # fmt: skip


def eager_vs_onnxruntime(workload: str = "tiny-bloom", batch_size: int = 1, seq_len: int = 32, threads: int = 2,
                         repeat: int = 10, top: int = 8) -> WhereTimeGoes:  # fmt: skip
    """Profile one forward of a workload in eager PyTorch and in ONNX Runtime (level "all"), same input, CPU.

    Args:
        workload: an `engines.graph_for` name ("tiny-bloom", "tiny-llama", "smollm2-135m", "digits-cnn").
        batch_size, seq_len: the input's shape. threads: both engines' intra-op threads. repeat: profiled calls.
        top: heaviest operators listed per engine.
    Returns:
        WhereTimeGoes with the rows "PyTorch eager" and "ONNX Runtime".
    Raises:
        ValueError: an unknown workload or a size < 1 (`engines.graph_for`), before anything is loaded.
    """
    from labkit.convert import export_onnx, session_options
    from labkit.engines import graph_for
    from labkit.engines.base import torch_threads

    graph = graph_for(workload, batch_size, seq_len)
    module = graph.module.eval()
    with torch_threads(threads), torch.inference_mode():
        eager = op_time.profile_torch(lambda: module(*graph.example), repeat=repeat)
    path = export_onnx(graph)
    feeds = graph.feeds(graph.example)
    ort = op_time.profile_onnxruntime(str(path), session_options("all", threads), feeds, repeat=repeat)
    return _bundle([eager, ort], f"{workload}, batch {batch_size} × {seq_len} tokens: where one forward's time goes",
                   top)  # fmt: skip


def decode_step(model_name: str = "smollm2-135m", prompt_len: int = 32, repeat: int = 10, threads: int = 2,
                top: int = 10) -> WhereTimeGoes:  # fmt: skip
    """Profile one greedy decode step (one new token with a KV cache) of a causal LM in eager PyTorch on the CPU.

    Args:
        model_name: a `models.load_model` name. prompt_len: tokens prefilled before the profiled steps.
        repeat: profiled steps (each appends one token to the cache). threads: intra-op threads. top: operators listed.
    Returns:
        WhereTimeGoes with one row, "PyTorch eager".
    Raises:
        ValueError: an unknown model (`models.load_model`) or prompt_len < 1, before anything is loaded.
    """
    if prompt_len < 1:
        raise ValueError(f"prompt_len must be >= 1, got {prompt_len}")
    from labkit.decoding.lm import next_logits
    from labkit.engines.base import torch_threads
    from labkit.models import load_model

    model, _ = load_model(model_name, device="cpu")
    ids = torch.randint(0, model.config.vocab_size, (1, prompt_len), generator=torch.Generator().manual_seed(0))
    with torch_threads(threads), torch.inference_mode():
        logits, cache = next_logits(model, ids)  # prefill: the cache the steps extend (in place)
        token = logits.argmax(-1, keepdim=True)  # (1, 1)
        result = op_time.profile_torch(lambda: next_logits(model, token, cache), repeat=repeat)  # as generate() steps
    return _bundle([result], f"{model_name}: one decode step (batch 1, {prompt_len}-token prompt)", top)


def per_rank(profiles: list, title: str, top: int = 8) -> WhereTimeGoes:
    """Several ranks' profiles of the same call side by side (e.g. `parallelism.compare_rank`'s TP forward).

    Args:
        profiles: one `op_time.OpTime` per rank, in rank order. title: the figure's. top: operators listed per rank.
    Returns:
        WhereTimeGoes with one row per rank ("rank 0", "rank 1", ...); "communication" is each rank's time in
        collectives, waiting for the other ranks included.
    Raises:
        ValueError: no profiles.
    """
    if not profiles:
        raise ValueError("no profiles: pass one op_time.OpTime per rank")
    return _bundle([replace(p, engine=f"rank {i}") for i, p in enumerate(profiles)], title, top)
