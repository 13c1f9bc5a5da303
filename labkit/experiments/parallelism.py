"""Tensor vs pipeline parallelism, measured on real ranks: one launch runs every experiment, and the tables and
figures are built here from the ranks' typed results.

    ranks = run_distributed(parallelism.modes_rank, tensor={...}, pipeline={...}, bubble={...}, world_size=2)
    ranks[0].tensor.table(), parallelism.latency_tables(ranks), parallelism.bubble_sweep(ranks), ...

Sources: Megatron-LM (Shoeybi et al. 2019) for the 2 all-reduces per layer; GPipe (Huang et al. 2019) for the
bubble (p − 1)/(m + p − 1); the published BLOOM-176B rows in `labkit.models.specs` for the cost model's OOM edges.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
import torch.distributed as dist
from torch import nn

from labkit import plots, precision
from labkit.measure import op_time, results_frame
from labkit.models import specs
from labkit.parallel import costmodel, pp, tp
from labkit.parallel.bubble import replayed_bubble
from labkit.parallel.launch import rank_device, time_on_all_ranks


# --- rank functions (spawned ranks import this module) ------------------------------------------
@dataclass(frozen=True)
class TPLatency:
    """One batch size: median ms of the from-scratch TP forward and of the unsplit model on one rank's share."""

    batch: int
    seq: int
    ms: float
    single_ms: float


@dataclass(frozen=True, eq=False)
class TPComparison:
    """One rank's `compare_rank`: a TPRun per mode (scratch, dtensor, single), latency vs batch, layer parity."""

    rank: int
    runs: dict[str, tp.TPRun]
    sweep: tuple[TPLatency, ...]
    threads: int
    layer_parity: dict[str, float]
    profile: op_time.OpTime | None = None  # one from-scratch TP forward by kind of operator, all-reduces apart

    def table(self) -> pd.DataFrame:
        """One row per mode: max |logits − single|, all-reduces and MB, all-gathers, median forward ms."""
        ref = self.runs["single"].logits
        return pd.concat([run.table(ref) for run in self.runs.values()], ignore_index=True)


def compare_rank(model_name: str = "tiny-llama", batch: int = 2, seq: int = 16, sweep_batches: tuple = (),
                 repeat: int = 3) -> TPComparison:
    """Rank function: single process, from-scratch TP and DTensor on the same ids; latency vs batch; layer parity.

    Args:
        model_name: a Llama-architecture registry name. batch, seq: the ids' shape.
        sweep_batches: batch sizes at which the TP forward and the unsplit model on this rank alone (one device's
            share of the machine) are timed. repeat: timed forwards per measurement.
    Returns:
        TPComparison for this rank, with a profile of one TP forward at `batch` (`measure.op_time`).
    """
    model = tp.load_llama(model_name)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0))
    runs = {m: tp.tp_forward(model_name, ids, m, repeat=repeat, model=model) for m in tp.MODES}
    tp_model, sweep = tp.TPLlama(model), []
    for b in sweep_batches:
        xb = torch.randint(0, model.config.vocab_size, (b, seq), generator=torch.Generator().manual_seed(b))
        xb = xb.to(model.device)
        with torch.no_grad():
            ms = time_on_all_ranks(lambda xb=xb: tp_model(xb), 1, repeat).median * 1e3
            single = time_on_all_ranks(lambda xb=xb: model(input_ids=xb), 1, repeat).median * 1e3
        sweep.append(TPLatency(b, seq, ms, single))
    with torch.no_grad():  # every rank profiles the same calls, so the all-reduces pair up
        profile = op_time.profile_torch(lambda: tp_model(ids.to(model.device)), warmup=1, repeat=repeat)
    return TPComparison(dist.get_rank(), runs, tuple(sweep), torch.get_num_threads(), tp.layer_parity(), profile)


