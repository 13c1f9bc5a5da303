"""llama.cpp as a decode backend, through llama-cpp-python (optional extra `peer`), on the Q4_1 GGUF SmolLM2 ships in.

The package compiles llama.cpp for the build machine's CPU; a build that uses instructions this CPU (or VM) does not
enable dies with SIGILL, so a child process tries it first (`available()`).
"""

from __future__ import annotations

import functools
import importlib.util
import subprocess
import sys
from collections.abc import Callable

import numpy as np

from labkit.decoding.timing import DecodeRun, time_decode
from labkit.generation.base import DecodeBackend
from labkit.generation.step_bytes import gguf_step_bytes
from labkit.models import smollm2


class LlamaCpp(DecodeBackend):
    """llama.cpp on SmolLM2's shipped Q4_1 GGUF, one sequence at a time."""

    name, exact, max_batch = "llama.cpp", False, 1
    description = "llama.cpp (llama-cpp-python) on the shipped Q4_1 GGUF, one sequence at a time"

    def available(self, model: str) -> tuple[bool, str]:
        if importlib.util.find_spec("llama_cpp") is None:
            return False, "llama-cpp-python is not installed (pip install 'labkit[peer]'; compiles for ~7 min)"
        if model != "smollm2-135m":
            return False, f"no GGUF file for {model} (llama.cpp runs the shipped SmolLM2 Q4_1 GGUF)"
        return _llama_cpp_runs()

    def load(self, model: str, threads: int, device="cpu") -> None:
        self.check_device(device)  # llama-cpp-python is built for the CPU here
        from llama_cpp import Llama  # optional package

        path = smollm2.find_gguf() or smollm2.download_gguf()
        self.llm = Llama(model_path=str(path), n_threads=threads, n_threads_batch=threads, n_ctx=1024, verbose=False)
        self.weight_bytes, self.step_bytes = path.stat().st_size, gguf_step_bytes(path)
        self.path, self.threads = path, threads

    def generate(self, prompts: list[list[int]], new_tokens: int, warmup: int = 1, repeat: int = 1) -> DecodeRun:
        if len(prompts) != 1:
            raise ValueError("llama-cpp-python's Llama decodes one sequence at a time; use batch 1")

        def run(mark: Callable[[], None]) -> list[list[int]]:
            self.llm.reset()
            self.llm.eval(prompts[0])  # prefill
            tokens = [int(np.argmax(self.llm.scores[self.llm.n_tokens - 1]))]
            mark()
            for _ in range(new_tokens - 1):
                self.llm.eval([tokens[-1]])  # one decode step
                tokens.append(int(np.argmax(self.llm.scores[self.llm.n_tokens - 1])))
                mark()
            return [tokens]

        return time_decode(run, 1, new_tokens, warmup, repeat)

    def logits(self, prompts: list[list[int]]) -> np.ndarray:
        """llama.cpp's next-token logits at every prompt position (teacher forcing), through a second context
        that keeps them all (`logits_all`; the decoding one keeps the last only).

        llama.cpp multiplies Q4_1 blocks by activations quantized to 8 bits per block (Q8_1), so these are not the
        dequantized model's logits: `fast_decode.top1_agreement` measures how far they move its argmax.

        Returns:
            (batch, seq, vocab) float32.
        """
        from llama_cpp import Llama  # optional package

        llm = Llama(model_path=str(self.path), n_threads=self.threads, n_threads_batch=self.threads,
                    n_ctx=max(map(len, prompts)) + 8, logits_all=True, verbose=False)  # fmt: skip
        out = []
        for p in prompts:
            llm.reset()
            llm.eval(p)
            out.append(np.array(llm.scores[: len(p)], dtype=np.float32))
        return np.stack(out)


@functools.lru_cache(maxsize=1)
def _llama_cpp_runs() -> tuple[bool, str]:
    """Evaluate a few tokens in a child process first: a llama.cpp built for instructions this CPU (or VM)
    does not enable — e.g. AMX — dies with SIGILL, which would take the notebook kernel down with it."""
    path = smollm2.find_gguf() or smollm2.download_gguf()
    code = (f"from llama_cpp import Llama; llm = Llama(model_path={str(path)!r}, n_ctx=64, n_threads=1, "
            "verbose=False); llm.eval([1, 2, 3])")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode == 0:
        return True, ""
    why = "illegal instruction: rebuild llama-cpp-python for this CPU, e.g. CMAKE_ARGS='-DGGML_NATIVE=OFF " \
          "-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF'" if done.returncode == -4 else (done.stderr.strip()[-200:])
    return False, f"llama.cpp failed a test run (exit {done.returncode}): {why}"
