"""The cost model's terms: a model's shape, an engine's constants, one step's time and the fullest GPU's memory.

One decode step (one new token for each of `batch` sequences) costs, per strategy:

    TP (p GPUs, all busy):  weights/p / HBM  +  batch · 2·params/p / FLOP/s  +  KV reads/p / HBM
                            + 2 all-reduces per layer over the link  +  layers · per-layer overhead
    naive PP (one busy):    weights / HBM  +  batch · 2·params / FLOP/s  +  KV reads / HBM
                            + activation hops between GPUs  +  layers · overhead  (+ CPU→GPU streaming
                            of whatever does not fit in GPU memory: Accelerate's offload)

No overlap is assumed between the terms. ms/token follows the published benchmark's definition: generation wall
time / (batch × new tokens), prefill included. The engines' free constants are fitted in `calibration`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from labkit import anatomy, models, precision
from labkit.models import specs
from labkit.models.specs import GPU

STRATEGY = {"accelerate": "naive-pp", "ds-inference": "tp"}
# Modelling assumptions (not published; fixed, not fitted):
HBM_EFFICIENCY = 0.85  # streaming reads reach ~85 % of peak HBM bandwidth
LINK_EFFICIENCY = 0.7  # NCCL ring all-reduce bus bandwidth vs the link's peak
RESERVED_GB = 2.0  # CUDA context, allocator slack: memory a GPU never gives to the model
ACCELERATE_BALANCE = 1.10  # the fullest GPU of Accelerate's balanced device map holds weights/n × 1.10
OFFLOAD_ABOVE = 0.9  # Accelerate fills GPUs to ~90 % with weights before it offloads the rest to the CPU
HOST_GBPS = 12.0  # CPU→GPU copies of offloaded weights (pageable PCIe 4.0 x16, well below its peak)


@dataclass(frozen=True)
class Shape:
    """What the cost model needs from a model config.

    Attributes:
        name: the model's name in `specs.MODEL_CONFIGS`. params: parameter count (meta-device count).
        layers, hidden, vocab: the config's sizes. kv_bytes_per_token: K and V of every layer for one token of one
        sequence (`anatomy.kv_cache_bytes`, grouped-query aware). bytes_per_param: bytes of one stored weight.
    """

    name: str
    params: int
    layers: int
    hidden: int
    vocab: int
    kv_bytes_per_token: int
    bytes_per_param: float = 2.0

    @property
    def weight_bytes(self) -> float:
        """Bytes of all weights: params × bytes_per_param."""
        return self.params * self.bytes_per_param


@functools.lru_cache(maxsize=16)
def shape(model: str = "bloom-176b", weights: str = "bf16", kv_cache: str = "bf16") -> Shape:
    """A published architecture's shape, built from its config on the meta device (nothing is allocated).

    Args:
        model: a name in `labkit.models.specs.MODEL_CONFIGS`.
        weights: the weights' precision (bf16 | fp16 | int8 ..., aliases such as "bfloat16" accepted).
        kv_cache: the KV cache's precision.
    Returns:
        Shape; its KV bytes come from `anatomy.kv_cache_bytes`, the one KV formula.
    Raises:
        ValueError: for an unknown model or precision, naming the choices.
    """
    if model not in specs.MODEL_CONFIGS:
        raise ValueError(f"unknown model {model!r}; choose from {list(specs.MODEL_CONFIGS)}")
    spec = models.resolve(model)
    d = anatomy.dims(spec.config)
    kv = anatomy.kv_cache_bytes(spec.config, batch=1, seq=1, precision=kv_cache)
    return Shape(model, spec.params, d.layers, d.hidden, d.vocab, kv, precision.bytes_per_value(weights))


@dataclass(frozen=True)
class Engine:
    """An engine's fitted constants.

    Attributes:
        name: a key of `specs.PUBLISHED_MS_PER_TOKEN`. strategy: "tp" or "naive-pp".
        flop_efficiency: fraction of peak FLOP/s its matmuls reach. layer_overhead_ms: per layer per step (kernel
        launches, Python, all-reduce latency). workspace: live activation/workspace bytes per
        (sequence × token × hidden × bytes).
    """

    name: str
    strategy: str
    flop_efficiency: float
    layer_overhead_ms: float
    workspace: float


def step_ms(engine: Engine, m: Shape, gpu: GPU, gpus: int, batch: int, context: int, new: int = 1) -> dict:
    """Time of one forward over `new` tokens per sequence with `context` tokens cached, split by cause.

    Args:
        engine: fitted constants. m: the model. gpu: one GPU's datasheet. gpus: how many.
        batch: sequences. context: tokens already in the KV cache. new: tokens computed per sequence.
    Returns:
        {"weights (HBM)", "matmuls", "KV cache (HBM)", "overhead", "communication", "CPU offload"} in ms.
    """
    tp = gpus if engine.strategy == "tp" else 1  # how many GPUs share each layer's work
    bw = gpu.hbm_TBps * 1e12 * HBM_EFFICIENCY
    tokens = batch * new
    out = {
        "weights (HBM)": m.weight_bytes / tp / bw,
        "matmuls": tokens * 2 * m.params / tp / (gpu.tflops * 1e12 * engine.flop_efficiency),
        "KV cache (HBM)": batch * context * m.kv_bytes_per_token / tp / bw,
        "overhead": m.layers * engine.layer_overhead_ms / 1e3,
    }
    act = tokens * m.hidden * m.bytes_per_param
    link = gpu.link_GBps * 1e9 * LINK_EFFICIENCY
    if engine.strategy == "tp":  # 2 ring all-reduces per layer, each moves 2(p−1)/p of the activations
        out["communication"] = 2 * m.layers * 2 * (tp - 1) / tp * act / link if tp > 1 else 0.0
        out["CPU offload"] = 0.0  # DeepSpeed-Inference keeps every weight on the GPUs
    else:  # one activation hop per GPU boundary, plus streaming whatever weights live on the CPU
        out["communication"] = (gpus - 1) * act / link
        out["CPU offload"] = offloaded_bytes(engine, m, gpu, gpus) / (HOST_GBPS * 1e9)
    return {k: v * 1e3 for k, v in out.items()}


def memory_gb(engine: Engine, m: Shape, gpu: GPU, gpus: int, batch: int, tokens: int) -> dict:
    """Memory on the fullest GPU: weights + KV cache for `tokens` + workspace + reserve.

    TP splits everything p ways. Naive PP's most loaded GPU holds weights/n × 1.10 (a balanced device
    map) and its layers' KV cache, but full-width activations; weights beyond 90 % of a GPU stay on
    the CPU (Accelerate's offload), decided at load time, before any batch is known.

    Args:
        engine, m, gpu, gpus: as for `step_ms`. batch: sequences. tokens: prompt + generated tokens per sequence.
    Returns:
        {"weights", "KV cache", "workspace", "reserved"} in GB (1e9 bytes).
    """
    tp = engine.strategy == "tp"
    share = 1 / gpus if tp else ACCELERATE_BALANCE / gpus
    weights = m.weight_bytes * share
    if not tp:
        weights = min(weights, OFFLOAD_ABOVE * gpu.memory_GB * 1e9 - RESERVED_GB * 1e9)
    parts = {
        "weights": weights,
        "KV cache": batch * tokens * m.kv_bytes_per_token * share,
        "workspace": engine.workspace * batch * tokens * m.hidden * m.bytes_per_param / (gpus if tp else 1),
        "reserved": RESERVED_GB * 1e9,
    }
    return {k: v / 1e9 for k, v in parts.items()}


def offloaded_bytes(engine: Engine, m: Shape, gpu: GPU, gpus: int) -> float:
    """Weights (bytes) that naive PP keeps in CPU memory and copies to the GPUs at every step (0 for TP)."""
    if engine.strategy == "tp":
        return 0.0
    on_gpus = memory_gb(engine, m, gpu, gpus, 1, 1)["weights"] * 1e9 * gpus / ACCELERATE_BALANCE
    return max(0.0, m.weight_bytes - on_gpus)


def fits(engine: Engine, m: Shape, gpu: GPU, gpus: int, batch: int, tokens: int) -> bool:
    """Whether `memory_gb` on the fullest GPU stays within its memory."""
    return sum(memory_gb(engine, m, gpu, gpus, batch, tokens).values()) <= gpu.memory_GB


def ms_per_token(engine: Engine, m: Shape, gpu: GPU, gpus: int, batch: int, prompt: int = 10,
                 new_tokens: int = specs.BLOOM_BENCHMARK_NEW_TOKENS) -> dict:
    """The benchmark's ms/token (generation wall time / (batch × new tokens)) and its breakdown.

    Args:
        engine, m, gpu, gpus: as for `step_ms`. batch: sequences. prompt: prompt tokens (the prefill).
        new_tokens: generated tokens per sequence (the first comes from the prefill).
    Returns:
        {"ms_per_token": ms, plus each cause of `step_ms` in ms per token}; {"ms_per_token": NaN} when the
        batch does not fit (`fits`).
    """
    if not fits(engine, m, gpu, gpus, batch, prompt + new_tokens):
        return {"ms_per_token": math.nan}
    parts = step_ms(engine, m, gpu, gpus, batch, 0, new=prompt)  # prefill gives the first token
    for t in range(1, new_tokens):
        for k, v in step_ms(engine, m, gpu, gpus, batch, prompt + t).items():
            parts[k] += v
    scale = 1 / (batch * new_tokens)
    return {"ms_per_token": sum(parts.values()) * scale, **{k: v * scale for k, v in parts.items()}}
