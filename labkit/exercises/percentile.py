"""Implementation exercise: the percentile of a latency sample, graded against numpy's own `numpy.percentile`.

A learner writes `percentile(samples, q)`, the statistic behind every median and p99 the labs report
(`labkit.measure.Stats` calls numpy for it); `grade(percentile)` runs it on cases chosen to catch the usual
mistakes (forgetting to sort, rank q/100·n instead of q/100·(n − 1), picking the nearest sample instead of
interpolating, q = 100 or a single sample indexing past the end) and says which case failed and how.
The definition graded is numpy's default (method="linear"): Hyndman & Fan 1996, "Sample Quantiles in Statistical
Packages", definition 7 — the sample sorted, the fractional rank h = q/100·(n − 1) (0-based), and a straight line
between the two samples around it.
"""

from __future__ import annotations

import math

import numpy as np

from labkit.exercises import Case, Grade, grade_cases

JUDGE = "numpy.percentile (method='linear')"


def reference(samples: list[float], q: float) -> float:
    """numpy's q-th percentile of `samples` (its default, linear interpolation between closest ranks).

    Args:
        samples: one or more numbers (e.g. latencies in ms), in any order. q: the percentile, 0 <= q <= 100.
    Returns:
        the percentile, in the samples' unit.
    """
    return float(np.percentile(np.asarray(samples, dtype=float), q))


def _long_tail() -> list[float]:
    """1000 latencies (ms): a lognormal body around 10 ms and 1 % of stalls 5-20× slower (a GC pause, a page fault)."""
    rng = np.random.default_rng(0)
    body = rng.lognormal(mean=np.log(10.0), sigma=0.1, size=990)
    stalls = rng.uniform(50.0, 200.0, size=10)
    return [float(x) for x in rng.permutation(np.concatenate([body, stalls]))]


def cases() -> list[Case]:
    """The grader's inputs: (samples, q), each with what it tests."""
    return [
        Case("an odd count: q = 50 is the middle sample", ([1.0, 2.0, 3.0, 10.0, 50.0], 50)),
        Case("an even count: q = 50 lies halfway between the two middle samples", ([1.0, 2.0, 3.0, 10.0], 50)),
        Case("between ranks: interpolate at the 0-based rank q/100 × (n − 1)", ([10.0, 20.0, 30.0, 40.0, 50.0], 90)),
        Case("unsorted input: sort the samples first", ([30.0, 10.0, 50.0, 20.0, 40.0], 25)),
        Case("q = 0 is the smallest sample", ([4.0, 2.0, 9.0, 7.0], 0)),
        Case("q = 100 is the largest sample (no sample after it to interpolate with)", ([4.0, 2.0, 9.0, 7.0], 100)),
        Case("a single sample is every percentile", ([7.5], 99)),
        Case("p99 of 1000 latencies with a long tail", (_long_tail(), 99)),
    ]  # fmt: skip


def _compare(got, want: float, case: Case) -> str | None:
    samples, q = case.args
    if isinstance(got, bool) or not isinstance(got, (int, float, np.integer, np.floating)):
        return f"returned {type(got).__name__}, expected a number"
    if not math.isclose(float(got), want, rel_tol=1e-9, abs_tol=1e-12):
        return f"returned {float(got):.6g}, {JUDGE} gives {want:.6g} (q = {q}, {len(samples)} samples)"
    return None


def grade(percentile) -> Grade:
    """Run a learner's percentile on `cases()` and compare each result with `reference`.

    Args:
        percentile: (samples: list of numbers, q: 0 <= q <= 100) -> the q-th percentile (a number).
    Returns:
        Grade: ok only if every case agrees with numpy to 1e-9 (relative); otherwise the first failing case and
        what differs. An exception inside the learner's code is reported, not raised.
    """
    return grade_cases(percentile, cases(), reference, _compare, JUDGE)
