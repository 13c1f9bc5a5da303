"""Implementation exercise: folding an inference-mode BatchNorm into the convolution before it, graded against
PyTorch's own `torch.nn.utils.fusion.fuse_conv_bn_eval` (what ONNX Runtime's basic level does to the graph).

A learner writes `fold_batchnorm(conv, bn) -> nn.Conv2d`; `grade` runs it on cases chosen to catch the usual
mistakes (a conv without a bias, eps added outside the square root, BatchNorm without affine parameters, a new conv
that forgets the stride, padding, dilation or groups of the old one, grouped and depthwise weights) and compares the
folded weight, the folded bias and the folded conv's output with PyTorch's.

In eval mode BatchNorm is y = γ·(x − μ)/√(σ² + ε) + β per channel, with μ, σ² its running statistics; after a conv
(W, b) that is the conv with W' = W·s (row c of W scaled by s_c) and b' = (b − μ)·s + β, where s = γ/√(σ² + ε)
(Ioffe & Szegedy 2015, "Batch Normalization", section 3.1: at inference the normalisation is a fixed linear map;
Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference",
section 3.2, folds it into the weights).
"""

from __future__ import annotations

import torch
from torch import nn

from labkit.exercises import Case, Grade, grade_cases

JUDGE = "torch.nn.utils.fusion.fuse_conv_bn_eval"


def reference(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """PyTorch's folded conv: one Conv2d computing bn(conv(x)) with bn in eval mode.

    Args:
        conv: the convolution (eval mode). bn: the BatchNorm2d after it (eval mode, over conv's output channels).
    Returns:
        a new nn.Conv2d with the folded weight (out, in / groups, kh, kw) and bias (out,).
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    return fuse_conv_bn_eval(conv, bn)


def _pair(in_ch: int, out_ch: int, seed: int, *, bias: bool = True, affine: bool = True, eps: float = 1e-5,
          **conv_kw) -> tuple[nn.Conv2d, nn.BatchNorm2d]:  # fmt: skip
    """A conv and a BatchNorm after it, both in eval mode, with random weights and running statistics."""
    gen = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(in_ch, out_ch, bias=bias, **conv_kw)
    bn = nn.BatchNorm2d(out_ch, eps=eps, affine=affine)
    with torch.no_grad():
        for p in conv.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        bn.running_mean.copy_(torch.randn(out_ch, generator=gen))  # what training left: far from 0 and 1
        bn.running_var.copy_(torch.rand(out_ch, generator=gen) * 2 + 0.05)
        if affine:
            bn.weight.copy_(torch.randn(out_ch, generator=gen))
            bn.bias.copy_(torch.randn(out_ch, generator=gen))
    return conv.eval(), bn.eval()


def cases() -> list[Case]:
    """The grader's inputs: (conv, bn), each with what it tests."""
    return [
        Case("a conv with a bias, BatchNorm with running statistics and γ, β", _pair(3, 4, 0, kernel_size=3)),
        Case("a conv without a bias (the usual one before a BatchNorm): the folded conv needs one",
             _pair(3, 4, 1, bias=False, kernel_size=3)),
        Case("a large eps: divide by √(σ² + ε), not √σ² + ε", _pair(2, 3, 2, eps=0.5, kernel_size=1)),
        Case("BatchNorm without γ, β (affine=False): s = 1/√(σ² + ε)", _pair(3, 4, 3, affine=False, kernel_size=3)),
        Case("stride, padding and dilation are kept", _pair(3, 5, 4, kernel_size=3, stride=2, padding=2, dilation=2)),
        Case("a grouped conv (groups = 2): each output channel's weight is scaled by its own s",
             _pair(4, 6, 5, kernel_size=3, groups=2, padding=1)),
        Case("a depthwise conv (groups = channels), weight (C, 1, k, k)",
             _pair(8, 8, 6, kernel_size=3, groups=8, padding=1, bias=False)),
    ]  # fmt: skip


def _input(conv: nn.Conv2d) -> torch.Tensor:
    """A fixed (2, in, 9, 9) input for the conv (9 × 9 fits every kernel, stride and dilation above)."""
    return torch.randn(2, conv.in_channels, 9, 9, generator=torch.Generator().manual_seed(7))


def _compare(got, want: nn.Conv2d, case: Case) -> str | None:
    if not isinstance(got, nn.Conv2d):
        return f"returned {type(got).__name__}, expected an nn.Conv2d"
    if got.weight.shape != want.weight.shape:
        return f"the folded weight has shape {tuple(got.weight.shape)}, expected {tuple(want.weight.shape)}"
    if not torch.allclose(got.weight, want.weight, rtol=1e-5, atol=1e-6):
        worst = (got.weight - want.weight).abs().max().item()
        return f"the folded weight differs from {JUDGE}'s by up to {worst:.3g}"
    if got.bias is None:
        return "the folded conv has no bias: the BatchNorm's shift (b − μ)·s + β must go there"
    if got.bias.shape != want.bias.shape or not torch.allclose(got.bias, want.bias, rtol=1e-5, atol=1e-6):
        got_b, want_b = (b.detach().numpy().round(4).tolist() for b in (got.bias, want.bias))
        return f"the folded bias is {got_b}, expected {want_b}"
    conv, bn = case.args
    x = _input(conv)
    with torch.no_grad():
        try:
            out = got(x)
        except Exception as err:  # noqa: BLE001 - the learner's module: report why it cannot run
            return f"the folded conv fails on a {tuple(x.shape)} input: {type(err).__name__}: {err}"
        expected = bn(conv(x))  # what the folded conv must compute: the two layers it replaces
    if out.shape != expected.shape:
        return (f"the folded conv's output has shape {tuple(out.shape)}, conv then BatchNorm give "
                f"{tuple(expected.shape)}: copy stride, padding, dilation and groups")  # fmt: skip
    if not torch.allclose(out, expected, rtol=1e-4, atol=1e-5):
        return f"the folded conv's output differs from conv then BatchNorm by up to {(out - expected).abs().max():.3g}"
    return None


def grade(fold_batchnorm) -> Grade:
    """Run a learner's fold_batchnorm on `cases()` and compare each result with `reference`.

    Args:
        fold_batchnorm: (conv: nn.Conv2d, bn: nn.BatchNorm2d, both in eval mode) -> one nn.Conv2d computing
            bn(conv(x)).
    Returns:
        Grade: ok only if every case's folded weight and bias agree with PyTorch's and the folded conv's output
        agrees with conv then BatchNorm; otherwise the first failing case and what differs. An exception inside
        the learner's code is reported, not raised.
    """
    return grade_cases(fold_batchnorm, cases(), reference, _compare, JUDGE)
