"""The peak memory of a notebook run: every process this one starts (the kernel, and whatever the kernel starts —
ranks of a distributed lab, a model server), sampled while the notebook runs.

    with PeakMemory() as peak:
        papermill.execute_notebook(...)
    peak.mb    # the largest sum of resident set sizes seen, MB

Binder gives a user about 2 GB (`BINDER_MB`); what a lab's smoke run needs is measured here so the tests can say
whether it fits. Each process counts its proportional set size (PSS: a page shared by k processes counts 1/k in
each, as a container's memory limit counts it once), where Linux reports it; elsewhere its resident set, which
counts shared pages (the torch library mapped by two ranks, by torch.compile's worker pool) once per process.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil

BINDER_MB = 2048  # mybinder.org's memory per user (its documentation: "between 1 and 2 GB"; the upper end)


class PeakMemory:
    """Sample the resident memory of this process's descendants every `interval_s` until the block ends.

    Args:
        interval_s: seconds between samples (a spike shorter than that can be missed).
    Attributes:
        mb: the largest total seen, MB (1e6 bytes); 0 before the first sample.
        at_peak: what made up that largest total, e.g. "12.4 s: 4120 python -m ipykernel_launcher -f 980 MB | 4188
            python -m onnxruntime_genai.models.builder -i 2900 MB" (seconds since the start; each process's pid,
            command, MB), so that a run over a limit says which process it was and when.
        samples: how many samples were taken.
        measure: "pss" or "rss", what was summed.
    """

    def __init__(self, interval_s: float = 0.2):
        self.interval_s, self.mb, self.samples, self.measure = interval_s, 0.0, 0, "pss"
        self.at_peak = ""
        self._start = time.monotonic()
        self._me = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-memory", daemon=True)

    def _sample(self) -> dict[str, float]:
        """{"pid command": MB} for every descendant process now."""
        sizes = {}
        for child in self._me.children(recursive=True):
            try:
                if self.measure == "pss":
                    size = child.memory_full_info().pss
                else:
                    size = child.memory_info().rss
                command = " ".join(Path(a).name if i == 0 else a[:40] for i, a in enumerate(child.cmdline()[:4]))
            except AttributeError:  # no PSS on this platform: resident sets from now on
                self.measure = "rss"
                size, command = child.memory_info().rss, child.name()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue  # it ended between the listing and the read
            sizes[f"{child.pid} {command[:80]}"] = size / 1e6
        return sizes

    def _run(self) -> None:
        while not self._stop.is_set():
            sizes = self._sample()
            if sum(sizes.values()) > self.mb:
                self.mb = sum(sizes.values())
                self.at_peak = f"{time.monotonic() - self._start:.1f} s: " + " | ".join(
                    f"{who} {mb:.0f} MB" for who, mb in sorted(sizes.items(), key=lambda kv: -kv[1]))
            self.samples += 1
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakMemory:
        self._start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
