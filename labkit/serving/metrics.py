"""Prometheus metrics by hand: counters, gauges and histograms rendered in the text exposition format.

    # TYPE labkit_requests_total counter
    labkit_requests_total{model="shakespeare",version="v1",status="200"} 12

No client library needed; `parse()` reads the text back (tests and notebooks check what was served).
"""

from __future__ import annotations

import bisect
import re
import threading
from collections.abc import Callable

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
Labels = tuple[tuple[str, str], ...]


def _labels(labels: Labels) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}" if labels else ""


class Metric:
    """A named metric with its help text; subclasses render their samples as text lines."""

    kind = "untyped"

    def __init__(self, name: str, help: str):
        self.name, self.help = name, help
        self._lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(Metric):
    """A value that only goes up, per label set: `inc(amount, **labels)`."""

    kind = "counter"

    def __init__(self, name: str, help: str):
        super().__init__(name, help)
        self.values: dict[Labels, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted((k, str(v)) for k, v in labels.items()))
        with self._lock:
            self.values[key] = self.values.get(key, 0.0) + amount

    def lines(self) -> list[str]:
        return [f"{self.name}{_labels(k)} {v:g}" for k, v in sorted(self.values.items())]


class Gauge(Metric):
    """A value read at scrape time from a callback returning {labels: value}."""

    kind = "gauge"

    def __init__(self, name: str, help: str, read: Callable[[], dict[Labels, float]]):
        super().__init__(name, help)
        self.read = read

    def lines(self) -> list[str]:
        return [f"{self.name}{_labels(k)} {v:g}" for k, v in sorted(self.read().items())]


class Histogram(Metric):
    """Observations counted into cumulative buckets (upper bounds, s by default), with their sum and count."""

    kind = "histogram"

    def __init__(self, name: str, help: str, buckets: tuple[float, ...] = LATENCY_BUCKETS):
        super().__init__(name, help)
        self.buckets = buckets
        self.series: dict[Labels, list] = {}  # labels -> [bucket counts..., sum, count]

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted((k, str(v)) for k, v in labels.items()))
        with self._lock:
            s = self.series.setdefault(key, [0] * len(self.buckets) + [0.0, 0])
            i = bisect.bisect_left(self.buckets, value)  # first bucket with bound >= value
            if i < len(self.buckets):
                s[i] += 1  # above the last bound: counted only in +Inf (the total)
            s[-2] += value
            s[-1] += 1

    def lines(self) -> list[str]:
        out = []
        for key, s in sorted(self.series.items()):
            cumulative = 0
            for bound, n in zip(self.buckets, s[: len(self.buckets)], strict=True):
                cumulative += n
                out.append(f"{self.name}_bucket{_labels(key + (('le', f'{bound:g}'),))} {cumulative}")
            out.append(f"{self.name}_bucket{_labels(key + (('le', '+Inf'),))} {s[-1]}")
            out += [f"{self.name}_sum{_labels(key)} {s[-2]:.6g}", f"{self.name}_count{_labels(key)} {s[-1]}"]
        return out


class Registry:
    """The metrics a server exposes; `render()` is the text a Prometheus scrape reads."""

    def __init__(self) -> None:
        self.metrics: list[Metric] = []

    def add(self, metric: Metric) -> Metric:
        self.metrics.append(metric)
        return metric

    def render(self) -> str:
        return "\n".join(line for m in self.metrics for line in m.header() + m.lines()) + "\n"


_LINE = re.compile(r'^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$')


def parse(text: str) -> dict[tuple[str, Labels], float]:
    """Read Prometheus text back (comments skipped).

    Args:
        text: a scrape, e.g. GET /metrics.
    Returns:
        {(metric name, sorted ((label, value), ...)): sample value}.
    """
    out = {}
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if not m or line.startswith("#"):
            continue
        labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def total(parsed: dict, name: str, **match: str) -> float:
    """Sum of a metric's samples whose labels include `match`.

    Args:
        parsed: the output of `parse`. name: a sample name (e.g. "labkit_requests_total").
        **match: labels the samples must have (e.g. status="200").
    Returns:
        the sum (0.0 if none match).
    """
    want = {(k, str(v)) for k, v in match.items()}
    return sum(v for (n, labels), v in parsed.items() if n == name and want <= set(labels))
