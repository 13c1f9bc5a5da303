"""PagedAttention measured: KV waste, concurrency in a KV budget, prefix caching's TTFT, chunked prefill's stalls.

    kv_waste           the left-padded batch of 'continuous' vs KV blocks, same requests: slots allocated vs tokens
    budget_concurrency sequences at once in one KV budget: blocks needed now vs reserving prompt + max_tokens
    prefix_ttft        TTFT with a shared system prompt, prefix caching off and on (and with no system prompt)
    chunked_prefill    decoding requests' inter-token gaps while a long prompt is prefilled, chunked or whole

Plain arguments in, `Measured(table, figure)` out. The first two step unstarted engines on this thread (the same
requests give the same schedule every run); the last two time started engines (`repository.make_engine`) through
each request's timestamps (`Request.t_submit`, `t_first`, token events).
"""

from __future__ import annotations

import time
from collections import deque
from itertools import pairwise

import pandas as pd
import torch
from tqdm.auto import tqdm

from labkit.devices import device_label
from labkit.measure import results_frame
from labkit.plots import Measured, bars, line
from labkit.serving.batch_engine import BatchEngine
from labkit.serving.limits import Limits
from labkit.serving.paged_engine import PagedEngine
from labkit.serving.policies import get_policy
from labkit.serving.repository import make_engine, model_on
from labkit.serving.request import Request, SamplingParams

TIMEOUT_S = 600.0  # the longest one request may take (a CPU prefilling a long prompt)
WARM_TOKENS = 4  # chunked_prefill: tokens each decoder has made before the long prompt arrives


def random_prompts(lengths: list[int], vocab: int, seed: int = 0) -> list[list[int]]:
    """Prompts of these lengths (tokens), ids uniform in [2, vocab) (KV use depends on lengths, not on content)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(2, vocab, (n,), generator=g).tolist() for n in lengths]


def mixed_load(requests: int, prompt_tokens: tuple[int, int], max_tokens: tuple[int, int],
               seed: int = 0) -> tuple[list[int], list[int]]:
    """Prompt lengths and max_tokens for `requests` requests, each uniform in its (low, high) range (inclusive)."""
    g = torch.Generator().manual_seed(seed)
    draw = lambda lo, hi: torch.randint(lo, hi + 1, (requests,), generator=g).tolist()  # noqa: E731
    return draw(*prompt_tokens), draw(*max_tokens)


def _drain(engine, prompts: list[list[int]], max_tokens: list[int], on_forward) -> list[list[int]]:
    """Submit every request, step the unstarted engine here until all are done, calling `on_forward(engine, kwargs,
    output)` after every model forward; returns the greedy tokens."""
    reqs = [Request(p, SamplingParams(m)) for p, m in zip(prompts, max_tokens, strict=True)]
    for r in reqs:
        engine.submit(r)
    hook = engine.model.register_forward_hook(lambda mod, a, kw, out: on_forward(engine, kw, out), with_kwargs=True)
    try:
        while engine.queue or engine.running:
            engine.step()
    finally:
        hook.remove()
    return [r.tokens for r in reqs]


def _padded_kv(engine, kw: dict, out) -> dict:
    """A forward of the left-padded batch: its cache tensors' batch × positions vs the real tokens (mask)."""
    keys = out.cache.layers[0].keys  # (batch, kv_heads, positions, head_dim); every layer has the same shape
    return {"seqs": keys.shape[0], "slots": keys.shape[0] * keys.shape[2], "tokens": int(kw["attention_mask"].sum())}


def _paged_kv(engine, kw: dict, out) -> dict:
    """A forward of the paged engine: its running sequences' blocks × block_size vs their tokens."""
    return {"seqs": len(engine.scheduler.running), **engine.scheduler.kv_stats()}


