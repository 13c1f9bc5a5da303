"""Beam search from scratch, keeping the tree: every running beam at every step, every finished hypothesis, and
when and why the search stopped.

It applies the rules of transformers 5's beam search (generation/utils.py, `GenerationMixin._beam_search` and its
helpers), so its best hypothesis equals `generate(num_beams, length_penalty, early_stopping, max_new_tokens,
do_sample=False)` token for token:

- candidates: the best max(2, 1 + number of end-of-text ids) × num_beams continuations of all running beams by
  cumulative log-probability (`_get_top_k_continuations`);
- a candidate finishes when its token ends the text or it reaches max_new_tokens. Only finishers ranked in the top
  num_beams count; each is scored log p / new_tokens ** length_penalty (new tokens include the end-of-text token)
  and the best num_beams finished hypotheses are kept (`_update_finished_beams`). The best num_beams unfinished
  candidates run on (`_get_running_beams_for_next_iteration`);
- the search stops (`_beam_search_has_unfinished_sequences`) at max_new_tokens; with early_stopping=True as soon as
  num_beams hypotheses have finished; otherwise once num_beams have finished and the best running beam, scored as if
  it ended now (False: a heuristic when length_penalty > 0) or at max_new_tokens ("never" with length_penalty > 0: a
  bound), cannot beat the worst of them (`_check_early_stop_heuristic`).

num_beams=1 is not a beam search in generate() but greedy search (stop at the first end of text); so it is here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from labkit.decoding.configs import check_early_stopping, check_param
from labkit.decoding.lm import eos_ids, next_logits


@dataclass
class BeamNode:
    """One running beam after one step: a dot of the beam tree."""

    step: int
    beam: int  # slot after this step
    parent: int  # slot at the previous step (0 at step 0: every beam grows from the prompt)
    token: str
    token_id: int
    score: float  # cumulative log-probability of the beam


@dataclass
class Hypothesis:
    """A finished hypothesis: where it ended in the tree and its score."""

    step: int  # the step whose token ended it
    parent: int  # the running slot it grew from (0 at step 0)
    token_ids: list[int]  # new tokens, the last one included
    logprob: float  # cumulative log-probability
    score: float  # logprob / len(token_ids) ** length_penalty: what finished hypotheses are ranked by


@dataclass
class BeamTrace:
    """A beam search's result, its tree, and when and why it stopped."""

    token_ids: list[int]  # the best finished hypothesis (new tokens only)
    score: float  # its length-normalised score
    nodes: list[BeamNode] = field(default_factory=list)  # every running beam at every step: the tree
    finished: list[Hypothesis] = field(default_factory=list)  # every hypothesis that finished, in order
    steps: int = 0  # steps run (new tokens of the longest hypothesis) when the search stopped
    stop_reason: str = ""  # when and why it stopped, in words

    def kept(self, num_beams: int) -> list[Hypothesis]:
        """The best `num_beams` finished hypotheses, best first (what generate() keeps and returns)."""
        return sorted(self.finished, key=lambda h: h.score, reverse=True)[:num_beams]


def banned_ngram_tokens(ids: list[int], n: int) -> set[int]:
    """Tokens that would repeat an n-gram of `ids` (transformers' NoRepeatNGramLogitsProcessor; prompt included).

    Args:
        ids: the whole sequence so far (prompt and new tokens). n: n-gram size (0: off).
    Returns:
        every token that follows an earlier occurrence of the last n - 1 tokens.
    """
    if n <= 0 or len(ids) < n:
        return set()
    prefix = ids[len(ids) - n + 1 :]
    return {ids[i + n - 1] for i in range(len(ids) - n + 1) if ids[i : i + n - 1] == prefix}


def _stop_reason(step: int, steps: int, running: list[int], kept: list[Hypothesis], best_running: torch.Tensor,
                 num_beams: int, length_penalty: float, early_stopping: bool | str) -> str:
    """Why the search stops after `step` new tokens ('' when it runs on); transformers' order of conditions."""
    if step == steps:
        return f"stopped at step {step}: max_new_tokens={steps} reached, every running beam finished there"
    if not running:  # only with num_beams=1: greedy's end of text
        return f"stopped at step {step}: end of text (num_beams=1 is greedy search in generate())"
    if len(kept) < num_beams:
        return ""
    if early_stopping is True:
        return f"stopped at step {step}: {num_beams} hypotheses finished (early_stopping=True)"
    at_limit = early_stopping == "never" and length_penalty > 0
    best = float(best_running / ((steps if at_limit else step) ** length_penalty))
    worst = kept[-1].score
    if best > worst:
        return ""
    how = f"even at max_new_tokens={steps}" if at_limit else "if it ended now (early_stopping=False's heuristic)"
    return (f"stopped at step {step}: no running beam can beat the worst finished score {worst:.2f} "
            f"(the best running beam scores {best:.2f} {how})")


