"""Two searches transformers does not run for us: contrastive search (Su et al., 2022; no longer shipped by
transformers 5) and speculative decoding with greedy verification and its acceptance counts, from scratch; plus
speculative sampling's accept/resample rule at one position and the expected speed-up (Leviathan et al., 2023)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from labkit.decoding.configs import check_param
from labkit.decoding.lm import eos_ids


def contrastive_scores(probs: torch.Tensor, candidate_hidden: torch.Tensor, context_hidden: torch.Tensor,
                       alpha: float) -> torch.Tensor:
    """Contrastive search's score of each candidate: (1 - α)·p(v) - α·max_j cos(h_v, h_j) (Su et al., 2022, eq. 5).

    Args:
        probs: (k,) model probabilities of the k candidates.
        candidate_hidden: (k, d) last-layer hidden state of each candidate token.
        context_hidden: (n, d) last-layer hidden states of the n tokens so far.
        alpha: the degeneration penalty's weight, 0 (greedy) to 1.
    Returns:
        (k,) scores; the argmax is the next token.
    """
    cand = torch.nn.functional.normalize(candidate_hidden, dim=-1)
    ctx = torch.nn.functional.normalize(context_hidden, dim=-1)
    degeneration = (cand @ ctx.T).max(-1).values  # (k,)
    return (1 - alpha) * probs - alpha * degeneration


@torch.no_grad()
def contrastive_search(model, input_ids: torch.Tensor, k: int = 4, alpha: float = 0.6, max_new_tokens: int = 32,
                       eos_token_id: int | list[int] | None = None,
                       mark: Callable[[], None] | None = None) -> torch.Tensor:
    """Pick, among the top-k tokens, the likely one least similar to what was said (no KV cache: it re-reads the
    whole sequence each step, so it is slow, and honest about it).

    Args:
        model: a transformers causal LM. input_ids: (1, prompt_len) prompt ids.
        k: candidates per step (>= 1). alpha: degeneration penalty in [0, 1] (0 = greedy).
        max_new_tokens: tokens to generate at most. eos_token_id: stop after this id (or any of these ids), as
            transformers' contrastive search did; None: the model's generation config; []: never stop early.
        mark: called after each new token (a `decoding.timing.time_decode` clock); None: not called.
    Returns:
        (1, prompt_len + new) token ids, the prompt included.
    Raises:
        ValueError: for k < 1 or alpha outside [0, 1].
    """
    check_param("k", k, k >= 1, "k >= 1")
    check_param("alpha", alpha, 0 <= alpha <= 1, "0 <= alpha <= 1")
    eos = eos_ids(model, eos_token_id)
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
        if mark is not None:
            mark()
        if int(ids[0, -1]) in eos:
            break
    return ids


@dataclass
class Speculation:
    """The result of `speculative_greedy`: the tokens and how much of the draft was kept."""

    token_ids: torch.Tensor  # (1, prompt_len + new): new stops at the first end-of-text token (included)
    proposed: int  # draft tokens proposed
    accepted: int  # of those, kept by the target
    target_calls: int  # target forward passes (each verifies up to gamma tokens and adds one of its own)
    rejected: int = 0  # rounds that ended at a draft token the target disagreed with

    @property
    def acceptance_rate(self) -> float:
        """accepted / proposed: the share of drafted tokens kept (0 when nothing was proposed)."""
        return self.accepted / self.proposed if self.proposed else 0.0

    @property
    def alpha(self) -> float:
        """Leviathan et al. (2023)'s α, the probability that the target keeps a draft token whose prefix it kept:
        accepted / (accepted + rejected). Each draft token compared up to a round's first mismatch is one trial; the
        tokens drafted after a mismatch are never judged, so `acceptance_rate`, which counts them, is lower than α.
        (1.0 when no draft token was ever rejected, 0 when none was compared.)"""
        trials = self.accepted + self.rejected
        return self.accepted / trials if trials else 0.0


@torch.no_grad()
def speculative_greedy(target, draft, input_ids: torch.Tensor, gamma: int = 4, max_new_tokens: int = 32,
                       eos_token_id: int | list[int] | None = None) -> Speculation:
    """Greedy speculative decoding: the draft proposes `gamma` greedy tokens; one target pass verifies them all and
    keeps the longest prefix it agrees with, plus its own next token. The output is exactly the target's greedy,
    and it stops where greedy `generate()` stops: at the first end-of-text token (included), as transformers does.

    A draft stops guessing at its own end-of-text, so no token drafted past an end of text is proposed or counted
    as accepted.

    Args:
        target: the model whose greedy output is wanted. draft: a cheaper model with the same vocabulary.
        input_ids: (1, prompt_len) prompt ids. gamma: draft tokens per round (>= 1). max_new_tokens: most tokens
            to add. eos_token_id: end-of-text id(s); default: the target's generation config (None there: no stop).
    Returns:
        Speculation with (1, prompt_len + new) ids, new <= max_new_tokens, and the acceptance counts.
    Raises:
        ValueError: for gamma < 1.
    """
    check_param("gamma", gamma, gamma >= 1, "gamma >= 1")
    eos = eos_ids(target, eos_token_id)
    ids, n0 = input_ids.to(target.device), input_ids.shape[1]
    proposed = accepted = rejected = calls = 0
    while ids.shape[1] - n0 < max_new_tokens:
        guess = ids
        for _ in range(gamma):  # cheap: the draft guesses ahead, never past its own end of text
            guess = torch.cat([guess, draft(input_ids=guess, use_cache=False).logits[:, -1:].argmax(-1)], dim=1)
            if int(guess[0, -1]) in eos:
                break
        drafted = guess[0, ids.shape[1] :]  # (k,), k <= gamma
        verify = target(input_ids=guess, use_cache=False).logits[0, ids.shape[1] - 1 :].argmax(-1)  # (k + 1,)
        calls += 1
        n_ok = int((drafted == verify[: drafted.numel()]).long().cumprod(0).sum())  # longest agreeing prefix
        proposed, accepted, rejected = proposed + drafted.numel(), accepted + n_ok, rejected + (n_ok < drafted.numel())
        kept = verify[: n_ok + 1]  # accepted tokens + the target's own next
        ends = [i for i, t in enumerate(kept.tolist()) if t in eos]
        ids = torch.cat([ids, kept[: ends[0] + 1 if ends else None].unsqueeze(0)], dim=1)
        if ends:  # greedy stops at its end of text
            break
    return Speculation(ids[:, : n0 + max_new_tokens], proposed, accepted, calls, rejected)


def expected_tokens_per_call(alpha: float, gamma: int) -> float:
    """Expected tokens one target pass yields when each of `gamma` draft tokens is kept with probability α until the
    first rejection, plus the target's own token: (1 - α^(γ+1)) / (1 - α) (Leviathan et al., 2023, eq. 1).

    Args:
        alpha: acceptance probability in [0, 1]. gamma: draft tokens per round (>= 1).
    Returns:
        tokens per target call, between 1 (α = 0) and γ + 1 (α = 1).
    Raises:
        ValueError: for alpha outside [0, 1] or gamma < 1.
    """
    check_param("alpha", alpha, 0 <= alpha <= 1, "0 <= alpha <= 1")
    check_param("gamma", gamma, gamma >= 1, "gamma >= 1")
    return gamma + 1.0 if alpha == 1 else (1 - alpha ** (gamma + 1)) / (1 - alpha)


def expected_speedup(alpha: float, gamma: int, c: float) -> float:
    """Expected wall-time improvement of speculative decoding over the target alone:
    (1 - α^(γ+1)) / ((1 - α)(γc + 1)) (Leviathan et al., 2023, Theorem 3.8).

    It assumes i.i.d. acceptances, a verification pass that costs one target step, and no other overhead.

    Args:
        alpha: acceptance probability in [0, 1]. gamma: draft tokens per round (>= 1).
        c: cost of one draft step / cost of one target step (>= 0).
    Returns:
        the predicted speed-up factor (> 1: faster than the target alone).
    Raises:
        ValueError: for alpha outside [0, 1], gamma < 1 or c < 0.
    """
    check_param("c", c, c >= 0, "c >= 0")
    return expected_tokens_per_call(alpha, gamma) / (gamma * c + 1)


def speculative_sample(p: torch.Tensor, q: torch.Tensor, n: int, generator: torch.Generator | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Speculative sampling at one position, `n` times: draw x ~ q, keep it with probability min(1, p(x)/q(x)),
    otherwise draw from max(0, p - q) renormalised (Leviathan et al., 2023, Algorithm 1; Chen et al., 2023; the
    rule of transformers' `_speculative_sampling`). The output is distributed as p, whatever q is.

    Args:
        p: (vocab,) target probabilities. q: (vocab,) draft probabilities. n: draws (>= 1).
        generator: a seeded torch.Generator for reproducible draws.
    Returns:
        (tokens (n,) int64, accepted (n,) bool: whether each kept the draft's token).
    Raises:
        ValueError: for n < 1.
    """
    check_param("n", n, n >= 1, "n >= 1")
    drafted = torch.multinomial(q, n, replacement=True, generator=generator)
    accepted = torch.rand(n, generator=generator) <= p[drafted] / q[drafted]
    residual = (p - q).clamp_min(0)
    tokens = drafted.clone()
    rejected = int((~accepted).sum())
    if rejected:
        tokens[~accepted] = torch.multinomial(residual / residual.sum(), rejected, replacement=True,
                                              generator=generator)
    return tokens, accepted
