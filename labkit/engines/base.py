"""The contract every inference engine meets, and the parity check every session must pass.

An engine takes a `Graph` (a PyTorch module with positional tensor inputs and an example; see `labkit.convert`) and
prepares a `Session` — exporting, compiling or loading as it needs — that maps inputs to outputs.
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch

from labkit import devices
from labkit.convert import Graph
from labkit.hardware import DEVICES, Unavailable, resolve_device
from labkit.precision import canonical
from labkit.precision import tolerance as parity_tolerance


class EngineUnavailable(Unavailable):
    """The engine cannot run here (package or hardware missing); the message says which and why."""


class ParityError(AssertionError):
    """A session's outputs differ from PyTorch eager's by more than the precision's tolerance."""


@dataclass(frozen=True)
class SessionInfo:
    engine: str
    precision: str  # fp32 | bf16 | fp16 (labkit.precision)
    threads: int | None
    device: str  # the torch device it ran on, with its index: "cpu", "cuda:0"
    provider: str  # e.g. "CPUExecutionProvider (all)", "inductor", "CPU plugin, static shapes"
    prepare_s: float  # export + optimisation + compilation + first run: the cold-start cost, seconds


class Session(ABC):
    """A prepared model: inputs in, one output out."""

    info: SessionInfo

    @abstractmethod
    def run(self, *inputs: torch.Tensor) -> np.ndarray:
        """Run the prepared model once.

        Args:
            *inputs: the graph's inputs, positionally, shaped like its example (dynamic axes may differ).
        Returns:
            the output as a float32 numpy array, e.g. (batch, seq, vocab) logits.
        """

    def describe(self) -> dict:
        """The session's `SessionInfo` as a dict (a table row)."""
        return {**self.info.__dict__}


def device_kind(device: str | torch.device) -> str:
    """ "cpu" or "cuda": the kind of a device, without asking whether this machine has one ("auto" is resolved).

    Raises:
        ValueError: an unknown device, naming the valid ones (`hardware.DEVICES`).
    """
    if str(device) == "auto":
        return resolve_device("auto").type
    try:
        kind = torch.device(device).type
    except RuntimeError:
        kind = None
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; choose from {list(DEVICES)}")
    return kind


def engine_device(device: str | torch.device) -> torch.device:
    """The device a session runs on, with its index ("cuda" -> cuda:<current>): what `SessionInfo.device` names.

    Raises:
        ValueError: an unknown device, naming the valid ones. CapabilityMissing: CUDA asked for without a GPU.
    """
    return devices.resolve(device)


