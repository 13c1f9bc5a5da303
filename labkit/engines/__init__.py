"""Inference engines behind one protocol; adding one is a file plus a line in ENGINES.

    session = get_engine("onnxruntime").prepare(graph_for("tiny-bloom"), num_threads=2)
    check_parity(session, graph)      # against PyTorch eager fp32
"""

from __future__ import annotations

import pandas as pd

from labkit.convert import Graph
from labkit.engines.base import (
    Engine,
    EngineUnavailable,
    Parity,
    ParityError,
    Session,
    SessionInfo,
    check_parity,
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


def engine_table() -> pd.DataFrame:
    """Every engine with whether it runs here and why (not).

    Returns:
        one row per engine: engine, available, reason, precisions, what.
    """
    rows = []
    for name, engine in ENGINES.items():
        ok, reason = engine.available()
        rows.append({"engine": name, "available": ok, "reason": reason, "precisions": ", ".join(engine.precisions),
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


def available_engines() -> list[str]:
    """The engines that can run on this machine.

    Returns:
        their names, in ENGINES order.
    """
    return [name for name, e in ENGINES.items() if e.available()[0]]


def _status() -> str:
    return "; ".join(f"{n} ({'available' if ok else 'unavailable: ' + why})"
                     for n, (ok, why) in ((n, e.available()) for n, e in ENGINES.items()))


__all__ = [
    "ENGINES", "WORKLOADS", "Engine", "EngineUnavailable", "Graph", "Parity", "ParityError", "Session", "SessionInfo",
    "available_engines", "check_parity", "engine_table", "get_engine", "graph_for",
]  # fmt: skip
