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

# BLOOM-176B generation (huggingface/transformers-bloom-inference, bloom-inference-scripts/README.md, 2022-09-13,
# commit 2a1d3d8; the same tables in the HF blog "Incredibly Fast BLOOM Inference with DeepSpeed and Accelerate",
# 2022-09-16). Set-up: A100-80GB node with 512 GB of host memory, greedy, 100 new tokens per sequence, a few prompt
# tokens. ms per token = wall time of 5 timed generate() calls / the new tokens they made (a throughput: batch ×
# new tokens in the denominator). The ds-zero script multiplies those tokens by world_size before dividing
# (bloom-ds-zero-inference.py: `total_new_tokens_generated *= world_size`): each of its 8 GPUs runs its own
# stream of `bs` sequences, so its ms/token is an 8-stream aggregate and one stream's is 8 × that.
BLOOM_SOURCE = ("huggingface/transformers-bloom-inference, bloom-inference-scripts/README.md (A100-80GB, "
                "commit 2a1d3d8, 2022-09-13)")
BLOOM_BENCHMARK_GPUS = 8
BLOOM_BENCHMARK_NEW_TOKENS = 100
BLOOM_BENCHMARK_HOST_GB = 512.0


@dataclass(frozen=True)
class PublishedRow:
    """One row of the published BLOOM-176B table.

    Attributes:
        engine: accelerate (naive pipeline) | ds-inference (tensor parallel, fused kernels) | ds-zero (ZeRO-3,
            one stream per GPU). precision: of the weights. gpus: A100-80GB in the node.
        ms_per_token: batch -> ms per token (None: out of memory; the page leaves larger batches empty).
            ds-zero's batch is per GPU and its ms/token the all-stream aggregate (see above).
        fit: the batches (timed or OOM) the cost model is fitted on; () = the whole row is held out.
    """

    engine: str
    precision: str
    gpus: int
    ms_per_token: dict
    fit: tuple = ()

    @property
    def held_out(self) -> tuple:
        """The batches the cost model never sees while fitting."""
        return tuple(b for b in self.ms_per_token if b not in self.fit)


def _whole(row: dict) -> tuple:
    return tuple(row)


# THE one place where fit and held-out are decided. Fitted: the two 16-bit rows of the tensor-parallel and
# pipeline engines (every cell, OOM included), and the batch-1 cell of Accelerate's int8 row (the one constant of
# LLM.int8's cost, which bytes alone do not give). Every other cell on the page is held out.
_ACC, _DS = {1: 230.38, 8: 31.78, 16: 17.84, 32: 10.89, 64: None}, {1: 44.02, 8: 5.70, 16: 3.01, 32: 1.68, 64: 1.00,
                                                                       128: 0.69, 256: None}  # fmt: skip
BLOOM_ROWS = {
    "accelerate bf16": PublishedRow("accelerate", "bf16", 8, _ACC, _whole(_ACC)),
    "accelerate int8": PublishedRow("accelerate", "int8", 8, {1: 286.56, 8: 40.92, 16: 22.65, 32: 13.27, 64: None},
                                    (1,)),
    "ds-inference fp16": PublishedRow("ds-inference", "fp16", 8, _DS, _whole(_DS)),
    "ds-inference int8": PublishedRow("ds-inference", "int8", 8, {1: 89.09, 8: 11.44, 16: 5.88, 32: 3.09, 64: 1.71,
                                                                  128: 1.02, 256: 0.71, 512: None}),
    "ds-zero bf16": PublishedRow("ds-zero", "bf16", 8, {1: 283.0, 8: 34.88, 16: None}),
    # "Throughput in msecs 4x80GB A100", same page: int8 on half the node.
    "accelerate int8 4×A100": PublishedRow("accelerate", "int8", 4, {1: 284.15, 8: 40.14, 16: 21.97, 32: None}),
    "ds-inference int8 4×A100": PublishedRow("ds-inference", "int8", 4, {1: 156.51, 8: 20.11, 16: 10.38, 32: 5.50,
                                                                         64: 2.96, 128: None}),
}  # fmt: skip
# The 16-bit rows of the two engines the labs compare, by engine (both fitted whole).
PUBLISHED_MS_PER_TOKEN = {"accelerate": BLOOM_ROWS["accelerate bf16"].ms_per_token,
                          "ds-inference": BLOOM_ROWS["ds-inference fp16"].ms_per_token}
