"""TensorRT: NVIDIA's compiler and runtime; builds a GPU engine from the ONNX graph.

GPU only (`devices`), so it is compared with eager on the same GPU. Torch tensors on the session's device serve as
its buffers, so no extra CUDA bindings are needed; inputs come from and outputs go to the host, as for every engine.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch

from labkit.convert import export_onnx
from labkit.engines.base import Engine, Session, SessionInfo, Timer


class TensorRTSession(Session):
    def __init__(self, engine, graph, info: SessionInfo, device: torch.device):
        self.engine, self.graph, self.info, self.device = engine, graph, info, device
        self.context = engine.create_execution_context()
        self.stream = torch.cuda.Stream(device)

    def run(self, *inputs: torch.Tensor) -> np.ndarray:
        feeds = [t.to(self.device).contiguous() for t in inputs]
        for name, t in zip(self.graph.input_names, feeds, strict=True):
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        out_shape = tuple(self.context.get_tensor_shape(self.graph.output_name))
        out = torch.empty(out_shape, dtype=torch.float32, device=self.device)
        self.context.set_tensor_address(self.graph.output_name, out.data_ptr())
        self.stream.wait_stream(torch.cuda.current_stream(self.device))  # the input copies ran on the default stream
        with torch.cuda.stream(self.stream):
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
        self.stream.synchronize()
        return out.cpu().numpy()


class TensorRT(Engine):
    name = "tensorrt"
    description = "TensorRT engine built from the ONNX graph (NVIDIA GPUs only)"
    precisions = ("fp32", "fp16")
    devices = ("cuda",)

    def available(self) -> tuple[bool, str]:
        if not torch.cuda.is_available():
            return False, "needs an NVIDIA GPU with CUDA; this machine has none"
        if importlib.util.find_spec("tensorrt") is None:
            return False, "the tensorrt package is not installed (pip install tensorrt)"
        import tensorrt as trt  # optional package (GPU machines)

        return True, f"TensorRT {trt.__version__} on {torch.cuda.get_device_name(0)}"

    def _prepare(self, graph, precision, num_threads, dev, max_batch: int = 32, max_seq: int = 512, **_):
        """max_batch, max_seq: the largest shapes the optimisation profile accepts (the example's is the one tuned)."""
        import tensorrt as trt  # optional package (GPU machines)

        logger = trt.Logger(trt.Logger.WARNING)
        with Timer() as t, torch.cuda.device(dev):
            builder = trt.Builder(logger)
            network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
            parser = trt.OnnxParser(network, logger)
            # the plain export: opset 23's Attention op is newer than what TensorRT's parser is known to read
            if not parser.parse(export_onnx(graph, fused_attention=False).read_bytes()):
                errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
                raise RuntimeError(f"TensorRT could not parse the ONNX graph: {errors}")
            config = builder.create_builder_config()
            if precision == "fp16":
                config.set_flag(trt.BuilderFlag.FP16)
            else:  # fp32 means fp32, as for the other engines: TensorRT would otherwise use TF32 where it can
                config.clear_flag(trt.BuilderFlag.TF32)
            profile = builder.create_optimization_profile()
            for name, example in zip(graph.input_names, graph.example, strict=True):
                lo, hi = list(example.shape), list(example.shape)
                for axis, sym in graph.dynamic_axes.get(name, {}).items():
                    lo[axis] = 1
                    hi[axis] = max_batch if sym == "batch" else max_seq
                profile.set_shape(name, lo, list(example.shape), hi)
            config.add_optimization_profile(profile)
            serialized = builder.build_serialized_network(network, config)
            if serialized is None:
                raise RuntimeError("TensorRT failed to build an engine (see the log above)")
            engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
            session = TensorRTSession(engine, graph, None, dev)
            session.run(*graph.example)
        session.info = SessionInfo(self.name, precision, None, str(dev), f"TensorRT ({precision})", t.seconds)
        return session
