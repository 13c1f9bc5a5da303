# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lab 11 — DeepSpeed-Inference and ZeRO-Inference
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/inference-lab/inference-lab/blob/main/labs/11_deepspeed_inference_and_zero_inference.ipynb)
# [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/inference-lab/inference-lab/main?urlpath=lab/tree/labs/11_deepspeed_inference_and_zero_inference.ipynb)
#
# DeepSpeed serves large models two ways:
#
# * **DeepSpeed-Inference** = tensor parallelism + fused kernels. `deepspeed.init_inference` splits every
#   attention and MLP block across the ranks (AutoTP: Megatron-style, no model-specific code) and, on GPUs,
#   can swap whole transformer blocks for DeepSpeed's own fused CUDA kernels (`replace_with_kernel_inject=True`):
#   the "Deep-Fusion" kernels and custom GeMMs of Aminabadi et al., *DeepSpeed-Inference: Enabling Efficient
#   Inference of Transformer Models at Unprecedented Scale* (SC'22, §III). NVIDIA's FasterTransformer is a
#   separate library, whose development moved to TensorRT-LLM (the
#   [FasterTransformer README](https://github.com/NVIDIA/FasterTransformer) says so). All ranks work on *one*
#   request.
# * **ZeRO-Inference** = ZeRO stage 3 for a forward pass: each rank stores `1/N` of the weights (optionally in
#   CPU memory, `offload_param`), gathers each layer just before it runs, and serves *its own* requests. N
#   ranks = N independent streams, so throughput can scale with N while latency does not improve.
#
# Below, both run for real on two ranks (gloo on this CPU), next to labkit's own tensor parallelism and
# PyTorch's DTensor.
#
# **By the end you can**
# - shard a model with DeepSpeed AutoTP and check it against a from-scratch TP and DTensor;
# - find and fix the ALiBi bug in BLOOM's AutoTP;
# - serve a different prompt on each rank with ZeRO-Inference and CPU offload.
#
# **Before this lab:** lab 09 and lab 10.
# **Time:** the setup cell below prints how long this lab took when it was last run, with smoke and full parameters.

# %%
# Setup. Locally `make lab` installed everything; on Colab this cell installs the lab first (on a GPU
# runtime too: Runtime → Change runtime type → T4 GPU; DEVICE="auto" then measures that GPU).
import sys

if "google.colab" in sys.modules:  # pragma: no cover - only on Colab
    # !git clone -q --depth 1 https://github.com/inference-lab/inference-lab /content/inference-lab
    # %pip install -q -c /content/inference-lab/requirements/constraints.txt -e "/content/inference-lab[parallel]"
    # !labkit prepare
    sys.path.insert(0, "/content/inference-lab")
    from labkit.colab import setup_colab  # widgets on Colab; on a GPU runtime, the CUDA builds

    print("\n".join(setup_colab()))
assert sys.version_info >= (3, 11), f"Inference Lab needs Python 3.11+, this is {sys.version}"

import labkit
from labkit.notebook import durations

print(durations.describe("11"))  # measured: the last recorded smoke and full runs
labkit.setup()

# %% tags=["parameters"]
SMOKE = False  # True: small sizes for a quick headless run
TP_MODEL = "smollm2-135m"  # a Llama-architecture model for AutoTP vs labkit TP vs DTensor
ZI_MODEL = "tiny-bloom-shakespeare"  # ZeRO-Inference: the BLOOM-architecture model trained in lab 01
NEW_TOKENS = 24
REPEAT = 10  # timed forwards per method
ZI_REPEAT = 3  # timed generations per ZeRO-Inference setup (median)
WORLD_SIZE = 2
DEVICE = "auto"  # "auto": the GPU when there is one, else the CPU; or "cpu", "cuda", "cuda:N"
SOLUTIONS = False  # True: the reference answers replace your code in the exercises (the tests prove each check can pass)

# %%
if SMOKE:
    TP_MODEL, NEW_TOKENS, REPEAT = "tiny-llama", 8, 3

# %%
from labkit import devices
from labkit.parallel.launch import place_ranks

dev = devices.choose(DEVICE)  # a bad DEVICE fails here, naming the valid choices
print(dev.summary())
placement = place_ranks(dev.device, WORLD_SIZE, nccl_ok=False,
                        cpu_reason="sections 1-3 show what DeepSpeed does on gloo ranks with its CPU accelerator; "
                                   "section 4, kernel injection, is the one that runs on the GPU")  # fmt: skip
