"""The cost model's terms: a model's shape, an engine's constants and one forward step's time, by cause.

One step (one new token for each of `batch` sequences) costs, per strategy (no overlap between the terms):

    tp        (DeepSpeed-Inference: p GPUs work on every layer)
              weights/p / HBM + batch·2·params/p / FLOP/s + KV reads/p / HBM + 2 all-reduces per layer
              + layers · overhead. int8: DeepSpeed dequantizes every int8 weight into a 16-bit buffer and runs a
              16-bit GEMM on it (csrc/transformer/inference/csrc/pt_binding.cpp, `quantized_gemm`): 1 + 2 + 2
              bytes of HBM traffic per weight, where 16-bit weights cost 2.
    naive-pp  (Accelerate's device map: one GPU busy at a time) weights / HBM + batch·2·params / FLOP/s
              + KV reads / HBM + one activation hop per GPU boundary + the KV cache's round trip (Accelerate's
              io_same_device hook sends every layer's past keys and values to the input's GPU after a step and
              the block hooks send them back before the next: huggingface/accelerate#1394, fixed in 2023)
              + layers · overhead + CPU→GPU copies of offloaded weights. int8 (bitsandbytes' LLM.int8(): per
              layer, quantize the activations, split off outlier columns, int8 GEMM, dequantize): a cost per
              int8 weight GB, fitted (see `calibration`).
    zero      (ZeRO-3 inference: one stream of its own sequences per GPU, each GPU stores 1/p of the weights)
              the whole model read on every GPU + its sequences' matmuls and KV + an all-gather of the other
              (p − 1)/p of the weights every step + the copy of every gathered weight out of the all-gather's
              flat buffer (DeepSpeed 0.7.3, runtime/zero/partition_parameters.py, `AllGatherCoalescedHandle.wait`:
              `torch.cat` of each weight's slices, one more read and write in HBM) + layers · overhead (Hugging
              Face's modeling code: Accelerate's constants). zero-offload: the partitions live in pinned CPU
              memory (the ds-zero script's `pin_memory=True`) and each GPU first copies its own 1/p in over PCIe.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from labkit import anatomy, models, precision
from labkit.models import specs
from labkit.models.specs import GPU

STRATEGY = {"accelerate": "naive-pp", "ds-inference": "tp", "ds-zero": "zero"}
STRATEGIES = ("tp", "naive-pp", "zero", "zero-offload")
PARTS = ("weights (HBM)", "matmuls", "KV cache (HBM)", "overhead", "communication", "int8 (de)quantization",
         "CPU offload")  # fmt: skip
# Modelling assumptions (not published; fixed, not fitted):
HBM_EFFICIENCY = 0.85  # streaming reads reach ~85 % of peak HBM bandwidth
LINK_EFFICIENCY = 0.7  # NCCL collectives' bus bandwidth vs the link's peak
ACTIVATION_BYTES = precision.bytes_per_value("bf16")  # activations and KV stay 16-bit whatever the weights are
DEEPSPEED_INT8_TRAFFIC = 1 + 2 + 2  # bytes per int8 weight: read it, write its 16-bit copy, the GEMM reads the copy
ZERO_GATHER_COPY_TRAFFIC = 2  # bytes per gathered weight byte: torch.cat reads the flat buffer, writes the parameter
# Weights off the GPU: Accelerate keeps them as ordinary (pageable) tensors; the ds-zero script pins them.
HOST_GBPS = specs.HOST_LINK_GBPS["pageable (PCIe 4.0 x16)"]
ZERO_HOST_GBPS = specs.HOST_LINK_GBPS["pinned (PCIe 4.0 x16)"]


@dataclass(frozen=True)
class Shape:
    """What the cost model needs from a model config.

    Attributes:
        name: the model's name in `specs.MODEL_CONFIGS`. params: parameter count (meta-device count).
        layers, hidden, vocab: the config's sizes. kv_bytes_per_token: K and V of every layer for one token of one
        sequence (`anatomy.kv_cache_bytes`, grouped-query aware). bytes_per_param: bytes of one stored weight.
        largest_param: values in the largest single weight, the embedding (vocab × hidden) or an MLP projection
        (intermediate × hidden).
    """

    name: str
    params: int
    layers: int
    hidden: int
    vocab: int
    kv_bytes_per_token: int
    bytes_per_param: float = 2.0
    largest_param: int = 0

    @property
    def weight_bytes(self) -> float:
        """Bytes of all weights: params × bytes_per_param."""
        return self.params * self.bytes_per_param

    @property
    def int8(self) -> bool:
        """Whether the weights are stored in 8 bits."""
        return self.bytes_per_param == 1


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
        ValueError: for an unknown model or precision, naming the choices; for a model with sliding-window layers.
    """
    if model not in specs.MODEL_CONFIGS:
        raise ValueError(f"unknown model {model!r}; choose from {list(specs.MODEL_CONFIGS)}")
    spec = models.resolve(model)
    d = anatomy.dims(spec.config)
    if any(d.windows):  # the model scales one token's KV bytes by the context: only true without windows
        raise ValueError(f"{model!r} has sliding-window layers; the cost model assumes full attention "
                         "(KV bytes linear in tokens)")
    kv = anatomy.kv_cache_bytes(spec.config, batch=1, seq=1, precision=kv_cache)
    largest = max(d.vocab, d.intermediate) * d.hidden
    return Shape(model, spec.params, d.layers, d.hidden, d.vocab, kv, precision.bytes_per_value(weights), largest)


