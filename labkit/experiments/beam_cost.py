"""Decoding's systems cost: beam search keeps `num_beams` sequences alive, so every forward of transformers'
`generate()` runs a batch `num_beams` times greedy's and its KV cache holds `num_beams` times the keys and values
(`anatomy.kv_cache_bytes` with batch = num_beams). Measured here from the forwards `generate()` really makes (a hook
on the model) and the cache it returns; beside them, the two options of Hugging Face's "How to generate text" blog
(von Platen, 2020): `no_repeat_ngram_size` (no n-gram repeats) and `num_return_sequences` (several outputs at once).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
import torch

from labkit import anatomy, decoding, devices, measure, models, plots
from labkit.experiments.decoding_methods import prompt_ids


@dataclass(frozen=True)
class BeamCost:
    """What `beam_cost` measured.

    table: one row per beam width (columns in `beam_cost`'s docstring). options: one row per generate() setting of
    the blog's options. figure: the measured ratios to greedy beside the formula's.
    """

    table: pd.DataFrame
    options: pd.DataFrame
    figure: go.Figure


def repeated_ngrams(token_ids: Sequence[int], n: int, start: int = 0) -> int:
    """How many tokens at positions >= `start` complete an n-gram that already occurred earlier in `token_ids`.

    The count transformers' `NoRepeatNGramLogitsProcessor` forces to zero (it bans exactly such tokens, the prompt's
    n-grams included): pass the prompt and the output together and `start` = the prompt's length.

    Args:
        token_ids: prompt + generated ids. n: the n-gram size (>= 1). start: first position counted (>= 0).
    Returns:
        the count (int).
    Raises:
        ValueError: for n < 1 or start < 0.
    """
    decoding.check_param("n", n, n >= 1, "n >= 1")
    decoding.check_param("start", start, start >= 0, "start >= 0")
    ids, seen, count = list(token_ids), set(), 0
    for end in range(n, len(ids) + 1):  # the n-gram ids[end - n:end] ends at position end - 1
        gram = tuple(ids[end - n : end])
        count += end - 1 >= start and gram in seen
        seen.add(gram)
    return count


def _forward_shapes(model, shapes: list[tuple[int, int]]):
    """Hook recording (batch, new tokens) of every forward the model runs; returns the hook's handle."""
    def record(_module, args, kwargs):
        x = kwargs.get("input_ids")
        x = kwargs.get("inputs_embeds") if x is None else x
        x = args[0] if x is None and args else x
        shapes.append((int(x.shape[0]), int(x.shape[1])))

    return model.register_forward_pre_hook(record, with_kwargs=True)


def _config(num_beams: int, new_tokens: int, pad: int, **options):
    """Beam search (num_beams = 1: greedy) forced to exactly `new_tokens` new tokens (end of text suppressed before)."""
    cfg = decoding.beam(num_beams=num_beams, max_new_tokens=new_tokens, **options)
    cfg.update(min_new_tokens=new_tokens, pad_token_id=pad, return_dict_in_generate=True)
    return cfg


