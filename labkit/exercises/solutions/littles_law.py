"""The Little's-law exercise's answer: the time average of the number inside, by a sweep over the events."""

from __future__ import annotations


def mean_in_system(arrivals: list[float], departures: list[float]) -> float:
    """The mean number of requests inside over [first arrival, last departure], by integrating the step function.

    Args:
        arrivals, departures: the i-th request's arrival and departure times (s), same length, any order.
    Returns:
        ∫ (requests inside) dt / T over the window T (requests).
    Raises:
        ValueError: different lengths, no request, a departure before its arrival, or a window of length 0.
    """
    if len(arrivals) != len(departures) or not arrivals:
        raise ValueError(f"need as many departures as arrivals (>= 1), got {len(arrivals)} and {len(departures)}")
    if any(d < a for a, d in zip(arrivals, departures, strict=True)):
        raise ValueError("a request departs before it arrives")
    events = sorted([(t, +1) for t in arrivals] + [(t, -1) for t in departures])  # (time, change in the count)
    start, end = events[0][0], events[-1][0]  # the first arrival, the last departure
    if end == start:
        raise ValueError("the window has length 0")
    inside, area, previous = 0, 0.0, start
    for t, change in events:
        area += inside * (t - previous)  # the count held constant since the previous event
        inside, previous = inside + change, t
    return area / (end - start)
