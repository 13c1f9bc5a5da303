"""Why one benchmark can rank Accelerate (naive pipeline) ahead of DeepSpeed-Inference (tensor parallel).

    accounting_traps()      # mismatched batches, throughput read as latency, start-up, a slow link
    run_distributed(tp_vs_pipeline_rank, "tiny-llama", world_size=2)   # the same effects measured on CPU ranks

The published rows (`labkit.models.specs`) and the cost model (`labkit.parallel.costmodel`, through
`serving_plan.plan`) give each comparison twice; `tp_vs_pipeline_rank` measures tensor parallelism against a naive
pipeline on a tiny Llama (a rank function: the launcher imports it by name in each spawned rank).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import pandas as pd
import plotly.graph_objects as go
import torch
import torch.distributed as dist

from labkit import plots
from labkit.experiments.serving_plan import plan
from labkit.models import specs
from labkit.parallel import costmodel as cm
from labkit.parallel.launch import time_on_all_ranks

ALL_REDUCES_TIMED = 20  # back-to-back all-reduces per timed call (one is too short to time alone)


def crossover_link_GBps(batch: int = 1, gpus: int = specs.BLOOM_BENCHMARK_GPUS) -> float:
    """The GPU-to-GPU bandwidth below which the cost model has naive PP beat TP (A100-80GB otherwise).

    Args:
        batch: sequences. gpus: GPUs in the node.
    Returns:
        GB/s per direction (geometric bisection between 1e-4 and the A100's link); NaN if TP wins or loses at both
        ends of that range.
    """
    m, engines = cm.shape("bloom-176b"), cm.calibrate()

    def tp_minus_pp(link: float) -> float:
        gpu = replace(specs.A100_80GB, link_GBps=link)
        ms = {n: cm.ms_per_token(e, m, gpu, gpus, batch)["ms_per_token"] for n, e in engines.items()}
        return ms["ds-inference"] - ms["accelerate"]

    lo, hi = 1e-4, specs.A100_80GB.link_GBps
    if tp_minus_pp(hi) >= 0 or tp_minus_pp(lo) <= 0:
        return math.nan
    for _ in range(60):  # geometric bisection: bandwidths span orders of magnitude
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if tp_minus_pp(mid) > 0 else (lo, mid)
    return math.sqrt(lo * hi)


def break_even_tokens(first_startup_s: float, first_ms_per_token: float, second_startup_s: float,
                      second_ms_per_token: float) -> float:
    """Generated tokens after which two deployments have spent the same time (start-up + tokens × ms/token).

    Args:
        first_startup_s, second_startup_s: seconds to ready. first_ms_per_token, second_ms_per_token: ms per token.
    Returns:
        tokens (float); inf when they never meet (one is ahead at every token count).
    """
    faster_by_ms = first_ms_per_token - second_ms_per_token
    later_by_s = second_startup_s - first_startup_s
    if faster_by_ms == 0 or later_by_s / faster_by_ms < 0:
        return math.inf
    return later_by_s / faster_by_ms * 1e3


def _row(comparison: str, acc: float, ds: float, unit: str, source: str) -> dict:
    return {"comparison": comparison, "accelerate": acc, "ds-inference": ds, "unit": unit, "source": source,
            "accelerate / ds-inference": acc / ds, "looks faster": "accelerate" if acc < ds else "ds-inference"}


def accounting_traps(big_batch: int = 32, new_tokens: int = specs.BLOOM_BENCHMARK_NEW_TOKENS,
                     slow_link_GBps: float = specs.ETHERNET_GBPS["1 GbE"]) -> plots.Measured:
    """Ways one benchmark can rank Accelerate first, from the published rows and from the model.

    ms/token at mismatched batches, ms/token (a throughput) read as latency, start-up time (unsharded DeepSpeed
    checkpoint), and a slow link between the GPUs (model only).

    Args:
        big_batch: the large batch; it must have a published time for both engines.
        new_tokens: tokens per request. slow_link_GBps: the slow GPU-to-GPU link (GB/s).
    Returns:
        Measured: one row per (source, comparison) with both times, their ratio and which "looks faster"; attrs
        startup_crossover_tokens (`break_even_tokens` at batch 1, published) and crossover_link_GBps
        {1: GB/s, big_batch: GB/s} (`crossover_link_GBps`). Figure: `traps_figure`.
    Raises:
        ValueError: if big_batch has no published time for both engines (naming the batches that do).
    """
    pub, startup = specs.PUBLISHED_MS_PER_TOKEN, specs.STARTUP_S
    timed = sorted(set.intersection(*({b for b, ms in row.items() if ms is not None} for row in pub.values())))
    if big_batch not in timed:
        raise ValueError(f"big_batch {big_batch} has no published time for both engines; choose from {timed}")

    def predicted(batch: int, link: float = 0.0) -> pd.Series:
        return plan(batch=batch, link_GBps=link, new_tokens=new_tokens).table.set_index("backend").ms_per_token

    model = {b: predicted(b) for b in (1, big_batch)}
    slow = predicted(big_batch, slow_link_GBps)
    rows = []
    for source, ms in (("published", lambda e, b: pub[e][b]), ("model", lambda e, b: model[b][e])):
        rows += [
            _row(f"ms/token: accelerate at batch {big_batch} vs ds-inference at batch 1", ms("accelerate", big_batch),
                 ms("ds-inference", 1), "ms", source),
            _row(f"ms/token, both at batch {big_batch}", ms("accelerate", big_batch), ms("ds-inference", big_batch),
                 "ms", source),
            _row(f"request latency of those runs ({new_tokens} tokens)", ms("accelerate", big_batch) * big_batch
                 * new_tokens / 1e3, ms("ds-inference", 1) * new_tokens / 1e3, "s", source),
            _row(f"start-up + first {new_tokens} tokens at batch 1 (unsharded ds checkpoint)",
                 startup["accelerate"] + ms("accelerate", 1) * new_tokens / 1e3,
                 startup["ds-inference (unsharded)"] + ms("ds-inference", 1) * new_tokens / 1e3, "s", source),
        ]  # fmt: skip
    link_name = next((f" ({k})" for k, v in specs.ETHERNET_GBPS.items() if v == slow_link_GBps), "")
    rows.append(_row(f"ms/token at batch {big_batch} over a {slow_link_GBps:g} GB/s link{link_name}",
                     slow["accelerate"], slow["ds-inference"], "ms", "model"))  # fmt: skip
    table = pd.DataFrame(rows)
    table.attrs["startup_crossover_tokens"] = break_even_tokens(startup["accelerate"], pub["accelerate"][1],
                                                                startup["ds-inference (unsharded)"],
                                                                pub["ds-inference"][1])  # fmt: skip
    table.attrs["crossover_link_GBps"] = {b: crossover_link_GBps(b) for b in (1, big_batch)}
    return plots.Measured(table, traps_figure(table))


def traps_figure(table: pd.DataFrame) -> go.Figure:
    """One bar per comparison: Accelerate's time ÷ DeepSpeed-Inference's (log scale; left of 1 = Accelerate ahead).

    Args:
        table: `accounting_traps().table`.
    Returns:
        a horizontal grouped bar chart, one colour per source.
    """
    fig = go.Figure()
    for i, (source, part) in enumerate(table.groupby("source", sort=False)):
        ratio = part["accelerate / ds-inference"]
        fig.add_trace(go.Bar(y=part.comparison, x=ratio, name=source, orientation="h", marker_color=plots.COLORS[i],
                             text=[f"{r:.2f}×" for r in ratio], textposition="outside"))  # fmt: skip
    fig.add_vline(x=1.0, line_dash="dot")
    fig.update_xaxes(type="log", title="Accelerate time ÷ DeepSpeed-Inference time")
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(barmode="group")
    plots.style(fig, "When does Accelerate look ahead? (bars left of 1)")
    return fig.update_layout(height=560, margin=dict(l=430))  # room for the comparisons' names


# --- measured: tensor parallel vs naive pipeline on CPU ranks -----------------------------------
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

        all_reduce_ms = time_on_all_ranks(burst, warmup=1, repeat=1).median / ALL_REDUCES_TIMED * 1e3
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
