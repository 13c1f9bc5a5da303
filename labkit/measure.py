"""Measuring: latency statistics, peak memory, tokens/s and memory bandwidth.

Every benchmark warms up first, then reports the median (and spread) of repeats; CUDA work is
synchronised before the clock stops, or a GPU timing would only measure the kernel launch.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import psutil
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


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


# --- memory ----------------------------------------------------------------------------------
class _TensorMemoryTracker(TorchDispatchMode):
    """Counts bytes of tensor storages that ops create while active, and their peak.

    Storages that already existed (weights, optimizer state) are seen as op inputs first and are
    not counted; a new storage is counted until it is freed (weakref finalizer on the storage).
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._known: dict[int, weakref.ref] = {}

    def _is_known(self, storage: torch.UntypedStorage) -> bool:
        ref = self._known.get(id(storage))
        return ref is not None and ref() is storage  # guards against id reuse

    def _release(self, key: int, nbytes: int) -> None:
        self._known.pop(key, None)
        self.live -= nbytes

    @staticmethod
    def _storages(tree):
        for t in tree_flatten(tree)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                yield t.untyped_storage()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        for s in self._storages((args, kwargs)):
            if not self._is_known(s):
                self._known[id(s)] = weakref.ref(s)  # pre-existing: known, never counted
        out = func(*args, **(kwargs or {}))
        for s in self._storages(out):
            if not self._is_known(s):
                key, nbytes = id(s), s.nbytes()
                self._known[key] = weakref.ref(s)
                weakref.finalize(s, self._release, key, nbytes)
                self.live += nbytes
                self.peak = max(self.peak, self.live)
        return out


@dataclass(frozen=True)
class MemoryPeak:
    """Peak memory that one call of a function added on top of what existed before it."""

    tensor_bytes: int  # peak of new tensor storage created by PyTorch ops (CPU and GPU)
    rss_bytes: int  # peak process resident memory above the start (sampled; includes allocator slack)
    cuda_bytes: int | None  # torch.cuda.max_memory_allocated above the start, when CUDA is used

    @property
    def tensor_mib(self) -> float:
        return self.tensor_bytes / 2**20


def peak_memory(fn: Callable[[], object], sample_every_s: float = 0.0005) -> MemoryPeak:
    """Run `fn()` once and report the extra memory it needed at its peak."""
    proc = psutil.Process()
    start_rss = proc.memory_info().rss
    peak_rss = start_rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_rss
        while not done.is_set():
            peak_rss = max(peak_rss, proc.memory_info().rss)
            time.sleep(sample_every_s)

    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_start = torch.cuda.memory_allocated()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tracker = _TensorMemoryTracker()
    try:
        with tracker:
            fn()
        sync_device()
    finally:
        done.set()
        sampler.join()
    cuda_bytes = torch.cuda.max_memory_allocated() - cuda_start if cuda else None
    return MemoryPeak(tracker.peak, max(0, peak_rss - start_rss), cuda_bytes)


def process_rss() -> int:
    """Resident memory of this process in bytes."""
    return psutil.Process().memory_info().rss


def memory_bandwidth(size_mib: int = 256, repeat: int = 5, device: str = "cpu") -> float:
    """Measured read bandwidth in GB/s: a matrix-vector product over a matrix too big for the caches.

    That is the operation a batch-1 decode step is made of (every weight read once per token), so this
    is the number that bounds it. It is a ceiling, so the fastest repeat counts: other work on the
    machine can only slow a run down.

    Args:
        size_mib: size of the fp32 matrix read, MiB (choose it well above the last-level cache).
        repeat: timed repeats after 2 warm-ups.
        device: "cpu", "cuda" or "cuda:N" (the device whose memory is measured).
    Returns:
        bytes read / fastest repeat, in GB/s (1e9 bytes per second).
    """
    cols = 4096
    weights = torch.ones(size_mib * 2**20 // 4 // cols, cols, dtype=torch.float32, device=device)
    vector = torch.ones(cols, dtype=torch.float32, device=device)
    stats = benchmark(lambda: weights @ vector, warmup=2, repeat=repeat)
    return weights.numel() * weights.element_size() / min(stats.samples) / 1e9


def results_frame(rows: list[dict], **meta) -> pd.DataFrame:
    """A DataFrame of benchmark rows that remembers the hardware it ran on (`df.attrs`).

    Args:
        rows: one dict per measurement (column -> value).
        **meta: more facts to keep in `df.attrs` (e.g. model="tiny-bloom").
    Returns:
        the DataFrame; attrs["hardware"] is this machine's summary, attrs["torch_threads"] the threads used.
    """
    from labkit.hardware import detect

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


__all__ = [
    "Stats",
    "benchmark",
    "tokens_per_second",
    "MemoryPeak",
    "peak_memory",
    "process_rss",
    "memory_bandwidth",
    "results_frame",
    "ratio",
]
