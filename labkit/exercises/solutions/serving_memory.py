"""The serving-memory exercise's answer: weights + KV cache per tensor-parallel GPU against its memory."""

from __future__ import annotations


def fits(params: int, bytes_per_param: float, n_gpus: int, gpu_gb: float, batch: int, seq_len: int, layers: int,
         kv_heads: int, head_dim: int, kv_bytes: float) -> bool:  # fmt: skip
    """Whether weights and KV cache, split evenly over `n_gpus` (tensor parallelism), fit in `gpu_gb` GB each.

    Args:
        params: parameters. bytes_per_param: bytes of one stored weight (2 bf16/fp16, 1 int8). n_gpus: GPUs.
        gpu_gb: memory per GPU in GB (1e9 bytes). batch: sequences. seq_len: tokens per sequence (prompt + new).
        layers, kv_heads, head_dim: decoder layers, key/value heads (fewer than query heads under grouped-query
            attention) and head size. kv_bytes: bytes of one cached value (2 for a bf16 cache).
    Returns:
        True when (weights + KV cache) / n_gpus <= gpu_gb × 1e9 bytes.
    Source: KV cache = 2 × layers × kv_heads × head_dim × bytes × tokens × batch (labkit.anatomy.kv_cache_bytes).
    """
    weights = params * bytes_per_param  # bytes
    kv_cache = 2 * layers * kv_heads * head_dim * kv_bytes * seq_len * batch  # K and V, every layer, every token
    return (weights + kv_cache) / n_gpus <= gpu_gb * 1e9
