"""A lab's `DEVICE` parameter, resolved once: which device it measures, why, and the 16-bit float it uses there.

Every lab has `DEVICE = "auto"` in its parameters cell and calls `choose(DEVICE)` right after; the returned
`DeviceChoice` is what the lab passes to labkit (`.device`), prints (`.summary()`), records (`.label`: every
recorded number names the device it came from) and asks before a GPU-only section (`.gpu_section(...)`, which
prints the reason when the section is skipped). The device rule itself is `hardware.resolve_device`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from labkit import hardware, precision


def resolve(device: str | torch.device = "auto") -> torch.device:
    """`hardware.resolve_device` with the GPU index spelled out ("cuda" -> "cuda:<current>"), so one device has
    one name: caches, records and comparisons keyed by it agree.

    Args:
        device: "auto", "cpu", "cuda", "cuda:N" or a torch.device.
    Returns:
        the torch.device ("cpu" or "cuda:N").
    Raises:
        ValueError: an unknown device, naming the valid ones. CapabilityMissing: CUDA asked for without a GPU.
    """
    dev = hardware.resolve_device(device)
    return torch.device("cuda", torch.cuda.current_device()) if dev.type == "cuda" and dev.index is None else dev


def device_name(device: str | torch.device) -> str:
    """The hardware behind a device: the GPU's name ("NVIDIA H200") or the CPU model (/proc/cpuinfo).

    Args:
        device: "auto", "cpu", "cuda", "cuda:N" or a torch.device (`hardware.resolve_device`).
    Returns:
        the name, as the driver or /proc/cpuinfo reports it.
    Raises:
        ValueError: an unknown device, naming the valid ones. CapabilityMissing: CUDA asked for without a GPU.
    """
    dev = resolve(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return hardware.cpu_model_and_flags()[0]  # not detect(): that probes DeepSpeed and ONNX Runtime (~2 s)


def device_label(device: str | torch.device) -> str:
    """ "cpu (AMD EPYC 7B13)" or "cuda:0 (NVIDIA H200)": the device and its hardware, for records and titles."""
    dev = resolve(device)
    return f"{dev} ({device_name(dev)})"


@dataclass(frozen=True)
class DeviceChoice:
    """What `choose()` decided. `device` is what labkit functions take; `label` is what records name."""

    asked: str  # the DEVICE parameter as given ("auto", "cpu", "cuda", "cuda:1")
    device: torch.device
    label: str  # "cpu (AMD EPYC 7B13)", "cuda:0 (NVIDIA T4)"
    why: str  # why this device
    half: str  # the 16-bit float this device computes natively: "bf16" or "fp16" (`precision.native_half`)
    half_why: str

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def type(self) -> str:
        """ "cpu" or "cuda": what engines and `torch.device` strings take."""
        return self.device.type

    def summary(self) -> str:
        """Two lines a lab prints after its parameters: the device and why, the 16-bit precision and why."""
        return f"DEVICE={self.asked!r} → {self.label}: {self.why}\n16-bit precision here: {self.half} — {self.half_why}"

    def gpu_section(self, what: str) -> bool:
        """True when a GPU-only section can run; otherwise prints that `what` is skipped and why, returns False.

        Args:
            what: the section, as a learner would name it ("CUDA graphs vs eager").
        """
        if self.is_cuda:
            return True
        reason = ("this machine has no CUDA GPU" if not torch.cuda.is_available()
                  else f"DEVICE={self.asked!r} chose the CPU")
        print(f"GPU section skipped — {what}: {reason}. It runs when the lab runs on a GPU (DEVICE='auto' or 'cuda').")
        return False

    def to_dict(self) -> dict:
        """JSON-ready fields for `record()`: the device label, its type and the 16-bit precision used."""
        return {"device": self.label, "device_type": self.type, "half_precision": self.half}


def choose(device: str | torch.device = "auto") -> DeviceChoice:
    """Resolve a lab's DEVICE parameter (before anything is allocated) and explain the choice.

    Args:
        device: "auto" (the first CUDA GPU when there is one, else the CPU), "cpu", "cuda" or "cuda:N".
    Returns:
        DeviceChoice with the torch.device, its label, the native 16-bit float and the reasons.
    Raises:
        ValueError: an unknown device, naming the valid choices (`hardware.DEVICES`).
        CapabilityMissing: "cuda" asked for on a machine without a CUDA GPU.
    """
    dev = resolve(device)
    asked = str(device)
    if asked == "auto":
        why = "the GPU, because there is one" if dev.type == "cuda" else "no CUDA GPU on this machine, so the CPU"
    else:
        why = "asked for"
    half = precision.native_half(dev)
    if dev.type == "cuda":
        major, minor = torch.cuda.get_device_capability(dev)
        half_why = (f"compute capability {major}.{minor} ≥ 8.0 computes bf16 natively" if half == "bf16"
                    else f"compute capability {major}.{minor} < 8.0: bf16 is emulated there, fp16 runs on tensor cores")
    else:
        flags = hardware.cpu_model_and_flags()[1]
        native = [f for f in ("avx512_bf16", "amx") if flags.get(f)]
        half_why = ("CPUs take bf16 (labkit's rule): this CPU has " + " and ".join(native) + " for it" if native
                    else "CPUs take bf16 (labkit's rule); this CPU has no AVX-512 BF16 or AMX, so bf16 is converted "
                         "in software and may be slower than fp32 here")
    return DeviceChoice(asked, dev, device_label(dev), why, half, half_why)
