"""Start N ranks of real `torch.distributed` from a notebook or a script — or join `torchrun`'s.

    from labkit.parallel.launch import run_distributed
    results = run_distributed(tp.tp_forward, "tiny-llama", world_size=2)   # one result per rank, in rank order

Each rank is a fresh process (forked from a fork server on a CPU-only machine, else spawned: `start_method`): it
joins a process group (gloo on CPU, NCCL when there is a GPU per rank), runs `fn(*args, **kwargs)` and sends its
return value back. `fn` must live in an importable module (not a notebook cell) so the ranks can find it.

Under `torchrun` (RANK/WORLD_SIZE/MASTER_ADDR already set) the same function runs in place, on one machine or
across several (`multinode.torchrun_command` writes the command line of each node's agent):

    torchrun --nproc_per_node=8 -m labkit.parallel.launch labkit.parallel.tp:layer_parity

A rank that raises ends the whole run: the others are stopped and the error carries that rank's
traceback — a notebook never hangs on a collective that will not complete.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import io
import os
import pickle
import queue
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from labkit import devices
from labkit.hardware import resolve_device
from labkit.measure import Stats, sync_device
from labkit.parallel import start_method

BACKENDS = ("auto", "gloo", "nccl")


class RankFailed(RuntimeError):
    """A rank raised; the message holds its traceback."""


def pick_backend(backend: str, world_size: int) -> str:
    """The process-group backend: 'auto' -> NCCL when every rank can have its own GPU, else gloo (CPU).

    Raises:
        ValueError: for an unknown backend, or NCCL with fewer GPUs than ranks.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {list(BACKENDS)}")
    if backend == "auto":
        return "nccl" if torch.cuda.is_available() and torch.cuda.device_count() >= world_size else "gloo"
    if backend == "nccl" and torch.cuda.device_count() < world_size:
        raise ValueError(f"NCCL needs one GPU per rank: {world_size} ranks, {torch.cuda.device_count()} GPUs; "
                         "use backend='gloo' on CPU")  # fmt: skip
    return backend


def backend_environment(backend: str) -> dict[str, str]:
    """Environment a rank of this backend needs before anything imports DeepSpeed.

    DeepSpeed picks its accelerator once, at first use: CUDA whenever torch sees a GPU, even in a gloo rank that
    has none of its own. `DS_ACCELERATOR` overrides the guess (deepspeed/accelerator/real_accelerator.py,
    `get_accelerator`); it is set either way, so a rank never inherits its parent's choice.

    Args:
        backend: "gloo" or "nccl" (after `pick_backend`).
    Returns:
        {"DS_ACCELERATOR": "cpu"} for gloo, {"DS_ACCELERATOR": "cuda"} for NCCL.
    """
    return {"DS_ACCELERATOR": "cpu" if backend == "gloo" else "cuda"}


@dataclass(frozen=True)
class RankPlacement:
    """Where a lab's ranks run: the process-group backend, the device label of the ranks and why."""

    backend: str
    world_size: int
    ranks_device: str  # "cpu (Intel(R) Xeon(R) ...)" or "cuda:0–1 (NVIDIA H200)"
    why: str

    def sentence(self) -> str:
        """The one sentence a lab prints before starting its ranks."""
        return f"The {self.world_size} ranks run on {self.ranks_device} ({self.backend}): {self.why}."


