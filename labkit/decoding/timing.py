"""The one decode timing: time to first token and time per output token, the same way for every engine.

Every lab and benchmark that reports "decode tokens/s" gets it from a `DecodeRun`, so all of them measure the
same thing:

- **prefill_s (TTFT)**: from the start of a generation to the first new token (the prompt's forward + one pick);
- **step_s**: the time of each later token, one decode step each (a cached forward over 1 token per sequence);
- warm-up generations are run first (caches, lazy init, compilation), then `repeat` timed ones; each statistic is
  the median over repeats (per step: over all steps of all repeats); the device is synchronised before every
  clock read.

`decode_tok_s` = batch / median step time (tokens the batch gains per second of decoding, prefill excluded).

Entry points:
    run = time_greedy(model, input_ids, new_tokens=32)           # a transformers model: greedy generate() + clock
    run = time_generate(model, input_ids, 32, generation_config=cfg)   # any generate() method (beam, assisted, ...)
    run = time_decode(lambda mark: my_loop(mark), batch=1, new_tokens=32)   # any loop that calls mark() per token
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import CompileConfig, LogitsProcessorList
from transformers.generation.configuration_utils import GenerationMode

from labkit.measure import sync_device


@dataclass(frozen=True)
class DecodeRun:
    """One timed decode: the tokens it produced and where its time went (seconds).

    tokens: (batch, new_tokens) generated ids of the last repeat. prefill_s: median TTFT. step_s: every decode
    step's duration, all repeats pooled (new_tokens - 1 per repeat). batch, new_tokens: the shape timed.
    repeats: timed generations. totals_s: wall time of each timed generation (start to last token).
    warmups_s: wall time of each untimed warm-up generation (the first one pays any compilation).
    """

    tokens: list[list[int]]
    prefill_s: float
    step_s: tuple[float, ...]
    batch: int
    new_tokens: int
    repeats: int = 1
    totals_s: tuple[float, ...] = field(default=(), repr=False)
    warmups_s: tuple[float, ...] = field(default=(), repr=False)

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
        """Tokens the whole batch gains per second of decoding: batch / median step time.

        Not meaningful for assisted (speculative) generation, where several tokens arrive at once: use
        `end_to_end_tok_s` there.
        """
        return self.batch / self.tpot_s if self.step_s and self.tpot_s > 0 else float("nan")

    @property
    def total_s(self) -> float:
        """Median wall time of one whole generation (prefill + every step), seconds."""
        return statistics.median(self.totals_s) if self.totals_s else self.prefill_s + sum(self.step_s)

    @property
    def end_to_end_tok_s(self) -> float:
        """New tokens of the whole batch per second of the whole generation, prefill included:
        batch × new_tokens / total_s."""
        return self.batch * self.new_tokens / self.total_s if self.total_s > 0 else float("nan")

    def row(self) -> dict[str, float]:
        """The run as a table row: batch, new_tokens, ttft_ms, tpot_ms, decode_tok_s."""
        return {"batch": self.batch, "new_tokens": self.new_tokens, "ttft_ms": self.ttft_s * 1e3,
                "tpot_ms": self.tpot_s * 1e3, "decode_tok_s": self.decode_tok_s}


def time_decode(generate: Callable[[Callable[[], None]], Sequence[Sequence[int]]], batch: int, new_tokens: int,
                warmup: int = 1, repeat: int = 3) -> DecodeRun:
    """Time any decode loop that calls `mark()` once per produced token (for the whole batch).

    Args:
        generate: runs one generation of `new_tokens` tokens for `batch` sequences, calling `mark()` right after each
            token is produced (the first call ends the prefill); returns the generated ids, shape (batch, new_tokens).
        batch: sequences decoded together. new_tokens: tokens per sequence (>= 1).
        warmup: untimed generations first (>= 0). repeat: timed generations (>= 1).
    Returns:
        DecodeRun (seconds; tokens of the last repeat).
    Raises:
        ValueError: for new_tokens, batch or repeat < 1, warmup < 0, or when `generate` called mark() a different
            number of times than new_tokens (the loop stopped early, e.g. at EOS: force the length when timing).
    """
    if new_tokens < 1 or batch < 1 or repeat < 1 or warmup < 0:
        raise ValueError(f"new_tokens, batch and repeat must be >= 1 and warmup >= 0 "
                         f"(got {new_tokens}, {batch}, {repeat}, {warmup})")
    prefills, steps, totals, warmups, tokens = [], [], [], [], []
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
        if i < warmup:
            sync_device()
            warmups.append(time.perf_counter() - start)
            continue
        prefills.append(marks[0] - start)
        steps += [b - a for a, b in zip(marks, marks[1:], strict=False)]
        totals.append(marks[-1] - start)
    return DecodeRun(tokens, statistics.median(prefills), tuple(steps), batch, new_tokens, repeat, tuple(totals),
                     tuple(warmups))


class _LogitsClock:
    """A logits processor that marks the clock each time generate() has a step's logits (one per new token of
    greedy, sampling and beam search)."""

    def __init__(self) -> None:
        self.mark: Callable[[], None] = lambda: None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.mark()
        return scores


class _StreamClock:
    """A streamer that marks the clock once per new token it receives. Assisted (speculative) generation hands it
    every accepted token of a verification step at once; its logits processors run per candidate, not per token."""

    def __init__(self) -> None:
        self.mark: Callable[[], None] = lambda: None
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() streams the prompt first
            self.prompt_seen = True
            return
        for _ in range(value.shape[-1] if value.dim() == 2 else 1):
            self.mark()

    def end(self) -> None:
        self.prompt_seen = False


def _split(model, new_tokens: int, generate_kwargs: dict):
    """(a GenerationConfig holding every generation setting, the other generate() arguments): transformers
    deprecates passing a generation_config together with generation settings as keyword arguments."""
    config = copy.deepcopy(generate_kwargs.pop("generation_config", None) or model.generation_config)
    pad = config.pad_token_id if config.pad_token_id is not None else model.generation_config.pad_token_id or 0
    others = config.update(**{"pad_token_id": pad, **generate_kwargs, "max_new_tokens": new_tokens,
                              "min_new_tokens": new_tokens})
    return config, others


def _is_assisted(config, others: dict) -> bool:
    return config.get_generation_mode(others.get("assistant_model")) == GenerationMode.ASSISTED_GENERATION


def time_generate(model, input_ids: torch.Tensor, new_tokens: int = 32, warmup: int = 1, repeat: int = 3,
                  attention_mask: torch.Tensor | None = None, **generate_kwargs) -> DecodeRun:
    """Time `model.generate()` with any decoding method, a clock read at every produced token.

    The clock is a logits processor (read once per step: greedy, sampling, beam search) or, for assisted
    generation (assistant_model=, prompt_lookup_num_tokens=), a streamer that reads it once per accepted token;
    there several tokens arrive at once, so compare `total_s` / `end_to_end_tok_s`, not `decode_tok_s`.

    Args:
        model: a transformers causal LM (any cache implementation, compiled or not, quantized or not).
        input_ids: (batch, prompt_len) prompt ids on the model's device.
        new_tokens: tokens generated per sequence; exactly this many (min_new_tokens forces past EOS).
        warmup, repeat: untimed and timed generations. Seed torch before the call for reproducible sampling.
        attention_mask: (batch, prompt_len); all ones when omitted.
        **generate_kwargs: passed to generate() (generation_config=, assistant_model=, cache_implementation=, ...).
    Returns:
        DecodeRun with the tokens of the last repeat, shape (batch, new_tokens).
    Raises:
        ValueError: as `time_decode`.
    """
    mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
    config, kwargs = _split(model, new_tokens, dict(generate_kwargs))
    if _is_assisted(config, kwargs):
        clock = _StreamClock()
        kwargs["streamer"] = clock
    else:
        clock = _LogitsClock()
        kwargs["logits_processor"] = LogitsProcessorList([clock])

    def generate(mark: Callable[[], None]) -> list[list[int]]:
        clock.mark = mark
        with torch.no_grad():  # not inference_mode: optimum-quanto's weights cannot be used inside it
            out = model.generate(input_ids, attention_mask=mask, generation_config=config, **kwargs)
        return out[:, input_ids.shape[1]:].tolist()

    return time_decode(generate, batch=input_ids.shape[0], new_tokens=new_tokens, warmup=warmup, repeat=repeat)


def time_greedy(model, input_ids: torch.Tensor, new_tokens: int = 32, warmup: int = 1, repeat: int = 3,
                attention_mask: torch.Tensor | None = None, **generate_kwargs) -> DecodeRun:
    """Time greedy `model.generate()` with a clock read at every produced token (`time_generate` with
    do_sample=False).

    Args:
        model: a transformers causal LM (any cache implementation, compiled or not, quantized or not).
        input_ids: (batch, prompt_len) prompt ids on the model's device.
        new_tokens: tokens generated per sequence; exactly this many (min_new_tokens forces past EOS).
        warmup, repeat: untimed and timed generations.
        attention_mask: (batch, prompt_len); all ones when omitted.
        **generate_kwargs: passed to generate() (e.g. `**static_cache_compile()`).
    Returns:
        DecodeRun with the greedy tokens, shape (batch, new_tokens).
    Raises:
        ValueError: as `time_decode`.
    """
    return time_generate(model, input_ids, new_tokens, warmup, repeat, attention_mask,
                         **{"do_sample": False, **generate_kwargs})


def static_cache_compile(fullgraph: bool = False, dynamic: bool = False, mode: str = "reduce-overhead") -> dict:
    """generate() keyword arguments for a static (pre-allocated) KV cache whose decode step torch.compile compiles.

    transformers compiles the decode step of a static cache by itself only on accelerators; the private flag
    `CompileConfig._compile_all_devices` asks it to on the CPU too (transformers 5's generation utils).

    Args:
        fullgraph, dynamic, mode: passed to torch.compile through transformers' CompileConfig; mode
            "reduce-overhead" (transformers' default) captures the compiled step as a CUDA graph on a GPU.
    Returns:
        {"cache_implementation": "static", "compile_config": CompileConfig(...)}, for `generate(**kwargs)`.
    """
    config = CompileConfig(fullgraph=fullgraph, dynamic=dynamic, mode=mode)
    config._compile_all_devices = True  # the one place this private flag is set
    return {"cache_implementation": "static", "compile_config": config}


def random_prompt(batch: int, tokens: int, vocab: int, seed: int = 0) -> torch.Tensor:
    """Reproducible random prompt ids for timing (ids >= 10 skip the usual special tokens).

    Args:
        batch: sequences. tokens: prompt length. vocab: vocabulary size (> 10). seed: generator seed.
    Returns:
        (batch, tokens) int64 ids on the CPU.
    Raises:
        ValueError: for batch or tokens < 1 or vocab <= 10.
    """
    if batch < 1 or tokens < 1 or vocab <= 10:
        raise ValueError(f"batch and tokens must be >= 1 and vocab > 10 (got {batch}, {tokens}, {vocab})")
    return torch.randint(10, vocab, (batch, tokens), generator=torch.Generator().manual_seed(seed))
