"""2:4 semi-structured sparsity: two non-zeros in every four consecutive weights, the pattern NVIDIA's sparse tensor
cores (Ampere, compute capability 8.0, and later) skip in hardware for up to twice the dense math rate (Mishra et al.
2021, "Accelerating Sparse Deep Neural Networks", arXiv:2104.08378). PyTorch stores it with
`torch.sparse.to_sparse_semi_structured`, on CUDA only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from labkit import hardware, measure


def two_four_mask(w: torch.Tensor) -> torch.Tensor:
    """2:4 semi-structured pattern: in every group of 4 consecutive weights of a row, keep the 2 largest |w|.

    Args:
        w: (out, in) with `in` divisible by 4. Returns: a bool mask shaped like w, exactly 2 True per group.
    Raises:
        ValueError: for `in` not divisible by 4.
    """
    if w.dim() != 2 or w.shape[1] % 4:
        raise ValueError(f"need a 2-D weight whose columns divide by 4, got shape {tuple(w.shape)}")
    groups = w.abs().reshape(w.shape[0], -1, 4)
    top = groups.topk(2, dim=-1).indices
    return torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True).reshape(w.shape)


def semi_structured(size: int = 4096, tokens: int = 4096, repeat: int = 20, device: str = "cuda") -> dict:
    """A (size × size) fp16 Linear weight pruned 2:4, multiplied dense and as `to_sparse_semi_structured` (sparse
    tensor cores: compute capability 8.0+), timed side by side on (tokens × size) fp16 inputs.

    Args:
        size: the weight's rows and columns. tokens: rows of the input. repeat: timed products of each kind.
        device: a CUDA device ("cuda", "cuda:N").
    Returns:
        {"dense_ms", "sparse_ms", "speedup" = dense / sparse, "max_abs_diff" between the two outputs, "gpu"}.
    Raises:
        hardware.CapabilityMissing: without CUDA or on a GPU older than compute capability 8.0 (the reason says
        which). ValueError: for sizes not divisible by 64 or repeat < 1.
    """
    if size % 64 or tokens % 64 or repeat < 1:
        raise ValueError(f"size and tokens must divide by 64 and repeat be >= 1, got {size}, {tokens}, {repeat}")
    hardware.require("cuda")
    dev = torch.device(device)
    if torch.cuda.get_device_capability(dev) < (8, 0):
        cc = torch.cuda.get_device_capability(dev)
        raise hardware.CapabilityMissing(f"2:4 sparse tensor cores need compute capability 8.0+ (Ampere); "
                                         f"{torch.cuda.get_device_name(dev)} has {cc}")
    from torch.sparse import to_sparse_semi_structured

    w = torch.randn(size, size, device=dev, dtype=torch.float16)
    w = w * two_four_mask(w)
    x = torch.randn(tokens, size, device=dev, dtype=torch.float16)
    sparse = to_sparse_semi_structured(w)
    stats = measure.benchmark_rounds({"dense": lambda: F.linear(x, w), "sparse": lambda: F.linear(x, sparse)},
                                     warmup=3, repeat=repeat)
    diff = (F.linear(x, w) - F.linear(x, sparse)).abs().max().item()
    dense_ms, sparse_ms = stats["dense"].median * 1e3, stats["sparse"].median * 1e3
    return {"dense_ms": dense_ms, "sparse_ms": sparse_ms, "speedup": dense_ms / sparse_ms, "max_abs_diff": diff,
            "gpu": torch.cuda.get_device_name(dev)}
