"""Implementation exercise: the top-p (nucleus) filter, graded against transformers' own `TopPLogitsWarper`.

A learner writes `top_p_filter(logits, p)`; `grade(top_p_filter)` runs it on cases chosen to catch the usual
mistakes (keeping the token that crosses p, ties, p = 1, a batch of rows, a flat distribution) and says which case
failed and how, without raising: a notebook's check cell reports a wrong answer and goes on.
Nucleus sampling: Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration", section 3.1.
"""

from __future__ import annotations

import torch

from labkit.exercises import Case, Grade, grade_cases, tensor_shape_error

JUDGE = "transformers' TopPLogitsWarper"


def reference(logits: torch.Tensor, p: float) -> torch.Tensor:
    """transformers' top-p filter: the smallest set of most likely tokens whose probability reaches p, others -inf.

    Args:
        logits: (batch, vocab) float scores. p: 0 < p <= 1.
    Returns:
        (batch, vocab): the logits kept, -inf elsewhere.
    """
    from transformers.generation.logits_process import TopPLogitsWarper

    return TopPLogitsWarper(top_p=p, min_tokens_to_keep=1)(None, logits.clone())


def cases() -> list[Case]:
    """The grader's inputs: (batch, vocab) logits and p, each with what it tests."""
    gen = torch.Generator().manual_seed(0)
    peaked = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    return [
        Case("the token whose probability crosses p is kept (0.5 + 0.3 < 0.9 <= 0.5 + 0.3 + 0.15)", (peaked, 0.9)),
        Case("p below the top token's probability keeps that token alone", (peaked, 0.2)),
        Case("p = 1 keeps every token", (peaked, 1.0)),
        Case("a nearly flat distribution keeps about p × vocab tokens", (torch.linspace(0.09, 0.0, 10)[None], 0.45)),
        Case("each row of a batch is filtered on its own", (torch.randn(4, 50, generator=gen) * 3, 0.8)),
        Case("unsorted logits: sort to choose, answer in vocabulary order", (torch.randn(2, 32, generator=gen), 0.5)),
    ]  # fmt: skip


def _compare(got, want, case: Case) -> str | None:
    if wrong := tensor_shape_error(got, want):
        return wrong
    kept, keep = torch.isfinite(got), torch.isfinite(want)
    if not torch.equal(kept, keep):
        return (f"kept {kept.sum(-1).tolist()} token(s) per row, {JUDGE} keeps {keep.sum(-1).tolist()} "
                f"at p = {case.args[1]}")  # fmt: skip
    if not torch.allclose(got[keep], want[keep]):
        return "the kept logits were changed; leave them as they are"
    return None


def grade(top_p_filter) -> Grade:
    """Run a learner's top-p filter on `cases()` and compare each result with `reference`.

    Args:
        top_p_filter: (logits (batch, vocab), p) -> filtered logits of the same shape, -inf where dropped.
    Returns:
        Grade: ok only if every case keeps exactly the reference's tokens with their logits unchanged; otherwise the
        first failing case and what differs. An exception inside the learner's code is reported, not raised.
    """
    return grade_cases(top_p_filter, cases(), reference, _compare, JUDGE)
