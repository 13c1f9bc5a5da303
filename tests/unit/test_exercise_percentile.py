"""The percentile exercise: its grader passes the reference answer, fails the usual mistakes with the failing case
named, and never raises; the reference answer agrees with numpy and with the standard library's
`statistics.quantiles(method="inclusive")` (the same definition, computed apart) beyond the graded cases."""

import math
import random
import statistics

import numpy as np

from labkit.exercises import percentile
from labkit.exercises.solutions import percentile as solutions


def test_the_solution_passes_and_agrees_with_numpy_and_statistics_on_random_samples():
    assert percentile.grade(solutions.percentile).ok
    rng = random.Random(1)
    for n in (1, 2, 3, 10, 101, 1000):
        samples = [rng.expovariate(1.0) for _ in range(n)]
        for q in (0, 1, 37.5, 50, 90, 99, 99.9, 100):
            got = solutions.percentile(samples, q)
            assert math.isclose(got, float(np.percentile(samples, q)), rel_tol=1e-12)
        if n > 1:  # statistics.quantiles: the 99 cut points at 1 %, 2 %, ..., 99 %
            cuts = statistics.quantiles(samples, n=100, method="inclusive")
            assert all(math.isclose(solutions.percentile(samples, k), cuts[k - 1], rel_tol=1e-12)
                       for k in range(1, 100))


def _nearest_rank(samples, q):  # picks a sample instead of interpolating
    ordered = sorted(samples)
    return ordered[round(q / 100 * (len(ordered) - 1))]


def _rank_over_n(samples, q):  # rank q/100 × n: shifted, and past the end at q = 100
    ordered = sorted(samples)
    rank = q / 100 * len(ordered)
    below = min(math.floor(rank), len(ordered) - 1)
    return ordered[below] + (rank - below) * (ordered[min(below + 1, len(ordered) - 1)] - ordered[below])


def _unsorted(samples, q):  # the right formula on the samples as given
    rank = q / 100 * (len(samples) - 1)
    below = math.floor(rank)
    return samples[below] + (rank - below) * (samples[min(below + 1, len(samples) - 1)] - samples[below])


def _past_the_end(samples, q):  # always reads the next sample: fails when there is none
    ordered = sorted(samples)
    rank = q / 100 * (len(ordered) - 1)
    below = math.floor(rank)
    return ordered[below] + (rank - below) * (ordered[below + 1] - ordered[below])


def test_wrong_answers_are_graded_wrong_with_what_differs():
    mean = percentile.grade(lambda samples, q: sum(samples) / len(samples))
    assert not mean.ok and mean.message.startswith("case 1 (") and "returned 13.2" in mean.message
    nearest = percentile.grade(_nearest_rank)
    assert not nearest.ok and nearest.message.startswith("case 2 (an even count") and "gives 2.5" in nearest.message
    over_n = percentile.grade(_rank_over_n)
    assert not over_n.ok and over_n.message.startswith("case 1 (") and "returned 6.5" in over_n.message
    unsorted = percentile.grade(_unsorted)
    assert not unsorted.ok and unsorted.message.startswith("case 4 (unsorted input")
    past = percentile.grade(_past_the_end)
    assert not past.ok and past.message.startswith("case 6 (q = 100") and "IndexError" in past.message
    assert "expected a number" in percentile.grade(lambda samples, q: [samples[0]]).message


def test_an_exception_in_the_learners_code_is_reported_not_raised():
    grade = percentile.grade(lambda samples, q: 1 / 0)
    assert not grade.ok and "ZeroDivisionError" in grade.message and str(grade).startswith("✗ case 1 (")
