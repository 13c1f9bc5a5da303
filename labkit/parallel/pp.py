"""Pipeline parallelism: each rank holds a contiguous slice of the layers and activations flow rank to rank.

Naive model parallelism (what Accelerate's `device_map="auto"` does): one batch goes through rank 0's
layers, then rank 1's ... — one rank busy at a time. GPipe (Huang et al. 2019; `torch.distributed.pipelining`)
cuts the batch into m micro-batches so stages overlap; only the fill and drain remain idle, a fraction
(p − 1)/(m + p − 1) of the time. Every rank records an event timeline (compute, send, recv wait) on a
common clock (`time.time()`; the ranks share one machine) so the bubble can be seen and measured.

Rank function: `pipeline_rank` (a Llama split over the ranks: naive and GPipe, parity, latency vs batch).
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.pipelining import PipelineStage, ScheduleGPipe, schedules

from labkit.measure import sync_device
from labkit.parallel.launch import rank_device, time_on_all_ranks
from labkit.parallel.tp import load_llama


@dataclass(frozen=True)
class Event:
    """What one rank did and when: kind (compute | send | recv, a recv being time spent waiting), a label,
    start and end in seconds on the shared clock (`time.time()`)."""

    rank: int
    kind: str
    label: str
    start: float
    end: float


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

    def add(self, kind: str, label: str, start: float, end: float | None = None) -> None:
        """Record an event that started at `start` (and ends now unless `end` is given)."""
        self.events.append(Event(self.rank, kind, label, start, time.time() if end is None else end))

    @contextlib.contextmanager
    def record(self, kind: str, label: str) -> Iterator[None]:
        """Record the block as one event."""
        start = time.time()
        try:
            yield
        finally:
            self.add(kind, label, start)


# --- naive model parallelism (Accelerate-style) -----------------------------------------------
@torch.no_grad()
def naive_forward(stage: nn.Module, x: torch.Tensor | None, shape: tuple, rec: Recorder,
                  label: str = "") -> torch.Tensor:  # fmt: skip
    """One batch through all stages, one after another.

    Args:
        stage: this rank's layers. x: the input on rank 0 (ignored elsewhere). shape: (batch, seq, hidden) of the
            activations passed between ranks. rec: where this rank's events go. label: the events' label.
    Returns:
        the last stage's output on the last rank (this stage's output elsewhere).
    """
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
def record_pipelining(stage_module: nn.Module, rec: Recorder) -> Iterator[None]:
    """Time each micro-batch's compute (forward hooks) and each recv wait / send post (p2p wrapper)."""
    starts: list[float] = []

    def pre(_m, _a):
        starts.append(time.time())

    def post(_m, _a, _o):
        sync_device()  # on a GPU the kernels run asynchronously: the compute ends when they are done
        rec.add("compute", f"mb{len(starts) - 1}", starts[-1])

    original_p2p, original_wait = schedules._sorted_batch_p2p, schedules._wait_batch_p2p
    recv_works: set[int] = set()

    def p2p(ops, desc=None):
        start = time.time()
        works = original_p2p(ops, desc=desc)
        if desc == "fwd_recv":  # timed when the schedule waits for them (below)
            recv_works.update(id(w) for w in works.values())
        elif ops:
            rec.add("send", desc, start)
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


def make_gpipe(stage_module: nn.Module, microbatches: int) -> ScheduleGPipe:
    """A GPipe schedule for this rank's stage (inference: `schedule.eval(x)` on rank 0, `.eval()` elsewhere)."""
    stage = PipelineStage(stage_module, dist.get_rank(), dist.get_world_size(), rank_device())
    return ScheduleGPipe(stage, n_microbatches=microbatches)


