"""Implementation exercises: a learner fills in a function in a lab, a grader checks it against the library that
does the same job (or a formula) and says what is wrong; `solutions` holds one answer each (the tests inject it to
prove each check can pass, and the lab's stub proves it can fail).

Every grader is `grade(learner_fn) -> Grade` built on `grade_cases`: it runs the learner's function on cases chosen
to catch the usual mistakes, compares each answer with the reference, and reports the first failing case as
"case N (what the case tests): what differs". It never raises: a check cell reports a wrong answer and the notebook
goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Grade:
    """A check's verdict. ok: every case passed. cases: cases run. message: what was wrong (or "all … agree …")."""

    ok: bool
    cases: int
    message: str

    def __str__(self) -> str:
        return ("✓ " if self.ok else "✗ ") + self.message


@dataclass(frozen=True)
class Case:
    """One graded input. what: what it tests (shown on failure). args: the learner function's arguments."""

    what: str
    args: tuple


def grade_cases(learner: Callable, cases: Sequence[Case], reference: Callable,
                compare: Callable[[Any, Any, Case], str | None], judge: str) -> Grade:  # fmt: skip
    """Run `learner` and `reference` on each case; the first difference `compare` names fails the grade.

    Args:
        learner: the learner's function. cases: its inputs (each argument is deep-copied before each call, so an
            in-place change by the learner cannot alter the reference's input).
        reference: the library's (or formula's) answer for the same arguments.
        compare: (got, want, case) -> None when they agree, else what differs (one sentence).
        judge: who the reference is, named in the verdict ("transformers' TopPLogitsWarper").
    Returns:
        Grade: ok when every case agrees; else the first failing case, "case N (what): …"; an exception in the
        learner's code is reported as such. Grading runs on one torch thread (restored after).
    """
    from copy import deepcopy as copy

    from labkit.engines.base import torch_threads

    with torch_threads(1):  # graded inputs are tiny: one thread skips OpenMP's spin-waits (~10× faster when busy)
        return _grade(learner, cases, reference, compare, judge, copy)


def _grade(learner, cases, reference, compare, judge, copy) -> Grade:
    for i, case in enumerate(cases, 1):
        try:
            got = learner(*copy(case.args))
        except Exception as err:  # noqa: BLE001 - the learner's code: report it, never crash the notebook
            return Grade(False, i, f"case {i} ({case.what}): your function raised {type(err).__name__}: {err}")
        want = reference(*copy(case.args))
        wrong = compare(got, want, case)
        if wrong:
            return Grade(False, i, f"case {i} ({case.what}): {wrong}")
    return Grade(True, len(cases), f"all {len(cases)} cases agree with {judge}")


def tensor_shape_error(got, want) -> str | None:
    """None when `got` is a tensor shaped like `want`; else what it is instead (for a `compare`)."""
    import torch

    if not isinstance(got, torch.Tensor):
        return f"returned {type(got).__name__}, expected a tensor of shape {tuple(want.shape)}"
    if got.shape != want.shape:
        return f"returned shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    return None
