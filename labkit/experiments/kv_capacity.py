"""The KV cache as the concurrency limit: how many sequences of a given length fit in a device's memory.

Once the weights are loaded, every concurrent sequence needs its own KV cache (`anatomy.kv_cache_bytes`), so
free memory ÷ one sequence's cache is the most sequences a server can hold at once (vLLM sizes its block pool the
same way: `gpu_memory_utilization` × total memory, minus the weights and the activations' peak, ÷ bytes per block).
`kv_capacity` predicts that count with the formula and checks it by allocating real transformers caches
(`StaticCache`, one per sequence) until the memory runs out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import psutil
import torch
from transformers import StaticCache

from labkit import anatomy, hardware, measure, models
from labkit.precision import FLOAT_PRECISIONS, canonical, native_half


@dataclass(frozen=True)
class KVCapacity:
    """Sequences of `seq` tokens whose KV caches fit: the formula's count and the count really allocated.

    Bytes are bytes (not MiB). `budget_bytes` is the memory the caches may take; `device_free_bytes` the device's
    free memory before the weights were loaded (psutil's available RAM on a CPU, `torch.cuda.mem_get_info` on a
    GPU) and `device_formula_sequences` = (device_free_bytes − weights − reserve) ÷ one sequence's cache, the
    formula's answer for the whole device. `memory_growth_bytes` is a second measurement of what the allocated
    caches took: the process's RSS growth on a CPU, the growth of `torch.cuda.memory_allocated` on a GPU.
    """

    model: str
    device: str
    precision: str
    seq: int
    weights_bytes: int
    device_free_bytes: int
    reserve_bytes: int
    budget_bytes: int
    budget_source: str  # "given" or "free device memory − weights − reserve"
    per_sequence_formula_bytes: int
    per_sequence_allocated_bytes: int
    formula_sequences: int
    device_formula_sequences: int
    allocated_sequences: int
    allocated_bytes: int
    memory_growth_bytes: int
    stopped_by: str  # "budget", "free memory reserve", "out of memory" or "max_sequences"

    def row(self) -> dict:
        """The result as one table row."""
        return asdict(self)


def _used_bytes(device: torch.device) -> int:
    """Memory in use, for the second measurement: the process's RSS on a CPU; on a GPU the bytes PyTorch's allocator
    has handed to this process's tensors (not total − free, which other processes sharing the GPU would move)."""
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    return measure.process_rss()


def kv_capacity(model: str = "smollm2-135m", seq: int = 2048, precision: str | None = None,
                device: str = "auto", budget_bytes: int | None = None, reserve: float = 0.05,
                max_sequences: int = 100_000) -> KVCapacity:
    """How many sequences of `seq` tokens fit in memory next to the weights: formula vs real allocations.

    The formula: budget ÷ `anatomy.kv_cache_bytes(model, 1, seq, precision, cache="static")`. The check: load the
    model on `device`, build one `transformers.StaticCache` of `seq` tokens through a real forward (transformers
    decides its shapes), then allocate more caches of the same shapes (`StaticCache.early_initialization`, zeroed:
    really resident) until the next one would not fit, and count them. Never asks for more than is free.

    Args:
        model: a registry name with weights. seq: tokens per sequence (prompt + generated, >= 1).
        precision: the cache's and weights' precision (fp32 | bf16 | fp16; None: the device's 16-bit float,
            `labkit.precision.native_half`).
        device: "auto" (the GPU when there is one), "cpu", "cuda", "cuda:N".
        budget_bytes: bytes the caches may take. None: the device's free memory (measured before loading) minus
            the weights' bytes (`anatomy.model_memory`) minus `reserve`; required on a CPU, where filling the
            machine's RAM would make it swap.
        reserve: share of the device's total memory left free (activations, the allocator's slack, other work).
        max_sequences: stop after this many caches (a guard for very large devices).
    Returns:
        KVCapacity with both counts, the bytes of one cache by formula and by allocation, and a second measurement
        of the memory the caches took.
    Raises:
        ValueError: seq or budget_bytes < 1, reserve outside [0, 0.5], a precision that is not a float, an unknown
            device (naming the valid ones), or no budget on a CPU — before anything is allocated.
    """
    dev = hardware.resolve_device(device)
    name = canonical(precision or native_half(dev))
    if name not in FLOAT_PRECISIONS:
        raise ValueError(f"a KV cache is stored in {list(FLOAT_PRECISIONS)}, not {name}")
    if seq < 1 or (budget_bytes is not None and budget_bytes < 1) or not 0 <= reserve <= 0.5 or max_sequences < 1:
        raise ValueError(f"need seq >= 1, budget_bytes >= 1, 0 <= reserve <= 0.5 and max_sequences >= 1; got "
                         f"{seq}, {budget_bytes}, {reserve}, {max_sequences}")
    if budget_bytes is None and dev.type != "cuda":
        raise ValueError("on a CPU give budget_bytes (e.g. 256 * 2**20): filling all free RAM would make it swap")
    per_seq = anatomy.kv_cache_bytes(model, 1, seq, name, cache="static")
    weights = int(anatomy.model_memory(model, name).weights_bytes)
    if dev.type == "cuda":
        torch.cuda.empty_cache()  # memory PyTorch holds but no tensor uses is free for the caches too
    free_before = int(models.available_memory(dev))  # free GPU memory, or psutil's available RAM
    total = torch.cuda.mem_get_info(dev)[1] if dev.type == "cuda" else psutil.virtual_memory().total
    reserve_bytes = int(reserve * total)
    device_budget = max(0, free_before - weights - reserve_bytes)
    budget = budget_bytes if budget_bytes is not None else device_budget
    net, _ = models.load_model(model, name, device=dev)
    first = StaticCache(config=net.config, max_cache_len=seq)
    with torch.no_grad():  # one real forward: transformers allocates the cache with the shapes it needs
        net(input_ids=torch.ones(1, 1, dtype=torch.long, device=dev), cache=first, use_cache=True)
    per_seq_real = anatomy.cache_bytes(first)
    heads = [layer.keys.shape[1] for layer in first.layers]
    head_dims = [layer.keys.shape[-1] for layer in first.layers]
    dtype = first.layers[0].keys.dtype
    caches, stopped_by = [first], "max_sequences"
    used_before = _used_bytes(dev) - per_seq_real  # the first cache counts as allocated
    while len(caches) < max_sequences:
        if len(caches) * per_seq_real + per_seq_real > budget:
            stopped_by = "budget"
            break
        if dev.type == "cuda" and torch.cuda.mem_get_info(dev)[0] - per_seq_real < reserve_bytes:
            stopped_by = "free memory reserve"  # the real device says no: other memory than the formula knows
            break
        cache = StaticCache(config=net.config, max_cache_len=seq)
        try:
            cache.early_initialization(1, heads, head_dims, dtype, dev)
        except torch.OutOfMemoryError:
            stopped_by = "out of memory"
            break
        caches.append(cache)
    if len(caches) * per_seq_real > budget:  # the first cache alone did not fit the budget
        caches = []
    measure.sync_device()
    growth = _used_bytes(dev) - used_before
    allocated = len(caches)
    del caches, first, net
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return KVCapacity(model, str(dev), name, seq, weights, free_before, reserve_bytes, budget,
                      "given" if budget_bytes is not None else "free device memory − weights − reserve", per_seq,
                      per_seq_real, budget // per_seq, device_budget // per_seq, allocated, allocated * per_seq_real,
                      growth, stopped_by)
