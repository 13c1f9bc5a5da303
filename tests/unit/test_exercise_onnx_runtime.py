"""The ONNX Runtime exercise: its grader passes the reference answer (and one built on the torch.export-based
exporter), fails the usual mistakes with the failing case named, notices when ONNX Runtime never ran, and never
raises; the reference answer agrees with eager PyTorch beyond the graded cases."""

import io
import warnings

import numpy as np
import pytest
import torch

from labkit.exercises import onnx_runtime
from labkit.exercises.solutions import onnx_runtime as solutions

ort = pytest.importorskip("onnxruntime")


def _export(model, example, dynamic: bool) -> bytes:
    names = [f"input_{i}" for i in range(len(example))]
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), example, buffer, dynamo=False, input_names=names,
                          dynamic_axes={n: {0: "batch"} for n in names} if dynamic else None)
    return buffer.getvalue()


def _session(model, example, dynamic=True):
    return ort.InferenceSession(_export(model, example, dynamic), providers=["CPUExecutionProvider"])


def _feed(session, inputs):
    return {a.name: t.numpy() for a, t in zip(session.get_inputs(), inputs, strict=True)}


def test_the_solution_passes_and_agrees_with_eager_on_random_models():
    assert onnx_runtime.grade(solutions.run_with_onnxruntime).ok
    gen = torch.Generator().manual_seed(3)
    for width, batch in ((5, 1), (17, 7), (64, 3)):
        model = torch.nn.Sequential(torch.nn.Linear(width, 2 * width), torch.nn.GELU(), torch.nn.LayerNorm(2 * width))
        example, inputs = (torch.randn(2, width, generator=gen),), (torch.randn(batch, width, generator=gen),)
        got = solutions.run_with_onnxruntime(model, example, inputs)
        np.testing.assert_allclose(got, model(*inputs).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_the_eager_answer_is_graded_wrong_because_onnx_runtime_never_ran():
    grade = onnx_runtime.grade(lambda model, example, inputs: model(*inputs).detach().numpy())
    assert not grade.ok and grade.message.startswith("case 1 (") and "ONNX Runtime never ran" in grade.message


def test_wrong_answers_are_graded_wrong_with_what_differs():
    def static_batch(m, e, i):  # exported without a dynamic axis: the batch is fixed to the example's
        s = _session(m, e, dynamic=False)
        return s.run(None, _feed(s, i))[0]

    static = onnx_runtime.grade(static_batch)
    assert not static.ok and static.message.startswith("case 3 (") and "dynamic" in static.message
    assert "InvalidArgument" in static.message or "invalid dimensions" in static.message.lower()

    def example_not_inputs(m, e, i):  # runs the export example instead of the inputs
        s = _session(m, e)
        return s.run(None, _feed(s, e))[0]

    wrong = onnx_runtime.grade(example_not_inputs)
    assert not wrong.ok and wrong.message.startswith("case 3 (")
    assert "returned shape (1, 4), expected (4, 4)" in wrong.message
    assert "run on `inputs`" in wrong.message

    def whole_list(m, e, i):  # session.run's list of outputs
        s = _session(m, e)
        return s.run(None, _feed(s, i))

    listed = onnx_runtime.grade(whole_list)
    assert not listed.ok and listed.message.startswith("case 1 (") and "returned a list of 1 item(s)" in listed.message

    def swapped_feed(m, e, i):  # names in reverse order: the two-input case gets each array under the other's name
        s = _session(m, e)
        return s.run(None, {a.name: t.numpy() for a, t in zip(reversed(s.get_inputs()), i, strict=True)})[0]

    swapped = onnx_runtime.grade(swapped_feed)
    assert not swapped.ok and swapped.message.startswith("case 2 (") and "raised" in swapped.message

    def as_float(m, e, i):  # every input cast to float32: the token ids' int64 input refuses it
        s = _session(m, e)
        return s.run(None, {a.name: t.float().numpy() for a, t in zip(s.get_inputs(), i, strict=True)})[0]

    floats = onnx_runtime.grade(as_float)
    assert not floats.ok and floats.message.startswith("case 5 (") and "raised" in floats.message


def test_an_output_that_differs_from_eager_is_graded_wrong_with_the_difference():
    grade = onnx_runtime.grade(lambda m, e, i: solutions.run_with_onnxruntime(m, e, i) + 1e-2)
    assert not grade.ok and grade.message.startswith("case 1 (")
    assert "differs from" in grade.message and "by up to 0.01" in grade.message


def test_an_exception_in_the_learners_code_is_reported_not_raised():
    grade = onnx_runtime.grade(lambda m, e, i: 1 / 0)
    assert not grade.ok and "ZeroDivisionError" in grade.message and str(grade).startswith("✗ ")


def test_the_session_counter_restores_onnxruntime():
    before = ort.InferenceSession.run
    with onnx_runtime.counting_session_runs() as runs:
        s = _session(torch.nn.Linear(2, 2), (torch.ones(1, 2),))
        s.run(None, _feed(s, (torch.ones(3, 2),)))
    assert len(runs) == 1 and ort.InferenceSession.run is before and "run" not in vars(ort.InferenceSession)


@pytest.mark.slow
def test_an_answer_built_on_the_torch_export_based_exporter_passes_too():
    def dynamo(model, example, inputs):  # labkit.convert's exporter: about a second per model
        shapes = tuple({0: torch.export.Dim.DYNAMIC} for _ in example)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model.eval(), example, dynamo=True, dynamic_shapes=shapes, verbose=False)
        s = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
        return s.run(None, _feed(s, inputs))[0]

    grade = onnx_runtime.grade(dynamo)
    assert grade.ok, grade.message