def beam_cost(model: str = "smollm2-135m", prompt: str = "Write a short poem about the sea.",
              widths: Sequence[int] = (1, 2, 4, 8), new_tokens: int = 32, ngram: int = 2, warmup: int = 0,
              repeat: int = 3, rounds: int = 1, device: str | torch.device = "auto") -> BeamCost:
    """KV-cache bytes, forward batch and time per token of generate() per beam width, and the blog's two options.

    Every generation makes exactly `new_tokens` tokens (min_new_tokens = max_new_tokens), so the widths do the same
    number of steps. Per width: the batch of each forward (a pre-hook on the model; prefill first, then one decode
    forward per further token), the bytes of the cache generate() returns (`anatomy.cache_bytes`, which then holds
    prompt + new_tokens - 1 positions: the last token is never fed back) and the formula's bytes for it
    (`anatomy.kv_cache_bytes`, batch = num_beams, the model's precision); time per token = the median generate()
    time ÷ new_tokens, every width timed side by side (`measure.benchmark_rounds`). The recorded generation of each
    width runs before any timing and warms it up (`warmup` adds untimed calls per width and round).

    Args:
        model: a registry name. prompt: the text. widths: beam widths, 1 (greedy) first, each >= 1.
        new_tokens: tokens per generation (>= 2). ngram: the no_repeat_ngram_size shown, after the blog (>= 1).
        warmup, repeat, rounds: untimed calls per width and round, timed calls per width, rounds they are split over
            (`measure.benchmark_rounds`). device: where the model runs.
    Returns:
        BeamCost. table (one row per width): num_beams, prefill_batch, decode_batch (the batch of every decode
        forward; -1 if they differ), decode_forwards, cache_batch, cache_tokens, kv_bytes, kv_bytes_formula,
        kv_ratio and batch_ratio (÷ greedy's), ms_per_token, time_ratio, device; attrs new_tokens, prompt_tokens,
        precision. options (one row per setting): setting, num_beams, no_repeat_ngram_size, num_return_sequences,
        sequences, distinct_sequences, repeated_ngrams (the most in one returned sequence, `repeated_ngrams` with
        n = ngram, generated tokens only), text (the first sequence); attrs ngram.
    Raises:
        ValueError: widths not starting at 1 or below 1, new_tokens < 2, ngram < 1, repeat or rounds < 1,
            warmup < 0, or an unknown device (naming the choices), before the model loads.
    """
    widths = tuple(widths)
    decoding.check_param("widths", widths, bool(widths) and widths[0] == 1 and min(widths) >= 1,
                         "widths starting with 1 (greedy), every width >= 1")
    decoding.check_param("new_tokens", new_tokens, new_tokens >= 2, "new_tokens >= 2")
    decoding.check_param("ngram", ngram, ngram >= 1, "ngram >= 1")
    decoding.check_param("repeat", repeat, repeat >= 1 and rounds >= 1 and warmup >= 0,
                         "repeat >= 1, rounds >= 1 and warmup >= 0")
    dev = devices.choose(device).device
    net, tok = models.load_cached(model, dev)
    ids = prompt_ids(tok, prompt).to(net.device)
    mask, pad = torch.ones_like(ids), tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    precision = str(net.dtype).removeprefix("torch.")

    def generate(cfg):
        with torch.no_grad():
            return net.generate(ids, attention_mask=mask, generation_config=cfg)

    rows, shapes = [], []
    handle = _forward_shapes(net, shapes)
    try:
        for width in widths:
            shapes.clear()
            out = generate(_config(width, new_tokens, pad))
            decode = {b for b, _ in shapes[1:]}
            layer = out.cache.layers[0].keys  # (batch, kv_heads, positions, head_dim)
            rows.append({"num_beams": width, "prefill_batch": shapes[0][0],
                         "decode_batch": decode.pop() if len(decode) == 1 else -1, "decode_forwards": len(shapes) - 1,
                         "cache_batch": int(layer.shape[0]), "cache_tokens": int(layer.shape[2]),
                         "kv_bytes": anatomy.cache_bytes(out.cache),
                         "kv_bytes_formula": anatomy.kv_cache_bytes(net.config, width, int(layer.shape[2]), precision)})
    finally:
        handle.remove()  # the model is shared (load_cached): leave it as it was
    configs = {w: _config(w, new_tokens, pad) for w in widths}
    timed = measure.benchmark_rounds({w: functools.partial(generate, cfg) for w, cfg in configs.items()},
                                     warmup=warmup, repeat=repeat, rounds=rounds)
    table = measure.results_frame(rows, model=model, new_tokens=new_tokens, prompt_tokens=ids.shape[1],
                                  precision=precision)
    table["kv_ratio"] = table.kv_bytes / table.kv_bytes.iloc[0]
    table["batch_ratio"] = table.decode_batch / table.decode_batch.iloc[0]
    table["ms_per_token"] = [timed[w].median * 1e3 / new_tokens for w in widths]
    table["time_ratio"] = table.ms_per_token / table.ms_per_token.iloc[0]
    table["device"] = devices.device_label(net.device)
    return BeamCost(table, _options(generate, ids.shape[1], new_tokens, pad, ngram, max(widths), tok),
                    _figure(table))


def _options(generate, prompt_len: int, new_tokens: int, pad: int, ngram: int, beams: int, tok) -> pd.DataFrame:
    """The blog's settings, each one generate() call: greedy without and with no_repeat_ngram_size, beam search
    without it, then with it, returning all `beams` of its sequences (the best first)."""
    beams = max(beams, 2)
    settings = {"greedy": (1, 0, 1), f"greedy, no_repeat_ngram_size={ngram}": (1, ngram, 1),
                f"{beams} beams": (beams, 0, 1),  # the last row's search also returns the other beams' outputs
                f"{beams} beams, no_repeat_ngram_size={ngram}, num_return_sequences={beams}": (beams, ngram, beams)}
    rows = []
    for name, (width, size, returned) in settings.items():
        cfg = _config(width, new_tokens, pad, no_repeat_ngram_size=size, num_return_sequences=returned)
        seqs = generate(cfg).sequences.tolist()
        rows.append({"setting": name, "num_beams": width, "no_repeat_ngram_size": size,
                     "num_return_sequences": returned, "sequences": len(seqs),
                     "distinct_sequences": len({tuple(s) for s in seqs}),
                     "repeated_ngrams": max(repeated_ngrams(s, ngram, start=prompt_len) for s in seqs),
                     "text": tok.decode(seqs[0][prompt_len:])})
    table = pd.DataFrame(rows)
    table.attrs["ngram"] = ngram
    return table


def _figure(table: pd.DataFrame) -> go.Figure:
    """Measured ratios to greedy (KV bytes, decode batch, time per token) against num_beams, the formula's line."""
    long = table.assign(formula=table.num_beams.astype(float))
    long = long.rename(columns={"kv_ratio": "KV cache (measured)", "batch_ratio": "decode batch (measured)",
                                "time_ratio": "time per token (measured)", "formula": "formula: num_beams"})
    fig = plots.line(long, "num_beams", ["formula: num_beams", "KV cache (measured)", "decode batch (measured)",
                                         "time per token (measured)"],
                     "Beam search multiplies the KV cache and the batch by num_beams", ylabel="× greedy's")
    fig.update_xaxes(type="log", tickvals=list(table.num_beams))
    return fig