print(placement.sentence())

# %% [markdown]
# ## 0. DeepSpeed and its compiled ops
#
# DeepSpeed compiles C++/CUDA ops the first time they are used (`ninja`, into `TORCH_EXTENSIONS_DIR`);
# labkit points that folder into its cache so the compile happens once per machine. On CPU the op used by
# inference is the shared-memory all-reduce. (Production training would also compile `DeepSpeedCPUAdam`.)

# %%
from labkit.parallel import deepspeed_env
from labkit.parallel import deepspeed_inference as dsi

ops = deepspeed_env.op_compile_time(compile_if_missing=not SMOKE, load=not SMOKE)
print("DeepSpeed", ops.deepspeed, "| op", ops.op, "| cache", ops.extensions_dir)
if ops.seconds is None:
    print(f"op build/load skipped in smoke mode (cached build: {ops.was_cached}; a full run times the first build)")
else:
    print(f"{'loaded from cache' if ops.was_cached else 'compiled'} in {ops.seconds:.2f} s")

# %% [markdown]
# On these CPUs that shared-memory all-reduce crashes the process during `init_inference`, so every rank
# function here calls `disable_shm_allreduce()` first: DeepSpeed then all-reduces through the process group
# (gloo) — slower, but correct.
#
# ## 1. AutoTP vs labkit's own tensor parallelism vs DTensor
#
# The same batch through four paths on each rank; the latency is the slowest rank's median, the difference
# is the largest logit difference to the single-process model. Every rank gets an equal share of this
# machine's cores (`run_distributed`'s default: cores ÷ ranks threads each), and the "single process" row is
# the whole, unsplit model run on every rank at the same time with that same share. So the comparison isolates
# what tensor parallelism changes: half the weights per rank, plus two all-reduces per layer.

# %% [markdown]
# **Predict.** How many times the single-process latency does DeepSpeed AutoTP take on `WORLD_SIZE` ranks (×; below
# one: tensor parallelism is faster)? Reason from half the weights per rank against two all-reduces per layer through
# gloo, each costing about as much as a small layer's compute.

# %%
prediction_autotp_vs_single = None  # your guess (×), e.g. 0.7

# %%
from labkit.notebook import predict
from labkit.parallel.launch import run_distributed

tp_ranks = run_distributed(dsi.compare_tp_ranks, TP_MODEL, batch=2, seq=16, repeat=REPEAT, world_size=WORLD_SIZE,
                           backend=placement.backend)
tp_result = dsi.tp_table(tp_ranks)
predict.compare("DeepSpeed AutoTP latency ÷ single process", prediction_autotp_vs_single,
                measured=float(tp_result.table.set_index("method").vs_single["DeepSpeed AutoTP"]), unit="×")
tp_result.figure

# %%
tp_result.table

# %% [markdown]
# ## 2. BLOOM under AutoTP: the ALiBi bug, found and fixed
#
# BLOOM has no position embeddings; it adds a per-head linear bias (ALiBi) to the attention scores. Under
# tensor parallelism each rank holds half the heads, so it needs half the biases. DeepSpeed knows: in
# `deepspeed/inference/engine.py` (`build_alibi_tensor`) it replaces `transformer.build_alibi_tensor` with
# `module_inject/auto_tp_model_utils.py:build_bloom_alibi_tensor`, which slices the heads per rank. But
# transformers' `BloomModel.forward` (version 5) calls that method only when it receives an `attention_mask`;
# without one — and `generate()` drops an all-ones mask — it builds the bias for *all* heads inline
# (`_get_alibi_slopes(self.num_heads)`, where `num_heads` is still the full count). The fix in labkit
# (`fix_bloom_alibi`) is a forward pre-hook that passes an all-ones mask whenever there is none.

# %%
bloom = run_distributed(dsi.bloom_alibi_demo, "tiny-bloom", world_size=WORLD_SIZE, backend=placement.backend)
print("without the fix:", bloom[0].error_without_fix)
print("with the fix:   same tokens as one process:", all(r.same_tokens for r in bloom),
      f"| max logit difference {max(r.max_abs_diff for r in bloom):.1e}")

