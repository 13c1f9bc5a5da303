"""Pipeline parallelism: each rank holds a contiguous slice of the layers and activations flow rank to rank.

Naive model parallelism (what Accelerate's `device_map="auto"` does): one batch goes through rank 0's
layers, then rank 1's ... — one rank busy at a time. GPipe (`torch.distributed.pipelining`) cuts the
batch into m micro-batches so stages overlap; only the fill and drain remain idle, a fraction
(p − 1)/(m + p − 1) of the time. Every rank records an event timeline (compute, send, recv wait) on a
common clock (`time.time()`; the ranks share one machine) so the bubble can be seen and measured.

Rank functions: `pipeline_rank` (tiny Llama: naive and GPipe, parity, latency vs batch),
`bubble_rank` (synthetic stages with enough compute to measure the bubble), `pp_rank` (both at once).
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

if TYPE_CHECKING:  # plots (plotly, pandas) only for the caller's figures, not in every rank
    from labkit.plots import Measured

Event = dict  # {"rank", "kind": compute|send|recv, "label", "start", "end"} (seconds, time.time())


class LlamaStage(nn.Module):
    """Layers [lo, hi) of a Llama `*ForCausalLM`; the first stage embeds, the last one norms and projects."""

    def __init__(self, model: nn.Module, lo: int, hi: int):
        super().__init__()
        inner = model.model
        self.first, self.last = lo == 0, hi == len(inner.layers)
        self.embed = copy.deepcopy(inner.embed_tokens) if self.first else None
        self.rotary = copy.deepcopy(inner.rotary_emb)
        self.layers = nn.ModuleList(copy.deepcopy(inner.layers[lo:hi]))
        self.norm = copy.deepcopy(inner.norm) if self.last else None
        self.lm_head = copy.deepcopy(model.lm_head) if self.last else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # ids (batch, seq) or hidden (batch, seq, hidden)
        if self.first:
            x = self.embed(x)
        cos_sin = self.rotary(x, torch.arange(x.shape[1], device=x.device)[None])
        for layer in self.layers:
            x = layer(x, position_embeddings=cos_sin)  # no mask: causal attention (sdpa)
        return self.lm_head(self.norm(x)) if self.last else x  # (batch, seq, vocab) on the last stage


def split_layers(n_layers: int, stages: int) -> list[tuple[int, int]]:
    """Contiguous, near-equal layer ranges, one per stage."""
    if stages < 1 or stages > n_layers:
        raise ValueError(f"cannot split {n_layers} layers into {stages} stages; use 1..{n_layers}")
    cuts = [round(i * n_layers / stages) for i in range(stages + 1)]
    return list(zip(cuts[:-1], cuts[1:], strict=True))


class Recorder:
    """Per-rank events on a shared clock."""

    def __init__(self) -> None:
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.events: list[Event] = []

    @contextlib.contextmanager
    def record(self, kind: str, label: str) -> Iterator[None]:
        start = time.time()
        try:
            yield
        finally:
            self.events.append({"rank": self.rank, "kind": kind, "label": label, "start": start, "end": time.time()})


# --- naive model parallelism (Accelerate-style) -----------------------------------------------
@torch.no_grad()
def naive_forward(stage: nn.Module, x: torch.Tensor | None, shape: tuple, rec: Recorder,
                  label: str = "") -> torch.Tensor:  # fmt: skip
    """One batch through all stages, one after another. `x` is the input on rank 0 (ignored elsewhere);
    `shape` is the (batch, seq, hidden) of the activations passed between ranks. Returns the last
    stage's output on the last rank (the input activations elsewhere)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    if rank > 0:
        x = torch.empty(shape, device=next(stage.parameters()).device)
        with rec.record("recv", label):  # idle until the previous stage is done
            dist.recv(x, src=rank - 1)
    with rec.record("compute", label):
        y = stage(x)
    if rank < world - 1:
        with rec.record("send", label):
            dist.send(y.contiguous(), dst=rank + 1)
    return y


