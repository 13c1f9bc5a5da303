"""What this machine can do: CPU, memory, GPUs, and which inference back-ends are usable.

`detect()` is cheap (no model is loaded) and every field is plain data, so a notebook can
print it, a test can assert on it and `require()` can explain what is missing.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    import torch


class Unavailable(RuntimeError):
    """The one "cannot run here" error family: a package, a device or a model this machine lacks.

    Every such error in labkit subclasses it (engines, models, decode backends, quantizers), so an experiment
    that skips what cannot run catches exactly this and lets real failures through.
    """


class CapabilityMissing(Unavailable):
    """Raised by `require()` when a lab step needs hardware or a package this machine lacks."""


@dataclass(frozen=True)
class GPU:
    index: int
    name: str
    memory_gib: float
    capability: str  # e.g. "9.0" for Hopper


@dataclass(frozen=True)
class Hardware:
    cpu_model: str
    physical_cores: int
    logical_cores: int
    torch_threads: int
    ram_gib: float
    cpu_flags: dict[str, bool]  # avx2 / avx512f / avx512_bf16 / avx512_vnni / amx
    torch_version: str
    cuda_available: bool
    gpus: tuple[GPU, ...] = ()
    gloo_available: bool = False
    nccl_available: bool = False
    onnxruntime_providers: tuple[str, ...] = ()
    openvino_devices: tuple[str, ...] = ()
    deepspeed_version: str | None = None
    deepspeed_ops: dict[str, bool] = field(default_factory=dict)
    python: str = platform.python_version()

    @property
    def summary(self) -> str:
        """One line naming the hardware, stored next to every benchmark result."""
        gpu = f", {len(self.gpus)}x {self.gpus[0].name}" if self.gpus else ", no GPU"
        return f"{self.cpu_model} ({self.logical_cores} threads, {self.ram_gib:.0f} GiB){gpu}"

    def rows(self) -> list[tuple[str, str]]:
        """(item, value) pairs for the doctor table."""
        flags = ", ".join(k for k, v in self.cpu_flags.items() if v) or "none"
        rows = [
            ("CPU", self.cpu_model),
            ("cores (physical / logical)", f"{self.physical_cores} / {self.logical_cores}"),
            ("torch threads", str(self.torch_threads)),
            ("RAM", f"{self.ram_gib:.1f} GiB"),
            ("CPU vector flags", flags),
            ("Python / torch", f"{self.python} / {self.torch_version}"),
            ("CUDA", "yes" if self.cuda_available else "no (labs run on the CPU)"),
        ]
        for g in self.gpus:
            rows.append((f"GPU {g.index}", f"{g.name}, {g.memory_gib:.0f} GiB, sm {g.capability}"))
        rows += [
            ("torch.distributed gloo / NCCL", f"{_yes(self.gloo_available)} / {_yes(self.nccl_available)}"),
            ("ONNX Runtime providers", ", ".join(self.onnxruntime_providers) or "not installed"),
            ("OpenVINO devices", ", ".join(self.openvino_devices) or "not installed"),
            ("DeepSpeed", self.deepspeed_version or "not installed"),
        ]
        if self.deepspeed_ops:
            ops = ", ".join(f"{k}={'ok' if v else 'no'}" for k, v in self.deepspeed_ops.items())
            rows.append(("DeepSpeed ops", ops))
        return rows

    def to_dict(self) -> dict:
        return asdict(self)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def cpu_model_and_flags() -> tuple[str, dict[str, bool]]:
    """The CPU's model name and its inference-relevant flags, read from /proc/cpuinfo (cheap: no package probed).

    Returns:
        (model name, {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx": present?}); elsewhere than Linux,
        platform.processor() and all flags False.
    """
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    model = value.strip()
                elif key in ("flags", "Features"):
                    flags = set(value.split())
                if model and flags and key == "flags":
                    break
    except OSError:  # macOS / Windows: no /proc; flags stay unknown
        pass
    wanted = {
        "avx2": "avx2",
        "avx512f": "avx512f",
        "avx512_bf16": "avx512_bf16",
        "avx512_vnni": "avx512_vnni",
        "amx": "amx_tile",
    }
    return model, {name: flag in flags for name, flag in wanted.items()}


def _onnxruntime_providers() -> tuple[str, ...]:
    if importlib.util.find_spec("onnxruntime") is None:
        return ()
    import onnxruntime

    return tuple(onnxruntime.get_available_providers())


def _openvino_devices() -> tuple[str, ...]:
    if importlib.util.find_spec("openvino") is None:
        return ()
    import openvino

    return tuple(openvino.Core().available_devices)


def _deepspeed() -> tuple[str | None, dict[str, bool]]:
    if importlib.util.find_spec("deepspeed") is None:
        return None, {}
    try:
        from importlib.metadata import version

        ds_version = version("deepspeed")
    except Exception:  # noqa: BLE001 - a broken install still deserves a row
        return "installed (version unknown)", {}
    # Which ops *could* be JIT-built here, without building them (that takes minutes).
    ops: dict[str, bool] = {}
    try:
        import contextlib
        import io

        # Importing DeepSpeed logs "Setting accelerator to CPU" to stdout (it would break `doctor --json`):
        # keep that line out, then point its log handler back at the real stdout.
        with contextlib.redirect_stdout(io.StringIO()) as swallowed:
            from deepspeed.utils import logger as ds_logger
        for handler in ds_logger.handlers:
            if getattr(handler, "stream", None) is swallowed:
                handler.setStream(sys.stdout)
        from deepspeed.ops.op_builder import CPUAdamBuilder, InferenceBuilder

        for name, builder in (("cpu_adam", CPUAdamBuilder), ("transformer_inference", InferenceBuilder)):
            try:
                ops[name] = bool(builder().is_compatible(verbose=False))
            except Exception:  # noqa: BLE001 - an op that cannot even say if it fits is not available
                ops[name] = False
    except Exception:  # noqa: BLE001 - a half-installed DeepSpeed still gets its version reported
        pass
    return ds_version, ops


@functools.lru_cache(maxsize=1)
def detect() -> Hardware:
    """Probe the machine once per process (the answer does not change while it runs)."""
    import torch
    import torch.distributed as dist

    cpu_model, flags = cpu_model_and_flags()
    gpus: tuple[GPU, ...] = ()
    if torch.cuda.is_available():
        gpus = tuple(
            GPU(
                index=i,
                name=torch.cuda.get_device_name(i),
                memory_gib=torch.cuda.get_device_properties(i).total_memory / 2**30,
                capability="{}.{}".format(*torch.cuda.get_device_capability(i)),
            )
            for i in range(torch.cuda.device_count())
        )
    ds_version, ds_ops = _deepspeed()
    return Hardware(
        cpu_model=cpu_model,
        physical_cores=psutil.cpu_count(logical=False) or os.cpu_count() or 1,
        logical_cores=psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        torch_threads=torch.get_num_threads(),
        ram_gib=psutil.virtual_memory().total / 2**30,
        cpu_flags=flags,
        torch_version=torch.__version__,
        cuda_available=bool(gpus),
        gpus=gpus,
        gloo_available=dist.is_available() and dist.is_gloo_available(),
        nccl_available=dist.is_available() and dist.is_nccl_available() and bool(gpus),
        onnxruntime_providers=_onnxruntime_providers(),
        openvino_devices=_openvino_devices(),
        deepspeed_version=ds_version,
        deepspeed_ops=ds_ops,
    )


# capability -> (check, what the lab does without it)
_CAPABILITIES = {
    "cuda": (lambda hw: hw.cuda_available, "the lab runs this step on the CPU or skips it"),
    "multi-gpu": (lambda hw: len(hw.gpus) >= 2, "parallel labs run 2 CPU ranks over gloo instead"),
    "nccl": (lambda hw: hw.nccl_available, "torch.distributed uses the gloo backend instead"),
    "gloo": (lambda hw: hw.gloo_available, "no fallback: reinstall PyTorch with distributed support"),
    "onnxruntime": (lambda hw: bool(hw.onnxruntime_providers), "install it with `pip install onnxruntime`"),
    "openvino": (lambda hw: bool(hw.openvino_devices), "install it with `pip install openvino`"),
    "deepspeed": (lambda hw: hw.deepspeed_version is not None, "install it with `pip install deepspeed`"),
    "avx512_bf16": (lambda hw: hw.cpu_flags.get("avx512_bf16", False), "bf16 runs emulated and slower"),
}


def require(capability: str) -> None:
    """Raise `CapabilityMissing` (saying what is missing and what happens instead) unless present.

    Args:
        capability: one of "cuda", "multi-gpu", "nccl", "gloo", "onnxruntime", "openvino", "deepspeed", "avx512_bf16".
    Raises:
        ValueError: for an unknown capability, naming the valid ones.
        CapabilityMissing: when this machine lacks it.
    """
    if capability not in _CAPABILITIES:
        raise ValueError(f"unknown capability {capability!r}; choose from {sorted(_CAPABILITIES)}")
    check, instead = _CAPABILITIES[capability]
    hw = detect()
    if not check(hw):
        raise CapabilityMissing(f"this machine has no {capability} ({hw.summary}); {instead}.")


def has(capability: str) -> bool:
    """True when `require(capability)` would pass."""
    try:
        require(capability)
    except CapabilityMissing:
        return False
    return True


DEVICES = ("auto", "cpu", "cuda", "cuda:N")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The one device rule: 'auto' is the first CUDA GPU when there is one, else the CPU.

    Args:
        device: "auto", "cpu", "cuda", "cuda:N" or a torch.device.
    Returns:
        the torch.device to run on.
    Raises:
        ValueError: naming the valid choices, for any other device.
        CapabilityMissing: when a CUDA device is asked for on a machine without one.
    """
    import torch  # here, not at the top: `labkit doctor` must start without importing torch

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"unknown device {device!r}; choose from {list(DEVICES)}") from e
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}; choose from {list(DEVICES)}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CapabilityMissing(f"device {device!r} asked for, but this machine has no CUDA GPU; use 'cpu'")
    return dev
