"""The fastest way to decode an LLM on this CPU, measured against llama.cpp and the bandwidth limit.

Every decode backend in `labkit.generation` runs the same held-out prompts (Shakespeare test plays), the same number
of new tokens, greedy, timed by `decoding.timing` (warm-up, then prefill and every decode step apart, medians over
repeats). Exact backends (fp32) must reproduce HF's greedy tokens; quantized ones report their agreement.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import psutil
from tqdm.auto import tqdm

from labkit import measure, models, plots
from labkit.data import eval_tokens
from labkit.generation import BACKENDS, reference_tokens, registry


def held_out_prompts(model: str, batch: int, prompt_tokens: int) -> list[list[int]]:
    """`batch` different prompts of exactly `prompt_tokens` tokens from the test plays.

    Args:
        model: a registered model name (its tokenizer is used). batch, prompt_tokens: the prompts' shape.
    Returns:
        (batch, prompt_tokens) token ids of `model`'s tokenizer: consecutive windows of the held-out text.
    """
    _, tok = models.load_cached(model)
    ids = eval_tokens(tok, budget=batch * prompt_tokens, window=prompt_tokens)
    return ids[:batch].tolist()


def top1_agreement(logits: np.ndarray | None, reference: np.ndarray) -> float:
    """Teacher-forced next-token agreement: at each position of the held-out text, the same argmax as fp32?

    Args:
        logits, reference: (batch, seq, vocab) logits on the same prompts (None when a backend exposes none).
    Returns:
        the share of positions whose argmax agrees, or NaN without logits.
    """
    return float((logits.argmax(-1) == reference.argmax(-1)).mean()) if logits is not None else math.nan


def compare_generators(model: str = "smollm2-135m", names=None, prompt_tokens: int = 128, new_tokens: int = 64,
                       batch_sizes=(1, 8), threads: int = 2, repeat: int = 3,
                       bandwidth_gbps: float | None = None) -> plots.Measured:
    """Decode tokens/s (per batch size), prefill latency, memory and agreement of each decode backend.

    Args:
        model: a registered model name.
        names: decode backends to run (default: every one in `generation.BACKENDS`).
        prompt_tokens: tokens per held-out prompt. new_tokens: tokens generated per prompt (>= 2).
        batch_sizes: prompts decoded together, one measurement each.
        threads: CPU threads of every backend.
        repeat: timed generations per batch size, after one warm-up (`decoding.timing`).
        bandwidth_gbps: memory read bandwidth, GB/s, for the bound batch × bandwidth / weight bytes (default:
            `measure.memory_bandwidth()`).
    Returns:
        Measured: a table with one row per backend and batch (generator, batch, available, reason, exact,
        greedy_prefix_agreement, top1_agreement, decode_tok_s, prefill_ms, weight_MB, rss_growth_MB,
        bandwidth_bound_tok_s, pct_of_bound, vs_llama_cpp) and a bar chart. Backends that cannot run here stay in
        the table with available=False and the reason. attrs: bandwidth_GBps, bandwidth_samples_GBps (every
        repeat; empty when the bandwidth was given) and measured_on (the device it
        was measured on).
    Raises:
        ValueError: for unknown backend names (naming the valid ones) or sizes out of range.
    """
    names = list(names or BACKENDS)
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown decode backends {unknown}; choose from {list(BACKENDS)}")
    if min(batch_sizes) < 1 or new_tokens < 2 or prompt_tokens < 1 or repeat < 1:
        raise ValueError("batch sizes, prompt_tokens and repeat must be >= 1, new_tokens >= 2")
    measured = bandwidth_gbps or measure.memory_bandwidth()
    bw = measured * 1e9
    prompts = {b: held_out_prompts(model, b, prompt_tokens) for b in batch_sizes}
    first = prompts[min(batch_sizes)]
    reference = reference_tokens(model, first, new_tokens)
    hf_fp32 = registry()["hf-eager-fp32"]
    hf_fp32.load(model, threads)
    reference_logits = hf_fp32.logits(first)
    del hf_fp32
    process, rows = psutil.Process(), []
    for name in tqdm(names, desc=f"decode backends ({model})"):
        backend = registry()[name]
        ok, reason = backend.available(model)
        if not ok:
            rows.append({"generator": name, "available": False, "reason": reason})
            continue
        rss_before = process.memory_info().rss
        backend.load(model, threads)
        rss_mb = (process.memory_info().rss - rss_before) / 1e6
        top1 = top1_agreement(backend.logits(first), reference_logits)
        prefix = math.nan
        for b in batch_sizes:
            if backend.max_batch is not None and b > backend.max_batch:
                rows.append({"generator": name, "batch": b, "available": False,
                             "reason": f"decodes at most {backend.max_batch} sequence(s) together: batch {b} not run"})
                continue
            run = backend.generate(prompts[b], new_tokens, warmup=1, repeat=repeat)
            if b == min(batch_sizes):
                prefix = measure.prefix_agreement(run.tokens, reference)
            step = backend.step_bytes or backend.weight_bytes  # what one step reads (`generation.step_bytes`)
            bound = b * bw / step
            rows.append({"generator": name, "batch": b, "available": True, "reason": backend.description,
                         "exact": backend.exact, "greedy_prefix_agreement": prefix, "top1_agreement": top1,
                         "decode_tok_s": run.decode_tok_s, "prefill_ms": run.prefill_s * 1e3,
                         "weight_MB": backend.weight_bytes / 1e6, "step_read_MB": step / 1e6, "rss_growth_MB": rss_mb,
                         "bandwidth_bound_tok_s": bound, "pct_of_bound": 100 * run.decode_tok_s / bound})  # fmt: skip
        del backend
    table = measure.results_frame(rows, model=model, prompt_tokens=prompt_tokens, new_tokens=new_tokens,
                                  bandwidth_GBps=bw / 1e9,
                                  bandwidth_samples_GBps=list(getattr(measured, "samples", ())),
                                  measured_on=getattr(measured, "device_name", "(bandwidth given)"))  # fmt: skip
    peer = table[(table.generator == "llama.cpp") & (table.get("batch") == 1) & table.available]
    if "decode_tok_s" in table:
        table["vs_llama_cpp"] = table.decode_tok_s / peer.decode_tok_s.iloc[0] if len(peer) else math.nan
    return plots.Measured(table, decode_figure(table))


def decode_figure(table: pd.DataFrame):
    """Decode tokens/s of each backend that ran, one bar per batch size.

    Args:
        table: `compare_generators`' table.
    Returns:
        a bar figure.
    """
    ran = table[table.available & table.get("decode_tok_s", pd.Series(dtype=float)).notna()].copy()
    ran["batch"] = "batch " + ran.batch.astype(int).astype(str)
    ran.attrs = table.attrs
    return plots.bars(ran, x="generator", y="decode_tok_s", color="batch", ylabel="tokens/s (decode, greedy)",
                      title=f"{table.attrs.get('model', '')}: decode speed of each decode backend")  # fmt: skip
