"""The row-parallel linear exercise's answer (Megatron-LM, Shoeybi et al. 2019, section 3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def row_parallel_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                        world_size: int) -> torch.Tensor:  # fmt: skip
    """y = x Wᵀ + b computed as `world_size` ranks would: rank r holds input features [r·in/p, (r+1)·in/p) of the
    weight, multiplies its slice of x, the partial products are summed (the all-reduce), the bias added once.

    Args:
        x: (..., in). weight: (out, in). bias: (out,) or None. world_size: p, the simulated ranks.
    Returns:
        (..., out), equal to F.linear(x, weight, bias) up to rounding.
    Raises:
        ValueError: in is not divisible by world_size.
    """
    if weight.shape[1] % world_size:
        raise ValueError(f"{weight.shape[1]} input features do not split over {world_size} ranks")
    weight_shards = weight.chunk(world_size, dim=1)  # p × (out, in/p): each rank's columns of W
    x_shards = x.chunk(world_size, dim=-1)  # p × (..., in/p): each rank's slice of the activation
    partials = [F.linear(x_r, w_r) for x_r, w_r in zip(x_shards, weight_shards, strict=True)]  # p × (..., out)
    y = torch.stack(partials).sum(0)  # the all-reduce: every rank ends with the sum
    return y if bias is None else y + bias  # once, after the sum: on every rank it would count p times
