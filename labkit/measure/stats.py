"""Timing statistics: warm-up, then the median (and spread) of repeats, with CUDA work synchronised before every
clock read (or a GPU timing would only measure the kernel launch); results tables that name their hardware."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch

from labkit.hardware import detect


@dataclass(frozen=True)
class Stats:
    """Latency statistics in seconds."""

    median: float
    p10: float
    p90: float
    p99: float
    mean: float
    std: float
    n: int
    samples: tuple[float, ...] = field(default=(), repr=False, compare=False)  # raw timings, for histograms

    @classmethod
    def of(cls, samples: Iterable[float]) -> Stats:
        s = np.asarray(list(samples), dtype=float)
        if s.size == 0:
            raise ValueError("no samples to summarise")
        p10, p50, p90, p99 = np.percentile(s, [10, 50, 90, 99])
        return cls(float(p50), float(p10), float(p90), float(p99), float(s.mean()), float(s.std()), int(s.size),
                   tuple(float(x) for x in s))

    def ms(self) -> dict[str, float]:
        """The same statistics in milliseconds (n unchanged), for tables."""
        return {k: (v * 1e3 if k != "n" else v) for k, v in asdict(self).items() if k != "samples"}


def sync_device() -> None:
    """Wait for queued CUDA work (when CUDA is in use), so that a clock read after it times the kernels, not
    their launch. A no-op on the CPU, whose ops run synchronously."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def benchmark(fn: Callable[[], object], warmup: int = 3, repeat: int = 20) -> Stats:
    """Time `fn()`: `warmup` untimed calls (caches, lazy init, compilation), then `repeat` timed ones."""
    return benchmark_rounds({"fn": fn}, warmup=warmup, repeat=repeat, rounds=1)["fn"]


def benchmark_rounds(fns: Mapping[str, Callable[[], object]], warmup: int = 3, repeat: int = 20,
                     rounds: int = 5, warmup_s: float = 0.0) -> dict[str, Stats]:
    """Time several functions fairly on a machine whose speed drifts (shared VMs, clock changes).

    `repeat` timed calls per function are split over `rounds` rounds; in every round each function
    gets `warmup` untimed calls (and keeps warming until `warmup_s` seconds have passed), then its
    share of timed ones. Drift then lands on all of them alike, which matters for the ratios.
    Calls are grouped per function inside a round rather than alternated one by one: runtimes keep
    their own thread pools spinning after a call, and strict alternation makes each pay for the
    others' (measured here: every engine 3-10x slower). For the same reason a runtime needs a moment
    to get back to its steady speed after another one ran: that is what `warmup_s` buys.
    """
    if not fns:
        raise ValueError("no functions to time")
    if warmup < 0 or repeat < 1 or rounds < 1 or warmup_s < 0:
        raise ValueError(f"need warmup >= 0, repeat >= 1, rounds >= 1, warmup_s >= 0; "
                         f"got {warmup}, {repeat}, {rounds}, {warmup_s}")
    rounds = min(rounds, repeat)
    per_round = [repeat // rounds + (i < repeat % rounds) for i in range(rounds)]
    times: dict[str, list[float]] = {name: [] for name in fns}
    for n in per_round:
        for name, fn in fns.items():
            start = time.perf_counter()
            calls = 0
            while calls < warmup or time.perf_counter() - start < warmup_s:
                fn()
                calls += 1
            sync_device()
            for _ in range(n):
                start = time.perf_counter()
                fn()
                sync_device()
                times[name].append(time.perf_counter() - start)
    return {name: Stats.of(t) for name, t in times.items()}


def tokens_per_second(tokens: int, seconds: float) -> float:
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    return tokens / seconds


def prefix_agreement(tokens: Sequence[Sequence[int]], reference: Sequence[Sequence[int]]) -> float:
    """Greedy prefix agreement: the share of tokens equal to the reference before the first difference (after it,
    the two continuations are about different text and are not compared).

    Args:
        tokens, reference: (batch, new_tokens) token ids, the same shape.
    Returns:
        a share in [0, 1] (NaN for no tokens).
    Raises:
        ValueError: when the shapes differ.
    """
    same = total = 0
    for a, b in zip(tokens, reference, strict=True):
        if len(a) != len(b):
            raise ValueError(f"sequences of different lengths ({len(a)} vs {len(b)}): generate the same count")
        total += len(b)
        same += next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), len(b))
    return same / total if total else math.nan


def results_frame(rows: list[dict], **meta) -> pd.DataFrame:
    """A DataFrame of benchmark rows that remembers the hardware it ran on (`df.attrs`).

    Args:
        rows: one dict per measurement (column -> value).
        **meta: more facts to keep in `df.attrs` (e.g. model="tiny-bloom").
    Returns:
        the DataFrame; attrs["hardware"] is this machine's summary, attrs["torch_threads"] the threads used.
    """
    df = pd.DataFrame(rows)
    df.attrs["hardware"] = detect().summary
    df.attrs["torch_threads"] = torch.get_num_threads()
    df.attrs.update(meta)
    return df


def ratio(a: float, b: float) -> float:
    """a / b, the way results are compared across machines (absolute times do not travel)."""
    if b == 0:
        raise ZeroDivisionError("ratio with a zero denominator")
    return a / b
