"""Beam search from scratch, keeping the tree: every running beam at every step, and the finished hypotheses.

It follows transformers 5's beam search, so its best hypothesis equals `generate(num_beams=...)` token for token:
2·beams candidates per step, a candidate ending in EOS finishes with score log p / length**length_penalty, and
every running beam finishes at the length limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from labkit.decoding.configs import check_param


@dataclass
class BeamNode:
    """One running beam after one step: a dot of the beam tree."""

    step: int
    beam: int  # slot after this step
    parent: int  # slot at the previous step (-1 for the prompt)
    token: str
    token_id: int
    score: float  # cumulative log-probability of the beam


@dataclass
class BeamTrace:
    """A beam search's result and its tree."""

    token_ids: list[int]  # the best finished hypothesis (new tokens only)
    score: float  # its length-normalised score
    nodes: list[BeamNode] = field(default_factory=list)  # every running beam at every step: the tree
    finished: list[tuple[float, list[int]]] = field(default_factory=list)  # (normalised score, new tokens)


@torch.no_grad()
def beam_step_through(model, tokenizer, prompt_ids: torch.Tensor, num_beams: int = 4, steps: int = 12,
                      length_penalty: float = 1.0) -> BeamTrace:
    """Beam search that records each step's beams.

    Args:
        model: a transformers causal LM with a KV cache. tokenizer: its tokenizer (to show tokens, find EOS).
        prompt_ids: (1, prompt_len) prompt token ids.
        num_beams: beams kept per step (>= 1). steps: new tokens at most.
        length_penalty: exponent of the length normalisation of finished scores.
    Returns:
        BeamTrace: the best hypothesis, its score, the tree (num_beams nodes per step but the last) and every
        finished hypothesis.
    Raises:
        ValueError: for num_beams < 1.
    """
    check_param("num_beams", num_beams, num_beams >= 1, "num_beams >= 1")
    eos = tokenizer.eos_token_id
    out = model(input_ids=prompt_ids.to(model.device), use_cache=True)
    cache = out.past_key_values
    cache.batch_repeat_interleave(num_beams)
    logprobs = out.logits[:, -1].float().log_softmax(-1).cpu().repeat(num_beams, 1)  # (beams, vocab)
    scores = torch.full((num_beams,), -1e9)
    scores[0] = 0.0  # all beams start identical: only the first may expand
    seqs: list[list[int]] = [[] for _ in range(num_beams)]
    trace = BeamTrace([], -math.inf)
    for step in range(steps):
        vocab = logprobs.shape[1]
        flat = (scores[:, None] + logprobs).view(-1)
        top = torch.topk(flat, 2 * num_beams)
        last = step == steps - 1
        running: list[tuple[int, int, float]] = []
        for rank, (value, index) in enumerate(zip(top.values.tolist(), top.indices.tolist(), strict=True)):
            parent, token = divmod(index, vocab)
            if (token == eos or last) and rank < num_beams:  # a finished hypothesis
                trace.finished.append((value / ((step + 1) ** length_penalty), seqs[parent] + [token]))
            elif token != eos and len(running) < num_beams:
                running.append((parent, token, value))
        if last or not running:
            break
        parents = torch.tensor([p for p, _, _ in running])
        seqs = [seqs[p] + [t] for p, t, _ in running]
        scores = torch.tensor([v for _, _, v in running])
        trace.nodes += [BeamNode(step, slot, p, tokenizer.decode([t]), t, v) for slot, (p, t, v) in enumerate(running)]
        cache.reorder_cache(parents.to(model.device))
        tokens = torch.tensor([[t] for _, t, _ in running], device=model.device)
        logprobs = model(input_ids=tokens, past_key_values=cache, use_cache=True).logits[:, -1].float()
        logprobs = logprobs.log_softmax(-1).cpu()
    best_score, best = max(trace.finished, key=lambda f: f[0])
    trace.token_ids, trace.score = best, best_score
    return trace
