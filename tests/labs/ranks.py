"""Where a lab's ranks ran, read without labkit: the CPU's name from /proc/cpuinfo (else platform.processor()), the
GPU's from the driver. Labs 09-13 record it next to the numbers their ranks measured."""

import platform
from pathlib import Path

import torch


def cpu_name() -> str:
    """This machine's CPU model, as /proc/cpuinfo names it."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def check_ranks_device(r: dict, key: str = "ranks_device", world_size: int = 2, nccl_ok: bool = True) -> None:
    """The ranks ran on one GPU each (NCCL) only when the lab ran on CUDA with a GPU per rank; otherwise on this
    CPU (gloo), and the record says so, whatever device the lab itself used."""
    gpus = torch.cuda.device_count() if r["device_type"] == "cuda" else 0
    if nccl_ok and gpus >= world_size:
        assert r[key].startswith("cuda:0") and torch.cuda.get_device_name(0) in r[key], r[key]
    else:
        assert r[key] == f"cpu ({cpu_name()})", r[key]
