"""The one sampling rule: temperature, then the top-k / top-p / min-p cut-offs, then a draw.

Used by the step-through traces (to show which tokens each cut-off keeps) and by the server (to pick each request's
next token), so the course has one definition of top-p. The order is transformers' warper order.
"""

from __future__ import annotations

import math

import torch


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  min_p: float | None = None) -> torch.Tensor:
    """transformers' warper order: temperature, top-k, top-p, min-p. Removed tokens get -inf. (vocab,)"""
    logits = logits / temperature
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=False)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum <= 1 - top_p  # the low tail whose mass is at most 1 - p
        drop[-1] = False  # always keep the most likely token
        logits = logits.masked_fill(drop.scatter(0, order, drop), -math.inf)
    if min_p is not None:
        probs = logits.softmax(-1)
        logits = logits.masked_fill(probs < min_p * probs.max(), -math.inf)
    return logits


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                min_p: float | None = None, generator: torch.Generator | None = None) -> int:
    """One token id from a row of logits (vocab,): argmax when temperature <= 0, else a draw from the filtered
    distribution (`filter_logits`), with `generator` for reproducible draws."""
    if temperature <= 0:
        return int(logits.argmax(-1))
    probs = filter_logits(logits.float(), temperature, top_k, top_p, min_p).softmax(-1)
    return int(torch.multinomial(probs, 1, generator=generator))
