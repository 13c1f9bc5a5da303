"""Batching policies: sync, dynamic and continuous differ only in when requests join and leave the batch.

The engine loop is the same for all three (`engine.py`): at every step it asks the policy how many queued requests
join now, prefills them, decodes one token for every running sequence, and lets finished sequences leave, either each
as soon as it is done or the whole batch together when its longest sequence is done.

| policy     | who joins the batch, and when                                  | who leaves, and when                |
|------------|----------------------------------------------------------------|-------------------------------------|
| sync       | the next request, once the batch is empty (the BLOOM server)   | it, when done                       |
| dynamic    | up to max_batch, once the batch is empty and max_batch wait or | all together, when the longest is   |
|            | the oldest has waited max_wait_ms (Triton's dynamic batcher)   | done (early finishers idle)         |
| continuous | anyone, into any free slot, between any two steps (Orca)       | each, as soon as it is done         |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from labkit.serving.limits import Limits


@dataclass(frozen=True)
class View:
    """What a policy sees at one step of the engine loop.

    Args:
        waiting: requests in the queue.
        running: requests holding a batch slot (finished ones included while a static batch runs on).
        max_batch: batch slots.
        oldest_wait_s: how long the first queued request has waited (s; 0 when none waits).
        max_wait_s: how long 'dynamic' lets a request wait for the batch to fill (s).
        closing: the engine is draining for shutdown (nobody should wait for company any more).
    """

    waiting: int
    running: int
    max_batch: int
    oldest_wait_s: float = 0.0
    max_wait_s: float = 0.0
    closing: bool = False


@dataclass(frozen=True)
class Decision:
    """A policy's answer: `join` queued requests join the batch now; if none, look again after `wake_in_s` seconds
    (None: when the next request arrives)."""

    join: int = 0
    wake_in_s: float | None = None


def sync(q: View) -> Decision:
    """One request at a time, first come first served: the next joins when the batch is empty."""
    return Decision(join=1 if q.running == 0 else 0)


def dynamic(q: View) -> Decision:
    """A batch forms while nothing runs: it starts when max_batch requests wait or the oldest waited max_wait_s."""
    if q.running:
        return Decision()
    due_in_s = q.max_wait_s - q.oldest_wait_s
    if q.waiting >= q.max_batch or q.closing or due_in_s <= 0:
        return Decision(join=q.max_batch)
    return Decision(wake_in_s=due_in_s + 1e-4)


def continuous(q: View) -> Decision:
    """Iteration-level scheduling: every free slot is filled at every step."""
    return Decision(join=q.max_batch - q.running)


@dataclass(frozen=True)
class Policy:
    """A schedule() function and the leave rule that goes with it.

    Args:
        name: the scheduler's name (what `--scheduler` and `make_engine` take).
        schedule: View -> Decision, called by the engine loop before every step.
        leave_together: True: finished sequences keep their slot (their extra tokens are discarded) until every
            sequence in the batch is done; False: each leaves the batch as soon as it is done.
        default_batch: max_batch when the limits leave it unset.
        fixed_batch: a batch size the policy always uses, whatever the limits say ('sync': 1).
    """

    name: str
    schedule: Callable[[View], Decision]
    leave_together: bool
    default_batch: int
    fixed_batch: int | None = None

    def max_batch(self, limits: Limits) -> int:
        """Batch slots under `limits`."""
        return self.fixed_batch or limits.batch(self.default_batch)


POLICIES: dict[str, Policy] = {
    "sync": Policy("sync", sync, leave_together=True, default_batch=1, fixed_batch=1),
    "dynamic": Policy("dynamic", dynamic, leave_together=True, default_batch=8),
    "continuous": Policy("continuous", continuous, leave_together=False, default_batch=32),
}


def get_policy(name: str) -> Policy:
    """The policy called `name`.

    Raises:
        ValueError: naming the valid policies.
    """
    if name not in POLICIES:
        raise ValueError(f"unknown batching policy {name!r}; choose from {list(POLICIES)}")
    return POLICIES[name]
