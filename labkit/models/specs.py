"""Every published fact the labs use, once: big-model configurations, GPU datasheets, published benchmark rows.

Nothing here is measured; each table cites where it comes from. Labs, experiments and tests read these names
instead of retyping a number, so a fact has one home and cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass

# Model configurations, written out so that no download is needed (transformers config keys).
# bloom-176b: bigscience/bloom config.json (70 layers, hidden 14336, 112 heads, vocab 250880, ALiBi, tied embeddings).
# llama-30b / llama-2-7b: the LLaMA paper's table 2 (Touvron et al., 2023) and meta-llama/Llama-2-7b-hf config.json.
# llama-3-70b: meta-llama/Meta-Llama-3-70B config.json (80 layers, 64 heads, 8 KV heads: grouped-query attention).
MODEL_CONFIGS = {
    "bloom-176b": {"model_type": "bloom", "n_layer": 70, "hidden_size": 14336, "n_head": 112, "vocab_size": 250880},
    "llama-30b": {"model_type": "llama", "num_hidden_layers": 60, "hidden_size": 6656, "intermediate_size": 17920,
                  "num_attention_heads": 52, "vocab_size": 32000},
    "llama-2-7b": {"model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096, "intermediate_size": 11008,
                   "num_attention_heads": 32, "vocab_size": 32000},
    "llama-3-70b": {"model_type": "llama", "num_hidden_layers": 80, "hidden_size": 8192, "intermediate_size": 28672,
                    "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 128256},
}
# "BLOOM-176B needs 352 GB in bf16" (transformers-bloom-inference README; HF blog, 2022-09): 176e9 params × 2 B.
BLOOM_176B_BF16_GB = 352


@dataclass(frozen=True)
class GPU:
    """A GPU's datasheet numbers: dense fp16/bf16 TFLOP/s, HBM TB/s, memory GB, GPU-to-GPU GB/s per direction."""

    name: str
    tflops: float
    hbm_TBps: float
    memory_GB: float
    link_GBps: float


# NVIDIA datasheets: A100 (2020; NVLink 3 = 600 GB/s total, 300 each way), H100 SXM and H200 SXM (NVLink 4 = 900 GB/s
# total), L4 (no NVLink: PCIe 4.0 x16, ~32 GB/s each way), T4 (65 TFLOP/s fp16 tensor cores, 320 GB/s, PCIe 3.0 x16).
GPUS = {
    "A100-80GB SXM": GPU("A100-80GB SXM", 312.0, 2.0, 80.0, 300.0),
    "A100-40GB SXM": GPU("A100-40GB SXM", 312.0, 1.555, 40.0, 300.0),
    "H100-80GB SXM": GPU("H100-80GB SXM", 989.0, 3.35, 80.0, 450.0),
    "H200-141GB SXM": GPU("H200-141GB SXM", 989.0, 4.8, 141.0, 450.0),
    "L4-24GB PCIe": GPU("L4-24GB PCIe", 121.0, 0.3, 24.0, 32.0),
    "T4-16GB PCIe": GPU("T4-16GB PCIe", 65.0, 0.32, 16.0, 16.0),
}
A100_80GB = GPUS["A100-80GB SXM"]
# Memory budgets the calculators compare against (GB): single cards and the 8×A100 node of the BLOOM benchmark.
GPU_MEMORY_GB = {"T4 16GB": 16, "A100 40GB": 40, "A100/H100 80GB": 80, "H200 141GB": 141, "8×A100 80GB": 640}

# BLOOM-176B generation on 8×A100-80GB (huggingface/transformers-bloom-inference, bloom-inference-scripts/README.md):
# greedy, 100 new tokens, ms per token = wall time / (batch × new tokens), None = out of memory.
BLOOM_SOURCE = "huggingface/transformers-bloom-inference, bloom-inference-scripts/README.md (8×A100-80GB)"
PUBLISHED_MS_PER_TOKEN = {
    "accelerate": {1: 230.38, 8: 31.78, 16: 17.84, 32: 10.89, 64: None},
    "ds-inference": {1: 44.02, 8: 5.70, 16: 3.01, 32: 1.68, 64: 1.00, 128: 0.69, 256: None},
}
# The same page's rows that no labkit model is fitted on (held out): 8-bit weights and ZeRO-Inference. ds-zero's
# script multiplies the generated tokens by world_size before dividing: its ms/token is an 8-stream aggregate.
PUBLISHED_HELD_OUT_MS_PER_TOKEN = {
    "accelerate-int8": {1: 286.56, 8: 40.92, 16: 22.65, 32: 13.27, 64: None},
    "ds-inference-int8": {1: 89.09, 8: 11.44, 16: 5.88, 32: 3.09, 64: 1.71, 128: 1.02, 256: 0.71, 512: None},
    "ds-zero": {1: 283.0, 8: 34.88, 16: None},
}
# The benchmark's set-up, same page: 8×A100-80GB with 512 GB of host memory, greedy, 100 new tokens per sequence.
BLOOM_BENCHMARK_GPUS = 8
BLOOM_BENCHMARK_NEW_TOKENS = 100
BLOOM_BENCHMARK_HOST_GB = 512.0
# Start-up to ready, seconds, same page.
STARTUP_S = {"accelerate": 121.0, "ds-inference (pre-sharded)": 60.0, "ds-inference (unsharded)": 662.0,
             "ds-zero": 462.0}
# "Accelerate on 2×A100 with CPU offload: about 15 s per token" (the seed's source, HF blog 2022-09).
ACCELERATE_2XA100_OFFLOAD_S_PER_TOKEN = 15.0
# Ethernet line rates (IEEE 802.3: 1 and 10 Gbit/s) in GB/s per direction, for "a slow link between GPUs".
ETHERNET_GBPS = {"1 GbE": 1 / 8, "10 GbE": 10 / 8}