# --- GPipe through torch.distributed.pipelining -----------------------------------------------
@contextlib.contextmanager
def _record_pipelining(stage_module: nn.Module, rec: Recorder) -> Iterator[None]:
    """Time each micro-batch's compute (forward hooks) and each recv wait / send post (p2p wrapper)."""
    from torch.distributed.pipelining import schedules

    starts: list[float] = []

    def pre(_m, _a):
        starts.append(time.time())

    def post(_m, _a, _o):
        _sync()  # on a GPU the kernels run asynchronously: the compute ends when they are done
        rec.events.append({"rank": rec.rank, "kind": "compute", "label": f"mb{len(starts) - 1}",
                           "start": starts[-1], "end": time.time()})  # fmt: skip

    original_p2p, original_wait = schedules._sorted_batch_p2p, schedules._wait_batch_p2p
    recv_works: set[int] = set()

    def p2p(ops, desc=None):
        start = time.time()
        works = original_p2p(ops, desc=desc)
        if desc == "fwd_recv":  # timed when the schedule waits for them (below)
            recv_works.update(id(w) for w in works.values())
        elif ops:
            rec.events.append({"rank": rec.rank, "kind": "send", "label": desc, "start": start, "end": time.time()})
        return works

    def wait(work):
        with rec.record("recv", "fwd_recv") if id(work) in recv_works else contextlib.nullcontext():
            original_wait(work)

    hooks = [stage_module.register_forward_pre_hook(pre), stage_module.register_forward_hook(post)]
    schedules._sorted_batch_p2p, schedules._wait_batch_p2p = p2p, wait
    try:
        yield
    finally:
        schedules._sorted_batch_p2p, schedules._wait_batch_p2p = original_p2p, original_wait
        for h in hooks:
            h.remove()


def make_gpipe(stage_module: nn.Module, microbatches: int):
    """A GPipe schedule for this rank's stage (inference: `schedule.eval(x)` on rank 0, `.eval()` elsewhere)."""
    from torch.distributed.pipelining import PipelineStage, ScheduleGPipe

    from labkit.parallel.launch import rank_device

    stage = PipelineStage(stage_module, dist.get_rank(), dist.get_world_size(), rank_device())
    return ScheduleGPipe(stage, n_microbatches=microbatches)


@torch.no_grad()
def gpipe_forward(schedule, x: torch.Tensor | None) -> torch.Tensor | None:
    """Run one batch through the pipeline; the output comes back on the last rank only."""
    rank, world = dist.get_rank(), dist.get_world_size()
    out = schedule.eval(x) if rank == 0 else schedule.eval()
    return out if rank == world - 1 else None


# --- rank functions ---------------------------------------------------------------------------
def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def _time_on_all(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat + 1):
        dist.barrier()
        start = time.perf_counter()
        fn()
        _sync()
        dist.barrier()  # a pipeline step ends when its last stage ends
        times.append(time.perf_counter() - start)
    return _median(times[1:]) * 1e3


