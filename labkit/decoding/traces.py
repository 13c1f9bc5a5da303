"""Decoding methods: each a plain function building a `GenerationConfig` for `model.generate()`,
plus from-scratch versions that show *why* each token was picked (`step_through`), contrastive
search (no longer shipped by transformers 5) and greedy speculative decoding with its acceptance rate.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import GenerationConfig

from labkit.decoding.sampling import filter_logits  # noqa: F401  (the one cut-off rule)


def _check(name: str, value: float, ok: bool, valid: str) -> None:
    if not ok:
        raise ValueError(f"{name}={value!r} is out of range; valid: {valid}")


def _sampling(temperature: float, top_k: int = 0, top_p: float = 1.0, min_p: float | None = None, **kw):
    _check("temperature", temperature, temperature > 0, "temperature > 0 when sampling (use greedy for 0)")
    _check("top_k", top_k, top_k >= 0, "top_k >= 1 (0 disables it)")
    _check("top_p", top_p, 0 < top_p <= 1, "0 < top_p <= 1")
    if min_p is not None:
        _check("min_p", min_p, 0 <= min_p <= 1, "0 <= min_p <= 1")
    return GenerationConfig(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, **kw)


def greedy(max_new_tokens: int = 32) -> GenerationConfig:
    return GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens)


def beam(num_beams: int = 4, no_repeat_ngram_size: int = 0, length_penalty: float = 1.0,
         num_return_sequences: int = 1, max_new_tokens: int = 32) -> GenerationConfig:
    _check("num_beams", num_beams, num_beams >= 1, "num_beams >= 1")
    _check("num_return_sequences", num_return_sequences, 1 <= num_return_sequences <= num_beams,
           "1 <= num_return_sequences <= num_beams")
    return GenerationConfig(do_sample=False, num_beams=num_beams, no_repeat_ngram_size=no_repeat_ngram_size,
                            length_penalty=length_penalty, num_return_sequences=num_return_sequences,
                            max_new_tokens=max_new_tokens, early_stopping=False)


def sample(temperature: float = 1.0, max_new_tokens: int = 32) -> GenerationConfig:
    return _sampling(temperature, max_new_tokens=max_new_tokens)


def top_k(k: int = 50, temperature: float = 1.0, max_new_tokens: int = 32) -> GenerationConfig:
    _check("top_k", k, k >= 1, "top_k >= 1")
    return _sampling(temperature, top_k=k, max_new_tokens=max_new_tokens)


def top_p(p: float = 0.9, temperature: float = 1.0, max_new_tokens: int = 32) -> GenerationConfig:
    return _sampling(temperature, top_p=p, max_new_tokens=max_new_tokens)


def top_k_top_p(k: int = 50, p: float = 0.9, temperature: float = 1.0, max_new_tokens: int = 32) -> GenerationConfig:
    _check("top_k", k, k >= 1, "top_k >= 1")
    return _sampling(temperature, top_k=k, top_p=p, max_new_tokens=max_new_tokens)


def min_p(p: float = 0.05, temperature: float = 1.0, max_new_tokens: int = 32) -> GenerationConfig:
    return _sampling(temperature, min_p=p, max_new_tokens=max_new_tokens)


def repetition_penalty(penalty: float = 1.3, max_new_tokens: int = 32) -> GenerationConfig:
    _check("penalty", penalty, penalty > 0, "penalty > 0 (1.0 = none, > 1 discourages repeats)")
    return GenerationConfig(do_sample=False, repetition_penalty=penalty, max_new_tokens=max_new_tokens)


def prompt_lookup(num_tokens: int = 3, max_new_tokens: int = 32) -> GenerationConfig:
    """Speculative decoding whose draft is n-gram matches inside the prompt (no second model)."""
    _check("num_tokens", num_tokens, num_tokens >= 1, "num_tokens >= 1")
    return GenerationConfig(do_sample=False, prompt_lookup_num_tokens=num_tokens, max_new_tokens=max_new_tokens)


METHODS: dict[str, Callable[..., GenerationConfig]] = {
    "greedy": greedy, "beam": beam, "sample": sample, "top-k": top_k, "top-p": top_p, "top-k+top-p": top_k_top_p,
    "min-p": min_p, "repetition-penalty": repetition_penalty, "prompt-lookup": prompt_lookup,
}  # fmt: skip
# Implemented in labkit rather than by a GenerationConfig:
CUSTOM = ("contrastive", "speculative")


def config_for(method: str, **params) -> GenerationConfig:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {list(METHODS) + list(CUSTOM)}")
    return METHODS[method](**params)


@dataclass
class Step:
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
    prompt_ids: list[int]
    token_ids: list[int]
    steps: list[Step] = field(default_factory=list)
    text: str = ""


def step_through(model, tokenizer, prompt: str | torch.Tensor, method: str = "greedy", steps: int = 16,
                 seed: int = 0, **params) -> Trace | BeamTrace:
    """Decode `steps` tokens with `method` (same names and parameters as `config_for`), from scratch,
    recording why each token was chosen. Beam search returns a `BeamTrace` (the tree)."""
    cfg = config_for(method, **params)  # validates the parameters exactly as the generate() path does
    ids = prompt if isinstance(prompt, torch.Tensor) else tokenizer(prompt, return_tensors="pt")["input_ids"]
    if (cfg.num_beams or 1) > 1:
        lp = 1.0 if cfg.length_penalty is None else cfg.length_penalty
        return beam_step_through(model, tokenizer, ids, cfg.num_beams, steps, lp)
    if cfg.prompt_lookup_num_tokens:
        raise ValueError("prompt-lookup changes speed, not choices: step through 'greedy' to see its tokens")
    return decode_loop(model, tokenizer, ids, steps, bool(cfg.do_sample), cfg.temperature or 1.0, cfg.top_k or 0,
                       cfg.top_p or 1.0, cfg.min_p, cfg.repetition_penalty or 1.0, seed)


@torch.no_grad()
def decode_loop(model, tokenizer, prompt_ids: torch.Tensor, steps: int = 16, do_sample: bool = False,
                temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, min_p: float | None = None,
                repetition_penalty: float = 1.0, seed: int = 0) -> Trace:
    """A decoding loop with a KV cache that records every decision. prompt_ids: (1, seq)."""
    gen = torch.Generator().manual_seed(seed)
    ids = prompt_ids.to(model.device)
    out = model(input_ids=ids, use_cache=True)
    cache, trace, cum = out.past_key_values, Trace(prompt_ids[0].tolist(), []), 0.0
    logits = out.logits[0, -1].float().cpu()  # (vocab,)
    seen = prompt_ids[0].tolist()
    for i in range(steps):
        if repetition_penalty != 1.0:  # transformers' rule: shrink the logits of every token already present
            prev = torch.tensor(sorted(set(seen)))
            old = logits[prev]
            logits[prev] = torch.where(old > 0, old / repetition_penalty, old * repetition_penalty)
        probs = logits.softmax(-1)
        shown = (logits / temperature).softmax(-1) if do_sample else probs  # what the sampler sees
        if do_sample:
            kept_logits = filter_logits(logits, temperature, top_k, top_p, min_p)
            choice = int(torch.multinomial(kept_logits.softmax(-1), 1, generator=gen))
        else:
            kept_logits = logits
            choice = int(logits.argmax())
        kept = torch.isfinite(kept_logits)
        cum += math.log(probs[choice].item())
        top = torch.topk(shown, 10)
        trace.steps.append(Step(
            i, [(tokenizer.decode([t]), p) for t, p in zip(top.indices.tolist(), top.values.tolist(), strict=True)],
            int(kept.sum()) if do_sample else 1, float(shown[kept].sum()) if do_sample else float(probs[choice]),
            tokenizer.decode([choice]), choice, float(probs[choice]), cum,
        ))  # fmt: skip
        trace.token_ids.append(choice)
        seen.append(choice)
        if choice == tokenizer.eos_token_id:
            break
        out = model(input_ids=torch.tensor([[choice]], device=model.device), past_key_values=cache, use_cache=True)
        cache, logits = out.past_key_values, out.logits[0, -1].float().cpu()
    trace.text = tokenizer.decode(trace.token_ids, skip_special_tokens=True)
    return trace


# --- contrastive search (Su et al., 2022), from scratch -------------------------------------
def contrastive_scores(probs: torch.Tensor, candidate_hidden: torch.Tensor, context_hidden: torch.Tensor,
                       alpha: float) -> torch.Tensor:
    """score(v) = (1 - α)·p(v) - α·max_j cos(h_v, h_j). probs: (k,), candidate_hidden: (k, d), context: (n, d)."""
    cand = torch.nn.functional.normalize(candidate_hidden, dim=-1)
    ctx = torch.nn.functional.normalize(context_hidden, dim=-1)
    degeneration = (cand @ ctx.T).max(-1).values  # (k,)
    return (1 - alpha) * probs - alpha * degeneration


@torch.no_grad()
def contrastive_search(model, input_ids: torch.Tensor, k: int = 4, alpha: float = 0.6,
                       max_new_tokens: int = 32, eos_token_id: int | None = None) -> torch.Tensor:
    """Pick, among the top-k tokens, the likely one least similar to what was said. Returns (1, seq + new)."""
    _check("k", k, k >= 1, "k >= 1")
    _check("alpha", alpha, 0 <= alpha <= 1, "0 <= alpha <= 1")
    ids = input_ids.to(model.device)
    for _ in range(max_new_tokens):
        out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
        probs = out.logits[0, -1].float().softmax(-1)
        top = torch.topk(probs, k)
        context = out.hidden_states[-1][0]  # (seq, d)
        candidates = torch.cat([ids.repeat(k, 1), top.indices.unsqueeze(1)], dim=1)  # (k, seq + 1)
        cand_hidden = model(input_ids=candidates, output_hidden_states=True, use_cache=False).hidden_states[-1][:, -1]
        best = int(contrastive_scores(top.values, cand_hidden.float(), context.float(), alpha).argmax())
        ids = candidates[best : best + 1]
        if eos_token_id is not None and ids[0, -1].item() == eos_token_id:
            break
    return ids


# --- greedy speculative decoding, from scratch ----------------------------------------------
@dataclass
class Speculation:
    token_ids: torch.Tensor  # (1, seq + new)
    proposed: int
    accepted: int
    target_calls: int

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0


@torch.no_grad()
def speculative_greedy(target, draft, input_ids: torch.Tensor, gamma: int = 4, max_new_tokens: int = 32) -> Speculation:
    """The draft proposes `gamma` greedy tokens; one target pass verifies them all. Output = target's greedy."""
    _check("gamma", gamma, gamma >= 1, "gamma >= 1")
    ids, n0 = input_ids.to(target.device), input_ids.shape[1]
    proposed = accepted = calls = 0
    while ids.shape[1] - n0 < max_new_tokens:
        guess = ids
        for _ in range(gamma):  # cheap: the draft guesses ahead
            guess = torch.cat([guess, draft(input_ids=guess, use_cache=False).logits[:, -1:].argmax(-1)], dim=1)
        verify = target(input_ids=guess, use_cache=False).logits[0, ids.shape[1] - 1 :].argmax(-1)  # (gamma + 1,)
        calls += 1
        drafted = guess[0, ids.shape[1] :]
        n_ok = int((drafted == verify[:gamma]).long().cumprod(0).sum())  # longest agreeing prefix
        proposed, accepted = proposed + gamma, accepted + n_ok
        ids = torch.cat([ids, verify[: n_ok + 1].unsqueeze(0)], dim=1)  # accepted tokens + the target's own next
    return Speculation(ids[:, : n0 + max_new_tokens], proposed, accepted, calls)