@torch.no_grad()
def gpipe_forward(schedule: ScheduleGPipe, x: torch.Tensor | None) -> torch.Tensor | None:
    """Run one batch through the pipeline; the output comes back on the last rank only (None elsewhere)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    out = schedule.eval(x) if rank == 0 else schedule.eval()
    return out if rank == world - 1 else None


# --- rank functions ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PipelineLatency:
    """One batch size: median ms per forward (slowest rank) of the naive pipeline and of GPipe."""

    batch: int
    seq: int
    gpipe_microbatches: int
    naive_ms: float
    gpipe_ms: float


@dataclass(frozen=True, eq=False)
class PipelineRun:
    """One rank's `pipeline_rank`: its layers [lo, hi), naive and GPipe events, latency vs batch, and on the last
    rank the logits (batch, seq, vocab) of the naive pipeline, GPipe and the unsplit model (None elsewhere)."""

    rank: int
    layers: tuple[int, int]
    naive_events: tuple[Event, ...]
    gpipe_events: tuple[Event, ...]
    sweep: tuple[PipelineLatency, ...]
    naive_logits: torch.Tensor | None = None
    gpipe_logits: torch.Tensor | None = None
    reference_logits: torch.Tensor | None = None

    def max_diff(self) -> dict[str, float]:
        """{"naive" | "gpipe": max |logits − unsplit model's|} (last rank only).

        Raises:
            ValueError: on a rank that does not hold the logits.
        """
        if self.reference_logits is None:
            raise ValueError(f"rank {self.rank} holds no logits; the last rank does")
        ref = self.reference_logits
        return {k: float((getattr(self, f"{k}_logits") - ref).abs().max()) for k in ("naive", "gpipe")}

    def table(self) -> pd.DataFrame:
        """Latency vs batch: batch, seq, gpipe_microbatches, naive_ms, gpipe_ms."""
        return pd.DataFrame([asdict(p) for p in self.sweep], columns=list(PipelineLatency.__dataclass_fields__))


def pipeline_rank(model_name: str = "tiny-llama", batch: int = 4, seq: int = 16, steps: int = 3,
                  microbatches: int = 4, sweep_batches: tuple = (), repeat: int = 3) -> PipelineRun:
    """Rank function: a Llama split over the ranks, naive and GPipe.

    Args:
        model_name: a Llama-architecture registry name. batch, seq: the ids' shape.
        steps: generation-like steps through the naive pipeline (each waits for the last stage's answer).
        microbatches: GPipe's micro-batch count (must divide `batch`).
        sweep_batches: batch sizes for latency vs batch. repeat: timed forwards per point.
    Returns:
        PipelineRun for this rank.
    Raises:
        ValueError: when `microbatches` does not divide `batch`.
    """
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
    with record_pipelining(stage, gpipe_rec):
        gpipe = gpipe_forward(schedule, ids)
    sweep = []
    for b in sweep_batches:
        xb, shape_b, m = ids[:1].repeat(b, 1), (b, seq, model.config.hidden_size), min(b, microbatches)
        sched_b = make_gpipe(stage, m)
        naive_s = time_on_all_ranks(lambda xb=xb, sh=shape_b: naive_forward(stage, xb, sh, Recorder()), 1, repeat)
        gpipe_s = time_on_all_ranks(lambda xb=xb, s=sched_b: gpipe_forward(s, xb), 1, repeat)
        sweep.append(PipelineLatency(b, seq, m, naive_s.median * 1e3, gpipe_s.median * 1e3))
    logits = {}
    if rank == world - 1:
        with torch.no_grad():
            reference = model(input_ids=ids).logits
        logits = dict(naive_logits=naive.cpu(), gpipe_logits=gpipe.cpu(), reference_logits=reference.cpu())
    return PipelineRun(rank, (lo, hi), tuple(rec.events), tuple(gpipe_rec.events), tuple(sweep), **logits)


# --- analysis (in the caller) -----------------------------------------------------------------
def idle_fractions(events_per_rank) -> dict[str, float]:
    """Idle time as a fraction of the pipeline's span (first compute start to last compute end), mean over ranks.

    "bubble" counts only the fill and drain (before a rank's first compute, after its last), which is what
    GPipe's (p − 1)/(m + p − 1) describes; "total" also counts stalls between micro-batches (unequal stages,
    a rank slowed by other work on the machine, communication).

    Args:
        events_per_rank: each rank's events (Event), rank order; every rank has at least one compute.
    Returns:
        {"bubble": fraction, "total": fraction, "span_ms": ms}.
    """
    computes = [sorted((e for e in evs if e.kind == "compute"), key=lambda e: e.start) for evs in events_per_rank]
    start = min(evs[0].start for evs in computes)
    end = max(evs[-1].end for evs in computes)
    span = end - start
    bubble = [(evs[0].start - start + end - evs[-1].end) / span for evs in computes]
    busy = [sum(e.end - e.start for e in evs) / span for evs in computes]
    return {"bubble": float(np.mean(bubble)), "total": float(1 - np.mean(busy)), "span_ms": span * 1e3}


def bubble_formula(stages: int, microbatches: int) -> float:
    """GPipe's idle fraction (p − 1) / (m + p − 1) (Huang et al. 2019).

    Args:
        stages: p, the pipeline's ranks. microbatches: m.
    Returns:
        the fraction of each rank's time spent idle in the fill and drain.
    """
    return (stages - 1) / (microbatches + stages - 1)
