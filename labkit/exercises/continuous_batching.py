"""Implementation exercise: one step of continuous batching, graded against labkit's own continuous scheduler.

A learner writes `schedule_step(running, waiting, max_batch)`: between two decode steps, the sequences that finished
leave the batch at once, and queued requests join into every free slot, first come first served; a request
cancelled while it waited is dropped and takes no slot. It returns the batch for the next step and the requests that
joined. That is iteration-level scheduling (Yu et al. 2022, "Orca: A Distributed Serving System for
Transformer-Based Generative Models", OSDI '22; TGI and vLLM schedule the same way). The reference is labkit's
engine itself: a `labkit.serving.engine.Engine` with the "continuous" policy (`policies.continuous`: join =
max_batch − running) admits through its own `_admit`, after finished sequences leave as the policy's leave rule says
(`leave_together` False: each at once). `grade(schedule_step)` runs the learner's function on cases chosen to catch
the usual mistakes (waiting until the batch is empty, as static batching does; finished sequences kept in their
slots; a batch overfilled; the queue served last-in first-out; a cancelled request admitted or holding a slot) and
says which case failed and how.
"""

from __future__ import annotations

from dataclasses import dataclass

from labkit.exercises import Case, Grade, grade_cases

JUDGE = "labkit's continuous scheduler (serving.engine.Engine with policies.continuous)"
SHORT = "labkit's engine"  # named in each verdict


@dataclass(frozen=True)
class Req:
    """A request as `schedule_step` sees it: a name, whether it finished (running) or was cancelled (waiting)."""

    name: str
    finished: bool = False
    cancelled: bool = False


def reference(running: list[Req], waiting: list[Req], max_batch: int) -> tuple[list[Req], list[Req]]:
    """labkit's continuous engine's next batch: finished requests leave, then its own admission fills the slots.

    Args:
        running: the batch after the last decode step (finished ones included). waiting: the queue, oldest first.
        max_batch: batch slots.
    Returns:
        (the batch for the next step: those still running in their order, then the joiners; the joiners, in queue
        order).
    """
    from labkit.serving.engine import Engine
    from labkit.serving.limits import Limits
    from labkit.serving.policies import get_policy
    from labkit.serving.request import Request

    class Admission(Engine):  # the engine's bookkeeping without a model: step() is never called
        def step(self) -> None:
            raise NotImplementedError

    engine = Admission(None, None, get_policy("continuous"), Limits(max_batch=max_batch, max_queue=len(waiting) + 1))
    to_req = {}  # labkit's Request.id -> the case's Req
    for r in waiting:
        req = Request([0])
        to_req[req.id] = r
        engine.submit(req)
        if r.cancelled:
            req.cancel()  # still in the queue: the admission drops it (Engine.cancel would remove it at once)
    still = []
    for r in running:
        req = Request([0])
        to_req[req.id] = r
        if r.finished:
            req.finished.set()
        still.append(req)
    if not engine.policy.leave_together:  # continuous: each finished request leaves the batch at once
        still = [req for req in still if not req.finished.is_set()]
    engine.running = still
    joined = engine._admit()  # the engine's own admission (policy decision, FCFS, cancelled dropped)
    return [to_req[q.id] for q in engine.running], [to_req[q.id] for q in joined]


def _reqs(names: str, finished: str = "", cancelled: str = "") -> list[Req]:
    """One Req per letter of `names`; those in `finished` / `cancelled` flagged so."""
    return [Req(n, finished=n in finished, cancelled=n in cancelled) for n in names]


def cases() -> list[Case]:
    """The grader's inputs: (running, waiting, max_batch), each with what it tests."""
    return [
        Case("free slots are filled at once, first come first served: 2 running, 4 slots, 3 waiting",
             (_reqs("ab"), _reqs("cde"), 4)),
        Case("finished sequences leave at once and free their slots", (_reqs("abc", finished="ac"), _reqs("def"), 3)),
        Case("a full batch admits nobody", (_reqs("abc"), _reqs("d"), 3)),
        Case("more free slots than waiting requests: all of them join", ([], _reqs("ab"), 8)),
        Case("a request cancelled while it waited is dropped: it neither joins nor takes a slot",
             (_reqs("a"), _reqs("bcde", cancelled="b"), 3)),
        Case("every running sequence finished: the next ones take the whole batch",
             (_reqs("ab", finished="ab"), _reqs("cdef"), 3)),
    ]  # fmt: skip


def _names(reqs) -> list[str] | None:
    """The names of a list of Req (None when it is not one)."""
    if not isinstance(reqs, (list, tuple)) or not all(isinstance(r, Req) for r in reqs):
        return None
    return [r.name for r in reqs]


def _compare(got, want: tuple[list[Req], list[Req]], case: Case) -> str | None:
    if not isinstance(got, tuple) or len(got) != 2:
        return f"returned {type(got).__name__}, expected a tuple (running, admitted)"
    running, admitted = _names(got[0]), _names(got[1])
    if running is None or admitted is None:
        return "running and admitted must be lists of the Req objects you were given"
    want_running, want_admitted = _names(want[0]), _names(want[1])
    if admitted != want_admitted:
        return f"admitted {admitted}, {SHORT} admits {want_admitted} (max_batch {case.args[2]})"
    if running != want_running:
        return (f"the next batch is {running}, {SHORT} runs {want_running}: those still running in their order, "
                "then the joiners")  # fmt: skip
    return None


def grade(schedule_step) -> Grade:
    """Run a learner's scheduler step on `cases()` and compare each result with `reference`.

    Args:
        schedule_step: (running: list of Req, waiting: list of Req oldest first, max_batch) -> (the next batch,
            the requests admitted), both lists of the Req objects given.
    Returns:
        Grade: ok only if every case admits the same requests and forms the same batch as labkit's engine;
        otherwise the first failing case and what differs. An exception inside the learner's code is reported.
    """
    return grade_cases(schedule_step, cases(), reference, _compare, JUDGE)
