"""Decode backends take a device: the HF backend runs where its quantizer runs; the ONNX Runtime GenAI and llama.cpp
backends are CPU builds and refuse a GPU by name, before loading anything."""

import pytest
import torch

from labkit import generation, hardware
from labkit.generation import base


def test_backends_name_the_devices_they_decode_on(monkeypatch):
    backends = generation.registry()
    assert backends["hf-eager-fp32"].devices == ("cpu", "cuda")  # `quant.QUANTIZERS["fp32"]`'s devices
    assert backends["hf-int8-dynamic"].devices == ("cpu",)  # torch.ao's dynamic int8 is CPU-only
    assert backends["hf-eager-fp32"].check_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        backends["hf-eager-fp32"].check_device("tpu")
    gpu = torch.device("cuda", 0)
    monkeypatch.setattr(base, "resolve_device", lambda device: gpu)  # as on a machine with a GPU
    assert backends["hf-eager-fp32"].check_device("cuda") == gpu
    for name in ("ort-genai-int4", "llama.cpp", "hf-int8-dynamic"):
        with pytest.raises(generation.BackendUnavailable, match=rf"{name} decodes on \['cpu'\], not 'cuda'"):
            backends[name].load("tiny-llama", threads=1, device="cuda")  # refused before loading anything


def test_hf_backend_loads_on_the_device_and_reproduces_the_reference():
    prompts = [[5, 6, 7, 8]]
    backend = generation.get_backend("hf-eager-fp32", "tiny-llama")
    backend.load("tiny-llama", threads=1, device="cpu")
    assert backend.model.device.type == "cpu"
    run = backend.generate(prompts, 4, warmup=0, repeat=1)
    assert run.tokens == generation.reference_tokens("tiny-llama", prompts, 4, device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(hardware.CapabilityMissing):
            generation.reference_tokens("tiny-llama", prompts, 4, device="cuda")