def pipeline_rank(model_name: str = "tiny-llama", batch: int = 4, seq: int = 16, steps: int = 3,
                  microbatches: int = 4, sweep_batches: tuple = (), repeat: int = 3) -> dict:
    """Tiny Llama split over the ranks: naive and GPipe logits (last rank) vs the unsplit model, the
    naive timeline over `steps` generation-like steps, the GPipe timeline, and latency vs batch."""
    from labkit.parallel.tp import load_llama

    if batch % microbatches:
        raise ValueError(f"batch {batch} does not split into {microbatches} micro-batches; use a divisor of it")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = load_llama(model_name)
    lo, hi = split_layers(model.config.num_hidden_layers, world)[rank]
    stage = LlamaStage(model, lo, hi).eval()
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0))
    ids = ids.to(model.device)
    shape = (batch, seq, model.config.hidden_size)
    naive, rec = None, Recorder()
    dist.barrier()
    for step in range(steps):  # like generation: the next step starts when the last stage answers
        if rank == 0 and step > 0:
            with rec.record("recv", f"step {step}"):
                dist.recv(torch.empty(1, device=model.device), src=world - 1)
        naive = naive_forward(stage, ids, shape, rec, f"step {step}")
        if rank == world - 1 and step < steps - 1:
            with rec.record("send", f"step {step}"):
                dist.send(torch.ones(1, device=model.device), dst=0)  # "the next token"
    gpipe_rec = Recorder()
    schedule = make_gpipe(stage, microbatches)
    gpipe_forward(schedule, ids)  # warm-up: the stages exchange shapes on the first step
    dist.barrier()
    with _record_pipelining(stage, gpipe_rec):
        gpipe = gpipe_forward(schedule, ids)
    sweep = []
    for b in sweep_batches:
        xb, shape_b = ids[:1].repeat(b, 1), (b, seq, model.config.hidden_size)
        sched_b = make_gpipe(stage, min(b, microbatches))
        naive_b = lambda xb=xb, sh=shape_b: naive_forward(stage, xb, sh, Recorder())  # noqa: E731
        sweep.append({"batch": b, "seq": seq, "gpipe_microbatches": min(b, microbatches),
                      "naive_ms": _time_on_all(naive_b, repeat),
                      "gpipe_ms": _time_on_all(lambda xb=xb, s=sched_b: gpipe_forward(s, xb), repeat)})  # fmt: skip
    result = {"rank": rank, "layers": (lo, hi), "naive_events": rec.events, "gpipe_events": gpipe_rec.events,
              "sweep": sweep}  # fmt: skip
    if rank == world - 1:
        with torch.no_grad():
            reference = model(input_ids=ids).logits
        result.update(naive_logits=naive.cpu(), gpipe_logits=gpipe.cpu(), reference_logits=reference.cpu())
    return result


