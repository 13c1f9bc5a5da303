"""Measuring: latency statistics, peak memory, tokens/s, memory bandwidth and the agreement of two outputs.

Every benchmark warms up first, then reports the median (and spread) of repeats; CUDA work is
synchronised before the clock stops, or a GPU timing would only measure the kernel launch.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import psutil
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from labkit.hardware import detect, resolve_device


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


class Bandwidth(float):
    """A read bandwidth in GB/s (a float: arithmetic, comparisons and formats work as on the number) that keeps the
    device it was measured on: `device` ("cpu", "cuda:0") and `device_name` (CPU model or GPU name). A bound derived
    from it holds for that device only, so tables and figures say `label` ("measured on <device_name>")."""

    def __new__(cls, gbps: float, device: str, device_name: str) -> Bandwidth:
        value = super().__new__(cls, gbps)
        value.device, value.device_name = device, device_name
        return value

    def __reduce__(self):  # pickle (and copy) keep the device
        return Bandwidth, (float(self), self.device, self.device_name)

    @property
    def label(self) -> str:
        """ "measured on <device_name>", for tables and figure titles."""
        return f"measured on {self.device_name}"


def _device(device: str | torch.device) -> tuple[torch.device, str]:
    """(the device with its index, e.g. cuda:0; its name: the CPU model (`hardware.detect`) or the GPU's)."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", dev.index if dev.index is not None else torch.cuda.current_device())
        return dev, torch.cuda.get_device_name(dev)
    return dev, detect().cpu_model


def memory_bandwidth(size_mib: int = 256, repeat: int = 5, device: str = "cpu") -> Bandwidth:
    """Measured read bandwidth in GB/s: a matrix-vector product over a matrix too big for the caches.

    That is the operation a batch-1 decode step is made of (every weight read once per token), so this is the
    number that bounds it. It is a ceiling, so the fastest repeat counts: other work can only slow a run down.

    Args:
        size_mib: size of the fp32 matrix read, MiB (choose it well above the last-level cache).
        repeat: timed repeats after 2 warm-ups.
        device: "cpu", "cuda", "cuda:N" or "auto" (the device whose memory is measured; `hardware.resolve_device`).
    Returns:
        Bandwidth: bytes read / fastest repeat, in GB/s (1e9 bytes per second), carrying the device it was
        measured on (`.device`, `.device_name`, `.label`).
    Raises:
        ValueError: size_mib or repeat < 1, or an unknown device (naming the valid ones), before allocating.
        CapabilityMissing: a CUDA device on a machine without one.
    """
    if size_mib < 1 or repeat < 1:
        raise ValueError(f"size_mib and repeat must be >= 1, got {size_mib} and {repeat}")
    (dev, name), cols = _device(device), 4096
    weights = torch.ones(max(1, size_mib * 2**20 // 4 // cols), cols, dtype=torch.float32, device=dev)
    vector = torch.ones(cols, dtype=torch.float32, device=dev)
    stats = benchmark(lambda: weights @ vector, warmup=2, repeat=repeat)
    gbps = weights.numel() * weights.element_size() / min(stats.samples) / 1e9
    return Bandwidth(gbps, str(dev), name)


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


__all__ = ["Stats", "benchmark", "benchmark_rounds", "sync_device", "tokens_per_second", "MemoryPeak", "peak_memory",
           "process_rss", "Bandwidth", "memory_bandwidth", "prefix_agreement", "results_frame", "ratio"]
