"""A whole generation as the published benchmark times it: a prefill, then one step per further new token.

ms/token = generation wall time / (batch × new tokens), prefill included (a throughput: a request waits the
whole generation). For ZeRO-Inference every GPU runs its own `batch` sequences and the ds-zero script counts the
tokens of all streams (`total_new_tokens_generated *= world_size`): ms/token = wall / (batch × new × gpus).
"""

from __future__ import annotations

import math

from labkit.models import specs
from labkit.models.specs import GPU
from labkit.parallel.costmodel.memory import fits, offloaded_bytes
from labkit.parallel.costmodel.model import Engine, Shape, step_ms


def streams(engine: Engine, gpus: int) -> int:
    """Independent generate() streams the engine runs at once: one per GPU for ZeRO-Inference, else one."""
    return gpus if engine.strategy.startswith("zero") else 1


def generation_ms(engine: Engine, m: Shape, gpu: GPU, gpus: int, batch: int, prompt: int, new_tokens: int) -> dict:
    """Wall time of one generation (one stream's, all streams run at once), by cause.

    Args:
        engine, m, gpu, gpus: as for `model.step_ms`. batch: sequences per stream.
        prompt: prompt tokens (the prefill gives the first new token). new_tokens: tokens generated per sequence.
    Returns:
        {cause: ms} summed over the prefill and new_tokens − 1 decode steps.
    """
    off = offloaded_bytes(engine, m, gpu, gpus) if engine.strategy == "naive-pp" else 0.0
    parts = step_ms(engine, m, gpu, gpus, batch, 0, new=prompt, offloaded_bytes=off)
    for t in range(1, new_tokens):
        for k, v in step_ms(engine, m, gpu, gpus, batch, prompt + t, offloaded_bytes=off).items():
            parts[k] += v
    return parts


def ms_per_token(engine: Engine, m: Shape, gpu: GPU, gpus: int, batch: int, prompt: int = 10,
                 new_tokens: int = specs.BLOOM_BENCHMARK_NEW_TOKENS) -> dict:
    """The benchmark's ms/token and its breakdown.

    Args:
        engine, m, gpu, gpus: as for `model.step_ms`. batch: sequences (per GPU for ZeRO-Inference, as in the
        ds-zero script's --batch_size). prompt: prompt tokens. new_tokens: generated tokens per sequence.
    Returns:
        {"ms_per_token": ms, plus each cause of `step_ms` in ms per token}; {"ms_per_token": NaN} when the
        batch does not fit (`memory.fits`).
    """
    if not fits(engine, m, gpu, gpus, batch, prompt + new_tokens):
        return {"ms_per_token": math.nan}
    parts = generation_ms(engine, m, gpu, gpus, batch, prompt, new_tokens)
    scale = 1 / (batch * new_tokens * streams(engine, gpus))
    return {"ms_per_token": sum(parts.values()) * scale, **{k: v * scale for k, v in parts.items()}}
