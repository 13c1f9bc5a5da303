"""Memory on the fullest GPU, per strategy: weights, KV cache, workspace, what is gathered, and a reserve.

    tp        weights/p + KV_COPIES × KV/p + workspace/p
    naive-pp  the benchmark script's device map (`accelerate_placement`). GPU 0 also holds KV_COPIES × the
              whole KV cache (the io_same_device hook brings every layer's cache back to the input's GPU) and
              the workspace of generate(); every other GPU its weights and its layers' share of one cache.
              Without that hook (`Engine.cache_to_input_gpu` False) each GPU keeps KV_COPIES × its layers' share.
    zero      its 1/p partition (none with offload) + GATHER_COPIES × (the largest weight + the prefetch bucket)
              + KV_COPIES × its own sequences' whole-depth cache + workspace

ZeRO-3 gathers weights module by module (`iter_params(module, recurse=False)`), prefetching the next ones in one
group of up to a bucket plus the weight that overflows it; the largest group holds the largest weight (BLOOM: the
tied embedding / LM head, prefetched with the final layer norm). GATHER_COPIES = 2: DeepSpeed 0.7.3 (the version
the benchmark's README asks for; runtime/zero/partition_parameters.py) gathers a group into one flat buffer and
`AllGatherCoalescedHandle.wait` copies each weight out of it with `torch.cat`; the coordinator keeps the handle, and
with it the buffer, until the group's last weight is used, so both are alive. This term and the copy's time
(`model.ZERO_GATHER_COPY_TRAFFIC`) were added after the held-out ds-zero cells had been seen: they are read from
DeepSpeed's code, and nothing is fitted to those cells.

KV_COPIES = 2: Hugging Face's tuple cache (2022) builds each step's keys and values with `torch.cat` while the
previous step's are still referenced, so at the end of a step both are alive. Capacities are binary: NVIDIA's
"80GB" is 80 GiB (the benchmark's Accelerate script tests `total_memory > 79 * 2**30`).
"""

from __future__ import annotations

import math

from labkit.models import specs
from labkit.models.specs import GPU
from labkit.parallel.costmodel.model import ACTIVATION_BYTES, Engine, Shape

GIB = 2**30
RESERVED_GB = 2.0  # CUDA context, cuBLAS workspace, NCCL buffers, allocator slack: never the model's
KV_COPIES = 2
OFFLOAD_ABOVE = 0.9  # Accelerate fills a GPU to ~90 % with weights at most; the rest stays on the CPU
# ZeRO-3's prefetch bucket in the ds-zero script: stage3_prefetch_bucket_size = 0.9 × hidden² values.
PREFETCH_BUCKET_HIDDEN2 = 0.9
GATHER_COPIES = 2


def capacity_gb(gpu: GPU) -> float:
    """A GPU's memory in GB (1e9 bytes): its datasheet size read as GiB."""
    return gpu.memory_GB * GIB / 1e9


def accelerate_placement(m: Shape, gpu: GPU, gpus: int) -> tuple[tuple[float, ...], float]:
    """Weight bytes per GPU (GPU 0 first) and bytes left on the CPU, as the benchmark's Accelerate script places them.

    BLOOM-176B on 8 × 80 GB: the script's hand-made budgets (`specs.ACCELERATE_BLOOM_8X80_MAX_MEMORY_GIB`: none on
    GPU 0). Otherwise weights/n × `specs.ACCELERATE_MAX_MEMORY_HEADROOM` each. Devices fill in order, never beyond
    OFFLOAD_ABOVE of a GPU; what is left is offloaded to the CPU.

    Args:
        m: the model. gpu: one GPU's datasheet. gpus: how many.
    Returns:
        (bytes on each GPU, bytes on the CPU).
    """
    total = m.weight_bytes
    key = "int8" if m.int8 else "bf16"
    if m.name == "bloom-176b" and gpus == specs.BLOOM_BENCHMARK_GPUS and gpu.memory_GB >= specs.A100_80GB.memory_GB:
        budgets = [0.0] + [specs.ACCELERATE_BLOOM_8X80_MAX_MEMORY_GIB[key] * GIB] * (gpus - 1)
    else:
        budgets = [total / gpus * specs.ACCELERATE_MAX_MEMORY_HEADROOM] * gpus
    cap = max(0.0, (OFFLOAD_ABOVE * capacity_gb(gpu) - RESERVED_GB) * 1e9)
    placed, left = [], total
    for budget in budgets:
        placed.append(min(budget, cap, left))
        left -= placed[-1]
    return tuple(placed), max(0.0, left)


def offloaded_bytes(engine: Engine, m: Shape, gpu: GPU, gpus: int) -> float:
    """Weight bytes kept in CPU memory and copied in at every step (naive PP's offload; the whole model for
    zero-offload; 0 otherwise)."""
    if engine.strategy == "naive-pp":
        return accelerate_placement(m, gpu, gpus)[1]
    return m.weight_bytes if engine.strategy == "zero-offload" else 0.0


def memory_gb(engine: Engine, m: Shape, gpu: GPU, gpus: int, batch: int, tokens: int) -> dict:
    """Memory on the fullest GPU, by part.

    Args:
        engine, m, gpu, gpus: as for `model.step_ms`. batch: sequences (zero strategies: per GPU).
        tokens: prompt + generated tokens per sequence.
    Returns:
        {"weights", "gathered", "KV cache", "workspace", "reserved"} in GB (1e9 bytes) on the GPU that needs most.
    """
    kv = batch * tokens * m.kv_bytes_per_token
    work = engine.workspace * batch * tokens * m.hidden * ACTIVATION_BYTES
    reserved = RESERVED_GB * 1e9
    if engine.strategy == "tp":
        candidates = [(m.weight_bytes / gpus, 0.0, KV_COPIES * kv / gpus, work / gpus)]
    elif engine.strategy == "naive-pp":
        placed, _ = accelerate_placement(m, gpu, gpus)
        on_gpus = sum(placed) or 1.0
        if engine.cache_to_input_gpu:  # GPU 0, the input's device, gathers every layer's cache
            candidates = [(placed[0], 0.0, KV_COPIES * kv, work)]
            candidates += [(w, 0.0, kv * w / on_gpus, 0.0) for w in placed[1:]]
        else:
            candidates = [(w, 0.0, KV_COPIES * kv * w / on_gpus, work if i == 0 else 0.0) for i, w in enumerate(placed)]
    else:
        group = m.largest_param + PREFETCH_BUCKET_HIDDEN2 * m.hidden**2
        gathered = GATHER_COPIES * group * m.bytes_per_param
        partition = 0.0 if engine.strategy == "zero-offload" else m.weight_bytes / gpus
        candidates = [(partition, gathered, KV_COPIES * kv, work)]
    fullest = max(candidates, key=sum)
    parts = dict(zip(("weights", "gathered", "KV cache", "workspace"), fullest, strict=True), reserved=reserved)
    return {k: v / 1e9 for k, v in parts.items()}


def fits(engine: Engine, m: Shape, gpu: GPU, gpus: int, batch: int, tokens: int) -> bool:
    """Whether `memory_gb` on the fullest GPU stays within its capacity (`capacity_gb`)."""
    need = sum(memory_gb(engine, m, gpu, gpus, batch, tokens).values())
    return math.isfinite(need) and need <= capacity_gb(gpu)