# %% [markdown]
# ## 3. ZeRO-Inference: a different prompt on every rank
#
# Configuration as in the BLOOM ds-zero script: stage 3, `offload_param` to CPU, `reduce_bucket_size = h²`,
# `stage3_prefetch_bucket_size = 0.9 h²`, `stage3_param_persistence_threshold = 0`. Each rank generates for
# its own prompt; `generate(synced_gpus=True)` keeps the ranks stepping together, because every forward
# needs every rank's shard of each layer. For the baseline, rank 0 first generates alone with the whole
# model and both cores while the other rank waits.

# %% [markdown]
# **Predict.** How many times one process's tokens/s do the `WORLD_SIZE` ZeRO-Inference streams generate together
# (×)? Reason from the throughput arithmetic: N streams at s_N tokens/s each against one at s_1, and what s_N
# becomes when the ranks share this machine's cores and gather each layer before using it.

# %%
prediction_zi_speedup = None  # your guess (×), e.g. 1.5

# %%
from labkit import models
from labkit.parallel import zero_inference

models.load_model(ZI_MODEL, device="cpu")  # trains and caches it first if lab 01 has not (once, < 1 min)
zi_ranks = run_distributed(zero_inference.generate_ranks, ZI_MODEL, new_tokens=NEW_TOKENS, repeat=ZI_REPEAT,
                          world_size=WORLD_SIZE, backend=placement.backend)
zero_inference.outputs_table(zi_ranks)

# %%
zi = zero_inference.throughput(zi_ranks)
predict.compare(f"ZeRO-Inference aggregate tokens/s, {WORLD_SIZE} streams ÷ one process", prediction_zi_speedup,
                measured=float(zi.table.speedup.iloc[1]), theory=float(WORLD_SIZE), unit="×")
zi.figure

# %%
zi.table.round(2)

# %% [markdown]
# **The throughput arithmetic.** With N ranks each producing its own stream at s_N tokens/s, the aggregate is
# N·s_N. On N GPUs s_N ≈ s_1 as long as gathering the shards (NVLink/PCIe) keeps up, so throughput grows ~N×
# — while each user's latency stays what one GPU gives (or worse, with offloading). Here the ranks share this
# machine's cores: the one-process baseline runs with every rank's threads together, each ZeRO rank with its
# own share, so per-stream speed falls and the aggregate gain is smaller than N — measure, don't assume. (And
# offloading to CPU costs nothing here, where "GPU" memory *is* CPU memory.)
#
# ## 4. Kernel injection: fewer kernels per token (GPU)
#
# `replace_with_kernel_inject=True` replaces each BLOOM block with DeepSpeed's own fused CUDA kernels (fused
# QKV + bias + softmax, fewer launches and copies, pre-allocated KV cache; Aminabadi et al., SC'22, §III). Fusion
# shows in how much work the device is handed per generated token: `torch.profiler` counts it, over a greedy
# generation of two tokens and of several (the difference, per extra token, is one decode step). On a GPU it counts
# kernel launches; on the CPU, the aten operators eager PyTorch dispatches, each a call through PyTorch's dispatcher.
# First, HF eager on this lab's device:

# %%
from labkit.parallel import kernel_inject

eager_model, _ = models.load_model("tiny-bloom", device=dev.device)
eager_launches = kernel_inject.launches_per_token(eager_model, dsi.example_ids("tiny-bloom", seq=16).to(dev.device))
print(f"HF eager tiny-bloom on {eager_launches.device}: {eager_launches.per_token:.0f} {eager_launches.unit} per decode "
      "token")

# %% [markdown]
# On the GPU, one rank (NCCL) times HF eager fp16 and kernel injection fp16 of the same model on the same GPU
# (`decoding.timing`: the GPU is synchronised before every clock read), counts each one's kernel launches per
# token, and reports the first build of DeepSpeed's inference kernels (compiled once into `TORCH_EXTENSIONS_DIR`,
# labkit's cache; later runs load the cached build).

# %%
from IPython.display import display

injection, injection_skipped = None, dsi.injection_unsupported()
if dev.gpu_section("kernel injection vs HF eager") and injection_skipped:
    print(f"Kernel injection skipped on {dev.label}: {injection_skipped}.")
