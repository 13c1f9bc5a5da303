"""The links offloaded weights cross: measured host→device bandwidth, and the bytes / bandwidth floor per token."""

from __future__ import annotations

import torch

from labkit import measure
from labkit.hardware import CapabilityMissing
from labkit.offload.placement import execution_device


def host_to_device_gbps(device: str | torch.device = "auto", pinned: bool = False, size_mib: int = 256,
                        repeat: int = 5) -> measure.Bandwidth:
    """Measured host→device copy bandwidth: what each offloaded weight crosses at every forward on a GPU.

    A `size_mib` buffer in host memory — pinned (page-locked: the GPU's DMA engine reads it directly) or pageable
    (an ordinary tensor, as Accelerate keeps offloaded weights: the driver stages it through a pinned buffer) —
    copied to `device`; the fastest of `repeat` copies counts (a ceiling, as `measure.memory_bandwidth`). On the
    CPU the "device" memory is host memory: the pageable copy is then a host→host copy (memcpy).

    Args:
        device: "auto", "cpu", "cuda" or "cuda:N". pinned: page-locked source buffer (CUDA only).
        size_mib: bytes copied per repeat (MiB). repeat: timed copies after one warm-up.
    Returns:
        measure.Bandwidth in GB/s (1e9 bytes/s), carrying the device (`.device`) and its name.
    Raises:
        ValueError: size_mib or repeat < 1, or an unknown device. CapabilityMissing: pinned memory without CUDA.
    """
    if size_mib < 1 or repeat < 1:
        raise ValueError(f"size_mib and repeat must be >= 1, got {size_mib} and {repeat}")
    dev = execution_device(device)
    if pinned and dev.type != "cuda":
        raise CapabilityMissing("pinned (page-locked) host memory is a CUDA feature: a CPU has no copy to a device")
    host = torch.ones(size_mib * 2**20 // 4, dtype=torch.float32, pin_memory=pinned)
    target = torch.empty_like(host, device=dev, pin_memory=False)
    stats = measure.benchmark(lambda: target.copy_(host, non_blocking=pinned), warmup=1, repeat=repeat)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "host memory"
    return measure.Bandwidth(host.numel() * 4 / min(stats.samples) / 1e9, str(dev), name)


def offload_seconds_per_token(weights_gb: float, fast_memory_gb: float, link_gbps: float, fast_gbps: float,
                              batch: int = 1) -> dict:
    """Bytes / bandwidth: a decode step reads every weight once, the offloaded part over the slow link.

    step_s = resident_GB / fast_gbps + streamed_GB / link_gbps, with resident_GB = min(weights, fast memory); a
    batch shares each weight read, so s_per_token = step_s / batch. This is the bandwidth-bound floor of memory-bound
    decoding (the roofline model, Williams et al., CACM 2009), with compute and overlap of transfers ignored.

    Args:
        weights_gb: weight bytes (GB). fast_memory_gb: memory for weights on the fast device(s) (GB).
        link_gbps: bandwidth of the link the rest streams over (GB/s). fast_gbps: fast memory bandwidth (GB/s).
        batch: sequences decoded together (>= 1).
    Returns:
        {"resident_GB", "streamed_GB", "step_s", "s_per_token"}.
    Raises:
        ValueError: a size or bandwidth <= 0 (fast memory < 0), or batch < 1.
    """
    if min(weights_gb, link_gbps, fast_gbps) <= 0 or fast_memory_gb < 0 or batch < 1:
        raise ValueError("sizes and bandwidths must be positive and batch >= 1")
    resident = min(weights_gb, fast_memory_gb)
    streamed = weights_gb - resident
    step_s = resident / fast_gbps + streamed / link_gbps
    return {"resident_GB": resident, "streamed_GB": streamed, "step_s": step_s, "s_per_token": step_s / batch}
