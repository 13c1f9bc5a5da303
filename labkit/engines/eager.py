"""PyTorch eager: the model as written, op by op from Python — the baseline every engine is compared to."""

from __future__ import annotations

import contextlib
import copy
from dataclasses import replace

import numpy as np
import torch

from labkit.convert import Graph
from labkit.convert import export_patches as patches
from labkit.engines.base import Engine, Session, SessionInfo, Timer, exact_fp32, torch_threads
from labkit.precision import torch_dtype


class TorchModuleSession(Session):
    """Runs any callable torch module (eager, traced or compiled) under inference mode."""

    def __init__(self, fn, info: SessionInfo, dtype: torch.dtype, device: torch.device, patched: bool = False):
        self.fn, self.info, self.dtype, self.device, self.patched = fn, info, dtype, device, patched

    def run(self, *inputs: torch.Tensor) -> np.ndarray:
        inputs = cast_inputs(inputs, self.dtype, self.device)
        patch = patches.patched_for_export(self.fn) if self.patched else contextlib.nullcontext()
        exact = exact_fp32(self.device, self.info.precision)
        with torch.inference_mode(), torch_threads(self.info.threads), exact, patch:
            out = self.fn(*inputs)
        return out.float().cpu().numpy()  # the copy to the host waits for the GPU's kernels


def cast_inputs(inputs: tuple[torch.Tensor, ...], dtype: torch.dtype, device: torch.device) -> tuple:
    """Move inputs to the device; floating-point ones (images) also take the session's dtype."""
    return tuple(t.to(device, dtype if t.is_floating_point() else t.dtype) for t in inputs)


def module_for(graph: Graph, precision: str, device: torch.device) -> torch.nn.Module:
    """The graph's module in the asked precision on the asked device (a copy unless fp32 on CPU)."""
    if precision == "fp32" and device.type == "cpu":
        return graph.module.eval()
    return copy.deepcopy(graph.module).to(device=device, dtype=torch_dtype(precision)).eval()


class TorchEager(Engine):
    name = "torch-eager"
    description = "PyTorch eager mode: each op dispatched from Python"
    precisions = ("fp32", "bf16", "fp16")
    devices = ("cpu", "cuda")

    def available(self) -> tuple[bool, str]:
        return True, f"PyTorch {torch.__version__}"

    def _prepare(self, graph, precision, num_threads, dev, export_patches: bool = False, **_):
        """export_patches=True runs the forward that ONNX export uses (`convert.export_patches`): it separates what
        the rewrite itself is worth from what a runtime's fused kernel is worth."""
        with Timer() as t:
            module = module_for(graph, precision, dev)
            kernels = "aten, export-patched forward" if export_patches else "aten"
            info = SessionInfo(self.name, precision, num_threads, str(dev), kernels, 0.0)
            session = TorchModuleSession(module, info, torch_dtype(precision), dev, export_patches)
            session.run(*graph.example)
        session.info = replace(info, prepare_s=t.seconds)
        return session
