"""The one sampling rule: temperature, then the top-k / top-p / min-p cut-offs, then a draw.

Used by the step-through traces (to show which tokens each cut-off keeps) and by the server (to pick each request's
next token), so the course has one definition of top-p. The order is transformers' warper order
(TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, MinPLogitsWarper).
"""

from __future__ import annotations

import math

import torch


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  min_p: float | None = None) -> torch.Tensor:
    """Apply temperature, then top-k, top-p and min-p; the tokens a cut-off removes get -inf.

    Args:
        logits: (vocab,) next-token logits of one sequence.
        temperature: divides the logits (> 0; < 1 sharpens, > 1 flattens).
        top_k: keep the k largest (0: off). top_p: keep the smallest set of most likely tokens holding at least
            p of the probability (1.0: off). min_p: keep tokens at least min_p × the top probability (None: off).
    Returns:
        (vocab,) tempered logits with -inf where a token was cut; softmax of it is the sampling distribution.
    """
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
    """Pick one next token from a row of logits.

    Args:
        logits: (vocab,) next-token logits of one sequence.
        temperature: <= 0 means greedy (argmax); otherwise the draw is from softmax(filter_logits(...)).
        top_k, top_p, min_p: the cut-offs of `filter_logits`.
        generator: a seeded torch.Generator for reproducible draws (CPU).
    Returns:
        the token id (int).
    """
    if temperature <= 0:
        return int(logits.argmax(-1))
    probs = filter_logits(logits.float(), temperature, top_k, top_p, min_p).softmax(-1)
    return int(torch.multinomial(probs, 1, generator=generator))
