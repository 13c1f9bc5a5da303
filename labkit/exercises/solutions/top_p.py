"""The top-p exercise's answer (Holtzman et al. 2020, section 3.1)."""

from __future__ import annotations

import torch


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probabilities sum to at least p; the rest become -inf.

    Args:
        logits: (batch, vocab). p: 0 < p <= 1.
    Returns:
        (batch, vocab): the kept logits unchanged, -inf elsewhere.
    """
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (batch, vocab), most likely first
    before = sorted_logits.softmax(-1).cumsum(-1) - sorted_logits.softmax(-1)  # probability mass above each token
    drop_sorted = before >= p  # a token goes once the tokens above it already reach p (the crossing one stays)
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))
