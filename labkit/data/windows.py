"""Fixed evaluation windows: the test plays tokenized and cut into equal (n_windows, window) rows."""

from __future__ import annotations

import torch

from labkit.data.corpus import shakespeare


def eval_tokens(tokenizer, budget: int = 2048, window: int = 256) -> torch.Tensor:
    """A fixed, deterministic evaluation budget from the held-out test plays.

    Args:
        tokenizer: a transformers tokenizer.
        budget: total tokens wanted (rounded down to whole windows).
        window: tokens per row.
    Returns:
        int64 tensor of shape (budget // window, window): consecutive windows from the start of the test split.
    Raises:
        ValueError: budget smaller than one window, or the test plays are too short for the budget.
    """
    if window < 1 or budget < window:
        raise ValueError(f"budget ({budget}) must be at least one window ({window}), and window >= 1")
    want = budget - budget % window
    ids = tokenizer(shakespeare("test", max_chars=budget * 8))["input_ids"][:want]
    if len(ids) < want:
        raise ValueError(f"the test plays give {len(ids)} tokens, fewer than the budget of {want}")
    return torch.tensor(ids, dtype=torch.long).view(-1, window)
