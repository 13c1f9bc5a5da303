"""The BatchNorm-folding exercise: its grader passes the reference answer, fails the usual mistakes with the failing
case named, and never raises; the reference answer agrees with PyTorch's fuse_conv_bn_eval and with conv then
BatchNorm on random layers beyond the graded cases."""

import pytest
import torch
from torch import nn

from labkit.exercises import batchnorm_folding
from labkit.exercises.solutions import batchnorm_folding as solutions

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_solution_passes_and_agrees_with_pytorch_on_random_layers():
    assert batchnorm_folding.grade(solutions.fold_batchnorm).ok
    for seed, (cin, cout, groups) in enumerate([(1, 1, 1), (6, 9, 3), (16, 16, 16), (5, 7, 1)]):
        conv, bn = batchnorm_folding._pair(cin, cout, 100 + seed, kernel_size=3, groups=groups, padding=1,
                                           bias=seed % 2 == 0, affine=seed != 2, eps=10.0 ** -seed)  # fmt: skip
        got, want = solutions.fold_batchnorm(conv, bn), batchnorm_folding.reference(conv, bn)
        torch.testing.assert_close(got.weight, want.weight)
        torch.testing.assert_close(got.bias, want.bias)
        x = torch.randn(3, cin, 11, 11, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            torch.testing.assert_close(got(x), bn(conv(x)), rtol=1e-4, atol=1e-5)


def _folded(conv, bn, scale, shift):
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                       padding=conv.padding, dilation=conv.dilation, groups=conv.groups)  # fmt: skip
    with torch.no_grad():
        folded.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        folded.bias.copy_(shift)
    return folded


def _eps_outside(conv, bn):  # √σ² + ε instead of √(σ² + ε)
    scale = bn.weight / (bn.running_var.sqrt() + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    return _folded(conv, bn, scale, (bias - bn.running_mean) * scale + bn.bias)


def _bias_dropped(conv, bn):  # forgets the conv's own bias in b' = (b − μ)·s + β
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return _folded(conv, bn, scale, -bn.running_mean * scale + bn.bias)


def _defaults(conv, bn):  # the right weights in a new conv that keeps only the kernel size and groups
    right = solutions.fold_batchnorm(conv, bn)
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, groups=conv.groups)
    folded.weight, folded.bias = right.weight, right.bias
    return folded


def _scale_inputs(conv, bn):  # scales the weight along its input channels instead of its output rows
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    folded = solutions.fold_batchnorm(conv, bn)
    with torch.no_grad():
        folded.weight.copy_(conv.weight * scale[: conv.weight.shape[1]].reshape(1, -1, 1, 1))
    return folded


def test_wrong_answers_are_graded_wrong_with_what_differs():
    stub = batchnorm_folding.grade(lambda conv, bn: conv)
    assert not stub.ok and stub.message.startswith("case 1 (") and "folded weight differs" in stub.message
    eps = batchnorm_folding.grade(_eps_outside)
    assert not eps.ok and eps.message.startswith("case 3 (a large eps") and "folded weight differs" in eps.message
    dropped = batchnorm_folding.grade(_bias_dropped)
    assert not dropped.ok and dropped.message.startswith("case 1 (") and "folded bias is" in dropped.message
    defaults = batchnorm_folding.grade(_defaults)
    assert not defaults.ok and defaults.message.startswith("case 5 (stride") and "copy stride" in defaults.message
    assert batchnorm_folding.grade(_scale_inputs).message.startswith("case 1 (")
    assert "expected an nn.Conv2d" in batchnorm_folding.grade(lambda conv, bn: conv.weight).message


def test_an_exception_in_the_learners_code_is_reported_not_raised():
    crash = batchnorm_folding.grade(lambda conv, bn: conv.weight * bn.weight + conv.bias)  # (4, 3, 3, 3) × (4,)
    assert not crash.ok and "RuntimeError" in crash.message and str(crash).startswith("✗ case 1 (")
