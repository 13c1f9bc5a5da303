"""Why one benchmark can rank Accelerate (naive pipeline) ahead of DeepSpeed-Inference (tensor parallel).

    accounting_traps()      # mismatched batches, throughput read as latency, start-up, a slow link
    zero_trap()             # ds-zero is not ds-inference, and its ms/token is already divided by its streams

The published rows (`labkit.models.specs`) and the cost model (`labkit.parallel.costmodel`, through
`serving_plan.plan`) give each comparison twice; `tp_vs_pipeline` measures the same effects on CPU ranks.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd
import plotly.graph_objects as go

from labkit import plots
from labkit.experiments.serving_plan import plan
from labkit.models import specs
from labkit.parallel import costmodel as cm


def link_ms(link_GBps: float, batch: int, gpus: int = specs.BLOOM_BENCHMARK_GPUS) -> dict[str, float]:
    """Model ms/token of TP and of a naive pipeline that keeps each layer's KV cache on its GPU, over a given link.

    Accelerate in 2022 also sent the whole cache to GPU 0 and back every step (`costmodel.Engine.cache_to_input_gpu`),
    which alone loses on any slow link; the pipeline compared here moves only one activation per GPU boundary.

    Args:
        link_GBps: GPU-to-GPU GB/s per direction (A100-80GB otherwise). batch: sequences. gpus: GPUs in the node.
    Returns:
        {"accelerate": ms, "ds-inference": ms}.
    """
    m, fitted, gpu = cm.shape("bloom-176b"), cm.calibrate(), replace(specs.A100_80GB, link_GBps=link_GBps)
    engines = {"accelerate": replace(fitted["accelerate"], cache_to_input_gpu=False),
               "ds-inference": fitted["ds-inference"]}
    return {n: cm.ms_per_token(e, m, gpu, gpus, batch)["ms_per_token"] for n, e in engines.items()}


def crossover_link_GBps(batch: int = 1, gpus: int = specs.BLOOM_BENCHMARK_GPUS) -> float:
    """The GPU-to-GPU bandwidth below which the cost model has the naive pipeline beat TP (`link_ms`).

    Args:
        batch: sequences. gpus: GPUs in the node.
    Returns:
        GB/s per direction (geometric bisection between 1e-4 and the A100's link); NaN if TP wins or loses at both
        ends of that range.
    """

    def tp_minus_pp(link: float) -> float:
        ms = link_ms(link, batch, gpus)
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
    checkpoint), and a slow link between the GPUs (model only; `link_ms`: a pipeline that keeps its KV cache).

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

    model = {b: plan(batch=b, new_tokens=new_tokens).table.set_index("backend").ms_per_token for b in (1, big_batch)}
    slow = link_ms(slow_link_GBps, big_batch)
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
    rows.append(_row(f"ms/token at batch {big_batch} over a {slow_link_GBps:g} GB/s link{link_name}, cache kept",
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


def zero_trap(batch_per_gpu: int = 1) -> plots.Measured:
    """The published table's other DeepSpeed row: ZeRO-Inference (ds-zero), read as it was measured.

    The ds-zero script runs one generate() stream of `batch_per_gpu` sequences on each of the node's GPUs and
    multiplies the tokens by world_size before dividing (`specs.BLOOM_SOURCE`): its ms/token is an all-stream
    aggregate, and one stream waits GPUs × that per token. Next to it, Accelerate and DeepSpeed-Inference at the
    same batch (as the table puts them) and with the same sequences in flight (batch × GPUs).

    Args:
        batch_per_gpu: the ds-zero batch (a timed batch of its published row).
    Returns:
        Measured: rows (comparison, engine, sequences, published_ms, model_ms; NaN = out of memory or not
        published), model from `serving_plan.plan` (ds-zero = its zero-inference backend with batch × GPUs
        sequences); attrs gpus, published_ms and reproduced_ms (the aggregate), per_stream_published_ms and
        per_stream_model_ms. Figure: published vs model per comparison.
    Raises:
        ValueError: for a batch without a published ds-zero time (naming the ones with).
    """
    row, gpus = specs.BLOOM_ROWS["ds-zero bf16"], specs.BLOOM_ROWS["ds-zero bf16"].gpus
    timed = [b for b, ms in row.ms_per_token.items() if ms is not None]
    if batch_per_gpu not in timed:
        raise ValueError(f"batch_per_gpu {batch_per_gpu} has no published ds-zero time; choose from {timed}")
    pub, flight = specs.PUBLISHED_MS_PER_TOKEN, batch_per_gpu * gpus
    model = {b: plan(batch=b).table.set_index("backend").ms_per_token for b in (batch_per_gpu, flight)}
    ms = lambda engine, b: math.nan if pub[engine].get(b) is None else pub[engine][b]  # noqa: E731
    rows = [("ds-zero as published (all streams' tokens)", "ds-zero", flight, row.ms_per_token[batch_per_gpu],
             model[flight]["zero-inference"]),
            ("ds-zero, one stream (× GPUs)", "ds-zero", batch_per_gpu, gpus * row.ms_per_token[batch_per_gpu],
             gpus * model[flight]["zero-inference"])]  # fmt: skip
    for engine in ("accelerate", "ds-inference"):
        rows += [(f"{engine} at the same batch", engine, batch_per_gpu, ms(engine, batch_per_gpu),
                  model[batch_per_gpu][engine]),
                 (f"{engine} with the same sequences in flight", engine, flight, ms(engine, flight),
                  model[flight][engine])]  # fmt: skip
    table = pd.DataFrame(rows, columns=["comparison", "engine", "sequences", "published_ms", "model_ms"])
    table.attrs.update(gpus=gpus, published_ms=table.published_ms[0], reproduced_ms=table.model_ms[0],
                       per_stream_published_ms=table.published_ms[1], per_stream_model_ms=table.model_ms[1])
    fig = go.Figure([go.Bar(y=table.comparison, x=table[c], name=c.split("_")[0], orientation="h",
                            marker_color=plots.COLORS[i]) for i, c in enumerate(("published_ms", "model_ms"))])
    fig.update_xaxes(type="log", title="ms per token")
    fig.update_yaxes(autorange="reversed")
    plots.style(fig, f"ds-zero at batch {batch_per_gpu} per GPU on {gpus} GPUs: what its ms/token counts")
    return plots.Measured(table, fig.update_layout(barmode="group", height=420, margin=dict(l=330)))
