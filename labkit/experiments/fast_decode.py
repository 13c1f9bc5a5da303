"""The fastest way to decode an LLM on this CPU, measured against llama.cpp and the bandwidth limit.

Every generation engine in `engines.generators` runs the same held-out prompts (Shakespeare test plays),
the same number of new tokens, greedy; prefill and decode are timed apart, medians over repeats after a
warm-up. Exact paths (fp32) must reproduce HF's greedy tokens; quantized ones report their agreement.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import psutil

from labkit import measure, models, plots
from labkit.experiments.quantization import eval_tokens
from labkit.generation import backends


def held_out_prompts(model: str, batch: int, prompt_tokens: int) -> list[list[int]]:
    """`batch` different prompts of exactly `prompt_tokens` tokens from the test plays."""
    _, tok = models.load_cached(model)
    ids = eval_tokens(tok, budget=batch * prompt_tokens, window=prompt_tokens)
    return ids[:batch].tolist()


def agreement(tokens: list[list[int]], reference: list[list[int]]) -> float:
    """Greedy prefix agreement: the share of generated tokens identical to the reference before the first
    difference (after one, the two continuations are about different text and are not compared)."""
    same = total = 0
    for a, b in zip(tokens, reference, strict=True):
        total += len(b)
        same += next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), len(b))
    return same / total if total else math.nan


def top1_agreement(logits: np.ndarray | None, reference: np.ndarray) -> float:
    """Teacher-forced next-token agreement: at each position of the held-out text, same argmax as fp32?"""
    return float((logits.argmax(-1) == reference.argmax(-1)).mean()) if logits is not None else math.nan


def compare_generators(model: str = "smollm2-135m", names=None, prompt_tokens: int = 128, new_tokens: int = 64,
                       batch_sizes=(1, 8), threads: int = 2, repeat: int = 3,
                       bandwidth_gbps: float | None = None) -> plots.Measured:
    """Decode tokens/s (per batch size), prefill latency and memory of each generation engine."""
    from tqdm.auto import tqdm

    names = list(names or backends.GENERATORS)
    unknown = [n for n in names if n not in backends.GENERATORS]
    if unknown:
        raise ValueError(f"unknown generators {unknown}; choose from {list(backends.GENERATORS)}")
    if min(batch_sizes) < 1 or new_tokens < 2 or prompt_tokens < 1:
        raise ValueError("batch sizes and prompt_tokens must be >= 1, new_tokens >= 2")
    bw = (bandwidth_gbps or measure.memory_bandwidth()) * 1e9
    prompts = {b: held_out_prompts(model, b, prompt_tokens) for b in batch_sizes}
    first = prompts[min(batch_sizes)]
    reference = backends.reference_tokens(model, first, new_tokens)
    hf_fp32 = backends.registry()["hf-eager-fp32"]
    hf_fp32.load(model, threads)
    reference_logits = hf_fp32.logits(first)
    del hf_fp32
    process, rows = psutil.Process(), []
    for name in tqdm(names, desc=f"generators ({model})"):
        gen = backends.registry()[name]
        ok, reason = gen.available(model)
        if not ok:
            rows.append({"generator": name, "available": False, "reason": reason})
            continue
        rss_before = process.memory_info().rss
        gen.load(model, threads)
        rss_mb = (process.memory_info().rss - rss_before) / 1e6
        check = gen.generate(prompts[min(batch_sizes)], new_tokens)  # warm-up (compiles, fills caches)
        prefix = agreement(check.tokens, reference)
        top1 = top1_agreement(gen.logits(first), reference_logits)
        for b in batch_sizes:
            try:
                runs = [gen.generate(prompts[b], new_tokens) for _ in range(repeat)]
            except ValueError as err:  # e.g. llama-cpp-python: one sequence at a time
                rows.append({"generator": name, "batch": b, "available": False, "reason": str(err)})
                continue
            tok_s = measure.Stats.of([r.decode_tok_s for r in runs]).median
            prefill_ms = 1e3 * measure.Stats.of([r.prefill_s for r in runs]).median
            bound = b * bw / gen.weight_bytes
            rows.append({"generator": name, "batch": b, "available": True, "reason": gen.description,
                         "exact": gen.exact, "greedy_prefix_agreement": prefix, "top1_agreement": top1,
                         "decode_tok_s": tok_s, "prefill_ms": prefill_ms,
                         "weight_MB": gen.weight_bytes / 1e6, "rss_growth_MB": rss_mb,
                         "bandwidth_bound_tok_s": bound, "pct_of_bound": 100 * tok_s / bound})  # fmt: skip
        del gen
    table = measure.results_frame(rows, model=model, prompt_tokens=prompt_tokens, new_tokens=new_tokens,
                                  bandwidth_GBps=bw / 1e9)  # fmt: skip
    peer = table[(table.generator == "llama.cpp") & (table.get("batch") == 1) & table.available]
    if "decode_tok_s" in table:
        table["vs_llama_cpp"] = table.decode_tok_s / peer.decode_tok_s.iloc[0] if len(peer) else math.nan
    return plots.Measured(table, decode_figure(table))


def decode_figure(table: pd.DataFrame):
    ran = table[table.available & table.get("decode_tok_s", pd.Series(dtype=float)).notna()].copy()
    ran["batch"] = "batch " + ran.batch.astype(int).astype(str)
    ran.attrs = table.attrs
    return plots.bars(ran, x="generator", y="decode_tok_s", color="batch", ylabel="tokens/s (decode, greedy)",
                      title=f"{table.attrs.get('model', '')}: decode speed of each generation engine")  # fmt: skip
