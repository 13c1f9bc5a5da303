"""Inference engines behind one protocol; adding one is a file plus a line in ENGINES.

    session = get_engine("onnxruntime").prepare(graph_for("tiny-bloom"), num_threads=2)
    check_parity(session, graph)      # against PyTorch eager fp32
"""

from __future__ import annotations

import pandas as pd
import torch

from labkit.convert import Graph
from labkit.engines.base import (
    Engine,
    EngineUnavailable,
    Parity,
    ParityError,
    Session,
    SessionInfo,
    check_parity,
    engine_device,
)
from labkit.engines.compile import TorchCompile
from labkit.engines.eager import TorchEager
from labkit.engines.ort import OnnxRuntime
from labkit.engines.ov import OpenVINO
from labkit.engines.torchscript import TorchScript
from labkit.engines.trt import TensorRT
from labkit.engines.workloads import WORKLOADS, graph_for

ENGINES: dict[str, Engine] = {
    e.name: e for e in (TorchEager(), TorchScript(), TorchCompile(), OnnxRuntime(), OpenVINO(), TensorRT())
}


def engine_table(device: str | torch.device = "cpu") -> pd.DataFrame:
    """Every engine with whether it runs on `device` here and why (not).

    Args:
        device: the device asked about ("cpu", "cuda", "cuda:N", or a torch.device; `Engine.supports`).
    Returns:
        one row per engine: engine, device, available, reason, precisions, devices (the kinds it runs on), what.
    """
    rows = []
    for name, engine in ENGINES.items():
        ok, reason = engine.supports(device)
        rows.append({"engine": name, "device": str(device), "available": ok, "reason": reason,
                     "precisions": ", ".join(engine.precisions), "devices": ", ".join(engine.devices),
                     "what": engine.description})
    return pd.DataFrame(rows)


def get_engine(name: str) -> Engine:
    """The engine called `name`, checked to run here.

    Args:
        name: one of ENGINES ("torch-eager", "torchscript", "torch-compile", "onnxruntime", "openvino", "tensorrt").
    Returns:
        the Engine (call `.prepare(graph, ...)` on it).
    Raises:
        ValueError: for an unknown name, listing every engine and its status.
        EngineUnavailable: when the engine cannot run here, saying why and listing every engine's status.
    """
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; engines: {_status()}")
    ok, reason = ENGINES[name].available()
    if not ok:
        raise EngineUnavailable(f"engine {name!r} is not available here ({reason}); engines: {_status()}")
    return ENGINES[name]


def available_engines(device: str | torch.device = "cpu") -> list[str]:
    """The engines that can run on `device` on this machine.

    Args:
        device: "cpu", "cuda", "cuda:N" or a torch.device (`Engine.supports`).
    Returns:
        their names, in ENGINES order.
    """
    return [name for name, e in ENGINES.items() if e.supports(device)[0]]


def _status() -> str:
    return "; ".join(f"{n} ({'available' if ok else 'unavailable: ' + why})"
                     for n, (ok, why) in ((n, e.available()) for n, e in ENGINES.items()))


__all__ = [
    "ENGINES", "WORKLOADS", "Engine", "EngineUnavailable", "Graph", "Parity", "ParityError", "Session", "SessionInfo",
    "available_engines", "check_parity", "engine_device", "engine_table", "get_engine", "graph_for",
]  # fmt: skip
