"""torch.compile: TorchDynamo captures the graph, Inductor generates fused C++ / Triton kernels."""

from __future__ import annotations

import importlib.util
import shutil

import torch

from labkit.engines.base import Engine, SessionInfo, Timer, device_kind, exact_fp32, torch_threads
from labkit.engines.eager import TorchModuleSession, cast_inputs, module_for
from labkit.precision import torch_dtype


class TorchCompile(Engine):
    name = "torch-compile"
    description = "torch.compile with the Inductor backend (compiles on first call)"
    precisions = ("fp32", "bf16", "fp16")
    devices = ("cpu", "cuda")

    def available(self) -> tuple[bool, str]:
        if not hasattr(torch, "compile"):
            return False, "this PyTorch has no torch.compile (needs 2.0+)"
        if shutil.which("cc") is None and shutil.which("gcc") is None and shutil.which("g++") is None:
            return False, "Inductor on CPU needs a C++ compiler (install gcc/g++)"
        return True, f"Inductor in PyTorch {torch.__version__}"

    def supports(self, device) -> tuple[bool, str]:
        ok, reason = super().supports(device)
        if ok and device_kind(device) == "cuda" and importlib.util.find_spec("triton") is None:
            return False, "Inductor on CUDA generates Triton kernels, and triton is not installed (pip install triton)"
        return ok, reason

    def _prepare(self, graph, precision, num_threads, dev, mode: str | None = None, dynamic: bool = False, **_):
        module = module_for(graph, precision, dev)
        compiled = torch.compile(module, backend="inductor", mode=mode, dynamic=dynamic)
        example = cast_inputs(graph.example, torch_dtype(precision), dev)
        with Timer() as t, torch.inference_mode(), torch_threads(num_threads), exact_fp32(dev, precision):
            compiled(*example)  # compilation happens here, on the first call
        info = SessionInfo(self.name, precision, num_threads, str(dev), "inductor", t.seconds)
        return TorchModuleSession(compiled, info, torch_dtype(precision), dev)
