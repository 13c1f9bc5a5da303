"""GPipe's schedule replayed with measured compute times: the bubble the schedule alone explains.

(p − 1)/(m + p − 1) assumes every micro-batch takes the same time on every stage and hand-offs are free. On a shared
CPU a stage computes faster while it runs alone (the fill and the drain) than while the other stages run too (two
ranks on two vCPUs share caches, memory bandwidth and often one physical core), so the measured fill-and-drain share
comes out below the formula. Replaying the schedule with each micro-batch's measured duration, hand-offs free,
separates that effect (the replay has it) from communication and scheduling stalls (it does not).
"""

from __future__ import annotations

import numpy as np

from labkit.parallel.pp import Event


def replay_gpipe(durations: list[list[float]]) -> float:
    """Fill-and-drain idle fraction of a GPipe forward with these compute times and free hand-offs.

    Stage r starts micro-batch i when it has finished i − 1 and stage r − 1 has finished i.

    Args:
        durations: per stage (rank order), each micro-batch's compute time (any unit), micro-batch order.
    Returns:
        mean over stages of (idle before its first + idle after its last micro-batch) / span; equal durations give
        (p − 1)/(m + p − 1) exactly.
    Raises:
        ValueError: stages with different micro-batch counts, or none.
    """
    if not durations or len({len(d) for d in durations}) != 1 or not durations[0]:
        raise ValueError("need the same number (>= 1) of micro-batch durations on every stage")
    ends: list[list[float]] = []
    for r, stage in enumerate(durations):
        row: list[float] = []
        for i, d in enumerate(stage):
            start = max(row[i - 1] if i else 0.0, ends[r - 1][i] if r else 0.0)
            row.append(start + d)
        ends.append(row)
    span = ends[-1][-1]
    idle = [(ends[r][0] - durations[r][0]) + (span - ends[r][-1]) for r in range(len(durations))]
    return float(np.mean(idle) / span)


def replayed_bubble(events_per_rank: list[list[Event]]) -> float:
    """`replay_gpipe` on the compute events one GPipe run recorded (`pp.Recorder`), rank order."""
    computes = [sorted((e for e in evs if e.kind == "compute"), key=lambda e: e.start) for evs in events_per_rank]
    return replay_gpipe([[e.end - e.start for e in evs] for evs in computes])
