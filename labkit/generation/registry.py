"""Decode backends by name, and a backend for a model that `labkit.quant` already quantized."""

from __future__ import annotations

from labkit import quant
from labkit.generation.base import BackendUnavailable, DecodeBackend
from labkit.generation.genai import OrtGenAI, OrtGenAIGGUF
from labkit.generation.hf import HFBackend
from labkit.generation.llama_cpp import LlamaCpp
from labkit.generation.openvino_peer import OpenVINOGenAI


def registry() -> dict[str, DecodeBackend]:
    """Fresh backend objects by name (each holds a loaded model once `load` ran)."""
    backends = [
        HFBackend("hf-eager-fp32", "fp32", description="transformers generate(), fp32, dynamic KV cache"),
        HFBackend("hf-int8-dynamic", "int8-dynamic", description="transformers + torch.ao dynamic int8 Linear"),
        HFBackend("hf-static-compile-fp32", "fp32", compiled=True,
                  description="transformers, static KV cache + torch.compile (inductor), fp32"),
        OrtGenAI("fp32"), OrtGenAI("int8"), OrtGenAI("int4"), OrtGenAIGGUF(0), OrtGenAIGGUF(4),
        OrtGenAIGGUF(4, "rounded"), LlamaCpp(), OpenVINOGenAI("int8"),
        OpenVINOGenAI("int4"),
    ]  # fmt: skip
    return {b.name: b for b in backends}


BACKENDS = tuple(registry())


def get_backend(name: str, model: str) -> DecodeBackend:
    """A fresh decode backend, checked to run `model` here (not loaded yet: call `.load(model, threads)`).

    Args:
        name: one of BACKENDS, e.g. "hf-eager-fp32", "ort-genai-int4", "llama.cpp".
        model: a registered model name, e.g. "smollm2-135m".
    Returns:
        the DecodeBackend.
    Raises:
        ValueError: for an unknown name, listing the valid ones.
        BackendUnavailable: when it cannot run `model` here, saying why.
    """
    backends = registry()
    if name not in backends:
        raise ValueError(f"unknown decode backend {name!r}; choose from {list(backends)}")
    ok, reason = backends[name].available(model)
    if not ok:
        raise BackendUnavailable(f"{name} cannot run here: {reason}")
    return backends[name]


def backend_for(q: quant.QuantizedModel) -> DecodeBackend:
    """Decode a model `labkit.quant.quantize` returned, without loading it again.

    Args:
        q: a QuantizedModel: a transformers model (HF generate()), or an ORT GenAI model (its C++ loop).
    Returns:
        a loaded DecodeBackend whose `generate()` is timed by `decoding.timing`.
    Raises:
        BackendUnavailable: for a forward-only ONNX session (exported without a KV cache: no fair decode).
    """
    if q.model is not None:
        return HFBackend.of(q)
    if q.genai is not None:
        return OrtGenAI.of(q.genai)
    raise BackendUnavailable(f"{q.name or 'this model'} is a forward-only ONNX graph (no KV cache): it cannot decode")