def kv_waste(model: str = "tiny-llama", requests: int = 12, max_batch: int = 4,
             prompt_tokens: tuple[int, int] = (8, 200), max_tokens: tuple[int, int] = (8, 48), block_size: int = 16,
             device: str | torch.device = "auto", loaded: tuple | None = None, seed: int = 0) -> Measured:
    """The same requests through the left-padded batch ('continuous') and the paged engine: KV slots vs tokens.

    Args:
        model: a labkit model name (Llama-style: the paged engine's attention). requests: how many, all queued at
            once. max_batch: sequences decoding together in both engines. prompt_tokens, max_tokens: (low, high)
            ranges of each request's prompt length and new tokens (`mixed_load`). block_size: KV block (tokens).
        device: where to compute. loaded: a (model, tokenizer) on `device` (None: load `model`). seed: the load's.
    Returns:
        Measured: one row per engine — forwards, mean_waste_pct (Σ(slots − tokens) / Σ slots over its forwards),
        peak_slots, peak_tokens, max_unfilled_per_seq (the most (slots − tokens) / sequences at one forward),
        block_size, same_tokens (greedy tokens equal to the padded engine's), device; table.attrs["steps"] has every
        forward (engine, forward, seqs, slots, tokens); the figure is slots and tokens per forward.
    Raises:
        ValueError: a model the paged engine cannot run, or `loaded` on another device.
    """
    net, tok = model_on(model, device, loaded)
    lengths, news = mixed_load(requests, prompt_tokens, max_tokens, seed)
    prompts = random_prompts(lengths, net.config.vocab_size, seed)
    limits = Limits.of(max_batch=max_batch, kv_tokens=sum(lengths) + sum(news) + requests * block_size,
                       kv_block_size=block_size, prefix_caching=False)  # fmt: skip
    engines = {"padded (continuous)": (BatchEngine(net, tok, get_policy("continuous"), limits), _padded_kv),
               "paged": (PagedEngine(net, tok, limits), _paged_kv)}
    steps, rows, outputs = [], [], {}
    for name, (engine, read) in tqdm(engines.items(), desc="KV waste"):
        mine = []
        outputs[name] = _drain(engine, prompts, news, lambda e, kw, out: mine.append(read(e, kw, out)))  # noqa: B023
        s = pd.DataFrame(mine).assign(engine=name, forward=range(len(mine)))
        steps.append(s)
        rows.append({"engine": name, "forwards": len(s),
                     "mean_waste_pct": 100 * (s.slots - s.tokens).sum() / s.slots.sum(),
                     "peak_slots": int(s.slots.max()), "peak_tokens": int(s.tokens.max()),
                     "max_unfilled_per_seq": float(((s.slots - s.tokens) / s.seqs).max()), "block_size": block_size,
                     "same_tokens": outputs[name] == outputs["padded (continuous)"],
                     "device": device_label(net.device)})
    df = results_frame(rows, model=model, steps=pd.concat(steps, ignore_index=True))
    wide = df.attrs["steps"].pivot(index="forward", columns="engine", values=["slots", "tokens"])
    wide.columns = [f"{e}: {'KV slots' if v == 'slots' else 'tokens held'}" for v, e in wide.columns]
    wide = wide.reset_index()
    wide.attrs["hardware"] = device_label(net.device)
    return Measured(df, line(wide, "forward", list(wide.columns[1:]), f"KV cache allocated vs used, {requests} "
                             f"requests — {model}", xlabel="forward pass", ylabel="KV positions (tokens)"))


def reserved_schedule(budget_tokens: int, prompt_tokens: list[int], max_tokens: list[int]) -> list[int]:
    """The baseline's rule, stepped: before vLLM, a server reserved a request's whole KV (prompt + max_tokens) when
    it admitted it. Requests join in arrival order while their reservations fit the budget together; every step each
    running request makes one token; a request that made its max_tokens frees its reservation.

    Args:
        budget_tokens: the KV budget (tokens). prompt_tokens, max_tokens: per request, in arrival order.
    Returns:
        requests running at each step, until all are done.
    Raises:
        ValueError: a request whose reservation alone exceeds the budget (it could never run).
    """
    if max(p + m for p, m in zip(prompt_tokens, max_tokens, strict=True)) > budget_tokens:
        raise ValueError(f"a request's prompt + max_tokens exceeds the {budget_tokens}-token KV budget")
    waiting, running, counts = deque(zip(prompt_tokens, max_tokens, strict=True)), [], []
    while waiting or running:
        while waiting and sum(r for r, _ in running) + sum(waiting[0]) <= budget_tokens:
            p, m = waiting.popleft()
            running.append((p + m, m))  # (reserved tokens, tokens still to make)
        counts.append(len(running))
        running = [(r, left - 1) for r, left in running if left > 1]
    return counts


