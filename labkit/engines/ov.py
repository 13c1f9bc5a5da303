"""OpenVINO: Intel's runtime; converts the ONNX graph to its IR and compiles it for the CPU plugin.

Its CPU plugin silently computes in bf16 on CPUs with AVX-512-bf16 or AMX unless told otherwise, so
fp32 is asked for explicitly (INFERENCE_PRECISION_HINT) and bf16 is a separate, labelled choice.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch

from labkit.convert import export_onnx
from labkit.engines.base import Engine, Session, SessionInfo, Timer

OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}  # labkit.precision name -> OpenVINO's hint


class OVSession(Session):
    def __init__(self, compiled, info: SessionInfo, shapes: list[tuple[int, ...]] | None = None):
        self.compiled, self.info, self.shapes = compiled, info, shapes
        self.request = compiled.create_infer_request()

    def run(self, *inputs: torch.Tensor) -> np.ndarray:
        if self.shapes is not None and [tuple(t.shape) for t in inputs] != self.shapes:
            raise ValueError(f"this OpenVINO session was compiled for input shapes {self.shapes}, got "
                             f"{[tuple(t.shape) for t in inputs]}; prepare it with static_shapes=False for any shape")
        result = self.request.infer({i: t.detach().cpu().numpy() for i, t in enumerate(inputs)})
        return np.asarray(result[0], dtype=np.float32)


class OpenVINO(Engine):
    name = "openvino"
    description = "OpenVINO CPU plugin on the converted graph (f32 by default, bf16 on request)"
    precisions = ("fp32", "bf16")

    def available(self) -> tuple[bool, str]:
        if importlib.util.find_spec("openvino") is None:
            return False, "openvino is not installed (pip install openvino)"
        import openvino as ov  # optional package

        devices = ov.Core().available_devices
        if "CPU" not in devices:
            return False, f"OpenVINO sees no CPU device (devices: {devices})"
        return True, f"OpenVINO {ov.get_version().split('-')[0]}: {', '.join(devices)}"

    def _prepare(self, graph, precision, num_threads, dev, static_shapes: bool = True, **_):
        """Runs on OpenVINO's CPU plugin (`devices`: the CPU only). static_shapes=True compiles for the example's
        shapes, as a fixed-shape deployment (or a TensorRT profile) would: the plugin then plans memory and picks
        kernels once instead of per call."""
        import openvino as ov  # optional package

        plugin = "CPU"
        config = {"INFERENCE_PRECISION_HINT": OV_PRECISION[precision], "PERFORMANCE_HINT": "LATENCY"}
        if num_threads:
            config["INFERENCE_NUM_THREADS"] = num_threads
        with Timer() as t:
            model = ov.convert_model(str(export_onnx(graph)))
            shapes = [tuple(t.shape) for t in graph.example] if static_shapes else None
            if shapes:
                model.reshape({i: list(shape) for i, shape in enumerate(shapes)})
            session = OVSession(ov.Core().compile_model(model, plugin, config), None, shapes)
            session.run(*graph.example)
        kind = "static shapes" if static_shapes else "dynamic shapes"
        session.info = SessionInfo(self.name, precision, num_threads, str(dev), f"{plugin} plugin, {kind}", t.seconds)
        return session
