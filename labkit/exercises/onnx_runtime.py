"""Implementation exercise: run a PyTorch module in ONNX Runtime, graded against the module's own eager output.

A learner writes `run_with_onnxruntime(model, example, inputs)`: export `model` to ONNX with `example` (the batch
axis dynamic), open an `onnxruntime.InferenceSession` on the CPU, build the feed from the session's input names and
return its output for `inputs`, whose batch may differ from the example's. That is the path labkit's ONNX Runtime
engine takes (`labkit.convert.export_onnx`, then `labkit.engines.ort`). `grade(run_with_onnxruntime)` runs it on
cases chosen to catch the usual mistakes (a static batch axis, a feed built by position or with torch tensors, the
list `session.run` returns, an int64 input cast to float) and also checks that ONNX Runtime really ran: while the
learner's function runs, `InferenceSession.run` is wrapped and counted, so returning the eager output fails.
Sources: PyTorch, "torch.onnx" (torch.onnx.export: input_names, dynamic_axes / dynamic_shapes); ONNX Runtime,
"Python API" (InferenceSession, get_inputs, run).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from unittest import mock

import numpy as np
import torch
from torch import nn

from labkit.exercises import Case, Grade, grade_cases

JUDGE = "the module's own PyTorch eager output"
RTOL, ATOL = 1e-4, 1e-5  # fp32 in both runtimes; a different kernel order moves the last bits only


def reference(model: nn.Module, example: tuple[torch.Tensor, ...], inputs: tuple[torch.Tensor, ...]) -> np.ndarray:
    """The module's eager output on `inputs` in inference mode (`model.eval()`, no autograd), as numpy.

    Args:
        model: a module with one tensor output. example: what the learner exports with (unused here).
        inputs: the tensors to run, one per forward argument.
    Returns:
        the output as a numpy array (its shape and dtype are the module's).
    """
    with torch.no_grad():
        return model.eval()(*inputs).numpy()


class TwoInputs(nn.Module):
    """forward(x (batch, 8), gate (batch, 3)) -> (batch, 4): two inputs of different widths."""

    def __init__(self):
        super().__init__()
        self.proj, self.gate = nn.Linear(8, 4), nn.Linear(3, 4)

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        return self.proj(x) * torch.sigmoid(self.gate(gate))


class TinyLM(nn.Module):
    """forward(ids (batch, seq) int64) -> (batch, vocab): embed, mean over the sequence, project back to the vocab."""

    def __init__(self, vocab: int = 20, hidden: int = 8):
        super().__init__()
        self.embed, self.head = nn.Embedding(vocab, hidden), nn.Linear(hidden, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids).mean(dim=1))


def _conv_net() -> nn.Module:
    """(batch, 1, 8, 8) images -> (batch, 3): Conv2d, BatchNorm with non-trivial running statistics, pooling."""
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(4 * 4 * 4, 3))  # fmt: skip
    with torch.no_grad():  # as if trained: eval mode then normalises with these, not with the batch's statistics
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


def cases() -> list[Case]:
    """The grader's inputs: (model, example, inputs), each with what it tests."""
    with torch.random.fork_rng(devices=[]):  # fixed weights and data without disturbing the notebook's generator
        torch.manual_seed(0)
        mlp = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
        x2 = (torch.randn(2, 8),)
        two, two_in = TwoInputs().eval(), (torch.randn(2, 8), torch.randn(2, 3))
        conv = _conv_net()
        lm = TinyLM().eval()
        return [
            Case("an MLP, exported and run at the same batch (2)", (mlp, x2, x2)),
            Case("two inputs of different widths: feed each array under its own input name", (two, two_in, two_in)),
            Case("exported at batch 1, run at batch 4: the batch axis must be dynamic",
                 (mlp, (torch.randn(1, 8),), (torch.randn(4, 8),))),
            Case("a conv net (Conv2d, BatchNorm, MaxPool) on (batch, 1, 8, 8) images, exported at batch 3, run at 1",
                 (conv, (torch.randn(3, 1, 8, 8),), (torch.randn(1, 1, 8, 8),))),
            Case("int64 token ids (batch, seq): feed them as int64, exported at batch 2, run at batch 4",
                 (lm, (torch.randint(0, 20, (2, 5)),), (torch.randint(0, 20, (4, 5)),))),
        ]  # fmt: skip


@dataclass(frozen=True)
class Answer:
    """What the learner's function returned, and how many times `InferenceSession.run` was called meanwhile."""

    output: object
    session_runs: int


@contextlib.contextmanager
def counting_session_runs():
    """Count `onnxruntime.InferenceSession.run` calls inside the block (the list it yields grows by one per call).

    The method is patched on the class, so a session is counted however its class was imported.
    """
    import onnxruntime as ort

    calls: list[int] = []
    run = ort.InferenceSession.run

    def counted(self, *args, **kwargs):
        calls.append(1)
        return run(self, *args, **kwargs)

    with mock.patch.object(ort.InferenceSession, "run", counted):
        yield calls


def _compare(got: Answer, want: np.ndarray, case: Case) -> str | None:
    out = got.output
    if got.session_runs == 0:
        return ("ONNX Runtime never ran (no InferenceSession.run call): the answer must be the session's output, "
                "not model(...)'s")  # fmt: skip
    if isinstance(out, (list, tuple)):
        return (f"returned a {type(out).__name__} of {len(out)} item(s), what session.run gives; return the output "
                "array itself (its first item)")  # fmt: skip
    if not isinstance(out, np.ndarray):
        return f"returned {type(out).__name__}, expected the numpy array ONNX Runtime returns"
    if out.shape != want.shape:
        example_batch = case.args[1][0].shape[0]
        hint = " (the export example's batch: run on `inputs`)" if out.shape[:1] == (example_batch,) else ""
        return f"returned shape {out.shape}, expected {want.shape}{hint}"
    if not np.allclose(out, want, rtol=RTOL, atol=ATOL):
        worst = float(np.max(np.abs(out.astype(np.float64) - want)))
        return f"differs from {JUDGE} by up to {worst:.3g} (allowed: {RTOL:g} relative + {ATOL:g})"
    return None


def grade(run_with_onnxruntime) -> Grade:
    """Run a learner's ONNX Runtime path on `cases()` and compare each output with the module's eager output.

    Args:
        run_with_onnxruntime: (model, example: tuple of tensors, inputs: tuple of tensors) -> numpy array, the
            model's output on `inputs` computed by an onnxruntime.InferenceSession.
    Returns:
        Grade: ok only if every case's output has the eager output's shape, is close to it (rtol 1e-4, atol 1e-5)
        and came from `InferenceSession.run`; otherwise the first failing case and what differs. An exception
        inside the learner's code (ONNX Runtime's own errors included) is reported, not raised.
    """

    def watched(model, example, inputs) -> Answer:
        with counting_session_runs() as runs:
            output = run_with_onnxruntime(model, example, inputs)
        return Answer(output, len(runs))

    return grade_cases(watched, cases(), reference, _compare, JUDGE)