def place_ranks(device: str | torch.device, world_size: int, nccl_ok: bool = True,
                cpu_reason: str = "this demonstration runs CPU ranks") -> RankPlacement:
    """Choose the ranks' backend from the lab's device: NCCL with one GPU per rank, else gloo on the CPU, on purpose.

    Args:
        device: the lab's device (`devices.choose(DEVICE).device`). world_size: ranks (>= 1).
        nccl_ok: False for demonstrations that only run on CPU ranks (DeepSpeed's CPU path).
        cpu_reason: why, for those, said when the lab itself runs on a GPU.
    Returns:
        RankPlacement; pass `.backend` to `run_distributed`, record `.ranks_device` with the ranks' numbers.
    Raises:
        ValueError: for world_size < 1 or an unknown device.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    dev = resolve_device(device)
    gpus = torch.cuda.device_count() if dev.type == "cuda" else 0
    if nccl_ok and gpus >= world_size:
        last = f"–{world_size - 1}" if world_size > 1 else ""
        return RankPlacement("nccl", world_size, f"cuda:0{last} ({devices.device_name('cuda:0')})",
                             "one GPU per rank")  # fmt: skip
    why = "the lab runs on the CPU" if dev.type == "cpu" else f"on purpose — {cpu_reason}" if not nccl_ok else (
        f"on purpose — NCCL needs a GPU per rank, this machine has {gpus}, and ranks sharing one GPU show nothing")
    return RankPlacement("gloo", world_size, devices.device_label("cpu"), why)


def rank_device() -> torch.device:
    """This rank's device (`hardware.resolve_device` applied to the rank): its own GPU under NCCL, else the CPU.

    Returns:
        cuda:LOCAL_RANK when the process group uses NCCL, else cpu.
    """
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return resolve_device(f"cuda:{int(os.environ.get('LOCAL_RANK', dist.get_rank()))}")
    return resolve_device("cpu")


def time_on_all_ranks(fn: Callable[[], object], warmup: int = 1, repeat: int = 3) -> Stats:
    """Time `fn()` on every rank at once: all ranks start together and a call ends when the slowest rank ends.

    Each call: barrier, clock, `fn()`, device sync (a GPU call ends when its kernels end, not when they are
    launched), barrier, clock. A tensor- or pipeline-parallel step is as slow as its slowest rank, so every rank
    reports the same step time. Outside a process group (one process) the barriers are skipped.

    Args:
        fn: the work of one step on this rank (every rank must call this function, or the barriers hang).
        warmup: untimed calls first (lazy init, caches, a pipeline's shape exchange).
        repeat: timed calls (>= 1).
    Returns:
        measure.Stats of the timed calls, in seconds (`.median * 1e3` for milliseconds).
    Raises:
        ValueError: for warmup < 0 or repeat < 1.
    """
    if warmup < 0 or repeat < 1:
        raise ValueError(f"need warmup >= 0 and repeat >= 1, got {warmup} and {repeat}")
    barrier = dist.barrier if dist.is_initialized() else (lambda: None)
    times = []
    for i in range(warmup + repeat):
        barrier()
        start = time.perf_counter()
        fn()
        sync_device()
        barrier()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return Stats.of(times)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _to_bytes(value: Any) -> bytes:
    # Plain pickle (not multiprocessing's): tensors are copied, not shared through memory that
    # disappears when the child exits.
    buf = io.BytesIO()
    pickle.dump(value, buf)
    return buf.getvalue()


def init_from_env(backend: str = "auto", timeout_s: float = 120.0) -> None:
    """Join the process group described by RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT (torchrun's env://)."""
    world_size = int(os.environ["WORLD_SIZE"])
    backend = pick_backend(backend, world_size)
    os.environ.update(backend_environment(backend))
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", os.environ["RANK"])))
    dist.init_process_group(backend, init_method="env://", timeout=datetime.timedelta(seconds=timeout_s))


def _worker(rank: int, world_size: int, port: int, backend: str, threads: int, timeout_s: float,
            work: bytes, results, caller: tuple[dict, str]) -> None:  # fmt: skip
    start_method.enter(*caller)  # the caller's environment and directory, not the fork server's
    fn, args, kwargs = pickle.loads(work)  # only now: importing fn's module may read the environment
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size), **backend_environment(backend))  # fmt: skip
    torch.set_num_threads(threads)  # ranks share the cores, as torchrun's OMP_NUM_THREADS does
    try:
        init_from_env(backend, timeout_s)
        value = fn(*args, **kwargs)
        results.put((rank, "ok", _to_bytes(value)))
    except BaseException:  # noqa: BLE001 - every failure must reach the parent, with its traceback
        results.put((rank, "error", traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_distributed(
    fn: Callable,
    *args,
    world_size: int = 2,
    backend: str = "auto",
    timeout: float = 300.0,
    threads_per_rank: int | None = None,
    **kwargs,
) -> list:
    """Run `fn(*args, **kwargs)` on `world_size` ranks (fresh processes, `start_method`); return their results.

    Args:
        fn: a top-level function of an importable module (spawned ranks import it; not a notebook cell).
        *args, **kwargs: passed to `fn` on every rank (pickled).
        world_size: ranks (>= 1). backend: "auto" (NCCL with a GPU per rank, else gloo), "gloo" or "nccl".
        timeout: seconds for the whole run. threads_per_rank: torch threads per rank (default: cores / ranks).
    Returns:
        each rank's return value, in rank order (plain pickle: frozen dataclasses and tensors travel back).
    Raises:
        ValueError: for a bad world_size or backend, or a function the ranks cannot import.
        RankFailed: (with the rank's traceback) as soon as one rank fails.
        TimeoutError: if the ranks have not all finished within `timeout`; either way no rank is left running.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if getattr(fn, "__module__", "__main__") == "__main__" or "<locals>" in getattr(fn, "__qualname__", ""):
        raise ValueError(f"{fn!r} must be a top-level function in an importable module (spawned ranks import it)")
    backend = pick_backend(backend, world_size)
    threads = threads_per_rank or max(1, (os.cpu_count() or 1) // world_size)
    ctx = start_method.context(backend)
    results = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, daemon=True,
                         args=(r, world_size, port, backend, threads, timeout, _to_bytes((fn, args, kwargs)),
                               results, start_method.rank_environment()))
             for r in range(world_size)]  # fmt: skip
    for p in procs:
        p.start()
    got: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(got) < world_size:
            try:
                rank, status, payload = results.get(timeout=0.5)
            except queue.Empty:
                dead = [r for r, p in enumerate(procs) if r not in got and not p.is_alive() and p.exitcode != 0]
                if dead:
                    code = procs[dead[0]].exitcode
                    raise RankFailed(f"rank {dead[0]} died (exit code {code}) without a result") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"ranks {sorted(set(range(world_size)) - set(got))} did not finish within "
                                       f"{timeout:.0f} s") from None  # fmt: skip
                continue
            if status == "error":
                raise RankFailed(f"rank {rank} of {world_size} failed:\n{payload}")
            got[rank] = pickle.loads(payload)
    finally:
        for p in procs:
            p.join(timeout=5 if len(got) == world_size else 0.1)
            if p.is_alive():
                p.kill()
                p.join()
        results.close()  # a kept traceback holds this frame: let the queue's semaphores go now, not at exit
        results = procs = None
    return [got[r] for r in range(world_size)]


def main(argv: list[str] | None = None) -> int:
    """`python -m labkit.parallel.launch module:function` — spawns ranks, or runs in place under torchrun."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("target", help="module:function, e.g. labkit.parallel.tp:layer_parity")
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument("--out", help="folder: each rank also writes its result there, pickled, as rank<N>.pkl")
    args = parser.parse_args(argv)
    module, _, name = args.target.partition(":")
    fn = getattr(importlib.import_module(module), name)
    if "RANK" in os.environ and "MASTER_ADDR" in os.environ:  # launched by torchrun
        init_from_env(args.backend)
        try:
            value = fn()
            print(f"rank {dist.get_rank()}: {value!r}")
            if args.out:
                (Path(args.out) / f"rank{dist.get_rank()}.pkl").write_bytes(_to_bytes(value))
        finally:
            dist.destroy_process_group()
        return 0
    for rank, value in enumerate(run_distributed(fn, world_size=args.world_size, backend=args.backend)):
        print(f"rank {rank}: {value!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