@torch.no_grad()
def beam_step_through(model, tokenizer, prompt_ids: torch.Tensor, num_beams: int = 4, steps: int = 12,
                      length_penalty: float = 1.0, early_stopping: bool | str = False,
                      no_repeat_ngram_size: int = 0) -> BeamTrace:
    """Beam search that records each step's beams, the finished hypotheses and why it stopped.

    Args:
        model: a transformers causal LM with a KV cache. tokenizer: its tokenizer (to show tokens).
        prompt_ids: (1, prompt_len) prompt token ids.
        num_beams: beams kept per step (>= 1; 1 is greedy search, as in generate()).
        steps: new tokens at most (generate()'s max_new_tokens, >= 1).
        length_penalty: finished scores are log p / new_tokens ** length_penalty (> 0 favours longer ones).
        early_stopping: False (stop when the best running beam, scored at its current length, cannot beat the worst
            of num_beams finished), True (stop when num_beams have finished) or "never" (stop only when no running
            beam can win: at max_new_tokens' length when length_penalty > 0).
        no_repeat_ngram_size: forbid repeating an n-gram of this size, prompt included (0: off).
    Returns:
        BeamTrace: the best hypothesis, its score, the tree, every finished hypothesis, steps run and stop_reason.
    Raises:
        ValueError: for num_beams or steps < 1, no_repeat_ngram_size < 0 or early_stopping not False/True/"never".
    """
    check_param("num_beams", num_beams, num_beams >= 1, "num_beams >= 1")
    check_param("steps", steps, steps >= 1, "steps >= 1")
    check_param("no_repeat_ngram_size", no_repeat_ngram_size, no_repeat_ngram_size >= 0, "no_repeat_ngram_size >= 0")
    check_early_stopping(early_stopping)
    eos = eos_ids(model)
    width = max(2, 1 + len(eos)) * num_beams if num_beams > 1 else 1  # candidates kept per step
    prompt = prompt_ids[0].tolist()
    logits, cache = next_logits(model, prompt_ids.repeat_interleave(num_beams, 0))  # generate() prefills every beam
    scores = torch.full((num_beams,), -1e9, device=prompt_ids.device)
    scores[0] = 0.0  # all beams start identical: only the first may expand
    seqs: list[list[int]] = [[] for _ in range(num_beams)]
    trace = BeamTrace([], -math.inf)
    for step in range(1, steps + 1):
        logprobs = logits.log_softmax(-1)  # (beams, vocab)
        for b, seq in enumerate(seqs):
            banned = banned_ngram_tokens(prompt + seq, no_repeat_ngram_size)
            logprobs[b, list(banned)] = -math.inf
        top = torch.topk((logprobs + scores[:, None]).view(-1), width)
        parents, tokens = (top.indices // logprobs.shape[1]).tolist(), (top.indices % logprobs.shape[1]).tolist()
        ends = [t in eos or step == steps for t in tokens]
        normalised = top.values / (step**length_penalty)
        for r in range(min(num_beams, width)):  # only the top num_beams candidates may finish
            if ends[r]:
                trace.finished.append(Hypothesis(step - 1, parents[r], seqs[parents[r]] + [tokens[r]],
                                                 float(top.values[r]), float(normalised[r])))
        running = [r for r in range(width) if not ends[r]][:num_beams]
        best_running = top.values[running[0]] if running else top.values[0]
        trace.stop_reason = _stop_reason(step, steps, running, trace.kept(num_beams), best_running, num_beams,
                                         length_penalty, early_stopping)
        trace.steps = step
        if trace.stop_reason:
            break
        seqs = [seqs[parents[r]] + [tokens[r]] for r in running]
        scores = top.values[running]
        trace.nodes += [BeamNode(step - 1, slot, parents[r], tokenizer.decode([tokens[r]]), tokens[r],
                                 float(top.values[r])) for slot, r in enumerate(running)]
        if num_beams > 1:
            cache.reorder_cache(torch.tensor([parents[r] for r in running], device=model.device))
        logits, cache = next_logits(model, torch.tensor([[tokens[r]] for r in running], device=prompt_ids.device),
                                    cache)
    best = trace.kept(num_beams)[0]
    trace.token_ids, trace.score = best.token_ids, best.score
    return trace
