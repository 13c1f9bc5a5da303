"""The one decode timing: time to first token and time per output token, the same way for every engine.

Every lab and benchmark that reports "decode tokens/s" gets it from a `DecodeRun`, so labs 05, 07, 08, 12 and the
benchmarks measure the same thing:

- **prefill_s (TTFT)**: from the start of a generation to the first new token (the prompt's forward + one pick);
- **step_s**: the time of each later token, one decode step each (a cached forward over 1 token per sequence);
- warm-up generations are run first (caches, lazy init, compilation), then `repeat` timed ones; each statistic is
  the median over repeats (per step: over all steps of all repeats); CUDA is synchronised before every clock read.

`decode_tok_s` = batch / median step time (tokens the batch gains per second of decoding, prefill excluded).

Two entry points:
    run = time_greedy(model, input_ids, new_tokens=32)           # a transformers model: generate() with a clock
    run = time_decode(lambda mark: my_loop(mark), batch=1, new_tokens=32)   # any loop that calls mark() per token
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from labkit.measure import sync_device


@dataclass(frozen=True)
class DecodeRun:
    """One timed decode: the tokens it produced and where its time went (seconds).

    tokens: (batch, new_tokens) generated ids of the last repeat. prefill_s: median TTFT. step_s: every decode
    step's duration, all repeats pooled (new_tokens - 1 per repeat). batch, new_tokens: the shape timed.
    """

    tokens: list[list[int]]
    prefill_s: float
    step_s: tuple[float, ...]
    batch: int
    new_tokens: int
    repeats: int = 1
    totals_s: tuple[float, ...] = field(default=(), repr=False)  # wall time of each timed generation

    @property
    def ttft_s(self) -> float:
        """Time to first token, seconds (median over repeats)."""
        return self.prefill_s

    @property
    def tpot_s(self) -> float:
        """Time per output token after the first, seconds (median decode step)."""
        return statistics.median(self.step_s) if self.step_s else float("nan")

    @property
    def decode_tok_s(self) -> float:
        """Tokens the whole batch gains per second of decoding: batch / median step time."""
        return self.batch / self.tpot_s if self.step_s and self.tpot_s > 0 else float("nan")

    @property
    def total_s(self) -> float:
        """Median wall time of one whole generation (prefill + every step), seconds."""
        return statistics.median(self.totals_s) if self.totals_s else self.prefill_s + sum(self.step_s)

    def row(self) -> dict[str, float]:
        """The run as a table row: ttft_ms, tpot_ms, decode_tok_s, batch, new_tokens."""
        return {"batch": self.batch, "new_tokens": self.new_tokens, "ttft_ms": self.ttft_s * 1e3,
                "tpot_ms": self.tpot_s * 1e3, "decode_tok_s": self.decode_tok_s}


def time_decode(generate: Callable[[Callable[[], None]], Sequence[Sequence[int]]], batch: int, new_tokens: int,
                warmup: int = 1, repeat: int = 3) -> DecodeRun:
    """Time any decode loop that calls `mark()` once per produced token (for the whole batch).

    Args:
        generate: runs one generation of `new_tokens` tokens for `batch` sequences, calling `mark()` right after each
            token is produced (the first call ends the prefill); returns the generated ids, shape (batch, new_tokens).
        batch: sequences decoded together. new_tokens: tokens per sequence (>= 1).
        warmup: untimed generations first. repeat: timed generations (>= 1).
    Returns:
        DecodeRun (seconds; tokens of the last repeat).
    Raises:
        ValueError: for new_tokens, batch or repeat < 1, or when `generate` called mark() a different number of times
            than new_tokens (the loop stopped early, e.g. at EOS: force the length when timing).
    """
    if new_tokens < 1 or batch < 1 or repeat < 1:
        raise ValueError(f"new_tokens, batch and repeat must be >= 1 (got {new_tokens}, {batch}, {repeat})")
    prefills, steps, totals, tokens = [], [], [], []
    for i in range(warmup + repeat):
        marks: list[float] = []

        def mark(marks: list[float] = marks) -> None:
            sync_device()  # a GPU token is produced when its kernels finish, not when they are launched
            marks.append(time.perf_counter())

        sync_device()
        start = time.perf_counter()
        tokens = [list(map(int, t)) for t in generate(mark)]
        if len(marks) != new_tokens:
            raise ValueError(f"the decode loop marked {len(marks)} tokens, expected {new_tokens}")
        if i >= warmup:
            prefills.append(marks[0] - start)
            steps += [b - a for a, b in zip(marks, marks[1:], strict=False)]
            totals.append(marks[-1] - start)
    return DecodeRun(tokens, statistics.median(prefills), tuple(steps), batch, new_tokens, repeat, tuple(totals))


class _Clock:
    """A logits processor that marks the clock each time generate() has new logits (one per produced token)."""

    def __init__(self) -> None:
        self.mark: Callable[[], None] = lambda: None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.mark()
        return scores


def time_greedy(model, input_ids: torch.Tensor, new_tokens: int = 32, warmup: int = 1, repeat: int = 3,
                attention_mask: torch.Tensor | None = None, **generate_kwargs) -> DecodeRun:
    """Time greedy `model.generate()` with a clock read at every produced token.

    Args:
        model: a transformers causal LM (any cache implementation, compiled or not, quantized or not).
        input_ids: (batch, prompt_len) prompt ids on the model's device.
        new_tokens: tokens generated per sequence; exactly this many (min_new_tokens forces past EOS).
        warmup, repeat: untimed and timed generations.
        attention_mask: (batch, prompt_len); all ones when omitted.
        **generate_kwargs: passed to generate() (e.g. cache_implementation="static", compile_config=...).
    Returns:
        DecodeRun with the greedy tokens, shape (batch, new_tokens).
    """
    from transformers import LogitsProcessorList

    clock = _Clock()
    mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
    kwargs = {"do_sample": False, "pad_token_id": getattr(model.generation_config, "pad_token_id", None) or 0,
              **generate_kwargs}

    def generate(mark: Callable[[], None]) -> list[list[int]]:
        clock.mark = mark
        with torch.inference_mode():
            out = model.generate(input_ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 logits_processor=LogitsProcessorList([clock]), **kwargs)
        return out[:, input_ids.shape[1]:].tolist()

    return time_decode(generate, batch=input_ids.shape[0], new_tokens=new_tokens, warmup=warmup, repeat=repeat)
