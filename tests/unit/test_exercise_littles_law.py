"""The Little's-law exercise: its grader passes the reference answer, fails the usual mistakes with the failing case
named, and never raises; the reference answer agrees with λ·W and with the lab's own gauge integral
(`InFlightSampler.request_seconds`, fed the exact step function) on random request logs beyond the graded cases."""

import math

import numpy as np

from labkit.exercises import littles_law
from labkit.exercises.solutions import littles_law as solutions
from labkit.experiments.inference_system import InFlightSampler


def _gauge_mean(arrivals, departures) -> float:
    """L̄ as lab 02 computes it from its gauge: readings of the count inside, each held until the next, integrated."""
    sampler = InFlightSampler("http://127.0.0.1:1", "m")  # never entered: no thread, no request
    events = sorted([(t, 1) for t in arrivals] + [(t, -1) for t in departures])
    inside = 0
    for t, change in events:
        inside += change
        sampler.rows.append({"t_s": t, "queue": 0, "running": inside, "in_flight": inside})
    return sampler.request_seconds() / (max(departures) - min(arrivals))


def test_the_solution_passes_and_agrees_with_the_law_and_the_gauge_on_random_logs():
    assert littles_law.grade(solutions.mean_in_system).ok
    rng = np.random.default_rng(1)
    for n in (1, 2, 7, 50, 400):
        arrivals = rng.uniform(3.0, 20.0, n)
        departures = arrivals + rng.exponential(2.0, n)
        a, d = [float(x) for x in arrivals], [float(x) for x in departures]
        got = solutions.mean_in_system(a, d)
        assert math.isclose(got, littles_law.reference(a, d), rel_tol=1e-9)
        assert math.isclose(got, _gauge_mean(a, d), rel_tol=1e-9)


def _from_zero(arrivals, departures):  # the window starts at t = 0
    return sum(d - a for a, d in zip(arrivals, departures, strict=True)) / max(departures)


def _busy_time_only(arrivals, departures):  # divides by the time at least one request was inside
    events = sorted([(t, 1) for t in arrivals] + [(t, -1) for t in departures])
    inside, area, busy, previous = 0, 0.0, 0.0, events[0][0]
    for t, change in events:
        area, busy = area + inside * (t - previous), busy + (t - previous if inside else 0.0)
        inside, previous = inside + change, t
    return area / busy


def _over_events(arrivals, departures):  # the mean of the count seen after each event, not weighted by time
    events = sorted([(t, 1) for t in arrivals] + [(t, -1) for t in departures])
    counts = np.cumsum([change for _, change in events])
    return float(np.mean(counts[:-1]))


def _first_and_last(arrivals, departures):  # assumes sorted input: window = arrivals[0] .. departures[-1]
    return sum(d - a for a, d in zip(arrivals, departures, strict=True)) / (departures[-1] - arrivals[0])


def test_wrong_answers_are_graded_wrong_with_what_differs():
    stub = littles_law.grade(lambda arrivals, departures: len(arrivals) / (max(departures) - min(arrivals)))
    assert not stub.ok and stub.message.startswith("case 1 (") and "returned 0.666667" in stub.message
    assert littles_law.grade(_from_zero).message.startswith("case 3 (one request")
    assert "returned 0.3" in littles_law.grade(_from_zero).message  # 2.5 s inside over a window 0 .. 7.5 s
    assert littles_law.grade(_busy_time_only).message.startswith("case 4 (idle time")
    assert littles_law.grade(_over_events).message.startswith("case 2 (back to back")  # 0.6: idle events count
    assert littles_law.grade(_first_and_last).message.startswith("case 6 (unsorted input")
    assert "expected a number" in littles_law.grade(lambda arrivals, departures: "1.0").message


def test_an_exception_in_the_learners_code_is_reported_not_raised():
    grade = littles_law.grade(lambda arrivals, departures: arrivals.shape)
    assert not grade.ok and "AttributeError" in grade.message and grade.message.startswith("case 1 (")