elif dev.is_cuda:
    injection = run_distributed(kernel_inject.injection_rank, "tiny-bloom", new_tokens=NEW_TOKENS, repeat=REPEAT,
                                device=str(dev.device), world_size=1, backend="nccl", timeout=1200)[0]
    b = injection.build
    print(f"DeepSpeed's inference kernels: {'loaded from the cache' if b.was_cached else 'first build'} in "
          f"{b.seconds:.1f} s ({b.build_dir}); init_inference {injection.init_s:.1f} s; max |logits − eager| "
          f"{injection.max_abs_diff:.1e}, same greedy tokens: {injection.same_tokens}")
    display(injection.table().round(3))

# %% [markdown]
# What DeepSpeed-Inference achieved at scale — published, not measured here (BLOOM-176B on an 8×A100-80GB
# node, ms per generated token, empty = out of memory). The two rows differ in more than kernels: Accelerate
# bf16 is a naive pipeline (one GPU busy at a time), ds-inference fp16 is tensor parallelism *and* injected
# kernels, so the ratio below is the two together. The rows live in `labkit.models.specs`, with their source:

# %%
import pandas as pd

from labkit import precision
from labkit.models import specs

published = specs.PUBLISHED_MS_PER_TOKEN
print(specs.BLOOM_SOURCE)
pd.DataFrame(published).T.rename_axis(index="ms per token", columns="batch")

# %%
speedup_published = {b: ms / published["ds-inference"][b] for b, ms in published["accelerate"].items() if ms is not None}
print("ds-inference speed-up over accelerate (published):", {b: round(v, 1) for b, v in speedup_published.items()})

# %% [markdown]
# ## What theory predicts vs what you measured

# %%
import os

tpt = tp_result.table.set_index("method")
print(f"* Theory: tensor parallelism is exact. Measured max logit difference: AutoTP "
      f"{tpt.loc['DeepSpeed AutoTP', 'max_abs_diff']:.1e}"
      f", labkit TP {tpt.loc['labkit TP (from scratch)', 'max_abs_diff']:.1e}")
print(f"* Theory: TP divides the weights per rank by N but adds 2 all-reduces per layer. Measured with {WORLD_SIZE} "
      f"ranks sharing {os.cpu_count()} logical cores: AutoTP {tpt.loc['DeepSpeed AutoTP', 'vs_single']:.2f}× the "
      "single-process latency.")
zt = zi.table
print(f"* Theory: ZeRO-Inference throughput ≈ N × one stream's. Measured: {zt.aggregate_tok_s.iloc[1]:.1f} tok/s with "
      f"{WORLD_SIZE} streams on {WORLD_SIZE} ranks vs {zt.aggregate_tok_s.iloc[0]:.1f} for one process "
      f"({zt.speedup.iloc[1]:.2f}×, ideal {WORLD_SIZE}× on {WORLD_SIZE} GPUs); each rank holds "
      f"{zt.weights_held_per_rank_MB.iloc[1]:.1f} MB of {zt.weights_held_per_rank_MB.iloc[0]:.1f} MB weights as its shard "
      f"(in CPU memory: offload), and gathers up to {zt.gathered_peak_per_rank_MB.iloc[1]:.1f} MB of whole weights "
      "while it runs a layer (that layer plus the prefetch bucket): the term a per-device budget must add.")
print(f"* Theory: ZeRO-3 computes exactly what one process computes. Same tokens on every rank: "
      f"{all(r.same_as_single_process for r in zi_ranks)}")

# %% [markdown]
# ## Exercises
#
# 1. Rerun section 1 with `batch=16`. Does AutoTP's latency ratio to one process go up or down, and why
#    (compute per all-reduce grows with the batch)?
# 2. In section 3, call `generate_ranks(..., offload=False)`. What changes on a CPU? And on a GPU box whose
#    weights stream from pinned host memory over PCIe 4.0 x16 (the link speed printed below, from
#    `labkit.models.specs`): how many seconds does streaming BLOOM-176B's bf16 weights once take?
# 3. Using the published table: at batch 1, how many times faster per token is ds-inference than Accelerate?
# 4. **Implement** what section 2's fix gives each rank: the ALiBi slopes of the heads this tensor-parallel rank
#    holds (Press et al. 2022, section 3). For n heads, n a power of 2, the slopes are 2^(−8/n), 2^(−16/n), …,
#    2^(−8); otherwise the first p = 2^⌊log₂ n⌋ heads take the sequence for p and the other n − p heads take every
#    other term (the 1st, 3rd, …) of the sequence for 2p. Rank r of W holds heads [r·n/W, (r+1)·n/W). The check
#    runs your function on six cases (8, 12 and BLOOM-176B's 112 heads on 1, 2 and 4 ranks) and compares each with
#    transformers' BLOOM `build_alibi_tensor` sliced to the rank's heads; it names the first case that fails, and
#    says so when a rank returns every head's slopes (the shape error of section 2) or rank 0's.