class Engine(ABC):
    """An inference runtime: `available()` says whether it runs here, `supports(device)` whether it runs on that
    device, `prepare()` builds a `Session`."""

    name: str
    description: str
    precisions: tuple[str, ...] = ("fp32",)
    devices: tuple[str, ...] = ("cpu",)  # the torch device types it can run on

    @abstractmethod
    def available(self) -> tuple[bool, str]:
        """Whether this engine can run here.

        Returns:
            (True, what it will use) or (False, why not and how to get it).
        """

    def supports(self, device: str | torch.device) -> tuple[bool, str]:
        """Whether this engine can run on `device` here (installed, and that kind of device is one it runs on).

        Args:
            device: a torch.device or its name ("cpu", "cuda", "cuda:1", "auto"); only "auto" is resolved, so a CUDA
                device can be asked about on a machine without one.
        Returns:
            (True, what it will use) or (False, why not).
        Raises:
            ValueError: an unknown device, naming the valid ones.
        """
        kind = device_kind(device)
        if kind not in self.devices:  # the first reason: installing the package would not change it
            gpu = " (a CUDA GPU)" if set(self.devices) == {"cuda"} else ""
            return False, f"runs on {' or '.join(self.devices)}{gpu} only, not on {kind}"
        return self.available()

    @abstractmethod
    def _prepare(self, graph: Graph, precision: str, num_threads: int | None, device: torch.device,
                 **options) -> Session: ...

    def prepare(self, graph: Graph, precision: str = "fp32", num_threads: int | None = None,
                device: str | torch.device = "cpu", **options) -> Session:
        """Build a session for `graph` on `device`: export / compile / load, then run it once.

        Args:
            graph: what to run (see `engines.graph_for`).
            precision: one of this engine's `precisions` ("fp32", "bf16", "fp16"; aliases such as "float32" accepted).
            num_threads: intra-op threads; None keeps the runtime's default.
            device: "cpu", "cuda", "cuda:N" or "auto" (`hardware.resolve_device`): where the session computes.
                Inputs and outputs stay host tensors / arrays, so a GPU session's time includes their copies.
            **options: engine-specific preparation options (e.g. provider="tensorrt", fused_attention=False,
                static_shapes=False); see each engine's `_prepare`.
        Returns:
            a Session whose `info.prepare_s` is the cold-start cost in seconds and `info.device` its device.
        Raises:
            EngineUnavailable: the engine cannot run here or not on `device` (missing package or hardware), before
                any work.
            ValueError: for a precision the engine lacks, num_threads < 1 or an unknown device, naming the valid
                choices.
            CapabilityMissing: a CUDA device on a machine without one.
        """
        ok, reason = self.available()
        if not ok:
            raise EngineUnavailable(f"engine {self.name!r} is not available here: {reason}")
        precision = canonical(precision)
        if precision not in self.precisions:
            raise ValueError(f"engine {self.name!r} supports precisions {list(self.precisions)}, not {precision!r}")
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        dev = engine_device(device)
        ok, reason = self.supports(dev)
        if not ok:
            raise EngineUnavailable(f"engine {self.name!r} cannot run on {dev}: {reason}")
        return self._prepare(graph, precision, num_threads, dev, **options)


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


@contextlib.contextmanager
def exact_fp32(device: torch.device, precision: str):
    """fp32 on a GPU computes in fp32: cuDNN convolutions default to TF32 in PyTorch (10-bit mantissas,
    `torch.backends.cudnn.allow_tf32`), which would fail fp32 parity and compare unequal work. No-op elsewhere."""
    if device.type != "cuda" or precision != "fp32":
        yield
        return
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = before


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
    relative_diff: float  # max |session - eager| / max |eager|
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.relative_diff <= self.tolerance


def check_parity(session: Session, graph: Graph, inputs: tuple[torch.Tensor, ...] | None = None,
                 tolerance: float | None = None, raise_on_fail: bool = True) -> Parity:
    """Compare a session with PyTorch eager fp32 on the same inputs.

    Args:
        session: a prepared session. graph: the graph it was prepared from (its module is the fp32 reference).
        inputs: what to run both on; default the graph's example.
        tolerance: largest allowed max|session - eager| / max|eager|; default `labkit.precision.tolerance` of the
            session's precision (fp32 1e-4, bf16 5e-2, fp16 1e-2).
        raise_on_fail: raise when out of tolerance (else return a Parity with ok=False).
    Returns:
        Parity with the absolute and relative differences.
    Raises:
        ParityError: shapes differ, or (with raise_on_fail) the difference exceeds the tolerance.
    """
    inputs = inputs or graph.example
    ref = graph.reference(inputs)
    out = session.run(*inputs)
    if out.shape != ref.shape:
        raise ParityError(f"{session.info.engine}: output shape {out.shape} != eager {ref.shape}")
    diff = float(np.abs(out.astype(np.float32) - ref).max())
    scale = float(np.abs(ref).max()) or 1.0
    tol = parity_tolerance(session.info.precision) if tolerance is None else tolerance
    result = Parity(session.info.engine, session.info.precision, diff, diff / scale, tol)
    if raise_on_fail and not result.ok:
        raise ParityError(
            f"{session.info.engine} ({session.info.precision}) differs from torch eager by {diff:.3g} "
            f"(relative {result.relative_diff:.3g} > tolerance {tol:.3g}) on {graph.name}"
        )
    return result
