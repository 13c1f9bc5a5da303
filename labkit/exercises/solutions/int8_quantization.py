"""The per-channel int8 exercise's answer: symmetric absmax quantization, one scale per output channel (PyTorch's
PerChannelMinMaxObserver convention for qint8: scale = absmax / 127.5, floored at float32's eps)."""

from __future__ import annotations

import torch


def quantize_per_channel_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize each row (output channel) of a weight to int8 with its own scale and a zero point of 0.

    Args:
        w: (out_features, in_features) weight, any float dtype.
    Returns:
        (q, scale): q (out_features, in_features) int8 in [-128, 127], scale (out_features,) float32, such that
        `q * scale[:, None]` approximates w to within half a scale per weight.
    """
    w = w.float()  # fp16 / bf16 upcast exactly; a scale computed in half precision would be rounded
    absmax = w.abs().amax(dim=1)  # (out,): the largest magnitude of each row, whatever its sign
    scale = (absmax / 127.5).clamp(min=torch.finfo(torch.float32).eps)  # (qmax - qmin) / 2; a zero row keeps eps
    q = (w / scale[:, None]).round().clamp(-128, 127).to(torch.int8)  # nearest code; ±127.5 must not wrap around
    return q, scale
