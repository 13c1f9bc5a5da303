"""Implementation exercise: symmetric int8 weight quantization with one scale per output channel, graded against
PyTorch's own per-channel quantizer.

A learner writes `quantize_per_channel_int8(w) -> (q, scale)`: for each row of a Linear weight (one output channel)
the scale is the row's largest magnitude divided by 127.5, the codes are the weights divided by it, rounded to the
nearest integer and clamped to [-128, 127], the zero point is 0 and `q * scale` is the weight the model computes
with. That is PyTorch's convention for symmetric qint8: `PerChannelMinMaxObserver` (qscheme per_channel_symmetric)
chooses scale = max(|min|, |max|) / ((quant_max - quant_min) / 2) = absmax / 127.5, floored at float32's eps so an
all-zero row still has a usable scale; the same scheme as torchao's int8 weight-only quantization. The codes are
graded against `torch.fake_quantize_per_channel_affine` (the per-channel quantizer quantization-aware training runs)
with the observer's scales. A weight exactly halfway between two codes (|w| = absmax gives ±127.5) may round
either way: at such ties the codes may differ by one. The cases catch the usual mistakes (one scale for the whole
tensor, absmax taken without the sign, a zero row dividing by zero, truncating instead of rounding, 127.5 rounding to
128 and wrapping around in int8, a scale computed in half precision).
Sources: PyTorch, torch.ao.quantization.observer (MinMaxObserver._calculate_qparams); Jacob et al. 2018,
"Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference", section 2.1.
"""

from __future__ import annotations

import torch

from labkit.exercises import Case, Grade, grade_cases

JUDGE = "PyTorch's per-channel symmetric qint8 quantizer (PerChannelMinMaxObserver + fake_quantize_per_channel_affine)"
QMIN, QMAX = -128, 127
TIE = 1e-3  # |w / scale| this close to k + 0.5 is a tie: either neighbour is a correct code


