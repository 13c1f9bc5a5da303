"""labkit's server in its own process, as a deployment runs it (and as the peer, vLLM, runs beside it).

    with labkit_server("smollm2-135m", "paged", runner="onnxruntime") as server:
        run_load(server.url, server.model, chat=True)

A benchmark that drives a server from the same Python process shares one interpreter lock between the load
generator and the server's engine and event loop; the peer does not (its own process). Here `labkit serve` runs as
a child process group on a free loopback port, started with the interpreter that runs this code; its log goes to
the labkit cache, and the context manager always ends the group. Engine counters come from its /metrics
(`decode_counts`).
"""

from __future__ import annotations

import contextlib
import sys
import urllib.request
from collections.abc import Iterator

from labkit.cache import cache_dir
from labkit.serving.metrics import parse, total
from labkit.serving.peers import HOST, Peer, free_port, server_process


@contextlib.contextmanager
def labkit_server(model: str, scheduler: str, max_batch: int = 32, max_queue: int = 64, timeout_s: float = 300.0,
                  **limits) -> Iterator[Peer]:
    """`labkit serve` for one model in a child process, ended (with its children) on exit.

    Args:
        model: a labkit model name. scheduler: one of `serving.repository.SCHEDULERS`.
        max_batch, max_queue: the engine's batch slots and queue bound.
        timeout_s: how long to wait for /v1/models (s).
        **limits: `labkit serve` options by their Limits names: runner, kv_tokens, prefill_chunk.
    Yields:
        Peer: url, model, engine ("labkit <scheduler>"), start-up time, log path, pid.
    Raises:
        PeerUnavailable: the server exited or did not answer within `timeout_s` (with the end of its log).
        ValueError: a limit `labkit serve` has no option for (naming the ones it has).
    """
    options = {"runner": "--runner", "kv_tokens": "--kv-tokens", "prefill_chunk": "--prefill-chunk"}
    unknown = sorted(set(limits) - set(options))
    if unknown:
        raise ValueError(f"unknown server limits {unknown}; choose from {sorted(options)}")
    port = free_port()
    argv = [sys.executable, "-m", "labkit.cli", "serve", "--model", model, "--scheduler", scheduler,
            "--max-batch", str(max_batch), "--max-queue", str(max_queue), "--host", HOST, "--port", str(port)]
    for key, value in limits.items():
        argv += [options[key], str(value)]
    log = cache_dir("peers") / f"labkit-{scheduler}-{model.replace('/', '_')}.log"
    url = f"http://{HOST}:{port}"
    with server_process(argv, url, log, f"labkit serve ({scheduler})", timeout_s) as (pid, startup_s):
        yield Peer(url, model, f"labkit {scheduler}", "", startup_s, log, pid)


def decode_counts(url: str) -> tuple[float, float]:
    """(decode steps, sequences summed over those steps) the server's engines have run so far, from /metrics.

    Two reads bracket a load: (sequences₂ − sequences₁) / (steps₂ − steps₁) is its mean decode batch.
    """
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        samples = parse(resp.read().decode())
    return total(samples, "labkit_decode_steps_total"), total(samples, "labkit_decode_sequences_total")
