"""How ranks start: on a CPU-only machine from a fork server (the imports paid once), yet each rank with the
caller's environment of the moment, and its CPU time counted where the caller's parent looks for it."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap

import pytest
import torch

from labkit.parallel import _selftest, start_method
from labkit.parallel.launch import run_distributed

needs_fork_server = pytest.mark.skipif(
    torch.cuda.is_available() or start_method.context("gloo").get_start_method() != "forkserver",
    reason="ranks are spawned here (a CUDA machine, or a platform without fork servers)")


def test_gpus_and_nccl_keep_spawn():
    assert start_method.context("nccl").get_start_method() == "spawn"
    expected = "spawn" if torch.cuda.is_available() else {"forkserver", "spawn"}
    assert start_method.context("gloo").get_start_method() in expected


def test_where_cuda_is_ranks_are_spawned_with_the_callers_environment(monkeypatch):
    """The GPU machine's path, run here: a process that sees CUDA spawns its ranks (its own children)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert start_method.context("gloo").get_start_method() == "spawn"
    monkeypatch.setenv("INFERENCE_LAB_NOTE", "spawned")
    ranks = run_distributed(_selftest.environment_and_directory, "INFERENCE_LAB_NOTE", world_size=2, backend="gloo")
    assert [r["value"] for r in ranks] == ["spawned"] * 2 and {r["ppid"] for r in ranks} == {os.getpid()}


@needs_fork_server
def test_ranks_see_the_callers_environment_of_now_not_the_servers(tmp_path, monkeypatch):
    def run(name):
        return run_distributed(_selftest.environment_and_directory, name, world_size=2, backend="gloo")

    first = run("INFERENCE_LAB_NOTE")
    assert [r["value"] for r in first] == [None, None]
    monkeypatch.setenv("INFERENCE_LAB_NOTE", "set after the server started")
    monkeypatch.chdir(tmp_path)
    later = run("INFERENCE_LAB_NOTE")
    assert [r["value"] for r in later] == ["set after the server started"] * 2
    assert {r["cwd"] for r in later} == {str(tmp_path)}
    # forked by one server, not by this process: the same parent both times, and that parent is not us
    assert len({r["ppid"] for r in first + later}) == 1 and first[0]["ppid"] != os.getpid()
    # a variable that libraries read on import (HF_*, OMP_*, LABKIT_*...): the server imported them with its own
    # environment, so it is replaced by one started with the caller's
    monkeypatch.setenv("HF_LABKIT_TEST", "read on import")
    fresh = run("HF_LABKIT_TEST")
    assert [r["value"] for r in fresh] == ["read on import"] * 2 and fresh[0]["ppid"] != first[0]["ppid"]


@needs_fork_server
def test_the_ranks_cpu_time_reaches_the_callers_parent():
    """A caller that exits stops the server and waits for it: the ranks' CPU seconds are in its own children's
    total, which its parent (here, this test; for a lab, the notebook runner) reads after waiting for it."""
    script = textwrap.dedent("""
        import resource
        from labkit.parallel import _selftest
        from labkit.parallel.launch import run_distributed
        burned = sum(run_distributed(_selftest.burn_cpu, 0.75, world_size=2, backend="gloo"))
        own = resource.getrusage(resource.RUSAGE_SELF)
        print(burned, own.ru_utime + own.ru_stime)
    """)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert done.returncode == 0, done.stderr[-2000:]
    burned, own = map(float, done.stdout.split()[-2:])  # the ranks' own count (two ranks, 0.75 s each); the caller's
    counted = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    assert burned >= 1.5 and counted >= own + burned  # and the server's imports on top


def test_a_kernel_that_launched_ranks_ends_by_itself_when_asked():
    """Asked to shut down, ipykernel SIGTERMs its children and waits for them; the resource tracker ignores SIGTERM,
    so without `release` the kernel was still there 10 s later (Jupyter kills it at 5 s, skipping its exit
    handlers)."""
    import time

    from jupyter_client import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel()
    try:
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        code = ("from labkit.parallel import _selftest\nfrom labkit.parallel.launch import run_distributed\n"
                "ranks = run_distributed(_selftest.rank_and_sum, world_size=2, backend='gloo')")
        reply = kc.execute_interactive(code, timeout=120)
        assert reply["content"]["status"] == "ok", reply["content"]
        kc.stop_channels()
        km.request_shutdown()
        deadline = time.monotonic() + 4
        while km.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not km.is_alive(), "the kernel did not end within 4 s of the shutdown request"
    finally:
        km.shutdown_kernel(now=True)