@dataclass(frozen=True)
class Engine:
    """An engine's constants (fitted in `calibration`).

    Attributes:
        name: an engine of `specs.BLOOM_ROWS` (or a planner backend). strategy: one of STRATEGIES.
        flop_efficiency: fraction of peak FLOP/s its matmuls reach. layer_overhead_ms: per layer per step (kernel
        launches, Python, collective latency). workspace: live activation/workspace bytes per (sequence × token ×
        hidden × 2 bytes). int8_ms_per_GB: extra time per GB of int8 weights a step runs through (LLM.int8's
        quantize / outlier / dequantize kernels; 0 where the bytes model covers int8). cache_to_input_gpu:
        naive-pp only: every layer's KV cache goes to the input's GPU after each step and back (Accelerate in
        2022, huggingface/accelerate#1394); False: it stays on its layer's GPU (transformers#23919, 2023).
    """

    name: str
    strategy: str
    flop_efficiency: float
    layer_overhead_ms: float
    workspace: float
    int8_ms_per_GB: float = 0.0
    cache_to_input_gpu: bool = True


def step_ms(engine: Engine, m: Shape, gpu: GPU, gpus: int, batch: int, context: int, new: int = 1,
            offloaded_bytes: float = 0.0) -> dict:  # fmt: skip
    """Time of one forward over `new` tokens per sequence with `context` tokens cached, split by cause.

    Args:
        engine: its constants. m: the model. gpu: one GPU's datasheet. gpus: how many.
        batch: sequences (for zero strategies: one GPU's stream). context: tokens already in the KV cache.
        new: tokens computed per sequence. offloaded_bytes: weights naive PP streams from the CPU every step.
    Returns:
        {cause in PARTS: ms}.
    Raises:
        ValueError: for an unknown strategy (naming the choices).
    """
    s = engine.strategy
    if s not in STRATEGIES:
        raise ValueError(f"unknown strategy {s!r}; choose from {STRATEGIES}")
    tp = gpus if s == "tp" else 1  # how many GPUs share each layer's work
    bw = gpu.hbm_TBps * 1e12 * HBM_EFFICIENCY
    link = gpu.link_GBps * 1e9 * LINK_EFFICIENCY
    weights = m.weight_bytes / tp  # what one GPU reads per step (naive PP: one after another, the whole model)
    kv_cached = batch * context * m.kv_bytes_per_token
    act = batch * new * m.hidden * ACTIVATION_BYTES
    out = dict.fromkeys(PARTS, 0.0)
    out["weights (HBM)"] = weights / bw
    out["matmuls"] = batch * new * 2 * m.params / tp / (gpu.tflops * 1e12 * engine.flop_efficiency)
    out["KV cache (HBM)"] = kv_cached / tp / bw
    out["overhead"] = m.layers * engine.layer_overhead_ms / 1e3
    if m.int8:
        out["int8 (de)quantization"] = (weights * (DEEPSPEED_INT8_TRAFFIC - 1) / bw if s == "tp"
                                        else engine.int8_ms_per_GB * weights / 1e9 / 1e3)  # fmt: skip
    if s == "tp":  # 2 ring all-reduces per layer, each moves 2(p−1)/p of the activations
        out["communication"] = 2 * m.layers * 2 * (tp - 1) / tp * act / link
    elif s == "naive-pp":
        round_trip = 2 * kv_cached if gpus > 1 and engine.cache_to_input_gpu else 0.0
        out["communication"] = ((gpus - 1) * act + round_trip) / link
        out["CPU offload"] = offloaded_bytes / (HOST_GBPS * 1e9)
    else:  # zero: gather the other GPUs' partitions of every layer
        out["communication"] = (gpus - 1) / gpus * m.weight_bytes / link
        out["weights (HBM)"] += ZERO_GATHER_COPY_TRAFFIC * m.weight_bytes / bw
        if s == "zero-offload":
            out["CPU offload"] = m.weight_bytes / gpus / (ZERO_HOST_GBPS * 1e9)
    return {k: v * 1e3 for k, v in out.items()}