class _MatmulStage(nn.Module):
    """A synthetic stage: `layers` square matmuls on a wide hidden state, enough compute per micro-batch to time the
    bubble. In and out it is narrow (`io` features), so the messages between stages are small and blur nothing."""

    def __init__(self, hidden: int, layers: int, io: int = 16):
        super().__init__()
        self.up, self.down = nn.Linear(io, hidden), nn.Linear(hidden, io)
        self.net = nn.Sequential(*(nn.Linear(hidden, hidden, bias=False) for _ in range(layers)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (rows, io) -> (rows, io)
        return torch.tanh(self.down(self.net(self.up(x))))


@dataclass(frozen=True)
class BubbleRun:
    """One rank's `bubble_rank`: micro-batch count -> this rank's events of each repeat."""

    rank: int
    runs: dict[int, tuple[tuple[pp.Event, ...], ...]]

    def table(self) -> pd.DataFrame:
        """Every event: rank, kind, label, start, end (s), microbatches, repeat."""
        return pd.DataFrame([{**asdict(e), "microbatches": m, "repeat": i} for m, reps in self.runs.items()
                             for i, evs in enumerate(reps) for e in evs])  # fmt: skip


def bubble_rank(microbatches: tuple = (1, 2, 4, 8), rows: int = 1024, hidden: int = 1024, layers: int = 6,
                repeat: int = 5) -> BubbleRun:
    """Rank function: GPipe on synthetic stages for each micro-batch count, `repeat` recorded runs each.

    Enough rows that a micro-batch's compute (~16 ms at m=8 on one CPU thread) dwarfs a gloo hand-off
    (a few ms): otherwise the hand-offs, not the schedule, set the measured idle time.

    Args:
        microbatches: the micro-batch counts m. rows: the batch (of (rows, 16) inputs).
        hidden, layers: each stage's width and matmul count. repeat: runs per m.
    Returns:
        BubbleRun with this rank's events.
    Raises:
        ValueError: when an m does not divide `rows` (before anything runs).
    """
    bad = [m for m in microbatches if rows % m]
    if bad:
        raise ValueError(f"{rows} rows do not split into {bad} micro-batches; use divisors of {rows}")
    torch.manual_seed(0)
    stage = _MatmulStage(hidden, layers).eval().to(rank_device())
    x = torch.randn(rows, 16, device=rank_device())
    runs = {}
    for m in microbatches:
        schedule = pp.make_gpipe(stage, m)
        pp.gpipe_forward(schedule, x)  # warm-up (shape exchange)
        reps = []
        for _ in range(repeat):
            rec = pp.Recorder()
            dist.barrier()
            with pp.record_pipelining(stage, rec):
                pp.gpipe_forward(schedule, x)
            reps.append(tuple(rec.events))
        runs[m] = tuple(reps)
    return BubbleRun(dist.get_rank(), runs)


@dataclass(frozen=True, eq=False)
class ModesRun:
    """One rank's `modes_rank`: tensor (None when not asked for), pipeline and bubble results."""

    rank: int
    tensor: TPComparison | None
    pipeline: pp.PipelineRun
    bubble: BubbleRun

    def table(self) -> pd.DataFrame:
        """This rank's latency vs batch (ms): one device, tensor parallel, naive pipeline, GPipe."""
        rows = [{"batch": t.batch, "one device": t.single_ms, "tensor parallel": t.ms, "naive pipeline": p.naive_ms,
                 "GPipe": p.gpipe_ms} for t, p in zip(self.tensor.sweep, self.pipeline.sweep, strict=True)]
        return results_frame(rows)


def modes_rank(pipeline: dict | None = None, bubble: dict | None = None, tensor: dict | None = None) -> ModesRun:
    """Rank function: several experiments in one launch (the imports are paid once).

    Args:
        pipeline: keyword arguments for `pp.pipeline_rank`. bubble: for `bubble_rank`. tensor: for `compare_rank`.
    Returns:
        ModesRun for this rank.
    """
    tensor_run = compare_rank(**tensor) if tensor is not None else None  # skipped when None
    return ModesRun(dist.get_rank(), tensor_run, pp.pipeline_rank(**(pipeline or {})), bubble_rank(**(bubble or {})))


# --- tables and figures (in the notebook's process) --------------------------------------------
def layer_parity_table(ranks: list[TPComparison]) -> pd.DataFrame:
    """Max |sharded − unsharded| per from-scratch layer (columns), one row per rank.

    Args:
        ranks: every rank's TPComparison (e.g. `[r.tensor for r in modes_ranks]`), rank order.
    Returns:
        DataFrame indexed "rank 0", "rank 1", ...
    """
    return pd.DataFrame([r.layer_parity for r in ranks], index=[f"rank {r.rank}" for r in ranks])


def megatron_table(run: tp.TPRun) -> pd.DataFrame:
    """A from-scratch TP forward's all-reduces against Megatron's count, and their size.

    Megatron (Shoeybi et al. 2019): one all-reduce after attention and one after the MLP per layer, plus one for
    a vocabulary-split embedding; each carries the activations, batch × seq × hidden values (fp32 here).

    Args:
        run: a TPRun of mode "scratch" (e.g. `ranks[0].tensor.runs["scratch"]`).
    Returns:
        DataFrame with quantity, measured, formula, rule.
    """
    n, (batch, seq, _) = run.layers, run.logits.shape
    by_tag, count = run.comm.by_tag("all_reduce"), run.comm.count("all_reduce")
    act = batch * seq * run.hidden * int(precision.bytes_per_value("fp32"))  # load_llama loads fp32
    rows = [("all-reduces: embedding", by_tag.get("embedding", 0), 1, "1 (vocabulary-split embedding)"),
            ("all-reduces: attention", by_tag.get("attention", 0), n, "1 per layer (row-parallel output)"),
            ("all-reduces: mlp", by_tag.get("mlp", 0), n, "1 per layer (row-parallel down projection)"),
            ("all-reduces: total", count, 2 * n + 1, f"2 × {n} layers + 1"),
            ("bytes per all-reduce", run.comm.nbytes("all_reduce") / max(count, 1), act,
             f"{batch} × {seq} × {run.hidden} × 4 B")]  # fmt: skip
    return pd.DataFrame(rows, columns=["quantity", "measured", "formula", "rule"])


def latency_tables(ranks: list[ModesRun]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Forward latency (ms, rank 0: every rank steps together) and throughput (tokens/s) vs batch.

    Args:
        ranks: every rank's ModesRun (with tensor results and the same sweep batches for TP and the pipeline).
    Returns:
        (latency, throughput): columns batch, one device, tensor parallel, naive pipeline, GPipe.
    """
    latency = ranks[0].table()
    seq = ranks[0].tensor.sweep[0].seq if ranks[0].tensor.sweep else 0
    throughput = latency.copy()
    for col in latency.columns[1:]:
        throughput[col] = latency.batch * seq / (latency[col] / 1e3)
    return latency, throughput


def bubble_sweep(ranks: list[ModesRun]) -> plots.Measured:
    """Measured fill/drain idle (median over repeats) and total idle per micro-batch count, vs GPipe's formula.

    Args:
        ranks: every rank's ModesRun, rank order.
    Returns:
        Measured: microbatches, measured_bubble, measured_total_idle, formula ((p − 1)/(m + p − 1)), replayed (the
        schedule replayed with the measured compute times: `bubble.replayed_bubble`), span_ms, difference; a figure.
    """
    bubbles, rows = [r.bubble for r in ranks], []
    for m in bubbles[0].runs:
        reps = [list(rep) for rep in zip(*(b.runs[m] for b in bubbles), strict=True)]
        runs = [pp.idle_fractions(rep) for rep in reps]
        rows.append({"microbatches": m, "measured_bubble": float(np.median([r["bubble"] for r in runs])),
                     "measured_total_idle": float(np.median([r["total"] for r in runs])),
                     "formula": pp.bubble_formula(len(bubbles), m),
                     "replayed": float(np.median([replayed_bubble(rep) for rep in reps])),
                     "span_ms": float(np.median([r["span_ms"] for r in runs]))})  # fmt: skip
    table = pd.DataFrame(rows).assign(difference=lambda t: t.measured_bubble - t.formula)
    fig = plots.line(table, "microbatches", ["measured_bubble", "measured_total_idle", "formula", "replayed"],
                     f"Pipeline bubble on {len(bubbles)} ranks: measured vs (p − 1)/(m + p − 1)",
                     ylabel="fraction of the time idle", log_x=True)  # fmt: skip
    return plots.Measured(table, fig)


def timeline_figure(events_per_rank: list, title: str) -> go.Figure:
    """A Gantt chart: one row per rank, bars for compute / send / recv wait (ms from the first event).

    Args:
        events_per_rank: each rank's pp.Event sequence. title: the figure's title.
    Returns:
        a plotly Figure in the lab's style.
    """
    events = [e for evs in events_per_rank for e in evs]
    t0 = min(e.start for e in events)
    colors = {"compute": plots.COLORS[0], "send": plots.COLORS[3], "recv": plots.COLORS[5]}
    fig = go.Figure()
    for kind, color in colors.items():
        part = [e for e in events if e.kind == kind]
        fig.add_trace(go.Bar(
            y=[f"rank {e.rank}" for e in part], x=[(e.end - e.start) * 1e3 for e in part],
            base=[(e.start - t0) * 1e3 for e in part], orientation="h",
            name=kind if kind != "recv" else "recv (waiting)", marker_color=color,
            text=[e.label if kind == "compute" else "" for e in part], textposition="inside",
            hovertemplate="%{y}: " + kind + " %{base:.2f} → +%{x:.2f} ms<extra></extra>"))  # fmt: skip
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title="ms since the first event")
    fig.update_yaxes(autorange="reversed")
    return plots.style(fig, title, "white gaps: the rank has nothing to do")


def oom_table(engines: dict, prompt: int = 10) -> pd.DataFrame:
    """The cost model's memory on the fullest GPU at every published row's out-of-memory edge (BLOOM-176B).

    For each row of `specs.BLOOM_ROWS`: its largest batch that ran and its first out-of-memory batch, on the row's
    A100-80GB count, for prompt + BLOOM_BENCHMARK_NEW_TOKENS tokens per sequence (ds-zero: per GPU).

    Args:
        engines: `costmodel.calibrate()`'s result (engine name -> Engine). prompt: prompt tokens per sequence.
    Returns:
        DataFrame: row, set (of the cell: in-sample | held-out), batch, published ("ran" | "OOM"), weights /
        gathered / KV cache / workspace / reserved / total_GB (GB), capacity_GB and fits (in the GPU).
    """
    gpu, tokens, rows = specs.A100_80GB, prompt + specs.BLOOM_BENCHMARK_NEW_TOKENS, []
    for key, row in specs.BLOOM_ROWS.items():
        ran = max(b for b, ms in row.ms_per_token.items() if ms is not None)
        oom = min(b for b, ms in row.ms_per_token.items() if ms is None)
        for b, verdict in ((ran, "ran"), (oom, "OOM")):
            mem = costmodel.memory_gb(engines[row.engine], costmodel.row_shape(row), gpu, row.gpus, b, tokens)
            rows.append({"row": key, "set": costmodel.SETS[0] if b in row.fit else costmodel.SETS[1], "batch": b,
                         "published": verdict, **mem})  # fmt: skip
    df = pd.DataFrame(rows)
    df["total_GB"] = df[["weights", "gathered", "KV cache", "workspace", "reserved"]].sum(axis=1)
    return df.assign(capacity_GB=costmodel.capacity_gb(gpu)).assign(fits=lambda d: d.total_GB <= d.capacity_GB)
