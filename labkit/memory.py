"""Bytes: of a tensor, of a model's weights in memory and on disk, and of the model states training keeps.

One home for "how many bytes does this hold", used by quantization (weights), training vs inference and ZeRO
(weights + gradients + optimizer state, the "model states" of Rajbhandari et al., 2019).
"""

from __future__ import annotations

import io

import torch
from torch.utils._python_dispatch import is_traceable_wrapper_subclass


def tensor_bytes(t: torch.Tensor) -> int:
    """Storage bytes of a tensor, looking inside quantized tensor subclasses (packed data + scales)."""
    if is_traceable_wrapper_subclass(t):
        inner, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, name)) for name in inner)
    return t.untyped_storage().nbytes() if t.device.type != "meta" else 0


def resident_bytes(model: torch.nn.Module) -> int:
    """Bytes of all weights once loaded: parameters, buffers and torch.ao packed params, tied ones once."""
    seen, total = set(), 0
    tensors = [*model.parameters(), *model.buffers()]
    for m in model.modules():
        packed = getattr(m, "_packed_params", None)
        if packed is not None and hasattr(packed, "_weight_bias"):
            tensors += [t for t in packed._weight_bias() if t is not None]
        state = getattr(getattr(m, "weight", None), "quant_state", None)  # bitsandbytes' 4-bit scales
        if state is not None and getattr(state, "absmax", None) is not None:
            tensors.append(state.absmax)
    for t in tensors:
        key = t.untyped_storage().data_ptr() if not is_traceable_wrapper_subclass(t) else id(t)
        if key not in seen:
            seen.add(key)
            total += tensor_bytes(t)
    return total


def stored_bytes(model: torch.nn.Module) -> int:
    """Bytes of the weights as saved: the size of `torch.save(model.state_dict())` (tied weights once)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


def model_state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
    """Bytes a training process holds between steps: weights, gradients and optimizer state.

    Args:
        model: any module; gradients count only where `.grad` is set.
        optimizer: its `state` tensors are counted (e.g. Adam's two moments: 8 B per fp32 parameter).
    Returns:
        {"weights": B, "gradients": B, "optimizer_state": B}, each in bytes (numel × element size).
    """
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    opt = 0
    if optimizer is not None:
        tensors = (t for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t))
        opt = sum(t.numel() * t.element_size() for t in tensors)
    return {"weights": params, "gradients": grads, "optimizer_state": opt}
