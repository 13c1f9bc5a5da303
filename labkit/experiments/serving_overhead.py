"""What serving costs at one client: labkit's server against the same engine called directly, on the same requests.

    got = serving_overhead.one_client("smollm2-135m", ["Write a haiku about the sea.", ...], max_tokens=64)
    got.table        # one row per round and path; got.table.attrs["summary"]: medians and ratios

The engine alone is the paged engine over its ONNX Runtime runner called directly
(`serving.paged.offline.generate_offline`: no HTTP, no request queue, no worker thread). The server is the same
engine behind `labkit serve --scheduler paged --runner onnxruntime`, in its own process, driven by
`serving.loadgen` with one client. Each round times, one after the other so that a drift in the machine's speed
touches every path alike:

    server          the chat requests, one at a time, over HTTP: tokens / wall time (prefill, HTTP included),
                    and its decode rate 1 / TPOT p50
    engine alone    the same requests, the same replies (each to its end, `decoding.timing.time_decode`): tokens /
                    time (prefill included), and 1 / its median decode step
    ort-genai-fp32  the same, through ONNX Runtime GenAI's exact fp32 model and C++ generation loop

Medians over rounds. How close the server comes to the fastest exact single-stream path labkit has is its
tokens/s over the faster engine's on the same requests; serving's own cost is server / engine alone.
"""

from __future__ import annotations

import statistics

import pandas as pd
import torch

from labkit import measure, plots

GENAI = "ort-genai-fp32"


