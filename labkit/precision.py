"""One precision vocabulary for the whole lab: fp32 | bf16 | fp16 | int8 | int4.

Every table, argument and column says precision with these five names. The other spellings people type
(`"float32"`, `"bfloat16"`, `torch.float16`, ...) are accepted at the edge by `canonical()` and never shown.
Bytes per value are the storage sizes of IEEE 754 binary32 / bfloat16 / binary16 and of 8- and 4-bit integers
(a 4-bit value is half a byte; block scales are counted by the code that stores them).
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16", "fp16", "int8", "int4")
FLOAT_PRECISIONS = ("fp32", "bf16", "fp16")
BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "int8": 1.0, "int4": 0.5}
# Largest allowed |output - fp32 eager output|, relative to the largest |fp32 eager output|, when an engine
# runs a model at this precision (bf16 keeps 8 mantissa bits, fp16 11: ~2^-8 and ~2^-11 per value, grown by depth).
TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2, "fp16": 1e-2}
_TORCH = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.int8}
_ALIASES = {
    "float32": "fp32", "float": "fp32", "f32": "fp32", "torch.float32": "fp32",
    "bfloat16": "bf16", "torch.bfloat16": "bf16",
    "float16": "fp16", "half": "fp16", "f16": "fp16", "torch.float16": "fp16",
    "qint8": "int8", "i8": "int8", "4bit": "int4", "i4": "int4",
}


def canonical(precision: str | torch.dtype) -> str:
    """The lab's name for a precision.

    Args:
        precision: one of PRECISIONS, a common alias ("float32", "bfloat16", "half", ...) or a torch dtype.
    Returns:
        "fp32", "bf16", "fp16", "int8" or "int4".
    Raises:
        ValueError: naming the valid choices, for anything else.
    """
    key = str(precision).lower()
    key = _ALIASES.get(key, key)
    if key not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {list(PRECISIONS)} "
                         f"(or an alias such as 'float32', 'bfloat16', 'float16')")
    return key


def torch_dtype(precision: str | torch.dtype) -> torch.dtype:
    """The torch dtype that stores a floating-point precision (int8 -> torch.int8).

    Args:
        precision: one of PRECISIONS (but int4) or an alias.
    Returns:
        torch.float32, torch.bfloat16, torch.float16 or torch.int8.
    Raises:
        ValueError: for an unknown name, or for int4 (torch has no 4-bit dtype; quantizers pack it).
    """
    key = canonical(precision)
    if key not in _TORCH:
        raise ValueError(f"{key} has no torch dtype (it is packed by a quantizer); choose from {list(_TORCH)}")
    return _TORCH[key]


def bytes_per_value(precision: str | torch.dtype) -> float:
    """Storage bytes of one value: 4, 2, 2, 1 or 0.5 (block scales and zero points not included).

    Args:
        precision: one of PRECISIONS or an alias accepted by `canonical`.
    Returns:
        bytes per value (float: int4 is 0.5).
    Raises:
        ValueError: for an unknown precision, naming the choices.
    """
    return BYTES[canonical(precision)]


def tolerance(precision: str | torch.dtype) -> float:
    """Parity tolerance of a floating-point precision, relative to the largest |fp32 output|.

    Args:
        precision: fp32, bf16 or fp16 (or an alias).
    Returns:
        the largest allowed |output - fp32 eager output| / max |fp32 eager output|.
    Raises:
        ValueError: for int8/int4 or an unknown name.
    """
    key = canonical(precision)
    if key not in TOLERANCE:
        raise ValueError(f"no parity tolerance for {key}; choose from {list(TOLERANCE)}")
    return TOLERANCE[key]


def native_half(device: str | torch.device = "cpu") -> str:
    """The 16-bit float this device computes natively: bf16 on CPUs and GPUs of compute capability >= 8.0
    (Ampere and later), fp16 on older GPUs such as the T4 (7.5), where bf16 is emulated.

    Args:
        device: "cpu", "cuda", "cuda:N" or a torch.device.
    Returns:
        "bf16" or "fp16".
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        major, _ = torch.cuda.get_device_capability(dev)
        return "bf16" if major >= 8 else "fp16"
    return "bf16"


@contextlib.contextmanager
def flush_denormals(device: str | torch.device = "cpu"):
    """Within the block, a CPU flushes subnormal fp32 values (below 1.18e-38, `torch.finfo(torch.float32).tiny`) to
    zero instead of taking the slow path x86 cores run them on (microcode, ~100x a normal multiply-add). Training
    makes them: AdamW's second moments and the gradients of rarely-seen tokens shrink into that range. On a GPU it
    does nothing (CUDA kernels flush or run subnormals at full speed).

    Args:
        device: the device the work runs on; only "cpu" changes anything.
    Yields:
        True if flushing was turned on (a CPU that supports it: x86 with SSE3), else False. It is turned off again
        afterwards (PyTorch's default).
    """
    on = torch.device(device).type == "cpu" and torch.set_flush_denormal(True)
    try:
        yield on
    finally:
        if on:
            torch.set_flush_denormal(False)
