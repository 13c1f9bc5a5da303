"""torch.compile: TorchDynamo captures the graph, Inductor generates fused C++ / Triton kernels."""

from __future__ import annotations

import shutil

import torch

from labkit.engines.base import Engine, SessionInfo, Timer, torch_threads
from labkit.engines.eager import TorchModuleSession, cast_inputs, module_for
from labkit.hardware import resolve_device
from labkit.precision import torch_dtype


class TorchCompile(Engine):
    name = "torch-compile"
    description = "torch.compile with the Inductor backend (compiles on first call)"
    precisions = ("fp32", "bf16", "fp16")

    def available(self) -> tuple[bool, str]:
        if not hasattr(torch, "compile"):
            return False, "this PyTorch has no torch.compile (needs 2.0+)"
        if shutil.which("cc") is None and shutil.which("gcc") is None and shutil.which("g++") is None:
            return False, "Inductor on CPU needs a C++ compiler (install gcc/g++)"
        return True, f"Inductor in PyTorch {torch.__version__}"

    def _prepare(self, graph, precision, num_threads, device: str = "cpu", mode: str | None = None,
                 dynamic: bool = False, **_):
        dev = resolve_device(device)
        module = module_for(graph, precision, dev)
        compiled = torch.compile(module, backend="inductor", mode=mode, dynamic=dynamic)
        example = cast_inputs(graph.example, torch_dtype(precision), dev)
        with Timer() as t, torch.inference_mode(), torch_threads(num_threads):
            compiled(*example)  # compilation happens here, on the first call
        info = SessionInfo(self.name, precision, num_threads, str(dev), "inductor", t.seconds)
        return TorchModuleSession(compiled, info, torch_dtype(precision), dev)
