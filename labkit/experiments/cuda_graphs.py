"""Launch overhead per decoded token, counted with `torch.profiler`: why CUDA graphs speed up small-batch decode.

A decode step of a small model is many small kernels; on a GPU each costs a launch (a few µs of CPU work) whether
it computes much or not. A static KV cache gives every step the same shapes, so `torch.compile(mode=
"reduce-overhead")` can capture the step as a CUDA graph and replay it with one launch. The count is the same
function on every device: on a GPU it counts kernel launches (runtime API calls and the kernels that ran), on a CPU
the ATen operators dispatched — the CPU's equivalent per-op overhead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

from labkit import hardware, measure, models
from labkit.decoding import timing
from labkit.measure import launches
from labkit.precision import FLOAT_PRECISIONS, canonical


@dataclass(frozen=True)
class LaunchCount:
    """Work dispatched per decoded token (the difference of two generations ÷ their difference in tokens, so the
    prefill and generate()'s fixed costs cancel). On a CPU `launches_per_token` counts ATen operator calls (every
    level of the dispatcher) and the CUDA fields are None."""

    model: str
    device: str
    precision: str
    variant: str  # "eager, dynamic cache" or "static cache + torch.compile (reduce-overhead)"
    counted: str  # what launches_per_token counts
    launches_per_token: float
    kernels_per_token: float | None  # CUDA kernels that ran (device events), GPU only
    graph_launches_per_token: float | None  # CUDA graph replays, GPU only

    def row(self) -> dict:
        return asdict(self)


def launches_per_token(model: str = "tiny-llama", device: str = "auto", precision: str = "fp32",
                       new_tokens: int = 8, compile: bool = False, prompt_tokens: int = 8) -> LaunchCount:
    """Kernel launches (GPU) or ATen operator calls (CPU) per decoded token of greedy generate(), with torch.profiler.

    Two profiled generations, of 2 and of `new_tokens` tokens, after an unprofiled warm-up (which pays any
    compilation and graph capture); per token = difference of their counts ÷ (new_tokens − 2).

    Args:
        model: a registry name with weights. device: "auto" (the GPU when there is one), "cpu", "cuda", "cuda:N".
        precision: fp32 | bf16 | fp16 (`DeviceChoice.half` for the device's 16-bit float). new_tokens: tokens of
            the longer generation (>= 3). compile: a static cache + torch.compile(mode="reduce-overhead")
            (`timing.static_cache_compile`; a CUDA graph on a GPU) instead of eager with the dynamic cache.
        prompt_tokens: random prompt length.
    Returns:
        LaunchCount (per decoded token, batch 1).
    Raises:
        ValueError: new_tokens < 3, a precision that is not a float or an unknown device, before loading.
    """
    dev = hardware.resolve_device(device)
    name = canonical(precision)
    if new_tokens < 3 or name not in FLOAT_PRECISIONS:
        raise ValueError(f"need new_tokens >= 3 and a precision in {list(FLOAT_PRECISIONS)}; got {new_tokens}, {name}")
    net, _ = models.load_model(model, name, device=dev)
    ids = timing.random_prompt(1, prompt_tokens, net.config.vocab_size).to(net.device)
    kwargs = timing.static_cache_compile(mode="reduce-overhead") if compile else {}
    warm = new_tokens if compile else 2  # compilation and CUDA-graph capture need several steps; eager, lazy init
    per = launches.per_token(net, ids, new_tokens, warmup_tokens=warm, **kwargs)
    cuda = net.device.type == "cuda"
    variant = "static cache + torch.compile (reduce-overhead)" if compile else "eager, dynamic cache"
    return LaunchCount(model, str(net.device), name, variant, launches.unit(net.device), per.primary(net.device),
                       per.kernels if cuda else None, per.graphs if cuda else None)


def launch_table(counts: list[LaunchCount]) -> pd.DataFrame:
    """LaunchCounts as a table.

    Args:
        counts: from `launches_per_token`, one per variant.
    Returns:
        one row per count (every LaunchCount field), with the hardware it ran on in attrs (`measure.results_frame`).
    """
    return measure.results_frame([c.row() for c in counts])
