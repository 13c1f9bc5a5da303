"""Decode backends: one timed greedy-decode interface over HF transformers, ONNX Runtime GenAI and llama.cpp.

    backend = get_backend("ort-genai-int4", "smollm2-135m")
    backend.load("smollm2-135m", threads=2)
    run = backend.generate(prompts, new_tokens=64)      # a decoding.timing.DecodeRun: tokens, prefill_s, decode_tok_s
"""

from labkit.generation.base import BackendUnavailable, DecodeBackend
from labkit.generation.genai import OrtGenAI
from labkit.generation.hf import HFBackend, reference_tokens
from labkit.generation.llama_cpp import LlamaCpp
from labkit.generation.registry import BACKENDS, backend_for, get_backend, registry

__all__ = [
    "BACKENDS", "BackendUnavailable", "DecodeBackend", "HFBackend", "LlamaCpp", "OrtGenAI", "backend_for",
    "get_backend", "reference_tokens", "registry",
]  # fmt: skip
