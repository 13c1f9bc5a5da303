"""The top-p exercise: its grader passes the reference answer, fails the usual mistakes with the failing case named,
and never raises; the reference answer agrees with transformers' TopPLogitsWarper beyond the graded cases."""

import torch

from labkit.exercises import top_p
from labkit.exercises.solutions import top_p as solutions


def test_the_solution_passes_and_agrees_with_transformers_on_random_rows():
    assert top_p.grade(solutions.top_p_filter).ok
    gen = torch.Generator().manual_seed(1)
    for p in (0.05, 0.3, 0.62, 0.9, 0.999):
        logits = torch.randn(8, 200, generator=gen) * 4
        got, want = solutions.top_p_filter(logits, p), top_p.reference(logits, p)
        assert torch.equal(torch.isfinite(got), torch.isfinite(want)) and torch.equal(got[torch.isfinite(got)],
                                                                                      logits[torch.isfinite(got)])


def _off_by_one(logits, p):  # drops the token that crosses p: the most common mistake
    s, order = logits.sort(-1, descending=True)
    drop = s.softmax(-1).cumsum(-1) > p
    return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))


def test_wrong_answers_are_graded_wrong_with_what_differs():
    stub = top_p.grade(lambda logits, p: logits)
    assert not stub.ok and stub.cases == 1 and "kept [4] token(s)" in stub.message and "keeps [3]" in stub.message
    assert not top_p.grade(_off_by_one).ok and "keeps [3]" in top_p.grade(_off_by_one).message
    rescaled = top_p.grade(lambda logits, p: solutions.top_p_filter(logits, p) * 2)  # right tokens, changed logits
    assert not rescaled.ok and "kept logits were changed" in rescaled.message
    shape = top_p.grade(lambda logits, p: logits[0])
    assert not shape.ok and "returned shape (4,), expected (1, 4)" in shape.message


def test_an_exception_in_the_learners_code_is_reported_not_raised():
    grade = top_p.grade(lambda logits, p: 1 / 0)
    assert not grade.ok and "ZeroDivisionError" in grade.message and str(grade).startswith("✗ ")