def budget_concurrency(model: str = "tiny-llama", kv_tokens: int = 2048, requests: int = 32,
                       prompt_tokens: tuple[int, int] = (16, 96), max_tokens: tuple[int, int] = (16, 96),
                       block_size: int = 16, device: str | torch.device = "auto", loaded: tuple | None = None,
                       seed: int = 0) -> Measured:
    """Sequences running at once in a fixed KV budget: the paged engine (admission by the blocks a request needs
    now, recompute preemption when they run out) against reserving prompt + max_tokens up front (`reserved_schedule`).

    Args:
        model, device, loaded, seed, block_size: as in `kv_waste`. kv_tokens: the KV budget (tokens).
        requests: how many, all queued at once (batch slots are not the limit: max_batch = requests).
        prompt_tokens, max_tokens: (low, high) ranges per request (`mixed_load`); every request makes its max_tokens.
    Returns:
        Measured: one row per rule — first (sequences admitted at the first step), peak and mean_running (sequences
        per step), steps (until every request is done), preemptions, kv_tokens, device; table.attrs has
        "prompt_tokens" and "max_tokens" (the load) and "running" (per rule, sequences per step); the figure is
        sequences per step.
    Raises:
        ValueError: a request bigger than the budget, a model the paged engine cannot run, or `loaded` elsewhere.
    """
    net, tok = model_on(model, device, loaded)
    lengths, news = mixed_load(requests, prompt_tokens, max_tokens, seed)
    running = {"reserve prompt + max_tokens": reserved_schedule(kv_tokens, lengths, news), "paged": []}
    engine = PagedEngine(net, tok, Limits.of(max_batch=requests, kv_tokens=kv_tokens, kv_block_size=block_size,
                                             prefix_caching=False))  # fmt: skip
    _drain(engine, random_prompts(lengths, net.config.vocab_size, seed), news,
           lambda e, kw, out: running["paged"].append(len(e.scheduler.running)))
    label = device_label(net.device)
    rows = [{"rule": rule, "first": n[0], "peak": max(n), "mean_running": sum(n) / len(n), "steps": len(n),
             "preemptions": engine.kv_report()["preemptions"] if rule == "paged" else 0, "kv_tokens": kv_tokens,
             "device": label} for rule, n in running.items()]
    df = results_frame(rows, model=model, prompt_tokens=lengths, max_tokens=news, running=running)
    steps = pd.DataFrame({rule: pd.Series(n) for rule, n in running.items()}).rename_axis("step").reset_index()
    steps.attrs["hardware"] = label
    return Measured(df, line(steps, "step", list(running), f"Sequences at once in {kv_tokens} KV tokens — {model}",
                             ylabel="running sequences"))


def _serve(engine, prompt: list[int], max_tokens: int, wait: bool = True) -> Request:
    """One request to a started engine (waited for, unless not `wait`); its token times (s) are in `.token_times`."""
    req = Request(prompt, SamplingParams(max_tokens), on_event=lambda k, v: req.token_times.append(time.perf_counter())
                  if k == "token" else None)  # fmt: skip
    req.token_times = []
    engine.submit(req)
    if wait and (not req.finished.wait(TIMEOUT_S) or req.finish_reason == "error"):
        raise RuntimeError(f"request {req.id} did not finish: {req.finish_reason}")
    return req


def prefix_ttft(model: str = "tiny-llama", prefix_tokens: int = 512, requests: int = 8,
                question_tokens: tuple[int, int] = (8, 24), max_tokens: int = 4, block_size: int = 16,
                device: str | torch.device = "auto", loaded: tuple | None = None, seed: int = 0) -> Measured:
    """TTFT with a shared system prompt, prefix caching off and on, and with no system prompt at all.

    Requests go one at a time (TTFT is the prefill, not a queue), each a different question after the same system
    prompt; a warm-up request first (with caching on it computes the prefix, as a server's first request does).

    Args:
        model, device, loaded, seed, block_size: as in `kv_waste`. prefix_tokens: the shared system prompt's tokens.
        requests: requests timed per setting. question_tokens: (low, high) tokens of each request's own part.
        max_tokens: new tokens per request.
    Returns:
        Measured: one row per setting — ttft_p50_s (median over the requests of t_first − t_submit, s), ttft_min_s,
        prefix_hit_rate (prompt tokens found cached / looked up, warm-up included), device; table.attrs has
        "same_tokens" (greedy tokens equal with caching on and off), "prompt_tokens_sent" (per system-prompt
        setting, warm-up included), prefix_tokens, block_size, requests; the figure is TTFT p50 per setting.
    Raises:
        ValueError: a model the paged engine cannot run, or `loaded` on another device.
    """
    net, tok = model_on(model, device, loaded)
    lengths, _ = mixed_load(requests + 1, question_tokens, (1, 1), seed)
    system, *questions = random_prompts([prefix_tokens, *lengths], net.config.vocab_size, seed + 1)
    settings = {"no system prompt": ([], False), "system prompt, caching off": (system, False),
                "system prompt, caching on": (system, True)}
    rows, outputs = [], {}
    for name, (prefix, caching) in tqdm(settings.items(), desc="prefix caching"):
        engine = make_engine("paged", net, tok, max_batch=1, kv_tokens=(prefix_tokens + max(lengths) + max_tokens) * 2,
                             kv_block_size=block_size, prefix_caching=caching)  # fmt: skip
        try:
            reqs = [_serve(engine, prefix + q, max_tokens) for q in questions]  # the first is the warm-up
            report = engine.kv_report()
        finally:
            engine.stop()
        ttft = pd.Series([r.t_first - r.t_submit for r in reqs[1:]])
        outputs[name] = [r.tokens for r in reqs]
        rows.append({"setting": name, "ttft_p50_s": ttft.median(), "ttft_min_s": ttft.min(),
                     "prefix_hit_rate": report["prefix_hit_rate"], "device": device_label(net.device)})
    sent = (requests + 1) * prefix_tokens + sum(lengths)  # prompt tokens each system-prompt setting sent
    df = results_frame(rows, model=model, prefix_tokens=prefix_tokens, block_size=block_size, requests=requests,
                       prompt_tokens_sent=sent, same_tokens=outputs["system prompt, caching on"] == outputs[
                           "system prompt, caching off"])  # fmt: skip
    return Measured(df, bars(df, "setting", "ttft_p50_s", f"TTFT p50, {prefix_tokens}-token system prompt — {model}",
                             ylabel="TTFT p50 (s)"))