# %%
link = "pinned (PCIe 4.0 x16)"
print(f"{link}: {specs.HOST_LINK_GBPS[link]} GB/s")
answer_2 = None  # seconds to stream BLOOM-176B's bf16 weights once
answer_3 = None
expected_2 = models.estimate_memory("bloom-176b").params * precision.bytes_per_value("bf16") / (specs.HOST_LINK_GBPS[link] * 1e9)
expected_3 = round(speedup_published[1], 1)
if answer_2 is not None:
    print("2: ✓" if abs(answer_2 - expected_2) < 0.05 * expected_2 else f"2: ✗ it is {expected_2:.1f} s")
if answer_3 is not None:
    print("3: ✓" if abs(answer_3 - expected_3) < 0.15 else f"3: ✗ it is {expected_3}")

# %% tags=["exercise"]
import torch

from labkit.exercises import alibi_tp
from labkit.notebook import exercise


def alibi_slopes_for_rank(n_heads: int, rank: int, world_size: int) -> torch.Tensor:
    """The ALiBi slopes of the heads rank `rank` of `world_size` holds. Returns (n_heads // world_size,) float32."""
    # your code: p = 2 ** floor(log2(n_heads)); slopes 2 ** (-8 * i / p) for i = 1..p, then for the n_heads - p other
    # heads 2 ** (-8 * i / (2 * p)) for i = 1, 3, 5, ...; keep this rank's n_heads // world_size of them
    return torch.zeros(n_heads // world_size)  # the stub: no bias at all, the check says what is wrong


if SOLUTIONS:  # the tests inject the reference answer here; a learner leaves SOLUTIONS = False
    from labkit.exercises.solutions.alibi_tp import alibi_slopes_for_rank  # noqa: F811

exercise.report("alibi_slopes_for_rank", alibi_tp.grade(alibi_slopes_for_rank), SOLUTIONS)

# %%
from labkit.notebook import run

run.record({
    "deepspeed_version": ops.deepspeed,
    "op_compile_s": ops.seconds,
    "op_was_cached": ops.was_cached,
    "op_extensions_dir": ops.extensions_dir,
    "op_build_dir": ops.build_dir,
    "tp_model": TP_MODEL,
    "tp_methods": list(tpt.index),
    "tp_ms": tpt.ms.to_dict(),
    "tp_max_abs_diff": tpt.max_abs_diff.to_dict(),
    "bloom_error_without_fix": bloom[0].error_without_fix,
    "bloom_fixed_same_tokens": all(r.same_tokens for r in bloom),
    "zi_same_as_single_process": all(r.same_as_single_process for r in zi_ranks),
    "zi_prompts": [r.prompt for r in zi_ranks],
    "zi_repeats": [r.decode.repeats for r in zi_ranks] + [zi_ranks[0].baseline.repeats],
    "zi_aggregate_tok_s": zt.aggregate_tok_s.tolist(),
    "zi_speedup": float(zt.speedup.iloc[1]),
    "zi_weights_held_MB": zt.weights_held_per_rank_MB.tolist(),
    "zi_gathered_peak_MB": float(zt.gathered_peak_per_rank_MB.iloc[1]),
    "zi_model": ZI_MODEL,
    **dev.to_dict(),
    "ranks_device": placement.ranks_device,  # sections 1-3 (AutoTP, the ALiBi fix, ZeRO-Inference) ran on the ranks
    "eager_launches": vars(eager_launches),  # names its device: this lab's
    "kernel_inject_ran": injection is not None,
    "kernel_inject_skipped": injection_skipped if dev.is_cuda else "no GPU",
    "kernel_inject": injection.summary() if injection is not None else None,  # its `device` field names the GPU
    "published_source": specs.BLOOM_SOURCE,  # the published table, not measured here
})
