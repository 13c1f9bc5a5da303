"""OpenVINO GenAI as a peer decode backend: Intel's engine, in its own venv, on the same checkpoint and prompts.

optimum-intel (the exporter) pins transformers < 5.6, so OpenVINO GenAI lives in `.venv-openvino` at the repository
root (`make peers` builds it) or in the venv whose python `LABKIT_OPENVINO_PYTHON` names. labkit runs
`openvino_worker.py` with that python: it exports the registered model's safetensors folder (for SmolLM2, the
dequantized Q4_1 GGUF) once to OpenVINO IR with NNCF weight compression (cached under LABKIT_CACHE/openvino),
generates greedily with `openvino_genai.LLMPipeline`, and computes teacher-forced logits for the agreement column.

Timing: the engine runs in another process and schedules prompts itself (continuous batching; prefix caching off),
so `decoding.timing`'s clock cannot be inside its loop. The worker reads OpenVINO GenAI's own per-step clock
(`raw_metrics.m_new_token_times`); a decode step is the interval between consecutive steps that each produced a
token for every sequence, and the same `DecodeRun` statistics (median step, median TTFT) are taken over them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from labkit import models, venvs
from labkit.cache import cache_dir
from labkit.decoding.timing import DecodeRun
from labkit.generation.base import BackendUnavailable, DecodeBackend

VENV = ".venv-openvino"
PYTHON_ENV = "LABKIT_OPENVINO_PYTHON"
FIX = ("run `make peers` at the repository root (it builds .venv-openvino with openvino-genai and optimum-intel; "
       "the lab's .venv is untouched)")  # fmt: skip
WORKER = Path(__file__).with_name("openvino_worker.py")
WEIGHTS = ("int8", "int4")  # the worker's optimum-cli weight formats (`openvino_worker.WEIGHTS`)


def openvino_python() -> Path:
    """The python of the venv that holds OpenVINO GenAI.

    Raises:
        venvs.PeerUnavailable: neither `$LABKIT_OPENVINO_PYTHON` nor `.venv-openvino/bin/python` exists (says how
            to build it).
    """
    return venvs.peer_python(venvs.repo_root() / VENV / "bin" / "python", PYTHON_ENV, "OpenVINO GenAI", FIX)


def run_worker(command: str, timeout_s: float = 1800, **args) -> dict:
    """Run one `openvino_worker.py` command in the peer venv and return the JSON it prints last.

    Raises:
        venvs.PeerUnavailable: no peer venv, or the command failed (with the end of its error output).
    """
    out = subprocess.run([str(openvino_python()), str(WORKER), command, json.dumps(args)], capture_output=True,
                         text=True, timeout=timeout_s)  # fmt: skip
    if out.returncode:
        raise venvs.PeerUnavailable(f"OpenVINO GenAI's {command} failed (exit {out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


class OpenVINOGenAI(DecodeBackend):
    """OpenVINO GenAI's LLMPipeline at int8 or int4 weights (NNCF weight compression of the same checkpoint).

    Args:
        weights: "int8" (8 bits per output channel) or "int4" (asymmetric blocks of 32, a scale and a zero point
            each, as GGUF's Q4_1; the tied embedding / LM head in 8 bits).
    Raises:
        ValueError: an unknown `weights`, naming the valid ones.
    """

    def __init__(self, weights: str):
        if weights not in WEIGHTS:
            raise ValueError(f"unknown OpenVINO weights {weights!r}; choose from {list(WEIGHTS)}")
        self.weights, self.name, self.exact = weights, f"openvino-genai-{weights}", False
        self.description = f"OpenVINO GenAI (peer venv), NNCF {weights} weights, its C++ loop"
        self.path: Path | None = None
        self.threads, self.version = 1, ""

    def available(self, model: str) -> tuple[bool, str]:
        try:
            openvino_python()
        except venvs.PeerUnavailable as err:
            return False, str(err)
        return True, ""

    def load(self, model: str, threads: int, device="cpu") -> None:
        """Export once (cached; keyed by the checkpoint's safetensors and the weight format), then read its sizes."""
        self.check_device(device)
        checkpoint = models.checkpoint_dir(model)
        digest = hashlib.sha256(f"{self.weights}|{_fingerprint(checkpoint)}".encode()).hexdigest()[:10]
        out = cache_dir("openvino") / f"{model}-{self.weights}-{digest}"
        if not (out / "openvino_model.xml").exists():
            tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=out.name + "."))
            try:
                run_worker("export", checkpoint=str(checkpoint), weights=self.weights, out=str(tmp))
                shutil.rmtree(out, ignore_errors=True)
                tmp.rename(out)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        facts = run_worker("info", model=str(out))
        self.path, self.threads = out, threads
        self.weight_bytes, self.step_bytes = facts["weight_bytes"], facts["step_bytes"]
        self.version = facts["openvino_genai"].split("-")[0]
        self.description = f"OpenVINO GenAI {self.version} (peer venv), NNCF {self.weights} weights, its C++ loop"

    def generate(self, prompts: list[list[int]], new_tokens: int, warmup: int = 1, repeat: int = 1) -> DecodeRun:
        if self.path is None:
            raise BackendUnavailable(f"{self.name}: call load() first")
        if new_tokens < 2 or repeat < 1 or warmup < 0 or len({len(p) for p in prompts}) != 1:
            raise ValueError("equal-length prompts, new_tokens >= 2, repeat >= 1 and warmup >= 0 are needed")
        got = run_worker("generate", model=str(self.path), prompts=prompts, new_tokens=new_tokens, warmup=warmup,
                         repeat=repeat, threads=self.threads)  # fmt: skip
        return DecodeRun(got["tokens"], statistics.median(got["ttft_s"]), tuple(got["step_s"]), len(prompts),
                         new_tokens, repeat, tuple(got["totals_s"]))  # fmt: skip

    def logits(self, prompts: list[list[int]]) -> np.ndarray:
        if self.path is None:
            raise BackendUnavailable(f"{self.name}: call load() first")
        with tempfile.TemporaryDirectory() as tmp:
            run_worker("logits", model=str(self.path), prompts=prompts, threads=self.threads, out=f"{tmp}/l.npy")
            return np.load(f"{tmp}/l.npy")


def _fingerprint(checkpoint: Path) -> str:
    """Names, sizes and modification times of a checkpoint folder's files (a new checkpoint: a new export)."""
    return "|".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(checkpoint.iterdir())
                    if p.is_file())  # fmt: skip
