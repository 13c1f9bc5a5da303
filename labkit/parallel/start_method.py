"""How `run_distributed` starts its ranks: forked from a fork server on CPU-only machines, spawned otherwise.

A spawned rank is a new interpreter that imports torch and transformers again: 4.5 s per rank on a 2-core machine,
paid by every run, while the work of a lab's or a test's run is often a second. Python's fork server
(`multiprocessing`'s "forkserver" start method) is one clean process, started on first use, that imports those
once (`PRELOAD`); every rank after that is a fork of it. Measured on a 2-core AMD EPYC: the seven test files that
launch ranks took 86 s spawned and 41 s forked; the DeepSpeed lab (three runs) 36 s and 25 s. A single run pays the
server's imports before its ranks instead of in them (about 3 s more): the labs with one run took as long as before.

Still fresh processes: the server never runs a rank's work; each rank takes the caller's current environment and
working directory (`rank_environment`) before it imports the function's module; and a caller whose import-time
variables (IMPORT_TIME_PREFIXES) or stdout/stderr changed since the server started gets a new server. Never on a
machine with CUDA: an import may initialise CUDA in the server, and a forked child of such a process cannot use it;
there, and for NCCL, ranks are spawned as before. DeepSpeed is not preloaded: it picks its accelerator once, from
DS_ACCELERATOR, which each rank sets first (`launch.backend_environment`).

The server lives as long as the caller and is stopped (and waited for) when the caller exits, so that the ranks'
CPU time is counted where a parent looks for its children's (`labkit.notebook.run` sums them).

In a Jupyter kernel "exits" needs help (`_release_at_kernel_shutdown`): asked to shut down, ipykernel sends its
child processes SIGTERM and waits up to 14 s for them to go, and multiprocessing's resource tracker (started by any
spawn or fork server) ignores SIGTERM; Jupyter kills a kernel that has not gone within 5 s. Measured: a kernel that
had launched ranks, spawned or forked, took those 5 s to end and never ran its exit handlers. So the kernel's
shutdown first stops the fork server and the tracker (`release`).
"""

from __future__ import annotations

import atexit
import inspect
import multiprocessing as mp
import os
import signal
import sys
import time

import psutil
import torch

PRELOAD = ("labkit.parallel.launch", "labkit.models", "transformers")
# Variables that modules read once, on import (huggingface_hub's HF_HUB_OFFLINE, OpenMP's OMP_*, labkit's cache...):
# the server imported PRELOAD with its own, so a caller that changes one gets a new server. The rest reach each rank
# through `enter`.
IMPORT_TIME_PREFIXES = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "TOKENIZERS_", "TORCH", "PYTORCH_", "OMP_", "MKL_",
                        "KMP_", "CUDA_", "LABKIT_", "DS_", "PYTHON")
_server_started_with: tuple | None = None  # (those variables, stdout's and stderr's files) when the server started


def context(backend: str):
    """The multiprocessing context for ranks of `backend`.

    Args:
        backend: "gloo" or "nccl" (after `launch.pick_backend`).
    Returns:
        torch.multiprocessing's "forkserver" context (PRELOAD imported once in the server) for gloo on a machine
        without CUDA where the platform has fork servers; else its "spawn" context.
    """
    _release_at_kernel_shutdown()
    global _server_started_with
    if backend == "gloo" and not torch.cuda.is_available() and "forkserver" in mp.get_all_start_methods():
        ctx = torch.multiprocessing.get_context("forkserver")
        main = getattr(getattr(sys.modules.get("__main__"), "__spec__", None), "name", None)
        # not the caller's own __main__ module (`python -m labkit.parallel.launch`): each rank runs that again
        ctx.set_forkserver_preload([m for m in PRELOAD if m != main])  # read when the server starts, on first use
        now = _server_conditions()
        if _server_started_with != now:  # a server started with other variables, or other stdout/stderr: a new one
            _stop_server()
            _server_started_with = now
        _stop_at_exit()
        return ctx
    return torch.multiprocessing.get_context("spawn")


def _server_conditions() -> tuple:
    # what a forked rank inherits from the server rather than from its caller: import-time variables, fds 1 and 2
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(IMPORT_TIME_PREFIXES)))
    files = []
    for fd in (1, 2):
        try:
            st = os.fstat(fd)
            files.append((st.st_dev, st.st_ino))
        except OSError:  # closed
            files.append(None)
    return env, tuple(files)


def rank_environment() -> tuple[dict[str, str], str]:
    """What a rank takes from its caller at launch: (a copy of os.environ, the working directory)."""
    return dict(os.environ), os.getcwd()


def enter(environment: dict[str, str], cwd: str) -> None:
    """In a rank, before anything else: the caller's environment and working directory (see `rank_environment`)."""
    os.environ.clear()
    os.environ.update(environment)
    os.chdir(cwd)


def release(wait_s: float = 2.0) -> None:
    """Stop this process's fork server and resource tracker, waiting for both (their CPU time is then counted
    here); the next launch starts them again.

    Args:
        wait_s: seconds the tracker gets to exit once its pipe is closed (it first unlinks what was leaked); after
            that it is killed.
    """
    _stop_server()
    from multiprocessing import resource_tracker

    tracker = resource_tracker._resource_tracker  # multiprocessing's own; no public way to stop it
    fd, pid = getattr(tracker, "_fd", None), getattr(tracker, "_pid", None)
    if fd is None or pid is None:
        return
    os.close(fd)  # its "alive" pipe: at end of file it cleans up and exits
    tracker._fd = tracker._pid = None
    deadline = time.monotonic() + wait_s
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:  # another process still holds the pipe
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return
        time.sleep(0.01)


def _release_at_kernel_shutdown() -> None:
    # In a Jupyter kernel: `release` when the kernel is asked to shut down, before ipykernel signals its children
    try:
        from IPython import get_ipython
    except ImportError:
        return
    kernel = getattr(get_ipython(), "kernel", None)
    if kernel is None or getattr(kernel, "_labkit_releases", False):
        return
    original = kernel.do_shutdown

    async def do_shutdown(restart):
        try:
            release()
        except OSError:  # already gone: nothing to wait for
            pass
        reply = original(restart)
        return await reply if inspect.isawaitable(reply) else reply

    kernel.do_shutdown = do_shutdown
    kernel._labkit_releases = True


_registered = False


def _stop_at_exit() -> None:
    global _registered
    if not _registered:
        atexit.register(_stop_server)
        _registered = True


def _stop_server() -> None:
    # multiprocessing's own stop (closes the server's "alive" pipe, waits for it, removes its socket), after a
    # SIGKILL: the idle server holds nothing to clean up, and exiting by itself it spends ~1 s tearing down torch.
    # Waited for either way: else the server is orphaned at exit, and its ranks' CPU time never reaches our parent.
    from multiprocessing import forkserver

    server = forkserver._forkserver
    stop, pid = getattr(server, "_stop", None), getattr(server, "_forkserver_pid", None)
    if stop is None or pid is None:
        return
    try:
        ranks = psutil.Process(pid).children(recursive=True)  # ranks still running (a kernel asked to shut down)
    except psutil.Error:
        ranks = []
    for process in [*(rank.pid for rank in ranks), pid]:  # the ranks first: killed after the server, orphaned
        try:
            os.kill(process, signal.SIGKILL)
        except OSError:  # already gone
            pass
    try:
        stop()
    except OSError:
        pass