def chunked_prefill(model: str = "tiny-llama", long_prompt: int = 1024, chunks: tuple[int | None, ...] = (None, 128),
                    decoders: int = 3, block_size: int = 16, device: str | torch.device = "auto",
                    loaded: tuple | None = None, seed: int = 0) -> Measured:
    """Decode stalls while a long prompt is prefilled: whole (None) or in chunks of `prefill_chunk` tokens per step.

    `decoders` short requests start decoding; once each has WARM_TOKENS tokens, a `long_prompt`-token request
    arrives. The decoders' inter-token gaps that overlap its prefill (its t_submit to its first token) show what it
    costs them; its TTFT shows what chunking costs it.

    Args:
        model, device, loaded, seed, block_size: as in `kv_waste`. long_prompt: tokens of the arriving prompt.
        chunks: prefill_chunk settings to compare (None: the whole prompt in one step). decoders: requests decoding.
    Returns:
        Measured: one row per setting — prefill_chunk ("whole" or tokens), gap_max_s and gap_p50_s (decoders' gaps
        during the prefill, s), tpot_before_s (their median gap before it arrived), long_ttft_s, same_tokens
        (every request's greedy tokens equal to the first setting's), device; the figure is the gaps and the TTFT.
    Raises:
        ValueError: a prefill_chunk not above `decoders`, a model the paged engine cannot run, or `loaded` elsewhere.
    """
    if any(c is not None and c <= decoders for c in chunks):
        raise ValueError(f"every prefill_chunk must exceed decoders={decoders} (their tokens share the budget); "
                         f"got {chunks}")
    net, tok = model_on(model, device, loaded)
    *short, long = random_prompts([8] * decoders + [long_prompt], net.config.vocab_size, seed)
    per_step = min((c - decoders for c in chunks if c is not None), default=long_prompt)  # prompt tokens per step
    decode_tokens = WARM_TOKENS + -(-long_prompt // per_step) + 12  # the decoders outlast every setting's prefill
    rows, outputs = [], {}
    for chunk in tqdm(chunks, desc="chunked prefill"):
        engine = make_engine("paged", net, tok, max_batch=decoders + 1, kv_block_size=block_size, prefill_chunk=chunk,
                             kv_tokens=long_prompt + (decoders + 1) * (decode_tokens + 2 * block_size))  # fmt: skip
        try:
            _serve(engine, short[0], 2)  # warm-up
            reqs = [_serve(engine, p, decode_tokens, wait=False) for p in short]
            while min(len(r.tokens) for r in reqs) < WARM_TOKENS:
                time.sleep(1e-3)
            big = _serve(engine, long, 4)
            for r in reqs:
                r.finished.wait(TIMEOUT_S)
        finally:
            engine.stop()
        gaps = pd.DataFrame([(a, b - a) for r in reqs for a, b in pairwise(r.token_times)], columns=["t", "gap"])
        during = gaps[(gaps.t + gaps.gap > big.t_submit) & (gaps.t < big.t_first)].gap
        outputs[chunk] = [r.tokens for r in (*reqs, big)]
        before = gaps[gaps.t + gaps.gap <= big.t_submit].gap
        rows.append({"prefill_chunk": "whole" if chunk is None else str(chunk), "gap_max_s": during.max(),
                     "gap_p50_s": during.median(), "tpot_before_s": before.median(),
                     "long_ttft_s": big.t_first - big.t_submit, "same_tokens": outputs[chunk] == outputs[chunks[0]],
                     "device": device_label(net.device)})
    df = results_frame(rows, model=model, long_prompt=long_prompt, decoders=decoders)
    melted = df.melt("prefill_chunk", ["gap_max_s", "gap_p50_s", "long_ttft_s"], "measure", "seconds")
    return Measured(df, bars(melted, "measure", "seconds", f"Decoding while a {long_prompt}-token prompt is prefilled"
                             f" — {model}", color="prefill_chunk", ylabel="s"))
