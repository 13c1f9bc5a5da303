"""Tiny rank functions the launcher's own tests run (they must live in an importable module)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from labkit.parallel.comm import CommCounter, CommLog, all_gather, all_reduce


def rank_and_sum() -> dict:
    """Each rank contributes rank + 1; all-reduce sums them."""
    t = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(t)
    return {
        "rank": dist.get_rank(),
        "world_size": dist.get_world_size(),
        "sum": t.item(),
        "backend": dist.get_backend(),
    }


def fail_on_rank(bad_rank: int = 1) -> None:
    """One rank raises while the other waits in a collective that can never complete."""
    if dist.get_rank() == bad_rank:
        raise ValueError(f"deliberate failure on rank {bad_rank}")
    dist.barrier()


def collectives() -> CommLog:
    """A tagged all-reduce and all-gather as labkit's layers issue them, then untagged collectives as a library
    would (an all-reduce of 40 bytes, a reduce-scatter of 32, an all-gather into 32), all counted."""
    with CommCounter() as counter:
        all_reduce(torch.ones(4, 8), "attention")  # 128 bytes
        all_gather(torch.ones(2, 3), -1, "lm_head")  # 24 bytes from each rank, 48 gathered
        dist.all_reduce(torch.ones(10))
        dist.reduce_scatter_tensor(torch.empty(4), torch.ones(8))
        dist.all_gather_into_tensor(torch.empty(8), torch.ones(4))
    return counter.log


def deepspeed_accelerator() -> dict:
    """This rank's DS_ACCELERATOR and, when DeepSpeed is installed, the accelerator DeepSpeed picked (its
    `device_name()`: "cpu" or "cuda")."""
    import importlib.util  # the launcher's tests run without DeepSpeed too

    name = None
    if importlib.util.find_spec("deepspeed") is not None:
        from deepspeed.accelerator import get_accelerator  # optional and slow to import: only this rank pays

        name = get_accelerator().device_name()
    return {"env": os.environ.get("DS_ACCELERATOR"), "accelerator": name, "backend": dist.get_backend()}


def environment_and_directory(name: str) -> dict:
    """This rank's value of environment variable `name`, its working directory and its parent's pid."""
    return {"value": os.environ.get(name), "cwd": os.getcwd(), "ppid": os.getppid()}


def burn_cpu(seconds: float) -> float:
    """Keep one core busy for `seconds` of this process's CPU time; returns the CPU seconds used."""
    import time

    torch.set_num_threads(1)
    start = time.process_time()
    while time.process_time() - start < seconds:
        sum(i * i for i in range(10_000))
    return time.process_time() - start
