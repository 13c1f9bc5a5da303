"""Decoding from scratch, recording why each token was picked: `step_through` runs any method of `config_for`
with the same parameters as `generate()` and returns a `Trace` (or a `BeamTrace` for beam search)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from labkit.decoding.beam_search import BeamTrace, beam_step_through
from labkit.decoding.configs import config_for
from labkit.decoding.lm import eos_ids, next_logits
from labkit.decoding.sampling import filter_logits, sample_next


@dataclass
class Step:
    """One decoding decision."""

    position: int
    candidates: list[tuple[str, float]]  # top-10 (token, probability after temperature, before the cut-off)
    kept: int  # how many tokens survived the cut-off
    kept_mass: float  # their total (tempered) probability before renormalising
    chosen: str
    chosen_id: int
    chosen_prob: float  # under the model itself (temperature 1)
    cum_logprob: float  # sum of log chosen_prob so far


@dataclass
class Trace:
    """A from-scratch decode: the prompt, the new tokens, one Step per token and the decoded text."""

    prompt_ids: list[int]
    token_ids: list[int]
    steps: list[Step] = field(default_factory=list)
    text: str = ""


def step_through(model, tokenizer, prompt: str | torch.Tensor, method: str = "greedy", steps: int = 16,
                 seed: int = 0, **params) -> Trace | BeamTrace:
    """Decode `steps` tokens with `method`, from scratch, recording why each token was chosen.

    Args:
        model: a transformers causal LM. tokenizer: its tokenizer.
        prompt: text, or (1, prompt_len) token ids.
        method: a name of `config_for` except "prompt-lookup" (it changes speed, not choices).
        steps: new tokens at most (stops at EOS). seed: the sampling generator's seed.
        **params: the method's parameters, exactly as `config_for` takes them (p=0.9, temperature=0.8, ...).
    Returns:
        Trace (greedy, sampling, repetition penalty) or BeamTrace (beam search, the tree).
    Raises:
        ValueError: for an unknown method, a parameter out of range, or "prompt-lookup".
    """
    cfg = config_for(method, **params)  # validates the parameters exactly as the generate() path does
    ids = prompt if isinstance(prompt, torch.Tensor) else tokenizer(prompt, return_tensors="pt")["input_ids"]
    if (cfg.num_beams or 1) > 1:
        return beam_step_through(model, tokenizer, ids, cfg.num_beams, steps, cfg.length_penalty, cfg.early_stopping,
                                 cfg.no_repeat_ngram_size or 0)
    if cfg.prompt_lookup_num_tokens:
        raise ValueError("prompt-lookup changes speed, not choices: step through 'greedy' to see its tokens")
    return decode_loop(model, tokenizer, ids, steps, bool(cfg.do_sample), cfg.temperature or 1.0, cfg.top_k or 0,
                       cfg.top_p or 1.0, cfg.min_p, cfg.repetition_penalty or 1.0, seed)


@torch.no_grad()
def decode_loop(model, tokenizer, prompt_ids: torch.Tensor, steps: int = 16, do_sample: bool = False,
                temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, min_p: float | None = None,
                repetition_penalty: float = 1.0, seed: int = 0) -> Trace:
    """A decoding loop with a KV cache that records every decision (greedy, or a draw by `sample_next`).

    Args:
        model: a transformers causal LM. tokenizer: its tokenizer. prompt_ids: (1, prompt_len) prompt ids.
        steps: new tokens at most; stops after an end-of-text id of the model's generation config, as generate()
            does. do_sample: draw (True) or argmax (False).
        temperature, top_k, top_p, min_p: the sampling rule of `filter_logits`.
        repetition_penalty: transformers' rule, applied to every token already present (1.0: off).
        seed: the draw generator's seed (a CPU generator seeded like `torch.manual_seed(seed)`, so with the same
            seed generate(do_sample=True) on the CPU draws the same tokens). The model may be on any device: each
            forward runs there, and the choices are made on the CPU.
    Returns:
        Trace with one Step per new token.
    """
    gen = torch.Generator().manual_seed(seed)
    eos = eos_ids(model)
    prompt_ids = prompt_ids.cpu()
    logits, cache = next_logits(model, prompt_ids)
    logits = logits[0]  # (vocab,)
    trace, cum, seen = Trace(prompt_ids[0].tolist(), []), 0.0, prompt_ids[0].tolist()
    for i in range(steps):
        if repetition_penalty != 1.0:  # transformers' rule: shrink the logits of every token already present
            prev = torch.tensor(sorted(set(seen)))
            old = logits[prev]
            logits[prev] = torch.where(old > 0, old / repetition_penalty, old * repetition_penalty)
        probs = logits.softmax(-1)
        if do_sample:
            shown = (logits / temperature).softmax(-1)  # what the sampler sees before the cut-off
            kept = torch.isfinite(filter_logits(logits, temperature, top_k, top_p, min_p))
            choice = sample_next(logits, temperature, top_k, top_p, min_p, generator=gen)
            n_kept, kept_mass = int(kept.sum()), float(shown[kept].sum())
        else:
            shown, choice = probs, int(logits.argmax())
            n_kept, kept_mass = 1, float(probs[choice])
        cum += math.log(probs[choice].item())
        top = torch.topk(shown, 10)
        trace.steps.append(Step(
            i, [(tokenizer.decode([t]), p) for t, p in zip(top.indices.tolist(), top.values.tolist(), strict=True)],
            n_kept, kept_mass, tokenizer.decode([choice]), choice, float(probs[choice]), cum,
        ))  # fmt: skip
        trace.token_ids.append(choice)
        seen.append(choice)
        if choice in eos:
            break
        logits, cache = next_logits(model, torch.tensor([[choice]]), cache)
        logits = logits[0]
    trace.text = tokenizer.decode(trace.token_ids, skip_special_tokens=True)
    return trace


def text_metrics(token_ids: list[int]) -> dict[str, float]:
    """Diversity and repetition of a token sequence.

    Args:
        token_ids: the generated ids.
    Returns:
        distinct_1 / distinct_2: share of unique unigrams / bigrams (Li et al., 2016); repetition_4gram: share of
        4-grams that repeat an earlier one; length: number of tokens.
    """
    def distinct(n: int) -> float:
        grams = [tuple(token_ids[i : i + n]) for i in range(len(token_ids) - n + 1)]
        return len(set(grams)) / len(grams) if grams else 0.0

    four = [tuple(token_ids[i : i + 4]) for i in range(len(token_ids) - 3)]
    repeated = 1 - len(set(four)) / len(four) if four else 0.0
    return {"distinct_1": distinct(1), "distinct_2": distinct(2), "repetition_4gram": repeated,
            "length": len(token_ids)}
