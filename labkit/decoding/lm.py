"""What every from-scratch decoding loop shares with `generate()`: the end-of-text ids it stops at and the forward
pass that gives the next-token logits, computed the way transformers 5 computes them (generation/utils.py)."""

from __future__ import annotations

import inspect

import torch


def eos_ids(model, eos_token_id: int | list[int] | None = None) -> set[int]:
    """The end-of-text ids `generate()` stops at: the argument, else the model's generation config.

    Args:
        model: a transformers causal LM. eos_token_id: an id or a list of ids; None: the model's
            `generation_config.eos_token_id` (an int, a list or None); [] means "never stop early".
    Returns:
        the set of ids (empty: the loop runs to its length limit, as generate() does without an EOS id).
    """
    if eos_token_id is None:
        eos_token_id = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos_token_id is None:
        return set()
    return {int(eos_token_id)} if isinstance(eos_token_id, int) else {int(e) for e in eos_token_id}


@torch.no_grad()
def next_logits(model, input_ids: torch.Tensor, cache=None) -> tuple[torch.Tensor, object]:
    """One cached forward pass; the logits of the last position only, in float32, on `input_ids`' device.

    As generate() does: `logits_to_keep=1` when the model takes it (so the LM head multiplies one row per sequence,
    the same arithmetic as generate()'s), then `.to(float32)` on the device of the ids.

    Args:
        model: a transformers causal LM. input_ids: (batch, new) ids to feed (the prompt, then one token per step).
        cache: the KV cache returned by the previous call (None: start one).
    Returns:
        (logits (batch, vocab) float32, the updated cache).
    """
    kwargs = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    out = model(input_ids=input_ids.to(model.device), cache=cache, use_cache=True, **kwargs)
    return out.logits[:, -1].to(dtype=torch.float32, device=input_ids.device), out.cache
