"""The BatchNorm-folding exercise's answer (Jacob et al. 2018, section 3.2)."""

from __future__ import annotations

import copy

import torch
from torch import nn


@torch.no_grad()
def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """One conv computing bn(conv(x)) for an eval-mode BatchNorm: W' = W·s, b' = (b − μ)·s + β, s = γ/√(σ² + ε).

    Args:
        conv: the convolution; its weight is (out, in / groups, kh, kw). bn: the BatchNorm2d over its out channels.
    Returns:
        a new nn.Conv2d (same stride, padding, dilation, groups) with the folded weight and a bias (out,).
    """
    gamma = bn.weight if bn.affine else torch.ones_like(bn.running_mean)  # (out,)
    beta = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)  # (out,)
    scale = gamma / torch.sqrt(bn.running_var + bn.eps)  # s: (out,), one per output channel
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)  # (out,)
    folded = copy.deepcopy(conv)  # keeps stride, padding, dilation and groups
    folded.weight = nn.Parameter(conv.weight * scale.reshape(-1, 1, 1, 1))  # row c of W times s_c
    folded.bias = nn.Parameter((bias - bn.running_mean) * scale + beta)
    return folded
