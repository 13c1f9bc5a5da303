"""Implementation exercise: does a model fit its GPUs for serving? Graded against labkit's own memory accounting.

A learner writes `fits(params, bytes_per_param, n_gpus, gpu_gb, batch, seq_len, layers, kv_heads, head_dim,
kv_bytes)`, the first check of a serving plan (`llm_anatomy.memory_calculator`) for a tensor-parallel deployment,
which splits the weights and the KV cache evenly over the GPUs:

    weights  = params × bytes_per_param
    KV cache = 2 (K and V) × layers × kv_heads × head_dim × kv_bytes × seq_len × batch
    fits    ⇔ (weights + KV cache) / n_gpus <= gpu_gb × 1e9

(the KV cache is `labkit.anatomy.kv_cache_bytes`, labkit's one KV formula, for full-attention layers; kv_heads <
heads is grouped-query attention, Ainslie et al. 2023, "GQA: Training Generalized Multi-Query Transformer Models
from Multi-Head Checkpoints"). The
reference evaluates the KV cache with `anatomy.kv_cache_bytes` on a config built from the arguments, and the cases
are published architectures and GPUs read from `labkit.models.specs` (BLOOM-176B on the benchmark's 8 × A100-80GB,
Llama-3-70B's grouped-query attention, Llama-2-7B), their parameter counts from labkit's meta-device count.
The capstone's planner (`serving_plan.plan`) adds what this check leaves out (a second KV copy alive during a step,
a workspace, 2 GB reserved, binary GB); the cases stay clear of those margins. `grade(fits)` says which case failed,
with the reference's weights and KV cache per GPU.
"""

from __future__ import annotations

from labkit import anatomy
from labkit.exercises import Case, Grade, grade_cases

JUDGE = "labkit's memory accounting (anatomy.kv_cache_bytes, specs)"
KV_PRECISION = {4: "fp32", 2: "bf16", 1: "int8"}  # bytes per cached value -> the precision kv_cache_bytes takes


def per_gpu_gb(params: int, bytes_per_param: float, n_gpus: int, batch: int, seq_len: int, layers: int,
               kv_heads: int, head_dim: int, kv_bytes: int) -> tuple[float, float]:  # fmt: skip
    """(weights, KV cache) on each of `n_gpus` tensor-parallel GPUs, in GB (1e9 bytes).

    The KV cache comes from `anatomy.kv_cache_bytes` on a decoder config with these layers, KV heads and head_dim
    (every layer full attention); the weights are params × bytes_per_param (`costmodel.Shape.weight_bytes`).

    Raises:
        KeyError: kv_bytes other than 4, 2 or 1.
    """
    config = {"model_type": "llama", "num_hidden_layers": layers, "num_attention_heads": kv_heads,
              "num_key_value_heads": kv_heads, "head_dim": head_dim, "hidden_size": kv_heads * head_dim,
              "intermediate_size": 4 * kv_heads * head_dim, "vocab_size": 32000}  # fmt: skip
    kv = anatomy.kv_cache_bytes(config, batch=batch, seq=seq_len, precision=KV_PRECISION[kv_bytes])
    return params * bytes_per_param / n_gpus / 1e9, kv / n_gpus / 1e9


def reference(params: int, bytes_per_param: float, n_gpus: int, gpu_gb: float, batch: int, seq_len: int,
              layers: int, kv_heads: int, head_dim: int, kv_bytes: int) -> bool:  # fmt: skip
    """Whether weights + KV cache, split evenly over `n_gpus`, fit in `gpu_gb` GB (1e9 bytes) per GPU.

    Args:
        params: parameters. bytes_per_param: bytes of one stored weight (2 for bf16, 1 for int8). n_gpus: GPUs.
        gpu_gb: memory per GPU, GB. batch: sequences. seq_len: tokens per sequence (prompt + generated).
        layers, kv_heads, head_dim: the decoder's layers, key/value heads and head size. kv_bytes: bytes per cached
        value (2 for a bf16 cache).
    Returns:
        True when (weights + KV cache) / n_gpus <= gpu_gb × 1e9 bytes.
    """
    weights, kv = per_gpu_gb(params, bytes_per_param, n_gpus, batch, seq_len, layers, kv_heads, head_dim, kv_bytes)
    return weights + kv <= gpu_gb


