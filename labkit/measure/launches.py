"""Work dispatched per decoded token, counted with `torch.profiler`: kernel launches on a GPU, ATen operators on a CPU.

A decode step of a small model is many small operations; each costs a dispatch (on a GPU a kernel launch, a few µs
of CPU work) whether it computes much or not. That is what CUDA graphs (one replay for the whole step) and fused
kernels (DeepSpeed-Inference's kernel injection) cut. One counter serves both lessons and every device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from labkit.measure.stats import sync_device

LAUNCH_APIS = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx")  # one kernel each
GRAPH_LAUNCH_APIS = ("cudaGraphLaunch", "cuGraphLaunch")  # one whole captured graph each


@dataclass(frozen=True)
class Dispatches:
    """What one profiled call dispatched (or, from `per_token`, the same per decoded token)."""

    launches: float  # CUDA kernel-launch API calls (`LAUNCH_APIS`)
    kernels: float  # CUDA kernels that ran (device-side events)
    graphs: float  # CUDA graph replays (`GRAPH_LAUNCH_APIS`)
    aten: float  # ATen operator calls, every level of the dispatcher (aten::linear and its aten::addmm are two)

    def primary(self, device: str | torch.device) -> float:
        """The count that stands for "launches" on this device: kernel launches on CUDA, ATen operators on a CPU."""
        return self.launches if torch.device(device).type == "cuda" else self.aten


def unit(device: str | torch.device) -> str:
    """What `Dispatches.primary` counts on a device, for tables and sentences."""
    return "CUDA kernel launch API calls" if torch.device(device).type == "cuda" else "ATen operator calls (CPU)"


def count_dispatches(fn: Callable[[], object], device: str | torch.device) -> Dispatches:
    """Run `fn()` once under `torch.profiler` and count what it dispatched.

    Args:
        fn: the work (e.g. one generate()). device: where it runs ("cpu", "cuda", "cuda:N"); CUDA activity is
            recorded only on a GPU.
    Returns:
        Dispatches of that one call (the CUDA fields are 0 on a CPU).
    """
    cuda = torch.device(device).type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sync_device()  # earlier queued work is not this call's
    with profile(activities=activities) as prof:
        fn()
        sync_device()
    counts = {"launches": 0, "kernels": 0, "graphs": 0, "aten": 0}
    for evt in prof.key_averages():
        if evt.key in LAUNCH_APIS:
            counts["launches"] += evt.count
        elif evt.key in GRAPH_LAUNCH_APIS:
            counts["graphs"] += evt.count
        elif evt.device_type == DeviceType.CUDA:
            counts["kernels"] += evt.count
        elif evt.key.startswith("aten::"):
            counts["aten"] += evt.count
    return Dispatches(**counts)


def generate_exactly(model, ids: torch.Tensor, new_tokens: int, **generate_kwargs) -> None:
    """Greedy `model.generate` of exactly `new_tokens` tokens (EOS cannot end it early), without gradients.

    Args:
        model: a transformers causal LM (or a module wrapping one, e.g. DeepSpeed's) on ids' device.
        ids: (batch, seq) prompt token ids. generate_kwargs: e.g. `timing.static_cache_compile()`.
    """
    with torch.no_grad():
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, pad_token_id=0, **generate_kwargs)  # fmt: skip


def per_token(model, ids: torch.Tensor, new_tokens: int = 8, warmup_tokens: int = 2,
              **generate_kwargs) -> Dispatches:
    """Dispatches per decoded token of greedy generation: two profiled generations, of 2 and of `new_tokens` tokens,
    after an unprofiled warm-up; (long − short) ÷ (new_tokens − 2) is one decode step's work (the prefill, the first
    step and generate()'s fixed costs cancel).

    Args:
        model: a transformers causal LM on ids' device. ids: (batch, seq) prompt.
        new_tokens: tokens of the longer generation (>= 3).
        warmup_tokens: tokens of the warm-up generation (lazy initialisation, compilation and CUDA-graph capture
            happen there, not in the counts: give a compiled model several).
        generate_kwargs: passed to every generate() (e.g. a static cache + torch.compile).
    Returns:
        Dispatches per decoded token.
    Raises:
        ValueError: new_tokens < 3, before running anything.
    """
    if new_tokens < 3:
        raise ValueError(f"new_tokens must be >= 3 (a 2-token generation is subtracted), got {new_tokens}")
    generate_exactly(model, ids, warmup_tokens, **generate_kwargs)
    short = count_dispatches(lambda: generate_exactly(model, ids, 2, **generate_kwargs), ids.device)
    long = count_dispatches(lambda: generate_exactly(model, ids, new_tokens, **generate_kwargs), ids.device)
    steps = new_tokens - 2
    return Dispatches(*((getattr(long, f) - getattr(short, f)) / steps
                        for f in ("launches", "kernels", "graphs", "aten")))  # fmt: skip