def reference(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch's per-channel symmetric int8 quantization of a weight matrix.

    Args:
        w: (out_features, in_features) weight, any float dtype (upcast to float32 first, as the observer needs).
    Returns:
        (q, scale): q (out_features, in_features) int8 codes, scale (out_features,) float32, zero point 0, so that
        `q * scale[:, None]` is the fake-quantized weight.
    """
    from torch.ao.quantization.observer import PerChannelMinMaxObserver

    w = w.float()
    observer = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    observer(w)
    scale, zero_point = observer.calculate_qparams()  # (out,) float32, (out,) zeros
    fake = torch.fake_quantize_per_channel_affine(w, scale, zero_point.int(), 0, QMIN, QMAX)
    return (fake / scale[:, None]).round().to(torch.int8), scale


def _rows(gen: torch.Generator, out: int, inp: int, magnitudes: torch.Tensor | None = None) -> torch.Tensor:
    w = torch.randn(out, inp, generator=gen)
    return w if magnitudes is None else w * magnitudes[:, None]


def cases() -> list[Case]:
    """The grader's inputs: (out_features, in_features) weights, each with what it tests."""
    gen = torch.Generator().manual_seed(0)
    spread = _rows(gen, 6, 32, torch.tensor([0.01, 0.1, 1.0, 3.0, 0.5, 20.0]))
    zero_row = _rows(gen, 4, 16)
    zero_row[2] = 0.0
    outlier = _rows(gen, 3, 64) * 0.05
    outlier[1, 17] = 8.0  # one large weight: its row's other weights fall to a few codes around 0
    negative = -_rows(gen, 4, 24).abs()
    negative[:, 0] = 0.25  # the largest magnitude of every row is negative: absmax is max |w|, not max w
    tie = _rows(gen, 2, 16)
    tie[0, 3], tie[1, 5] = 127.5, 2.0  # row 0: scale exactly 1.0, so 127.5 / scale = 127.5 rounds to 128: clamp it
    return [
        Case("rows of very different magnitudes: one scale per output channel (row), not one per tensor", (spread,)),
        Case("a row of zeros: its scale must stay positive (no division by zero, no NaN)", (zero_row,)),
        Case("a row with one outlier: the outlier sets that row's scale alone", (outlier,)),
        Case("negative-dominant rows: the scale comes from the largest |w|, not the largest w", (negative,)),
        Case("a weight of exactly absmax: 127.5 rounds (half to even) to 128, clamp it to 127 before int8",
             (tie,)),
        Case("fp16 weights: compute the scale and the codes in float32", (_rows(gen, 8, 32).half(),)),
        Case("bf16 weights: compute the scale and the codes in float32", (_rows(gen, 8, 32).bfloat16(),)),
    ]  # fmt: skip


def _scale_error(scale, want: torch.Tensor, w: torch.Tensor) -> str | None:
    out = want.shape[0]
    if not isinstance(scale, torch.Tensor) or scale.shape != (out,):
        shape = tuple(scale.shape) if isinstance(scale, torch.Tensor) else type(scale).__name__
        return f"scale is {shape}, expected a tensor of shape ({out},): one scale per output channel (row)"
    scale = scale.detach().float()
    bad = ~(torch.isfinite(scale) & (scale > 0))
    if bad.any():
        r = int(bad.nonzero()[0])
        return (f"row {r}'s scale is {scale[r].item():g}; every scale must be positive and finite (an all-zero row "
                f"needs a floor, torch uses float32's eps {torch.finfo(torch.float32).eps:.3g})")
    absmax = w.float().abs().amax(dim=1)
    live = absmax > 0  # an all-zero row: any positive scale gives codes of 0
    off = live & ~torch.isclose(scale, want, rtol=1e-6, atol=0)
    if off.any():
        r = int(off.nonzero()[0])
        ratio = (absmax[r] / scale[r]).item()
        if abs(ratio - 127) < 1e-2:
            why = "yours is absmax / 127; torch's qint8 divides by (quant_max - quant_min) / 2 = 127.5"
        elif abs(ratio / 127.5 - 1) < 1e-2:
            why = "close, but rounded: compute it from float32 values, in float32"
        else:
            why = f"yours is absmax / {ratio:.4g}"
        return f"row {r}'s scale is {scale[r].item():.7g}, torch's is {want[r].item():.7g} = absmax / 127.5 ({why})"
    return None


def _compare(got, want, case: Case) -> str | None:
    (w,) = case.args
    q_want, scale_want = want
    if not isinstance(got, tuple | list) or len(got) != 2:
        return f"returned {type(got).__name__}, expected a tuple (q, scale)"
    q, scale = got
    if not isinstance(q, torch.Tensor) or q.shape != w.shape:
        shape = tuple(q.shape) if isinstance(q, torch.Tensor) else type(q).__name__
        return f"q is {shape}, expected a tensor shaped like the weight, {tuple(w.shape)}"
    if q.dtype != torch.int8:
        return f"q has dtype {q.dtype}, expected torch.int8 (cast the rounded, clamped codes)"
    if wrong := _scale_error(scale, scale_want, w):
        return wrong
    x = w.float() / scale_want[:, None]  # the unrounded codes
    tie = ((x - x.floor()) - 0.5).abs() < TIE
    diff = (q.long() - q_want.long()).abs()
    bad = (diff > 1) | ((diff == 1) & ~tie)
    if bad.any():
        r, c = (int(i) for i in bad.nonzero()[0])
        hint = ""
        if torch.equal(q.long(), x.trunc().clamp(QMIN, QMAX).long()):
            hint = ": you truncated toward zero, round to the nearest integer (torch.round) before casting"
        elif diff.max() > 128:
            hint = ": a code wrapped around in int8, clamp to [-128, 127] before casting"
        return (f"{int(bad.sum())} of {q.numel()} codes differ; row {r}, column {c}: yours {int(q[r, c])}, torch's "
                f"{int(q_want[r, c])} (w / scale = {x[r, c].item():.4f}){hint}")
    return None


def grade(quantize_per_channel_int8) -> Grade:
    """Run a learner's per-channel int8 quantizer on `cases()` and compare each result with `reference`.

    Args:
        quantize_per_channel_int8: w (out_features, in_features), any float dtype -> (q, scale): q int8 of w's
            shape, scale float (out_features,), zero point 0.
    Returns:
        Grade: ok only if every case's scales match torch's (rtol 1e-6; an all-zero row may have any positive
        scale) and its codes match torch's (off by one only at an exact tie); otherwise the first failing case and
        what differs. An exception inside the learner's code is reported, not raised.
    """
    return grade_cases(quantize_per_channel_int8, cases(), reference, _compare, JUDGE)