class _MatmulStage(nn.Module):
    """A synthetic stage: `layers` square matmuls on a wide hidden state, enough compute per micro-batch
    to time the bubble. In and out it is narrow (`io` features), so the messages between stages are
    small and their cost does not blur the picture."""

    def __init__(self, hidden: int, layers: int, io: int = 16):
        super().__init__()
        self.up, self.down = nn.Linear(io, hidden), nn.Linear(hidden, io)
        self.net = nn.Sequential(*(nn.Linear(hidden, hidden, bias=False) for _ in range(layers)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (rows, io) -> (rows, io)
        return torch.tanh(self.down(self.net(self.up(x))))


def bubble_rank(microbatches: tuple = (1, 2, 4, 8), rows: int = 1024, hidden: int = 1024, layers: int = 6,
                repeat: int = 5) -> dict:
    """GPipe on synthetic stages for each micro-batch count: this rank's events, `repeat` times each.

    Enough rows that a micro-batch's compute (~16 ms at m=8 on one CPU thread) dwarfs a gloo hand-off
    (a few ms): otherwise the hand-offs, not the schedule, set the measured idle time."""
    from labkit.parallel.launch import rank_device

    torch.manual_seed(0)
    stage = _MatmulStage(hidden, layers).eval().to(rank_device())
    x = torch.randn(rows, 16, device=rank_device())
    runs = {}
    for m in microbatches:
        if rows % m:
            raise ValueError(f"{rows} rows do not split into {m} micro-batches")
        schedule = make_gpipe(stage, m)
        gpipe_forward(schedule, x)  # warm-up (shape exchange)
        runs[m] = []
        for _ in range(repeat):
            rec = Recorder()
            dist.barrier()
            with _record_pipelining(stage, rec):
                gpipe_forward(schedule, x)
            runs[m].append(rec.events)
    return {"rank": dist.get_rank(), "runs": runs}


def pp_rank(pipeline: dict | None = None, bubble: dict | None = None, tensor: dict | None = None) -> dict:
    """Several experiments in one launch (imports are paid once): keyword arguments for `pipeline_rank`,
    `bubble_rank` and, if given, `tp.compare_rank`."""
    from labkit.parallel import tp

    out = {"tensor": tp.compare_rank(**tensor)} if tensor is not None else {}
    return {**out, "pipeline": pipeline_rank(**(pipeline or {})), "bubble": bubble_rank(**(bubble or {}))}


# --- analysis (in the caller) -----------------------------------------------------------------
def idle_fractions(events_per_rank: list[list[Event]]) -> dict[str, float]:
    """Idle time as a fraction of the pipeline's span (first compute start to last compute end), mean
    over ranks: "bubble" counts only the fill and drain (before a rank's first compute, after its last),
    which is what (p − 1)/(m + p − 1) describes; "total" also counts stalls between micro-batches
    (unequal stages, a rank slowed by other work on the machine, communication)."""
    computes = [sorted((e for e in evs if e["kind"] == "compute"), key=lambda e: e["start"]) for evs in events_per_rank]
    start = min(evs[0]["start"] for evs in computes)
    end = max(evs[-1]["end"] for evs in computes)
    span = end - start
    bubble = [(evs[0]["start"] - start + end - evs[-1]["end"]) / span for evs in computes]
    busy = [sum(e["end"] - e["start"] for e in evs) / span for evs in computes]
    return {"bubble": float(np.mean(bubble)), "total": float(1 - np.mean(busy)), "span_ms": span * 1e3}


def bubble_formula(stages: int, microbatches: int) -> float:
    """GPipe's idle fraction (p − 1) / (m + p − 1)."""
    return (stages - 1) / (microbatches + stages - 1)


def bubble_sweep(bubble_results: list[dict]) -> Measured:
    """Measured fill/drain idle (median over repeats) and total idle per micro-batch count, vs the formula."""
    import pandas as pd

    from labkit import plots

    rows = []
    for m in bubble_results[0]["runs"]:
        runs = [idle_fractions(list(pair)) for pair in zip(*(r["runs"][m] for r in bubble_results), strict=True)]
        rows.append({"microbatches": m, "measured_bubble": float(np.median([r["bubble"] for r in runs])),
                     "measured_total_idle": float(np.median([r["total"] for r in runs])),
                     "formula": bubble_formula(len(bubble_results), m),
                     "span_ms": float(np.median([r["span_ms"] for r in runs]))})  # fmt: skip
    table = pd.DataFrame(rows)
    table["difference"] = table.measured_bubble - table.formula
    fig = plots.line(table, "microbatches", ["measured_bubble", "measured_total_idle", "formula"],
                     f"Pipeline bubble on {len(bubble_results)} ranks: measured vs (p − 1)/(m + p − 1)",
                     ylabel="fraction of the time idle", log_x=True)  # fmt: skip
    return plots.Measured(table, fig)


def timeline_figure(events_per_rank: list[list[Event]], title: str):
    """A Gantt chart: one row per rank, bars for compute / send / recv wait (ms from the first event)."""
    import plotly.graph_objects as go

    from labkit import plots

    events = [e for evs in events_per_rank for e in evs]
    t0 = min(e["start"] for e in events)
    colors = {"compute": plots.COLORS[0], "send": plots.COLORS[3], "recv": plots.COLORS[5]}
    fig = go.Figure()
    for kind, color in colors.items():
        part = [e for e in events if e["kind"] == kind]
        fig.add_trace(go.Bar(
            y=[f"rank {e['rank']}" for e in part], x=[(e["end"] - e["start"]) * 1e3 for e in part],
            base=[(e["start"] - t0) * 1e3 for e in part], orientation="h",
            name=kind if kind != "recv" else "recv (waiting)",
            marker_color=color, text=[e["label"] if kind == "compute" else "" for e in part], textposition="inside",
            hovertemplate="%{y}: " + kind + " %{base:.2f} → +%{x:.2f} ms<extra></extra>"))  # fmt: skip
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title="ms since the first event")
    fig.update_yaxes(autorange="reversed")
    return plots._style(fig, title, "white gaps: the rank has nothing to do")