# --- text metrics ----------------------------------------------------------------------------
def text_metrics(token_ids: list[int]) -> dict[str, float]:
    """distinct-1/2 (share of unique uni/bigrams), repetition rate (share of repeated 4-grams), length."""
    def distinct(n: int) -> float:
        grams = [tuple(token_ids[i : i + n]) for i in range(len(token_ids) - n + 1)]
        return len(set(grams)) / len(grams) if grams else 0.0

    four = [tuple(token_ids[i : i + 4]) for i in range(len(token_ids) - 3)]
    repeated = 1 - len(set(four)) / len(four) if four else 0.0
    return {"distinct_1": distinct(1), "distinct_2": distinct(2), "repetition_4gram": repeated,
            "length": len(token_ids)}


def timed_generate(model, input_ids: torch.Tensor, config: GenerationConfig, **kwargs) -> tuple[torch.Tensor, float]:
    """generate() with a wall-clock time; returns (sequences, seconds)."""
    config = copy.deepcopy(config)
    config.update(**{k: kwargs.pop(k) for k in list(kwargs) if k != "assistant_model" and hasattr(config, k)})
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(input_ids=input_ids.to(model.device), generation_config=config, **kwargs)
    return out, time.perf_counter() - start


# --- beam search, from scratch, keeping the tree ---------------------------------------------
@dataclass
class BeamNode:
    step: int
    beam: int  # slot after this step
    parent: int  # slot at the previous step (-1 for the prompt)
    token: str
    token_id: int
    score: float  # cumulative log-probability of the beam


@dataclass
class BeamTrace:
    token_ids: list[int]  # the best finished hypothesis (new tokens only)
    score: float  # its length-normalised score
    nodes: list[BeamNode] = field(default_factory=list)  # every running beam at every step: the tree
    finished: list[tuple[float, list[int]]] = field(default_factory=list)


@torch.no_grad()
def beam_step_through(model, tokenizer, prompt_ids: torch.Tensor, num_beams: int = 4, steps: int = 12,
                      length_penalty: float = 1.0) -> BeamTrace:
    """Beam search as transformers 5 runs it (2·beams candidates per step, EOS beams finish with a
    length-normalised score, all beams finish at the length limit), recording each step's beams."""
    _check("num_beams", num_beams, num_beams >= 1, "num_beams >= 1")
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
