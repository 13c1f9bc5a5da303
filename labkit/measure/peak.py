"""Peak memory of one call: new tensor storage (counted op by op), process RSS (sampled) and CUDA's peak."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import psutil
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from labkit.measure.stats import sync_device


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


def peak_memory(fn: Callable[[], object], sample_every_s: float = 0.0005,
                device: str | torch.device | None = None) -> MemoryPeak:
    """Run `fn()` once and report the extra memory it needed at its peak.

    Args:
        fn: the work. sample_every_s: how often the process's resident memory is sampled (s).
        device: the GPU whose allocator peak is read (`cuda_bytes`); None: the current GPU when CUDA is in use.
    Returns:
        MemoryPeak: tensor bytes at the peak (a dispatch-mode tracker), resident-memory growth, and CUDA allocator
        peak above the start (None without CUDA).
    """
    proc = psutil.Process()
    start_rss = proc.memory_info().rss
    peak_rss = start_rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_rss
        while not done.is_set():
            peak_rss = max(peak_rss, proc.memory_info().rss)
            time.sleep(sample_every_s)

    gpu = torch.device(device) if device is not None else None
    cuda = (gpu.type == "cuda") if gpu is not None else (torch.cuda.is_available() and torch.cuda.is_initialized())
    if cuda:
        torch.cuda.synchronize(gpu)
        torch.cuda.reset_peak_memory_stats(gpu)
        cuda_start = torch.cuda.memory_allocated(gpu)
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
    cuda_bytes = torch.cuda.max_memory_allocated(gpu) - cuda_start if cuda else None
    return MemoryPeak(tracker.peak, max(0, peak_rss - start_rss), cuda_bytes)


def process_rss() -> int:
    """Resident memory of this process in bytes."""
    return psutil.Process().memory_info().rss
