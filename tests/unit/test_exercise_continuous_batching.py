"""The continuous-batching exercise: its grader passes the reference answer, fails the usual mistakes with the failing
case named, and never raises; the reference answer agrees with labkit's engine on random batches and queues, and the
engine-backed reference keeps what the continuous policy promises (never more than max_batch, FCFS)."""

import random

from labkit.exercises import continuous_batching
from labkit.exercises.continuous_batching import Req
from labkit.exercises.solutions import continuous_batching as solutions


def _random_case(rng: random.Random) -> tuple[list[Req], list[Req], int]:
    max_batch = rng.randint(1, 6)
    running = [Req(f"r{i}", finished=rng.random() < 0.4) for i in range(rng.randint(0, max_batch))]
    waiting = [Req(f"w{i}", cancelled=rng.random() < 0.2) for i in range(rng.randint(0, 8))]
    return running, waiting, max_batch


def test_the_solution_passes_and_agrees_with_labkits_engine_on_random_steps():
    assert continuous_batching.grade(solutions.schedule_step).ok
    rng = random.Random(0)
    for _ in range(200):
        running, waiting, max_batch = _random_case(rng)
        want_running, want_admitted = continuous_batching.reference(running, waiting, max_batch)
        assert solutions.schedule_step(running, waiting, max_batch) == (want_running, want_admitted)
        live = [r for r in waiting if not r.cancelled]
        assert len(want_running) <= max_batch and want_admitted == live[:len(want_admitted)]  # FCFS, never overfull
        assert len(want_running) == min(max_batch, sum(not r.finished for r in running) + len(live))  # no idle slot


def _static(running, waiting, max_batch):  # static batching: a new batch only once the old one is all done
    if any(not r.finished for r in running):
        return running, []
    admitted = [r for r in waiting if not r.cancelled][:max_batch]
    return admitted, admitted


def _finished_keep_slots(running, waiting, max_batch):
    admitted = [r for r in waiting if not r.cancelled][:max_batch - len(running)]
    return [r for r in running if not r.finished] + admitted, admitted


def _lifo(running, waiting, max_batch):
    return solutions.schedule_step(running, waiting[::-1], max_batch)


def _cancelled_hold_a_slot(running, waiting, max_batch):
    still = [r for r in running if not r.finished]
    admitted = [r for r in waiting[:max_batch - len(still)] if not r.cancelled]
    return still + admitted, admitted


def test_wrong_answers_are_graded_wrong_with_what_differs():
    stub = continuous_batching.grade(lambda running, waiting, max_batch: (running, []))
    assert not stub.ok and stub.message.startswith("case 1 (") and "admitted [], labkit's engine admits ['c', 'd']" \
        in stub.message  # fmt: skip
    static = continuous_batching.grade(_static)
    assert not static.ok and static.message.startswith("case 1 (")
    kept = continuous_batching.grade(_finished_keep_slots)
    assert not kept.ok and kept.message.startswith("case 2 (") and "admits ['d', 'e']" in kept.message
    lifo = continuous_batching.grade(_lifo)
    assert not lifo.ok and lifo.message.startswith("case 1 (") and "admitted ['e', 'd']" in lifo.message
    holding = continuous_batching.grade(_cancelled_hold_a_slot)
    assert not holding.ok and holding.message.startswith("case 5 (") and "admitted ['c']" in holding.message
    unfinished_dropped = continuous_batching.grade(lambda r, w, m: (solutions.schedule_step(r, w, m)[1],
                                                                    solutions.schedule_step(r, w, m)[1]))
    assert not unfinished_dropped.ok and "the next batch is ['c', 'd']" in unfinished_dropped.message
    names = continuous_batching.grade(lambda r, w, m: ([x.name for x in r], []))
    assert not names.ok and "lists of the Req objects" in names.message


def test_an_exception_in_the_learners_code_is_reported_not_raised():
    grade = continuous_batching.grade(lambda r, w, m: 1 / 0)
    assert not grade.ok and "ZeroDivisionError" in grade.message and str(grade).startswith("✗ ")
