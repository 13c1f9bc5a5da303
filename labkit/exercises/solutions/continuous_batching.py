"""The continuous-batching exercise's answer (Orca's iteration-level scheduling, Yu et al., OSDI '22)."""

from __future__ import annotations


def schedule_step(running: list, waiting: list, max_batch: int) -> tuple[list, list]:
    """One scheduling step between two decode steps: finished requests leave, queued ones fill the free slots.

    Args:
        running: the batch after the last step (`Req.finished` marks the ones done). waiting: the queue, oldest
            first (`Req.cancelled` marks the ones cancelled while waiting). max_batch: batch slots.
    Returns:
        (the next batch: the unfinished running requests in their order, then the joiners; the joiners).
    """
    still = [r for r in running if not r.finished]  # each finished sequence leaves at once
    admitted = []
    for r in waiting:  # first come, first served
        if len(still) + len(admitted) >= max_batch:
            break
        if not r.cancelled:  # a cancelled request is dropped and takes no slot
            admitted.append(r)
    return still + admitted, admitted
