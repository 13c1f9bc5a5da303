"""The per-channel int8 exercise: its grader passes the reference answer, fails the usual mistakes with the failing
case named, and never raises; the reference answer agrees with PyTorch's per-channel quantizer beyond the graded
cases, codes and dequantized weights alike."""

import torch

from labkit.exercises import int8_quantization as int8
from labkit.exercises.solutions import int8_quantization as solutions


def test_the_solution_passes_and_agrees_with_torch_on_random_weights():
    assert int8.grade(solutions.quantize_per_channel_int8).ok
    gen = torch.Generator().manual_seed(1)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        w = (torch.randn(48, 96, generator=gen) * torch.rand(48, 1, generator=gen) * 5).to(dtype)
        q, scale = solutions.quantize_per_channel_int8(w)
        q_want, scale_want = int8.reference(w)
        assert torch.equal(scale, scale_want)
        assert (q.long() - q_want.long()).abs().max() <= 1  # off by one only at the ±127.5 ties
        fake = torch.fake_quantize_per_channel_affine(w.float(), scale_want, torch.zeros(48, dtype=torch.int32), 0,
                                                      -128, 127)  # the dequantized weights, by torch
        differ = ~torch.isclose(q.float() * scale[:, None], fake, rtol=1e-6, atol=0)
        assert torch.equal(differ, q != q_want)  # they differ exactly where a tie rounded the other way
        assert ((q.float() * scale[:, None] - w.float()).abs() <= scale[:, None] / 2 * (1 + 1e-4)).all()  # rounding


def _per_tensor(w):  # one scale for the whole tensor, repeated per row
    scale = w.float().abs().max() / 127.5
    return (w.float() / scale).round().clamp(-128, 127).to(torch.int8), scale.expand(w.shape[0])


def _no_floor(w):  # a zero row gets scale 0
    w = w.float()
    scale = w.abs().amax(dim=1) / 127.5
    return (w / scale[:, None]).round().clamp(-128, 127).to(torch.int8), scale


def _truncated(w):  # the int8 cast truncates toward zero instead of rounding
    q, scale = solutions.quantize_per_channel_int8(w)
    return (w.float() / scale[:, None]).clamp(-128, 127).to(torch.int8), scale


def _in_half_precision(w):  # scale computed in the weight's own dtype
    scale = (w.abs().amax(dim=1) / 127.5).clamp(min=1e-7)
    return (w / scale[:, None]).round().clamp(-128, 127).to(torch.int8), scale.float()


def test_wrong_answers_are_graded_wrong_with_what_differs():
    stub = int8.grade(lambda w: (torch.zeros_like(w, dtype=torch.int8), torch.ones(w.shape[0])))
    assert not stub.ok and stub.message.startswith("case 1 (") and "row 0's scale is 1," in stub.message
    per_tensor = int8.grade(_per_tensor)
    assert not per_tensor.ok and per_tensor.cases == 1 and "absmax / 127.5" in per_tensor.message
    no_floor = int8.grade(_no_floor)
    assert not no_floor.ok and no_floor.cases == 2 and "row 2's scale is 0;" in no_floor.message
    truncated = int8.grade(_truncated)
    assert not truncated.ok and "you truncated toward zero" in truncated.message
    half = int8.grade(_in_half_precision)
    assert not half.ok and half.cases == 6 and "in float32" in half.message
    by_127 = int8.grade(lambda w: (solutions.quantize_per_channel_int8(w)[0], w.float().abs().amax(1) / 127))
    assert not by_127.ok and "yours is absmax / 127;" in by_127.message
    wide = int8.grade(lambda w: tuple(x.long() if x.dtype == torch.int8 else x
                                      for x in solutions.quantize_per_channel_int8(w)))  # int64 codes
    assert not wide.ok and "expected torch.int8" in wide.message


def test_a_code_that_wraps_around_is_named_and_either_tie_is_accepted():
    def unclamped(w):  # 127.5 rounds to 128, which int8 cannot hold
        q, scale = solutions.quantize_per_channel_int8(w)
        return (w.float() / scale[:, None]).round().to(torch.int8), scale

    wrapped = int8.grade(unclamped)
    assert not wrapped.ok and "clamp to [-128, 127]" in wrapped.message
    symmetric = int8.grade(lambda w: (solutions.quantize_per_channel_int8(w)[0].clamp(-127, 127),
                                      solutions.quantize_per_channel_int8(w)[1]))  # -127.5 -> -127: also correct
    assert symmetric.ok


def test_an_exception_in_the_learners_code_is_reported_not_raised():
    grade = int8.grade(lambda w: w.no_such_method())
    assert not grade.ok and "AttributeError" in grade.message and str(grade).startswith("✗ ")
