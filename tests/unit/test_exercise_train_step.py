"""The training-step exercise: its grader passes the reference answer, fails the usual mistakes with the failing case
named, and never raises; the step it grades against (labkit.training.train_step) matches a hand-written SGD update
with the clipping formula of torch's documentation, and each case's claim about its gradient norm holds."""

import copy

import pytest
import torch
import torch.nn.functional as F

from labkit.exercises import train_step
from labkit.exercises.solutions import train_step as solutions

pytestmark = pytest.mark.usefixtures("one_thread")


def _loss(model, batch):
    """Next-token cross-entropy computed apart from transformers' loss: logits at t predict the token at t + 1."""
    logits = model(input_ids=batch).logits  # (batch, seq, vocab)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))


def test_the_reference_is_an_sgd_step_with_clipping_by_hand():
    for case in (train_step.cases()[0], train_step.cases()[2]):  # gradient norm below 1, then above 1
        model, optimizer, batches, _ = case.args
        lr = optimizer.param_groups[0]["lr"]
        by_hand = copy.deepcopy(model)
        loss = _loss(by_hand, batches[0])
        grads = torch.autograd.grad(loss, list(by_hand.parameters()))
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        coef = min(1.0, 1.0 / (norm.item() + 1e-6))  # clip_grad_norm_: scale by max_norm / (norm + 1e-6) when > 1
        got = train_step.reference(model, optimizer, batches[0])
        assert abs(got - loss.item()) < 1e-5
        for p, q, g in zip(model.parameters(), by_hand.parameters(), grads, strict=True):
            torch.testing.assert_close(p.detach(), q.detach() - lr * coef * g, rtol=1e-5, atol=1e-6)


def test_each_case_has_the_gradient_norm_it_claims():
    def norms(case):
        model, optimizer, batches, _ = copy.deepcopy(case.args)
        found = []
        for batch in batches:
            model.train()
            model(input_ids=batch, labels=batch).loss.backward()
            found.append(torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf")).item())
            optimizer.step()
            optimizer.zero_grad()
        return found

    small_1, small_2, large = (norms(c) for c in train_step.cases()[:3])
    assert max(small_1 + small_2) < 0.9 and large[0] > 1.2, (small_1, small_2, large)


def test_the_solution_passes():
    assert train_step.grade(solutions.train_step).ok


def _without(*skip):
    """The solution's step with some of its lines left out: a learner's usual mistakes."""

    def step(model, optimizer, batch):
        if "train" not in skip:
            model.train()
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        if "clip" not in skip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if "step" not in skip:
            optimizer.step()
        if "zero_grad" not in skip:
            optimizer.zero_grad()
        return loss if "item" in skip else loss.item()

    return step


def test_wrong_answers_are_graded_wrong_with_what_differs():
    stub = train_step.grade(lambda model, optimizer, batch: model(input_ids=batch, labels=batch).loss.item())
    assert not stub.ok and stub.message.startswith("case 1 (") and "weights did not change" in stub.message
    no_step = train_step.grade(_without("step"))
    assert no_step.message.startswith("case 1 (") and "weights did not change" in no_step.message
    no_zero = train_step.grade(_without("zero_grad"))
    assert no_zero.message.startswith("case 2 (two SGD steps") and "differs from" in no_zero.message
    no_clip = train_step.grade(_without("clip"))
    assert no_clip.message.startswith("case 3 (a gradient norm above 1") and "differs from" in no_clip.message
    no_train = train_step.grade(_without("train"))
    assert no_train.message.startswith("case 4 (dropout") and "step 1's loss is" in no_train.message
    tensor = train_step.grade(_without("item"))
    assert tensor.message.startswith("case 1 (") and "returned a tensor" in tensor.message

    def loss_after(model, optimizer, batch):  # returns the loss after the update
        _without()(model, optimizer, batch)
        with torch.no_grad():
            return model(input_ids=batch, labels=batch).loss.item()

    after = train_step.grade(loss_after)
    assert after.message.startswith("case 1 (") and "step 1's loss is" in after.message


def test_an_exception_in_the_learners_code_is_reported_not_raised():
    grade = train_step.grade(lambda model, optimizer, batch: model(batch, labels=batch).loss.backward().item())
    assert not grade.ok and "AttributeError" in grade.message and grade.message.startswith("case 1 (")
