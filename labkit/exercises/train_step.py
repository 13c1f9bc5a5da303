"""Implementation exercise: one training step of a causal language model, graded against the step that trained the
lab's model, `labkit.training.train_step`, run on an identical copy of a tiny random BLOOM.

A learner writes `train_step(model, optimizer, batch) -> float`: train mode, forward with labels (next-token
cross-entropy), backward, clip the gradient norm to 1, optimizer step, zero the gradients, return the loss.
`grade` runs it for one to three consecutive steps on one copy of a model and optimizer and the reference on
another, with the same random seed (so dropout draws the same masks), and compares every step's loss and every
parameter afterwards: a missing `optimizer.step()` leaves the weights where they were, a missing `zero_grad`
adds the first step's gradient to the second's, a missing `model.train()` leaves dropout off, a missing clip moves
the weights too far, and a loss returned as a tensor keeps the whole graph alive.

The step is PyTorch's training loop ("Optimizing Model Parameters", PyTorch tutorials: zero_grad, backward, step)
with gradient-norm clipping (Pascanu et al. 2013, "On the difficulty of training recurrent neural networks",
section 3.2; `torch.nn.utils.clip_grad_norm_`). The models are built from a config with random weights: nothing is
downloaded, and a whole grade takes well under a second once transformers is imported.
"""

from __future__ import annotations

import torch

from labkit.exercises import Case, Grade, grade_cases

JUDGE = "labkit.training.train_step"
VOCAB, SEQ = 64, 8


def reference(model, optimizer, batch: torch.Tensor) -> float:
    """labkit's training step: train mode, forward with labels, backward, clip to norm 1, step, zero the gradients.

    Args:
        model: a transformers causal LM. optimizer: over its parameters. batch: (batch, seq) token ids.
    Returns:
        the batch's mean next-token cross-entropy before the update (nats per token).
    """
    from labkit.training import train_step

    return train_step(model, optimizer, batch)


def _tiny_bloom(seed: int, dropout: float = 0.0, small_gradients: bool = False):
    """A 2-layer BLOOM of width 16 with random weights (a few thousand parameters)."""
    from transformers import BloomConfig, BloomForCausalLM

    torch.manual_seed(seed)
    # with dropout, weights 10× the usual scale: the logits are far from uniform, so dropout changes the loss a lot
    config = BloomConfig(vocab_size=VOCAB, hidden_size=16, n_layer=2, n_head=2, hidden_dropout=dropout,
                         attention_dropout=dropout, initializer_range=0.2 if dropout else 0.02)  # fmt: skip
    model = BloomForCausalLM(config)
    if small_gradients:  # a final LayerNorm gain of 0.3 shrinks every gradient: its norm stays below 1, no clipping
        with torch.no_grad():
            model.transformer.ln_f.weight.fill_(0.3)
    return model


def _batches(n: int, seed: int) -> list[torch.Tensor]:
    """n random (2, SEQ) batches of token ids."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (2, SEQ), generator=gen) for _ in range(n)]


def _case(what: str, seed: int, steps: int, optimizer: str = "sgd", dropout: float = 0.0,
          small_gradients: bool = False, eval_mode: bool = False) -> Case:  # fmt: skip
    """A fresh model and optimizer, `steps` batches and a seed for the dropout masks."""
    model = _tiny_bloom(seed, dropout, small_gradients)
    model.train(not eval_mode)  # eval mode: dropout off until the step switches it on
    opt = (torch.optim.SGD(model.parameters(), lr=0.5) if optimizer == "sgd"
           else torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95)))  # fmt: skip
    return Case(what, (model, opt, _batches(steps, seed), seed))


def cases() -> list[Case]:
    """The grader's inputs: (model, optimizer, batches, seed); each (2, 8) batch is one call of the step."""
    return [
        _case("one SGD step, gradient norm below 1 (no clipping needed): forward with labels, backward, step", 0, 1,
              small_gradients=True),
        _case("two SGD steps: the second starts from zero gradients", 1, 2, small_gradients=True),
        _case("a gradient norm above 1: clip it to 1 before the step", 2, 1),
        _case("dropout: the model arrives in eval mode, a training step needs model.train()", 3, 1, dropout=0.2,
              eval_mode=True),
        _case("three AdamW steps: the optimizer's moments carry from step to step", 4, 3),
    ]  # fmt: skip


def _run(step):
    """(model, optimizer, batches, seed) -> every step's return value and the parameters after, for `grade_cases`."""

    def run(model, optimizer, batches, seed):
        before = [p.detach().clone() for p in model.parameters()]
        with torch.random.fork_rng(devices=[]):  # the same dropout masks for the learner and the reference
            torch.manual_seed(seed)
            losses = [step(model, optimizer, batch) for batch in batches]
        after = {name: p.detach().clone() for name, p in model.named_parameters()}
        moved = any(not torch.equal(a, b) for a, b in zip(before, after.values(), strict=True))
        return {"losses": losses, "params": after, "moved": moved}

    return run


def _compare(got: dict, want: dict, case: Case) -> str | None:
    for i, (loss, expected) in enumerate(zip(got["losses"], want["losses"], strict=True), 1):
        if isinstance(loss, torch.Tensor):
            return f"step {i} returned a tensor; return loss.item(), a float (a tensor keeps the whole graph alive)"
        if isinstance(loss, bool) or not isinstance(loss, (int, float)):
            return f"step {i} returned {type(loss).__name__}, expected the loss as a float"
        if abs(loss - expected) > 1e-5 * max(1.0, abs(expected)):
            why = ("forward with labels=batch, in train mode, before the update" if i == 1 else
                   "the weights the step before left differ, or its gradients were not zeroed")  # fmt: skip
            return f"step {i}'s loss is {loss:.6f}, {JUDGE} gives {expected:.6f}: {why}"
    if not got["moved"]:
        return "the weights did not change: call optimizer.step() after loss.backward()"
    steps = len(got["losses"])
    for name, expected in want["params"].items():
        diff = (got["params"][name] - expected).abs().max().item()
        if diff > 1e-5 + 1e-4 * expected.abs().max().item():
            return f"after {steps} step(s) the parameter {name} differs from {JUDGE}'s by up to {diff:.3g}"
    return None


def grade(train_step) -> Grade:
    """Run a learner's training step on `cases()` and compare the losses and weights with `reference`'s.

    Args:
        train_step: (model: a transformers causal LM, optimizer: over its parameters, batch: (batch, seq) token
            ids) -> the loss before the update, a float.
    Returns:
        Grade: ok only if, in every case, each step's loss and every parameter after the last step agree with
        labkit's step on an identical copy; otherwise the first failing case and what differs. An exception inside
        the learner's code is reported, not raised.
    """
    return grade_cases(_run(train_step), cases(), _run(reference), _compare, JUDGE)
