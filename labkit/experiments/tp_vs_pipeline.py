"""Tensor parallelism against a naive pipeline, measured on CPU ranks: the benchmark traps at small scale.

    ranks = run_distributed(tp_vs_pipeline_rank, "tiny-llama", world_size=2)
    small_scale(ranks)      # measured latencies in the published accounting: ms/token = latency / batch

`tp_vs_pipeline_rank` is a rank function (the launcher imports it by name in each spawned rank); the published
and modelled side of the same comparisons is `benchmark_traps`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd
import torch
import torch.distributed as dist

from labkit import plots
from labkit.parallel.launch import time_on_all_ranks

ALL_REDUCES_TIMED = 20  # back-to-back all-reduces per timed call (one is too short to time alone)


@dataclass(frozen=True)
class StrategyTimes:
    """One batch's forward latency (median ms, all ranks in step) per strategy, and one all-reduce's time."""

    batch: int
    one_device_ms: float
    tensor_parallel_ms: float
    naive_pipeline_ms: float
    all_reduce_ms: float  # one all-reduce of the (batch, seq, hidden) activations


@dataclass(frozen=True)
class TpVsPipelineRank:
    """What one rank of `tp_vs_pipeline_rank` measured.

    Attributes:
        rank, world_size: this rank and the number of ranks. threads: torch threads per rank.
        seq: tokens per sequence. layers: decoder layers. times: one StrategyTimes per batch.
        max_diff_tp_vs_pipeline: largest |TP logits − pipeline logits| (set on the last rank, which holds the
        pipeline's logits; 0.0 elsewhere).
    """

    rank: int
    world_size: int
    threads: int
    seq: int
    layers: int
    times: tuple[StrategyTimes, ...]
    max_diff_tp_vs_pipeline: float

    def table(self) -> pd.DataFrame:
        """One row per batch: batch, "one device", "tensor parallel", "naive pipeline" (ms) and all_reduce_ms."""
        names = {"one_device_ms": "one device", "tensor_parallel_ms": "tensor parallel",
                 "naive_pipeline_ms": "naive pipeline"}  # fmt: skip
        return pd.DataFrame([asdict(t) for t in self.times]).rename(columns=names)


def tp_vs_pipeline_rank(model_name: str = "tiny-llama", batches: tuple[int, ...] = (1, 16), seq: int = 16,
                        repeat: int = 5) -> TpVsPipelineRank:
    """Rank function: the same forward on one device, tensor parallel (from scratch) and as a naive pipeline.

    Every rank times each strategy at each batch (`launch.time_on_all_ranks`: median of `repeat`, all ranks in
    step), then a burst of all-reduces of the activations one TP all-reduce carries; the last rank compares the TP
    and pipeline logits.

    Args:
        model_name: a Llama in the model registry. batches: batch sizes. seq: tokens per sequence. repeat: timed
            forwards per strategy and batch.
    Returns:
        TpVsPipelineRank for this rank.
    """
    # Deliberately local: only the spawned ranks run this, and importing the parallel layers (torch's pipelining,
    # DTensor) costs the parent process, a notebook kernel, seconds it never uses.
    from labkit.parallel import pp, tp

    rank, world = dist.get_rank(), dist.get_world_size()
    model = tp.load_llama(model_name)
    tp_model = tp.TPLlama(model)
    lo, hi = pp.split_layers(model.config.num_hidden_layers, world)[rank]
    stage = pp.LlamaStage(model, lo, hi).eval()
    times, max_diff = [], 0.0
    for b in batches:
        ids = torch.randint(0, model.config.vocab_size, (b, seq), generator=torch.Generator().manual_seed(b))
        ids = ids.to(model.device)
        shape = (b, seq, model.config.hidden_size)  # (batch, seq, hidden) between the pipeline stages

        def ms(fn) -> float:
            return time_on_all_ranks(fn, warmup=1, repeat=repeat).median * 1e3

        with torch.no_grad():
            single = ms(lambda ids=ids: model(input_ids=ids))
            tp_ms = ms(lambda ids=ids: tp_model(ids))
            naive_ms = ms(lambda ids=ids, s=shape: pp.naive_forward(stage, ids, s, pp.Recorder()))
            tp_out, pp_out = tp_model(ids), pp.naive_forward(stage, ids, shape, pp.Recorder())
        if rank == world - 1:  # the last stage holds the pipeline's logits (batch, seq, vocab)
            max_diff = max(max_diff, float((tp_out - pp_out).abs().max()))
        act = torch.zeros(shape, device=model.device)  # what each TP all-reduce carries

        def burst(act=act) -> None:
            for _ in range(ALL_REDUCES_TIMED):
                dist.all_reduce(act)

        all_reduce_ms = time_on_all_ranks(burst, warmup=1, repeat=repeat).median / ALL_REDUCES_TIMED * 1e3
        times.append(StrategyTimes(b, single, tp_ms, naive_ms, all_reduce_ms))
    return TpVsPipelineRank(rank, world, torch.get_num_threads(), seq, model.config.num_hidden_layers, tuple(times),
                            max_diff)  # fmt: skip


def small_scale(ranks: list[TpVsPipelineRank]) -> plots.Measured:
    """The measured latencies in the published benchmark's accounting (rank 0's: all ranks step together).

    One forward stands in for one generation step, so ms/token = latency / batch. A small model of TP is attached:
    one device's time ÷ ranks + (2 × layers + 1) all-reduces, each timed alone.

    Args:
        ranks: `run_distributed(tp_vs_pipeline_rank, ...)`'s results.
    Returns:
        Measured: long table (batch, strategy, latency_ms, ms_per_token, tokens_per_s, label); attrs world_size,
        threads_per_rank and tp_model (batch, one device, tensor parallel, all_reduce_ms, all_reduces,
        "tensor parallel (model)"). Figure: ms per token per strategy and batch.
    """
    first = ranks[0]
    wide = first.table()
    all_reduces = 2 * first.layers + 1
    tp_model = wide[["batch", "one device", "tensor parallel", "all_reduce_ms"]].assign(all_reduces=all_reduces)
    tp_model["tensor parallel (model)"] = wide["one device"] / first.world_size + all_reduces * wide.all_reduce_ms
    long = wide.drop(columns="all_reduce_ms").melt(id_vars="batch", var_name="strategy", value_name="latency_ms")
    long["ms_per_token"] = long.latency_ms / long.batch
    long["tokens_per_s"] = 1e3 / long.ms_per_token
    long.attrs.update(world_size=first.world_size, threads_per_rank=first.threads, tp_model=tp_model)
    long["label"] = "batch " + long.batch.astype(str)
    title = f"Measured here: {first.world_size} CPU ranks, tiny Llama, ms per token (latency ÷ batch)"
    fig = plots.bars(long, "label", "ms_per_token", title, color="strategy", ylabel="ms per token")
    return plots.Measured(long, fig)
