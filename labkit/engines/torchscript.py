"""TorchScript: trace the model once into a static graph, freeze weights into it, fuse ops.

TorchScript is deprecated: the PyTorch documentation says "TorchScript is deprecated, please use torch.export
instead" (docs.pytorch.org/docs/stable/jit_language_reference.html), and `torch.jit.trace` raises a
DeprecationWarning pointing to `torch.compile` / `torch.export`. It is kept as the legacy graph runtime that many
deployed models still use; the ONNX export (`convert.export_onnx`) already captures graphs with `torch.export`.
"""

from __future__ import annotations

import warnings

import torch

from labkit.engines.base import Engine, SessionInfo, Timer, exact_fp32, torch_threads
from labkit.engines.eager import TorchModuleSession, cast_inputs, module_for
from labkit.precision import torch_dtype


class TorchScript(Engine):
    name = "torchscript"
    description = "torch.jit.trace + freeze + optimize_for_inference (no Python in the loop)"
    precisions = ("fp32", "bf16", "fp16")
    devices = ("cpu", "cuda")

    def available(self) -> tuple[bool, str]:
        return hasattr(torch.jit, "trace"), f"torch.jit in PyTorch {torch.__version__}"

    def _prepare(self, graph, precision, num_threads, dev, **_):
        module = module_for(graph, precision, dev)
        example = cast_inputs(graph.example, torch_dtype(precision), dev)
        with Timer() as t, torch.inference_mode(), torch_threads(num_threads), warnings.catch_warnings(), \
                exact_fp32(dev, precision):
            warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
            traced = torch.jit.trace(module, example, strict=False, check_trace=False)
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
            frozen(*example)  # the first calls run the profiling executor's optimisation passes
            frozen(*example)
        info = SessionInfo(self.name, precision, num_threads, str(dev), "torch.jit", t.seconds)
        return TorchModuleSession(frozen, info, torch_dtype(precision), dev)