def _args(model: str, bytes_per_param: float, gpu: str, n_gpus: int, batch: int, seq_len: int,
          kv_bytes: int = 2) -> tuple:  # fmt: skip
    """A case's arguments for a published architecture (`specs.MODEL_CONFIGS`) on a GPU of `specs.GPUS`."""
    from labkit import models
    from labkit.models import specs

    d = anatomy.dims(model)
    return (models.resolve(model).params, bytes_per_param, n_gpus, specs.GPUS[gpu].memory_GB, batch, seq_len,
            d.layers, d.kv_heads, d.head_dim, kv_bytes)  # fmt: skip


def cases() -> list[Case]:
    """The grader's inputs: `fits`'s arguments, each with what it tests."""
    from labkit.models import specs

    a100, tokens = specs.A100_80GB.name, 10 + specs.BLOOM_BENCHMARK_NEW_TOKENS  # the lab's short prompts
    return [
        Case("BLOOM-176B in bf16 on the benchmark's 8 × A100-80GB, batch 16 × 110 tokens (the lab's plan)",
             _args("bloom-176b", 2, a100, 8, 16, tokens)),
        Case("the same on 4 × A100-80GB: 352 GB of weights over 4 GPUs", _args("bloom-176b", 2, a100, 4, 16, tokens)),
        Case("int8 weights (1 byte each, the KV cache still bf16) on 4 × A100-80GB",
             _args("bloom-176b", 1, a100, 4, 16, tokens)),
        Case("a batch that overflows: 128 × 2048 tokens on 8 × A100-80GB (the KV cache outgrows what the weights "
             "leave)", _args("bloom-176b", 2, a100, 8, 128, 2048)),
        Case("keys and values both: batch 44 × 2048 tokens on 8 × A100-80GB fits only if one of them is forgotten",
             _args("bloom-176b", 2, a100, 8, 44, 2048)),
        Case("the KV cache is split over the GPUs too: batch 8 × 2048 tokens on 8 × A100-80GB",
             _args("bloom-176b", 2, a100, 8, 8, 2048)),
        Case("grouped-query attention: Llama-3-70B (8 KV heads for 64 query heads) in bf16 on 2 × H100-80GB, batch "
             "16 × 2048 tokens", _args("llama-3-70b", 2, "H100-80GB SXM", 2, 16, 2048)),
        Case("an fp32 KV cache (4 bytes per value): Llama-2-7B with fp16 weights on one L4-24GB, batch 4 × 4096",
             _args("llama-2-7b", 2, "L4-24GB PCIe", 1, 4, 4096, kv_bytes=4)),
    ]  # fmt: skip


def _compare(got, want: bool, case: Case) -> str | None:
    if type(got).__name__ not in ("bool", "bool_"):  # a Python or numpy bool
        return f"returned {type(got).__name__} {got!r}, expected True or False"
    if bool(got) == want:
        return None
    params, bpp, n_gpus, gpu_gb, batch, seq_len, layers, kv_heads, head_dim, kv_bytes = case.args
    weights, kv = per_gpu_gb(params, bpp, n_gpus, batch, seq_len, layers, kv_heads, head_dim, kv_bytes)
    return (f"returned {bool(got)}: per GPU, weights {weights:.1f} GB + KV cache {kv:.1f} GB = {weights + kv:.1f} GB "
            f"{'<=' if want else '>'} {gpu_gb:g} GB, so it {'fits' if want else 'does not fit'}")


def grade(fits) -> Grade:
    """Run a learner's memory check on `cases()` and compare each verdict with `reference`.

    Args:
        fits: (params, bytes_per_param, n_gpus, gpu_gb, batch, seq_len, layers, kv_heads, head_dim, kv_bytes) ->
            bool, whether weights + KV cache split over n_gpus fit in gpu_gb GB (1e9 bytes) each.
    Returns:
        Grade: ok only if every verdict agrees; otherwise the first failing case with the reference's weights and
        KV cache per GPU. An exception inside the learner's code is reported, not raised.
    """
    return grade_cases(fits, cases(), reference, _compare, JUDGE)
