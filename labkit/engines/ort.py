"""ONNX Runtime: run the exported ONNX graph after ORT's own graph optimisations.

The execution provider follows the session's device: CPUExecutionProvider on the CPU, CUDAExecutionProvider on a
GPU (the `onnxruntime-gpu` build), or TensorrtExecutionProvider when asked for by name.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch

from labkit.convert import export_onnx, session_options
from labkit.engines.base import Engine, EngineUnavailable, Session, SessionInfo, Timer, device_kind

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
PROVIDER_DEVICE = {"cpu": "cpu", "cuda": "cuda", "tensorrt": "cuda"}  # the torch device type each provider runs on


def execution_providers(device: str | torch.device, provider: str | None = None, precision: str = "fp32",
                        available: list[str] | None = None) -> list:
    """The `providers` list of an `onnxruntime.InferenceSession` that computes on `device`.

    Args:
        device: the torch device ("cpu", "cuda", "cuda:1", "auto"); only "auto" is resolved, so a CUDA device can be
            asked about on any machine.
        provider: "cpu", "cuda" or "tensorrt" (PROVIDERS); None: the device's own ("cpu" or "cuda").
        precision: the session's precision; in fp32 the CUDA provider is told not to use TF32 (`use_tf32`, on by
            default in the CUDA provider), so fp32 means fp32 as on the CPU.
        available: the providers this onnxruntime has (default `onnxruntime.get_available_providers()`).
    Returns:
        [name or (name, options)] in priority order; a GPU provider is followed by CPUExecutionProvider, which takes
        the nodes it has no kernel for.
    Raises:
        ValueError: an unknown device or provider (naming the valid ones), or a provider that does not run on
            `device`.
        EngineUnavailable: the provider is not in this onnxruntime build, naming the providers that are.
    """
    kind = device_kind(device)  # ValueError for an unknown device, before anything else
    dev = torch.device(kind) if str(device) == "auto" else torch.device(device)
    provider = provider or dev.type
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}; choose from {list(PROVIDERS)}")
    if PROVIDER_DEVICE[provider] != dev.type:
        raise ValueError(f"provider {provider!r} runs on {PROVIDER_DEVICE[provider]}, not on {dev}; pass "
                         f"device={PROVIDER_DEVICE[provider]!r} or another provider")
    if available is None:
        import onnxruntime as ort  # optional package

        available = ort.get_available_providers()
    if PROVIDERS[provider] not in available:
        raise EngineUnavailable(f"{PROVIDERS[provider]} is not in this onnxruntime build, which has {available}; "
                                "GPU providers need `pip install onnxruntime-gpu` (not onnxruntime) and a CUDA GPU")
    if provider == "cpu":
        return [PROVIDERS["cpu"]]
    options = {"device_id": dev.index or 0}
    if provider == "cuda" and precision == "fp32":
        options["use_tf32"] = 0
    return [(PROVIDERS[provider], options), PROVIDERS["cpu"]]


class OrtSession(Session):
    def __init__(self, session, graph, info: SessionInfo):
        self.session, self.graph, self.info = session, graph, info

    def run(self, *inputs: torch.Tensor) -> np.ndarray:
        return self.session.run(None, self.graph.feeds(inputs))[0].astype(np.float32, copy=False)


class OnnxRuntime(Engine):
    name = "onnxruntime"
    description = "ONNX Runtime on the exported graph (fusions, constant folding, NCHWc layouts)"
    devices = ("cpu", "cuda")

    def available(self) -> tuple[bool, str]:
        if importlib.util.find_spec("onnxruntime") is None:
            return False, "onnxruntime is not installed (pip install onnxruntime)"
        import onnxruntime as ort  # optional package

        return True, f"onnxruntime {ort.__version__}: {', '.join(ort.get_available_providers())}"

    def supports(self, device) -> tuple[bool, str]:
        ok, reason = super().supports(device)
        if not ok:
            return ok, reason
        try:
            provider = execution_providers(device)[0]
        except EngineUnavailable as err:
            return False, str(err)
        return True, f"{reason}; runs {provider if isinstance(provider, str) else provider[0]}"

    def _prepare(self, graph, precision, num_threads, dev, level: str = "all", provider: str | None = None,
                 fused_attention: bool | None = None, **_):
        """level: ORT's optimisation level (`convert.session_options`). provider: "cpu", "cuda" or "tensorrt"
        (default: the device's own; see `execution_providers`). fused_attention (default: on the CPU provider)
        exports BLOOM's attention as one ONNX Attention node, which none of ORT's own fusions produce (see
        `convert.export_patches`)."""
        import onnxruntime as ort  # optional package

        providers = execution_providers(dev, provider, precision)
        wanted = providers[0] if isinstance(providers[0], str) else providers[0][0]
        with Timer() as t:
            path = export_onnx(graph, fused_attention=wanted == PROVIDERS["cpu"] if fused_attention is None
                               else fused_attention)
            sess = ort.InferenceSession(str(path), session_options(level, num_threads), providers=providers)
            if sess.get_providers()[0] != wanted:  # ORT falls back to the CPU, with a warning, when a GPU library fails
                raise EngineUnavailable(f"onnxruntime could not start {wanted} (it started {sess.get_providers()}); "
                                        "see its warning above for the missing library")
            session = OrtSession(sess, graph, None)
            session.run(*graph.example)
        session.info = SessionInfo(self.name, precision, num_threads, str(dev), f"{wanted} ({level})", t.seconds)
        return session
