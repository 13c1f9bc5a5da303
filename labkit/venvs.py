"""Peer engines' own virtual environments.

An engine that pins other package versions than the lab (vLLM's CPU wheel; OpenVINO's exporter, optimum-intel) is
installed by `make peers` into a venv of its own at the repository root (`.venv-vllm`, `.venv-openvino`), or into
the venv whose python an environment variable names. labkit never imports it: it runs that venv's python as a child
process and reads what it prints.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from labkit.hardware import Unavailable


class PeerUnavailable(Unavailable):
    """The peer engine cannot run here: its venv is missing, or its process did not come up."""


def repo_root() -> Path:
    """The repository root: where `make peers` puts the peer venvs (one level above the labkit package)."""
    return Path(__file__).resolve().parents[1]


def peer_python(default: Path, env_var: str, engine: str, fix: str) -> Path:
    """The python of the venv that holds a peer engine.

    Args:
        default: its python when `env_var` is unset (e.g. <repo>/.venv-vllm/bin/python).
        env_var: the environment variable that may name another venv's python (e.g. LABKIT_VLLM_PYTHON).
        engine: the engine's name, for the error. fix: how to install it, for the error.
    Returns:
        the python's path.
    Raises:
        PeerUnavailable: that python does not exist or is not executable, saying how to build it.
    """
    named = os.environ.get(env_var)
    python = Path(named) if named else default
    if not (python.is_file() and os.access(python, os.X_OK)):
        where = f"{env_var}={named} is not an executable python" if named else f"{python} does not exist"
        raise PeerUnavailable(f"{engine} (a peer engine) is not installed: {where}; {fix}")
    return python


def peer_version(python: Path, distributions: Sequence[str], engine: str, fix: str) -> str:
    """A package's version, read from the peer venv's metadata (without importing the package: that takes seconds).

    Args:
        python: the peer venv's python. distributions: the names it may be installed under, tried in order.
        engine, fix: for the error.
    Returns:
        the version string, e.g. '0.32.0'.
    Raises:
        PeerUnavailable: none of `distributions` is installed there.
    """
    code = ("import importlib.metadata as m, sys\nfor d in sys.argv[1:]:\n    try:\n"
            "        print(m.version(d)); break\n    except m.PackageNotFoundError:\n        pass\n")
    out = subprocess.run([str(python), "-c", code, *distributions], capture_output=True, text=True, timeout=60)
    version = out.stdout.strip()
    if out.returncode or not version:
        raise PeerUnavailable(f"{python} has no {engine} ({' or '.join(distributions)}); {fix}")
    return version