def one_client(model: str, prompts: list[str], max_tokens: int = 64, rounds: int = 3,
               prompt_tokens: int = 128) -> plots.Measured:  # fmt: skip
    """The server and its engine alone, alternated `rounds` times (see the module docstring).

    Args:
        model: a registered Llama-layout model (the ONNX Runtime runner's). prompts: chat messages, sent in order.
        max_tokens: the most tokens per reply. rounds: alternations (>= 1).
        prompt_tokens: the held-out prompt's length for the exactness check against `generate()`.
    Returns:
        Measured: table (round, path, tokens, tokens_per_s, decode_tok_s) whose attrs["summary"] holds the
        medians ({server,engine,genai}_tok_s, {server,engine,genai}_decode_tok_s), fastest_exact (the engine with
        the most tokens/s), vs_fastest = server_tok_s / its tokens/s, serving_cost = server_tok_s / engine_tok_s,
        decode_vs_fastest = server_decode_tok_s / the best engine decode rate, whether the engine alone gave
        transformers' greedy tokens (held-out prompt) and ONNX Runtime GenAI's (the requests), and each path's
        spread over rounds; a bar chart.
    Raises:
        ValueError: rounds < 1 or no prompts. Unavailable (from the server or a backend) when one cannot run.
    """
    from labkit.decoding.lm import eos_ids
    from labkit.decoding.timing import time_decode
    from labkit.experiments.fast_decode import held_out_prompts
    from labkit.generation import get_backend
    from labkit.generation.hf import reference_tokens
    from labkit.models import load_cached
    from labkit.serving.handlers import chat_prompt
    from labkit.serving.loadgen import run_load
    from labkit.serving.paged.offline import generate_offline
    from labkit.serving.paged.ort_runner import OrtRunner
    from labkit.serving.protocol import Message
    from labkit.serving.server_process import labkit_server

    if rounds < 1 or not prompts:
        raise ValueError(f"need rounds >= 1 and at least one prompt, got {rounds} and {len(prompts)}")
    lm, tok = load_cached(model)
    runner = OrtRunner(lm.eval(), num_blocks=64, block_size=16)  # 1,024 slots: one sequence at a time
    held_out = held_out_prompts(model, 1, prompt_tokens)[0]
    chats = [chat_prompt(tok, [Message(role="user", content=p)]) for p in prompts]
    replies = [len(generate_offline(runner, ids, max_tokens, eos=eos_ids(lm))) for ids in chats]  # as served
    genai = get_backend(GENAI, model)
    genai.load(model, threads=torch.get_num_threads())
    timed = lambda ids, n, warmup=0: time_decode(  # noqa: E731
        lambda mark: [generate_offline(runner, ids, n, mark=mark)], 1, n, warmup=warmup, repeat=1)
    exact = timed(held_out, max_tokens, warmup=1).tokens == reference_tokens(model, [held_out], max_tokens)
    rows, same = [], True
    with labkit_server(model, "paged", runner="onnxruntime") as server:
        load = {"prompts": prompts, "max_tokens": max_tokens, "temperature": 0.0, "chat": True}
        run_load(server.url, model, **{**load, "max_tokens": 4}, clients=1, requests=2)  # warm-up
        for r in range(rounds):
            res = run_load(server.url, model, **load, clients=1, requests=len(prompts))
            rows.append({"round": r, "path": "server", "tokens": int(res.records.tokens.sum()),  # from `usage`
                         "tokens_per_s": res.summary["tokens_per_s"], "decode_tok_s": 1 / res.summary["tpot_p50_s"]})
            alone = [timed(ids, n) for ids, n in zip(chats, replies, strict=True)]
            theirs = [genai.generate([ids], n, warmup=0, repeat=1) for ids, n in zip(chats, replies, strict=True)]
            # GenAI is held to exactly n tokens by its min_length, which also bars EOS as the last one: compare the
            # tokens before it
            same &= all(a.tokens[0][:-1] == g.tokens[0][:-1] for a, g in zip(alone, theirs, strict=True))
            rows += [{"round": r, "path": path, **_pooled(runs)} for path, runs in (("engine alone", alone),
                                                                                   (GENAI, theirs))]
    table = measure.results_frame(rows, model=model, max_tokens=max_tokens, prompts=list(prompts))
    med = table.groupby("path", sort=False)[["tokens_per_s", "decode_tok_s"]].median()
    engines = med.drop(index="server")
    fastest, fastest_decode = engines.tokens_per_s.idxmax(), engines.decode_tok_s.max()
    table.attrs["summary"] = {
        "rounds": rounds, "server_tok_s": med.tokens_per_s["server"], "engine_tok_s": med.tokens_per_s["engine alone"],
        "genai_tok_s": med.tokens_per_s[GENAI], "server_decode_tok_s": med.decode_tok_s["server"],
        "engine_decode_tok_s": med.decode_tok_s["engine alone"], "genai_decode_tok_s": med.decode_tok_s[GENAI],
        "fastest_exact": fastest, "vs_fastest": med.tokens_per_s["server"] / med.tokens_per_s[fastest],
        "serving_cost": med.tokens_per_s["server"] / med.tokens_per_s["engine alone"],
        "decode_vs_fastest": med.decode_tok_s["server"] / fastest_decode,
        "engine_tokens_equal_generate": bool(exact), "engine_tokens_equal_genai": bool(same),
        "round_spread": _spread(table)}
    long = med.reset_index().melt(id_vars="path", var_name="measure", value_name="tokens/s").dropna()
    long.attrs = table.attrs
    fig = plots.bars(long, "path", "tokens/s", f"One client: the server vs its engine alone — {model}",
                     color="measure", ylabel="tokens/s (median of rounds)")
    return plots.Measured(table, fig)


def _pooled(runs) -> dict:
    """One path's DecodeRuns over the requests: tokens, tokens/s (prefill included) and 1 / the median step."""
    tokens, steps = sum(r.new_tokens for r in runs), [s for r in runs for s in r.step_s]
    return {"tokens": tokens, "tokens_per_s": tokens / sum(r.total_s for r in runs),
            "decode_tok_s": 1 / statistics.median(steps) if steps else float("nan")}


def _spread(table: pd.DataFrame) -> dict:
    """Per path, (max − min) / median of its decode rate over rounds: how much the machine moved."""
    out = {}
    for path, part in table.groupby("path", sort=False):
        v = part.decode_tok_s.tolist()
        out[path] = (max(v) - min(v)) / statistics.median(v) if len(v) > 1 else 0.0
    return out