# Start-up to ready, seconds, same page ("shard" = a checkpoint pre-sharded for 8-way TP).
STARTUP_S = {"accelerate": 121.0, "ds-inference (pre-sharded)": 60.0, "ds-inference (pre-sharded int8)": 61.0,
             "ds-inference (unsharded)": 662.0, "ds-zero": 462.0}
# The benchmark's Accelerate script (bloom-accelerate-inference.py at 2a1d3d8) on 8×80 GB: a hand-made max_memory
# that keeps GPU 0 free of weights ("works with bs=40") and allows GPUs 1-7 this many GiB of weights. Elsewhere it
# gives every GPU weights/n × 1.10 (its get_max_memory_per_gpu_dict) and fills them in order from GPU 0.
ACCELERATE_BLOOM_8X80_MAX_MEMORY_GIB = {"bf16": 51, "int8": 26}
ACCELERATE_MAX_MEMORY_HEADROOM = 1.10
# "Accelerate on 2×A100 with CPU offload: about 15 s per token" (the seed's source, HF blog 2022-09).
ACCELERATE_2XA100_OFFLOAD_S_PER_TOKEN = 15.0
# Host → GPU links, GB/s, for weights that live off the GPU. PCIe 4.0 x16 carries 16 GT/s × 16 lanes × 128/130 =
# 31.5 GB/s each way (PCI-SIG); copies from pinned host memory reach about 80 % of it, copies from ordinary
# (pageable) memory about half of pinned, staged through a pinned bounce buffer (NVIDIA, "How to Optimize Data
# Transfers in CUDA C/C++", 2012; CUDA bandwidthTest). NVMe: the benchmark node read its checkpoints at "about
# 3GB/s" (the HF blog above), one PCIe 4.0 x4 drive's order of magnitude.
PCIE4_X16_GBPS = 16 * 16 * 128 / 130 / 8
HOST_LINK_GBPS = {"pinned (PCIe 4.0 x16)": 25.0, "pageable (PCIe 4.0 x16)": 12.0, "NVMe": 3.0}
# Ethernet line rates (IEEE 802.3: 1 and 10 Gbit/s) in GB/s per direction, for "a slow link between GPUs".
ETHERNET_GBPS = {"1 GbE": 1 / 8, "10 GbE": 10 / 8}

# The course seed's claim under test (a quoted claim, not a measurement): "a 30B Llama takes about 32 GB".
SEED_LLAMA_30B_GB = 32.0


@dataclass(frozen=True)
class SpeedUp:
    """A published serving throughput ratio: `low`..`high` times `baseline` (low == high for one figure)."""

    system: str
    baseline: str
    low: float
    high: float
    source: str


# Published throughput speed-ups of iteration-level scheduling and paged KV caches.
SERVING_SPEEDUPS = (
    SpeedUp("Orca", "FasterTransformer (same latency)", 36.9, 36.9, "Yu et al., Orca, OSDI'22 (GPT-3 175B)"),
    SpeedUp("vLLM", "FasterTransformer / Orca (same latency)", 2.0, 4.0, "Kwon et al., PagedAttention, SOSP'23"),
    SpeedUp("vLLM", "HF Transformers", 24.0, 24.0, "vLLM launch post, 2023-06-20 (up to)"),
)

# LLM.int8() (Dettmers et al. 2022, arXiv:2208.07339): a hidden dimension is a systematic outlier feature when values
# of magnitude >= 6 (bitsandbytes' default threshold) appear in it in at least 25 % of the layers and at at least 6 %
# of the sequence positions (§4.1); from 6.7 B parameters such features are in every layer (§4.2).
LLM_INT8_MIN_LAYER_SHARE = 0.25
LLM_INT8_MIN_POSITION_SHARE = 0.06
LLM_INT8_EMERGENCE_PARAMS = 6.7e9
