"""ONNX Runtime: run the exported ONNX graph after ORT's own graph optimisations.

CPU by default; the CUDA and TensorRT execution providers when the GPU build of onnxruntime is there.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch

from labkit.convert import export_onnx, session_options
from labkit.engines.base import Engine, Session, SessionInfo, Timer

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


class OrtSession(Session):
    def __init__(self, session, graph, info: SessionInfo):
        self.session, self.graph, self.info = session, graph, info

    def run(self, *inputs: torch.Tensor) -> np.ndarray:
        return self.session.run(None, self.graph.feeds(inputs))[0].astype(np.float32, copy=False)


class OnnxRuntime(Engine):
    name = "onnxruntime"
    description = "ONNX Runtime on the exported graph (fusions, constant folding, NCHWc layouts)"

    def available(self) -> tuple[bool, str]:
        if importlib.util.find_spec("onnxruntime") is None:
            return False, "onnxruntime is not installed (pip install onnxruntime)"
        import onnxruntime as ort  # optional package

        return True, f"onnxruntime {ort.__version__}: {', '.join(ort.get_available_providers())}"

    def _prepare(self, graph, precision, num_threads, level: str = "all", provider: str = "cpu",
                 fused_attention: bool | None = None, **_):
        """fused_attention (default: on the CPU provider) exports BLOOM's attention as one ONNX
        Attention node, which none of ORT's own fusions produce (see `convert.export_patches`)."""
        import onnxruntime as ort  # optional package

        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}; choose from {list(PROVIDERS)}")
        if PROVIDERS[provider] not in ort.get_available_providers():
            raise ValueError(
                f"{PROVIDERS[provider]} is not in this onnxruntime build ({ort.get_available_providers()}); "
                "GPU providers need `pip install onnxruntime-gpu` and a CUDA GPU"
            )
        with Timer() as t:
            path = export_onnx(graph, fused_attention=provider == "cpu" if fused_attention is None else fused_attention)
            providers = [PROVIDERS[provider]] + (["CPUExecutionProvider"] if provider != "cpu" else [])
            sess = ort.InferenceSession(str(path), session_options(level, num_threads), providers=providers)
            session = OrtSession(sess, graph, None)
            session.run(*graph.example)
        session.info = SessionInfo(self.name, precision, num_threads, provider, f"{PROVIDERS[provider]} ({level})",
                                   t.seconds)
        return session
