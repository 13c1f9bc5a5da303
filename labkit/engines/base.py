"""The contract every inference engine meets, and the parity check every session must pass.

An engine takes a `Graph` (a PyTorch module with positional tensor inputs and an example) and
prepares a `Session` — exporting, compiling or loading as it needs — that maps inputs to outputs.
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import torch

PRECISIONS = ("fp32", "bf16", "fp16")
# Largest allowed |output - fp32 eager output|, relative to the largest |fp32 eager output|.
TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2, "fp16": 1e-2}
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class EngineUnavailable(RuntimeError):
    """The engine cannot run here (package or hardware missing); the message says which and why."""


class ParityError(AssertionError):
    """A session's outputs differ from PyTorch eager's by more than the precision's tolerance."""


@dataclass(frozen=True)
class Graph:
    """What engines compile: `module(*example)` -> one output tensor.

    dynamic_axes: input name -> {axis: symbolic name}, e.g. {"input_ids": {0: "batch", 1: "seq"}}.
    """

    name: str
    module: torch.nn.Module
    example: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    output_name: str = "logits"

    def feeds(self, inputs: tuple[torch.Tensor, ...]) -> dict[str, np.ndarray]:
        """Inputs as a name -> numpy dict, the form ONNX Runtime and OpenVINO take."""
        return {n: t.detach().cpu().numpy() for n, t in zip(self.input_names, inputs, strict=True)}

    @torch.no_grad()
    def reference(self, inputs: tuple[torch.Tensor, ...] | None = None) -> np.ndarray:
        """PyTorch eager fp32 output: the ground truth for parity."""
        return self.module(*(inputs or self.example)).float().cpu().numpy()


@dataclass(frozen=True)
class SessionInfo:
    engine: str
    precision: str
    threads: int | None
    device: str
    provider: str  # e.g. "CPUExecutionProvider", "inductor", "CPU plugin"
    prepare_s: float  # export + optimisation + compilation + first run: the cold-start cost


class Session(ABC):
    info: SessionInfo

    @abstractmethod
    def run(self, *inputs: torch.Tensor) -> np.ndarray:
        """Outputs as a float32 numpy array."""

    def describe(self) -> dict:
        return {**self.info.__dict__}


class Engine(ABC):
    name: str
    description: str
    precisions: tuple[str, ...] = ("fp32",)

    @abstractmethod
    def available(self) -> tuple[bool, str]:
        """(True, what it will use) or (False, why not and how to get it)."""

    @abstractmethod
    def _prepare(self, graph: Graph, precision: str, num_threads: int | None, **options) -> Session: ...

    def prepare(self, graph: Graph, precision: str = "fp32", num_threads: int | None = None, **options) -> Session:
        """Build a session for `graph`; raises a clear error for unusable engines or precisions."""
        ok, reason = self.available()
        if not ok:
            raise EngineUnavailable(f"engine {self.name!r} is not available here: {reason}")
        if precision not in self.precisions:
            raise ValueError(f"engine {self.name!r} supports precisions {list(self.precisions)}, not {precision!r}")
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        return self._prepare(graph, precision, num_threads, **options)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run PyTorch ops with `n` intra-op threads, restoring the previous setting afterwards."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Timer:
    """Measures a prepare step: `with Timer() as t: ...; t.seconds`."""

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._start


@dataclass(frozen=True)
class Parity:
    engine: str
    precision: str
    max_abs_diff: float
    relative_diff: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.relative_diff <= self.tolerance


def check_parity(session: Session, graph: Graph, inputs: tuple[torch.Tensor, ...] | None = None,
                 tolerance: float | None = None, raise_on_fail: bool = True) -> Parity:
    """Compare a session with PyTorch eager fp32 on the same inputs; raise `ParityError` if too far."""
    inputs = inputs or graph.example
    ref = graph.reference(inputs)
    out = session.run(*inputs)
    if out.shape != ref.shape:
        raise ParityError(f"{session.info.engine}: output shape {out.shape} != eager {ref.shape}")
    diff = float(np.abs(out.astype(np.float32) - ref).max())
    scale = float(np.abs(ref).max()) or 1.0
    tol = TOLERANCE[session.info.precision] if tolerance is None else tolerance
    result = Parity(session.info.engine, session.info.precision, diff, diff / scale, tol)
    if raise_on_fail and not result.ok:
        raise ParityError(
            f"{session.info.engine} ({session.info.precision}) differs from torch eager by {diff:.3g} "
            f"(relative {result.relative_diff:.3g} > tolerance {tol:.3g}) on {graph.name}"
        )
    return result
