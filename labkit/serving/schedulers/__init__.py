"""Schedulers behind one interface: `make_scheduler(name, model, tokenizer, **limits)`."""

from __future__ import annotations

from labkit.serving.schedulers.base import GenRequest, QueueFull, Scheduler, ShuttingDown, pick_tokens
from labkit.serving.schedulers.continuous import ContinuousScheduler
from labkit.serving.schedulers.dynamic import DynamicScheduler
from labkit.serving.schedulers.hf_continuous import HFContinuousScheduler
from labkit.serving.schedulers.sync import SyncScheduler

SCHEDULERS: dict[str, type[Scheduler]] = {
    cls.name: cls for cls in (SyncScheduler, DynamicScheduler, ContinuousScheduler, HFContinuousScheduler)
}


def make_scheduler(name: str, model, tokenizer, **limits) -> Scheduler:
    """A started scheduler; `limits` are max_batch, max_queue (and max_wait_ms for 'dynamic')."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose from {list(SCHEDULERS)}")
    return SCHEDULERS[name](model, tokenizer, **limits).start()


__all__ = ["GenRequest", "QueueFull", "Scheduler", "ShuttingDown", "pick_tokens", "SCHEDULERS", "make_scheduler"]
