"""Implementation exercise: the time-averaged number of requests in a system, from their arrival and departure
times, graded against Little's law L = λ·W computed from the same timestamps.

A learner writes `mean_in_system(arrivals, departures)`: the area under the step function "requests inside at time
t" over the window from the first arrival to the last departure, divided by the window's length. `grade` runs it on
cases chosen to catch the usual mistakes (a window that starts at 0 instead of the first arrival, idle time left
out, an average over events instead of over time, input assumed sorted) and says which case failed and how.

Little's law (Little 1961, "A Proof for the Queuing Formula: L = λW", Operations Research 9(3)) holds *exactly*
over a finite window that starts and ends with the system empty (its sample-path form: Little 2011, "Little's Law as
Viewed on Its 50th Anniversary", Operations Research 59(3)): each request adds its time inside to the area, so the
area is Σ (departure − arrival) = n·W, and L = n·W / T = (n / T)·W = λ·W. The reference computes that product,
never the step function, so it checks the learner's sweep by a different route.
"""

from __future__ import annotations

import math

import numpy as np

from labkit.exercises import Case, Grade, grade_cases

JUDGE = "Little's law λ·W"


def reference(arrivals: list[float], departures: list[float]) -> float:
    """L = λ·W over the window [first arrival, last departure]: λ = n / T, W = mean(departure − arrival).

    Args:
        arrivals, departures: the i-th request's arrival and departure times (s), same length, any order.
    Returns:
        the mean number of requests inside over the window (requests).
    """
    a, d = np.asarray(arrivals, dtype=float), np.asarray(departures, dtype=float)
    window = d.max() - a.min()  # T: the system is empty before the first arrival and after the last departure
    return float(len(a) / window * np.mean(d - a))  # λ · W


def _poisson(n: int = 200) -> tuple[list[float], list[float]]:
    """n requests: Poisson arrivals at 5/s, exponential times inside with mean 0.3 s (an M/M/∞ system, L ≈ 1.5)."""
    rng = np.random.default_rng(0)
    arrivals = np.cumsum(rng.exponential(1 / 5, n))
    departures = arrivals + rng.exponential(0.3, n)
    return [float(x) for x in arrivals], [float(x) for x in departures]


def cases() -> list[Case]:
    """The grader's inputs: (arrivals, departures) in seconds, each with what it tests."""
    return [
        Case("two overlapping requests: two inside while both are", ([0.0, 1.0], [2.0, 3.0])),
        Case("back to back: one leaves as the next arrives, never two inside", ([0.0, 1.0, 2.0], [1.0, 2.0, 3.0])),
        Case("one request: the window starts at its arrival, not at time 0", ([5.0], [7.5])),
        Case("idle time inside the window counts as zero requests", ([0.0, 10.0], [1.0, 11.0])),
        Case("an average over time, not over events: one long request among short ones",
             ([0.0, 1.0, 2.0, 3.0], [1.5, 2.5, 3.5, 10.0])),
        Case("unsorted input: the window runs from the earliest arrival to the latest departure",
             ([4.0, 0.5, 2.0], [6.0, 3.0, 9.0])),
        Case("200 requests, Poisson arrivals (many overlaps)", _poisson()),
    ]  # fmt: skip


def _compare(got, want: float, case: Case) -> str | None:
    if isinstance(got, bool) or not isinstance(got, (int, float, np.integer, np.floating)):
        return f"returned {type(got).__name__}, expected a number"
    if not math.isclose(float(got), want, rel_tol=1e-9):
        return f"returned {float(got):.6g}, {JUDGE} gives {want:.6g} ({len(case.args[0])} requests)"
    return None


def grade(mean_in_system) -> Grade:
    """Run a learner's mean_in_system on `cases()` and compare each result with `reference`.

    Args:
        mean_in_system: (arrivals, departures: lists of times in s) -> the time-averaged number inside (a number).
    Returns:
        Grade: ok only if every case agrees with λ·W to 1e-9 (relative); otherwise the first failing case and what
        differs. An exception inside the learner's code is reported, not raised.
    """
    return grade_cases(mean_in_system, cases(), reference, _compare, JUDGE)
