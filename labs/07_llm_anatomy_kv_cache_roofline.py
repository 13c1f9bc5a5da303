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
# # Lab 07 — Anatomy of LLM inference: KV cache, prefill vs decode, roofline
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/inference-lab/inference-lab/blob/main/labs/07_llm_anatomy_kv_cache_roofline.ipynb)
# [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/inference-lab/inference-lab/main?urlpath=lab/tree/labs/07_llm_anatomy_kv_cache_roofline.ipynb)
#
# Generating text has two phases. **Prefill** runs the whole prompt through the model at once: big
# matrix products, compute-bound, and it produces the first token (time to first token, TTFT).
# **Decode** then produces one token per step: each step multiplies one new vector per sequence by
# *every* weight, so it is bound by how fast memory delivers those weights (time per output token,
# TPOT). The **KV cache** keeps every past token's keys and values so a decode step does not redo the
# prompt — at the price of memory that grows with batch × context.
#
# This lab checks the KV-cache formula against a real cache, times prefill and decode, measures the
# device's bandwidth and FLOP/s and places each precision on the **roofline**, counts the launches a decode
# step costs (and what CUDA graphs save on a GPU), finds how many sequences the device's memory can hold, and
# works out the memory budget of BLOOM-176B and Llama-30B. Every number is measured on the device chosen by
# `DEVICE` (the GPU when there is one) and names it.
#
# **By the end you can**
# - compute a KV cache's size from the model's config and check it against a real cache;
# - separate prefill from decode and say which one is compute-bound and which memory-bound;
# - place every decode path on this machine's roofline and find the fastest one.
#
# **Before this lab:** lab 05 and lab 06.
# **Time:** the setup cell below prints how long this lab took when it was last run, with smoke and full parameters.

# %%
# Setup. Locally `make lab` installed everything; on Colab this cell installs the lab first (on a GPU
# runtime too: Runtime → Change runtime type → T4 GPU; DEVICE="auto" then measures that GPU).
import sys

if "google.colab" in sys.modules:  # pragma: no cover - only on Colab
    # !git clone -q --depth 1 https://github.com/inference-lab/inference-lab /content/inference-lab
    # %pip install -q -c /content/inference-lab/requirements/constraints.txt -e "/content/inference-lab[engines,quant]"
    # !labkit prepare
    sys.path.insert(0, "/content/inference-lab")
    from labkit.colab import setup_colab  # widgets on Colab; on a GPU runtime, the CUDA builds

    print("\n".join(setup_colab()))
assert sys.version_info >= (3, 11), f"Inference Lab needs Python 3.11+, this is {sys.version}"

import labkit
from labkit.notebook import durations

print(durations.describe("07"))  # measured: the last recorded smoke and full runs
labkit.setup()

# %% tags=["parameters"]
SMOKE = False  # True: small sizes for a quick headless run
MODEL = "smollm2-135m"
PROMPT_LENS = (16, 64, 256)
BATCH_SIZES = (1, 4)
NEW_TOKENS = 16
PRECISIONS = ("fp32", "half", "int8-dynamic")  # "half": the device's 16-bit float (bf16, or fp16 on older GPUs)
ROOFLINE_BATCHES = (1, 8)
STEP_BATCHES = (1, 4, 16, 64, 256)  # batch sizes whose decode step is timed against the roofline (section 3)
COMPILE = True  # static cache + torch.compile (its first call compiles: reported apart as first_call_s); a GPU always
LAUNCH_TOKENS = 8  # tokens of the generation whose kernel launches / operator calls are counted (section 4)
GENERATORS = None  # None: every generation engine (section 5); or a list of names
FAST_PROMPT, FAST_NEW, FAST_BATCHES = 128, 64, (1, 8)
KV_SEQ = 2048  # tokens per sequence whose KV caches fill the memory (section 6)
KV_BUDGET_MIB = 256  # on a CPU: the memory the caches may fill (a GPU fills its free memory, less a reserve)
KV_GPU_BUDGET_MIB = None  # on a GPU: None fills its free memory (less a reserve); a number caps it
MOE_DIMS = {"hidden": 512, "intermediate": 1024, "layers": 4, "experts": 8, "top_k": 2, "vocab": 2048}  # section 8
MOE_BATCHES = (1, 8)  # sequences per timed decode step of the MoE and its dense twins (section 8)
MOE_REPEAT = 10  # timed decode steps per model and batch size (section 8)
HUB_SIZES = ("SmolLM2-135M", "SmolLM2-360M", "SmolLM2-1.7B")  # measured from the Hub where they can be had (section 9)
HUB_PRECISION = "half"  # their weights' dtype: the Hub stores bf16; "half" is the device's 16-bit float (fp16 on a T4)
DEVICE = "auto"  # "auto": the GPU when there is one, else the CPU; or "cpu", "cuda", "cuda:N"
SOLUTIONS = False  # True: the reference answers replace your code in the exercises (the tests prove each check can pass)

# %%
if SMOKE:  # tiny Llama (same architecture, 4 layers): seconds instead of minutes
    MODEL, PROMPT_LENS, BATCH_SIZES, NEW_TOKENS = "tiny-llama", (8, 256), (1, 2), 4
    PRECISIONS, ROOFLINE_BATCHES, STEP_BATCHES, COMPILE = ("fp32", "int8-dynamic"), (1, 4), (1, 16), False
    GENERATORS, FAST_PROMPT, FAST_NEW, FAST_BATCHES = ["hf-eager-fp32", "ort-genai-int4", "llama.cpp"], 16, 6, (1, 2)
    LAUNCH_TOKENS, KV_BUDGET_MIB, KV_GPU_BUDGET_MIB = 3, 32, 2048  # a GPU: 2 GiB, not tens of thousands of caches
    MOE_DIMS = {"hidden": 64, "intermediate": 128, "layers": 2, "experts": 8, "top_k": 2, "vocab": 256}
    MOE_BATCHES, MOE_REPEAT, HUB_SIZES = (1, 4), 3, ("SmolLM2-135M",)  # online: one 270 MB download, not 4.4 GB

# %%
from labkit import devices

dev = devices.choose(DEVICE)  # a bad DEVICE fails here, naming the valid choices
print(dev.summary())
PRECISIONS = tuple(dev.half if p == "half" else p for p in PRECISIONS)
HUB_PRECISION = dev.half if HUB_PRECISION == "half" else HUB_PRECISION
ROOF_PRECISION = dev.half if dev.is_cuda else "fp32"  # the precision of the roofline and the timed decode steps
print(f"roofline and decode steps in {ROOF_PRECISION}: " + ("the GPU's 16-bit float runs on its tensor cores" if
      dev.is_cuda else "PyTorch's CPU decode path is tuned for fp32 (the half precision is measured in section 3)"))

# %% [markdown]
# ## 1. The KV cache: formula vs a real cache
#
# Per token and layer the model stores one key and one value vector per KV head:
#
# $$\text{KV bytes} = 2 \times \text{layers} \times \text{kv\_heads} \times \text{head\_dim} \times \text{bytes per element} \times \text{tokens} \times \text{batch}$$
#
# Llama-style models with grouped-query attention (GQA) have fewer KV heads than query heads, so their
# cache is smaller than multi-head attention's would be by the ratio printed below.

# %%
import pandas as pd

from labkit import anatomy
from labkit.experiments import llm_anatomy

d = anatomy.dims(MODEL)
print(f"{MODEL}: {d.heads} query heads, {d.kv_heads} KV heads: the cache is {d.heads / d.kv_heads:g}× smaller "
      f"than with one KV head per query head")
kv = pd.DataFrame([llm_anatomy.kv_cache_check(MODEL, batch=b, seq=s, device=dev.device)
                   for b, s in [(1, 32), (2, 64), (4, 128)]])
kv["equal"] = kv.formula_bytes == kv.measured_bytes
kv

# %% [markdown]
# The cache grows linearly with context and batch while the weights stay fixed. For `llama-30b`
# serving a modest batch, past the context printed below the cache is bigger than the model itself:

# %%
curve = llm_anatomy.kv_cache_curve("llama-30b", "fp16", batch=8)
print(f"llama-30b, fp16, batch 8: the KV cache outgrows the {curve.table.weights_GB.iloc[0]:.1f} GB of weights at "
      f"{curve.table.attrs['crossover_tokens']:,} tokens per sequence")
curve.figure

# %%
from labkit import precision, widgets

widgets.panel(llm_anatomy.memory_calculator, model=list(llm_anatomy.CALCULATOR_MODELS),
              precision=list(precision.PRECISIONS), batch=(1, 256), seq=(128, 32768, 128), auto=True)

# %% [markdown]
# ## 2. Prefill vs decode: TTFT and TPOT
#
# TTFT is the time from the start of `generate()` to the first new token (one forward pass over the
# prompt); TPOT is the median time of the cached decode steps that follow (`labkit.decoding.timing`:
# a warm-up, then repeats). Longer prompts make prefill slower; a decode step barely cares about the
# prompt length: it reads the cache, which is small next to the weights here (the share is printed below).

# %%
from labkit import plots

pd_table = llm_anatomy.prefill_decode(MODEL, prompt_lens=PROMPT_LENS, batch_sizes=BATCH_SIZES, new_tokens=NEW_TOKENS,
                                      device=dev.device)
pd_table["batch"] = pd_table["batch"].astype(str)
plots.line(pd_table.pivot(index="prompt_tokens", columns="batch", values="ttft_ms").add_prefix("TTFT ms, batch ")
           .join(pd_table.pivot(index="prompt_tokens", columns="batch", values="tpot_ms").add_prefix("TPOT ms, batch "))
           .reset_index(), "prompt_tokens",
           [f"{k} ms, batch {b}" for k in ("TTFT", "TPOT") for b in pd_table.batch.unique()],
           title=f"{MODEL}: time to first token grows with the prompt; time per output token barely does",
           xlabel="prompt tokens", ylabel="ms")

# %%
kv_share = (anatomy.kv_cache_bytes(MODEL, max(BATCH_SIZES), max(PROMPT_LENS) + NEW_TOKENS, "fp32")
            / anatomy.model_memory(MODEL, "fp32").weights_bytes)
print(f"largest cache timed (batch {max(BATCH_SIZES)}, {max(PROMPT_LENS) + NEW_TOKENS} tokens): {kv_share:.1%} of the "
      "fp32 weights' bytes")
pd_table.round(2)

# %% [markdown]
# ## 3. The roofline of this device
#
# Two measured numbers bound every kernel here: memory bandwidth (GB/s) and matmul throughput (FLOP/s), both
# measured on the lab's device, the matmul in fp32 and in the device's half-precision float (on a GPU: its tensor cores).
# A decode step at batch *B* does $2B$ FLOPs per weight and reads each weight byte once, so its
# arithmetic intensity is $2B$ / bytes-per-weight FLOP/byte. Below the **ridge point** (FLOP/s ÷ bandwidth)
# the step is memory-bound and tokens/s ≤ B × bandwidth ÷ weight bytes.

# %%
from labkit import measure
from labkit.experiments import roofline

limits = roofline.machine_limits(device=dev.device, half=dev.half)
roof_flops = limits["flops"] if ROOF_PRECISION == "fp32" else limits["flops_half"]
ridge = measure.ridge_point(roof_flops, limits["bandwidth_GBps"])
print(f"measured on {limits['measured_on']} ({limits['device']}): {limits['bandwidth_GBps']:.1f} GB/s read bandwidth; "
      f"matmul {limits['flops'] / 1e9:.0f} GFLOP/s in fp32 (ridge {limits['ridge_flop_per_byte']:.1f} FLOP/byte), "
      f"{limits['flops_half'] / 1e9:.0f} GFLOP/s in {limits['half']} (ridge {limits['ridge_half_flop_per_byte']:.1f} "
      "FLOP/byte)")
bounds = llm_anatomy.decode_roofline(MODEL, ROOF_PRECISION, bandwidth_gbps=limits["bandwidth_GBps"], flops=roof_flops)
compute_from = int(bounds[bounds.bound_by == "compute"].batch.min()) if (bounds.bound_by == "compute").any() else None
print(f"{MODEL} in {ROOF_PRECISION}: memory-bound up to batch {bounds.attrs['ridge_batch']:.0f} (the measured ridge "
      f"point {ridge:.1f} FLOP/byte); " + (f"from batch {compute_from} on, compute-bound" if compute_from else
                                             f"still memory-bound at batch {bounds.batch.max()}"))
bounds.round(2)

# %% [markdown]
# The table shows why batching helps decode: until the ridge point each extra sequence rides on the
# same weight reads for free. Is a decode step really as cheap for many sequences as for one? Time it
# (the median decode step, `labkit.decoding.timing`) at several batch sizes, next to the roofline's
# prediction max(bytes read ÷ bandwidth, FLOPs ÷ FLOP/s):

# %% [markdown]
# **Predict.** How many times longer does a decode step at the largest batch of `STEP_BATCHES` take than one at the
# first (×)? Reason from the bounds table above: below the ridge batch a step reads the same weights whatever the batch;
# past it, its FLOPs grow with the batch.

# %%
prediction_step_ratio = None  # your guess (×), e.g. 3

# %%
from labkit.notebook import predict

steps = llm_anatomy.decode_step_cost(MODEL, batch_sizes=STEP_BATCHES, new_tokens=NEW_TOKENS,
                                     bandwidth_gbps=limits["bandwidth_GBps"], flops=roof_flops, device=dev.device,
                                     precision=ROOF_PRECISION)
top_step = steps.table.set_index("batch").loc[max(STEP_BATCHES)]
print(f"a decode step at batch {max(STEP_BATCHES)} takes {top_step.step_vs_first:.1f}× the time of batch "
      f"{STEP_BATCHES[0]} (roofline: {top_step.roofline_vs_first:.1f}×); the ridge point is at batch "
      f"{steps.table.attrs['ridge_batch']:.0f} in {ROOF_PRECISION} on {dev.label}")
predict.compare(f"decode step at batch {max(STEP_BATCHES)} ÷ batch {STEP_BATCHES[0]}", prediction_step_ratio,
                measured=float(top_step.step_vs_first), theory=float(top_step.roofline_vs_first), unit="×")
steps.figure

# %%
steps.table.round(2)

# %% [markdown]
# Now the measured points — each precision at each batch size.

# %% [markdown]
# **Predict.** What share of its bandwidth bound (bandwidth ÷ weight bytes, in tokens/s) does PyTorch eager fp32
# reach at the first batch of `ROOFLINE_BATCHES` (%)? Reason from what a decode step does besides reading weights:
# Python, operator dispatch, small kernels.

# %%
prediction_eager_pct = None  # your guess (%), e.g. 50

# %%
points = roofline.precision_points(MODEL, precisions=PRECISIONS, batch_sizes=ROOFLINE_BATCHES, new_tokens=NEW_TOKENS,
                                   limits=limits, device=dev.device)
roofline.roofline_figure(points, title=f"{MODEL}: decode on the roofline of {dev.label}")

# %%
eager_b1 = points[(points.batch == ROOFLINE_BATCHES[0]) & (points.precision == "fp32")].pct_of_roofline.iloc[0]
print(f"PyTorch eager fp32 at batch {ROOFLINE_BATCHES[0]} reaches {eager_b1:.0f} % of its bandwidth bound")
predict.compare(f"PyTorch eager fp32 at batch {ROOFLINE_BATCHES[0]}, % of its bandwidth bound", prediction_eager_pct,
                measured=float(eager_b1), unit="%")
points[["engine", "batch", "read_per_step_MB", "decode_tok_s", "bandwidth_bound_tok_s", "pct_of_roofline"]].round(1)

# %% [markdown]
# ## 4. Static KV cache, `torch.compile` and CUDA graphs
#
# The default (dynamic) cache grows by concatenation every step, so tensor shapes change each step.
# A **static** cache is allocated once at its maximum length; fixed shapes let `torch.compile` build
# one graph for every decode step, and with `mode="reduce-overhead"` a GPU captures it as a **CUDA graph**:
# the whole step replayed with one launch instead of one per kernel. The first compiled call
# pays for compilation and capture — reported separately — and all variants must produce the same tokens.
# On a GPU the compiled variant always runs (it is this section's lesson); on a CPU when `COMPILE` is set.

# %%
cache_cmp = roofline.static_vs_dynamic(MODEL, new_tokens=max(NEW_TOKENS, 8), compile=COMPILE or dev.is_cuda, repeat=2,
                                       device=dev.device)
cache_cmp.figure

# %%
cache_cmp.table.round(2)

# %% [markdown]
# Where does a small model's decode step go? Count what it dispatches per token with `torch.profiler`
# (two generations of different lengths, so the prompt and generate()'s fixed costs cancel): on a GPU the
# kernel launches, on a CPU the ATen operator calls — the same per-operation overhead, paid in the dispatcher.

# %%
from labkit.experiments import cuda_graphs

LAUNCH_TOKENS = max(LAUNCH_TOKENS, 8) if dev.is_cuda else LAUNCH_TOKENS  # graph replays need steps after capture
launches = [cuda_graphs.launches_per_token(MODEL, dev.device, new_tokens=LAUNCH_TOKENS)]
if dev.gpu_section("CUDA graphs: kernel launches and per-token latency, static cache + torch.compile vs eager"):
    launches.append(cuda_graphs.launches_per_token(MODEL, dev.device, new_tokens=LAUNCH_TOKENS, compile=True))
    graph_speedup = cache_cmp.table.set_index("variant").speedup_vs_dynamic["static cache + torch.compile"]
    print(f"on {dev.label}: {launches[0].launches_per_token:.0f} kernel launches per token eager, "
          f"{launches[1].launches_per_token:.0f} (+ {launches[1].graph_launches_per_token:.0f} graph launch) with "
          f"CUDA graphs; per-token latency {graph_speedup:.2f}× faster than eager")
else:
    graph_speedup = None
launch_counts = cuda_graphs.launch_table(launches)
launch_counts[["variant", "device", "counted", "launches_per_token", "kernels_per_token", "graph_launches_per_token"]]

# %% [markdown]
# ### Where one decode step's time goes
#
# Counting calls says how many; a profiler says how long. One greedy decode step of `MODEL` (batch 1, with its KV
# cache) runs under `torch.profiler` on the CPU (`experiments.where_time_goes.decode_step`). Each ATen operator's own
# time goes to *matrix multiply* (the linear layers and the LM head, whose weights stream from memory), *attention*,
# *other operators* (norms, RoPE, activations, cache appends, copies) and *outside operators* (Python and module
# calls between them). If "the rest is per-operator overhead", the time outside the matrix multiplies divided by
# the operator calls that make it up is a few microseconds each, whatever the operator computes. On a GPU this
# section still profiles the CPU: there the CPU-side times are launch costs, and the launch counts above tell that.

# %%
from labkit.experiments import where_time_goes

step_profile = where_time_goes.decode_step(MODEL, prompt_len=PROMPT_LENS[0], repeat=10)
step_profile.figure

# %%
step_time = step_profile.results[0]
step_matmul_share = step_time.ms("matrix multiply") / step_time.wall_ms
step_other_calls = float(step_time.ops[step_time.ops.category != "matrix multiply"].calls.sum())
step_rest_ms = step_time.wall_ms - step_time.ms("matrix multiply")
step_us_per_op = 1e3 * step_rest_ms / step_other_calls
print(f"one {MODEL} decode step: {step_time.wall_ms:.2f} ms profiled ({step_time.unprofiled_ms:.2f} ms unprofiled); "
      f"{100 * step_matmul_share:.0f} % in matrix multiplies; the other {step_rest_ms:.2f} ms over "
      f"{step_other_calls:.0f} other operator calls: {step_us_per_op:.1f} µs each, time outside operators included")
step_profile.ops.round(4)

# %% [markdown]
# ## 5. The fastest way to decode on this CPU
#
# The percentages above say how much of its bandwidth bound PyTorch eager reaches; the rest of each
# decode step goes to something other than reading weights. Engines that run the whole step in C++
# with packed low-bit weights close that gap: ONNX Runtime GenAI (its model builder writes a graph
# with a KV cache kept in place and `MatMulNBits` int4/int8 kernels) and llama.cpp (measured when
# `llama-cpp-python` is installed: `pip install 'labkit[peer]'`). Same held-out prompts, same new
# tokens, greedy; exact paths must reproduce HF's tokens, low-bit ones report their top-1 agreement
# with fp32 on the prompt text (`benchmarks/decode.py` runs the same).
#
# **The same bits, a faster engine.** SmolLM2 ships as a Q4_1 GGUF file: blocks of weights, each block with a scale
# and a minimum. ONNX Runtime's `MatMulNBits` also stores blocks of low-bit codes with a scale; the
# `ort-genai-gguf-q4_1` rows carry the file's blocks over unchanged (`labkit.convert.gguf_nbits`: same codes, same
# scales, the minimum folded into one correction per block), so they run exactly llama.cpp's weights with other
# kernels. `-a0` keeps the activations in fp32 (exact against the dequantized model), `-a4` quantizes them to int8
# inside the kernel, as llama.cpp does; `-a4-zp` also rounds each block's minimum into an integer zero point (one op
# instead of the per-block correction; every value of a block moves by up to half a step): predict its agreement.
# A quantization format is a memory layout; an engine is the kernels that read it. The bound of each row counts the bytes one step reads (`step_read_MB`: an embedding table kept apart
# from the head costs one row, a tied head is read once), so no row can read faster than its bound.

# %%
from labkit.experiments import fast_decode

if dev.is_cuda:
    print("This section compares CPU decode engines, so it runs on the CPU deliberately, against the CPU's bandwidth.")
cpu_bandwidth = limits["bandwidth_GBps"] if not dev.is_cuda else measure.memory_bandwidth(device="cpu")
fast = fast_decode.compare_generators(MODEL, GENERATORS, prompt_tokens=FAST_PROMPT, new_tokens=FAST_NEW,
                                      batch_sizes=FAST_BATCHES, repeat=2, bandwidth_gbps=cpu_bandwidth)
fast.figure

# %%
fast_cols = ["generator", "batch", "decode_tok_s", "prefill_ms", "weight_MB", "step_read_MB", "pct_of_bound",
             "top1_agreement",
             "greedy_prefix_agreement", "vs_llama_cpp", "reason"]
fast.table[[c for c in fast_cols if c in fast.table]].round(2)

# %% [markdown]
# ## 6. The KV cache as the concurrency limit
#
# Every sequence a server decodes at once needs its own KV cache. Once the weights are loaded, the memory left
# over ÷ one sequence's cache is how many sequences fit — the limit a serving engine sizes its batch by.
# The formula (`anatomy.kv_cache_bytes`) predicts it for the device's free memory; the check allocates real
# transformers `StaticCache`s of `KV_SEQ` tokens, in the device's half-precision float, one per sequence, until the
# memory runs out — on a GPU its free memory less a reserve (or `KV_GPU_BUDGET_MIB`, as the smoke run does), on a
# CPU a budget of `KV_BUDGET_MIB` (filling a CPU's RAM would make it swap). A second measurement — the bytes PyTorch's
# GPU allocator handed out, or the process's resident memory on a CPU — shows what the caches really took (on a CPU
# less when they reuse memory the process freed earlier).

# %% [markdown]
# **Predict.** How many caches of `KV_SEQ` tokens will be allocated before the memory runs out (sequences)? Reason
# from section 1's formula for one sequence's cache in the half-precision float, and the budget: `KV_BUDGET_MIB` on a
# CPU, `KV_GPU_BUDGET_MIB` (or the free memory less a reserve) on a GPU.

# %%
prediction_kv_sequences = None  # your guess (sequences), e.g. 100

# %%
from labkit.experiments import kv_capacity

kv_budget_mib = KV_GPU_BUDGET_MIB if dev.is_cuda else KV_BUDGET_MIB  # None: the GPU's free memory
cap = kv_capacity.kv_capacity(MODEL, KV_SEQ, dev.half, device=dev.device,
                              budget_bytes=None if kv_budget_mib is None else kv_budget_mib * 2**20)
print(f"{MODEL}, {KV_SEQ} tokens per sequence in {cap.precision}: {cap.per_sequence_formula_bytes / 2**20:.1f} MiB of "
      f"KV cache each. The {cap.device_free_bytes / 1e9:.1f} GB free on {dev.label} would hold "
      f"{cap.device_formula_sequences:,} sequences next to the weights (formula). Checked against "
      f"{cap.budget_bytes / 2**20:.0f} MiB ({cap.budget_source}): the formula says {cap.formula_sequences}, "
      f"{cap.allocated_sequences} real caches were allocated (stopped by the {cap.stopped_by}); the memory grew by "
      f"{cap.memory_growth_bytes / 2**20:.0f} MiB for {cap.allocated_bytes / 2**20:.0f} MiB of caches.")
predict.compare(f"{KV_SEQ}-token KV caches that fit in {cap.budget_bytes / 2**20:.0f} MiB", prediction_kv_sequences,
                measured=float(cap.allocated_sequences), theory=float(cap.formula_sequences), unit="sequences")
pd.DataFrame([cap.row()]).T.rename(columns={0: "value"})

# %% [markdown]
# ## 7. Budgets of the big models
#
# The claims to check: the published BLOOM-176B figure (from `labkit.models.specs`) and the seed's
# size of `llama-30b`; both are printed below.

# %%
from labkit.models import specs

SEED_LLAMA_30B_GB = specs.SEED_LLAMA_30B_GB  # the seed's claim under test (a quoted claim, not a measurement)
print(f"Published: BLOOM-176B needs {specs.BLOOM_176B_BF16_GB} GB in bf16. The seed: a 30B Llama takes about "
      f"{SEED_LLAMA_30B_GB} GB.")
budgets = pd.concat([llm_anatomy.memory_calculator(m, p, 1, 2048).table for m, p in
                     [("bloom-176b", "bf16"), ("bloom-176b", "int8"), ("llama-30b", "fp16"), ("llama-30b", "int8")]])
budgets.round(1)

# %%
llm_anatomy.memory_calculator("bloom-176b", "bf16", batch=8, seq=2048).figure

# %% [markdown]
# ## 8. Mixture of experts: total vs active parameters
#
# A mixture-of-experts (MoE) layer replaces the MLP by *E* MLPs ("experts") and a router that sends each token to
# its top *k* (Mixtral-8x7B: $E = 8$, $k = 2$; Jiang et al. 2024). Every expert sits in memory; a token multiplies
# only *k*:
#
# $$\text{total} = \text{embeddings} + L\,(\text{attention} + E \cdot \text{expert} + \text{router} + \text{norms}),
# \qquad \text{active} = \text{embeddings} + L\,(\text{attention} + k \cdot \text{expert} + \text{router} + \text{norms})$$
#
# with one expert $= 3 \times \text{hidden} \times \text{intermediate}$ (gate, up, down). Below, Mixtral-8x7B's
# published config is sized by this formula and by transformers' `MixtralForCausalLM` built on the meta device
# (nothing allocated), next to the published total and active counts (`moe.MIXTRAL_PUBLISHED_B`).

# %%
from labkit.experiments import mixture_of_experts as moe

sizing = moe.mixtral_sizing()
mix = sizing.table.set_index("quantity")
print(f"Mixtral-8x7B on the meta device: {mix.meta_B['total']:.2f} B parameters held, {mix.meta_B['active']:.2f} B "
      f"active per token (formula {mix.formula_B['total']:.2f} / {mix.formula_B['active']:.2f} B; published "
      f"{mix.published_B['total']} / {mix.published_B['active']} B). In bf16 that is {mix.bf16_GB['total']:.1f} GB "
      f"held, and a batch-1 decode step reads {2 * sizing.table.attrs['read_per_token_B']:.1f} GB of it.")
sizing.figure

# %% [markdown]
# Does an MoE decode like the small model it uses or like the big one it holds? A tiny random Mixtral
# (`MOE_DIMS`) runs next to two dense Llamas with the same attention and embeddings: one whose MLP is *k* experts
# wide (its **active** size) and one *E* experts wide (its **total** size). One decode step of each is timed side by
# side (`measure.benchmark_rounds`), and a hook on the router records which experts each step really ran: the bytes
# a step reads are the attention, router and head plus the experts hit. With *B* sequences a layer runs the union of
# their experts: for uniform routing $E\,(1 - (1 - k/E)^B)$ of them.
#
# **Predict.** At the largest batch in `MOE_BATCHES`, how many distinct experts (of `MOE_DIMS["experts"]`) does a
# layer run per decode step?

# %%
prediction_moe_experts = None  # your guess (experts per layer)

# %%
from labkit.notebook import predict

moe_run = moe.moe_vs_dense(moe.tiny_configs(**MOE_DIMS), batch_sizes=MOE_BATCHES, repeat=MOE_REPEAT,
                           precision=ROOF_PRECISION, bandwidth_gbps=limits["bandwidth_GBps"], flops=roof_flops,
                           device=dev.device)
mt = moe_run.table.set_index(["engine", "batch"])
moe_b1, moe_bmax = MOE_BATCHES[0], max(MOE_BATCHES)
moe_theory = moe.expected_experts(MOE_DIMS["experts"], MOE_DIMS["top_k"], moe_bmax)
predict.compare(f"distinct experts per layer at batch {moe_bmax}", prediction_moe_experts,
                measured=float(mt.experts_per_layer["MoE", moe_bmax]), theory=moe_theory, unit="experts")
read = mt.read_per_step_MB
print(f"batch {moe_b1}: the MoE holds {mt.params_M['MoE', moe_b1]:.1f} M parameters "
      f"({mt.active_params_M['MoE', moe_b1]:.1f} M active) and reads "
      f"{read['MoE', moe_b1]:.1f} MB per step: {read['MoE', moe_b1] / read['dense, same active', moe_b1]:.2f}× its "
      f"dense twin of the same active size (formula: active ÷ active = 1 plus the router), "
      f"{read['MoE', moe_b1] / read['dense, same total', moe_b1]:.2f}× the one of the same total size; measured "
      f"{mt.decode_tok_s['MoE', moe_b1]:.3g} vs {mt.decode_tok_s['dense, same active', moe_b1]:.3g} and "
      f"{mt.decode_tok_s['dense, same total', moe_b1]:.3g} tokens/s. At batch {moe_bmax} the router ran "
      f"{mt.experts_per_layer['MoE', moe_bmax]:.1f} experts per layer (theory {moe_theory:.1f}): "
      f"{read['MoE', moe_bmax]:.1f} MB per step, {read['MoE', moe_bmax] / read['dense, same active', moe_bmax]:.1f}× "
      f"the dense model of the same active size, on {dev.label}.")
moe_run.figure

# %%
moe_run.table[["engine", "batch", "params_M", "active_params_M", "experts_per_layer", "expected_experts_per_layer",
               "read_per_step_MB", "ms_per_step", "decode_tok_s", "bandwidth_bound_tok_s", "pct_of_bound",
               "speed_vs_moe"]].round(2)

# %% [markdown]
# ## 9. Models of different sizes, on paper and measured
#
# The same numbers for SmolLM2-135M, SmolLM2-360M and SmolLM2-1.7B, from their published configs (`experiments.model_sizes`; the Hub
# is not needed): parameters counted on the meta device, weight bytes per precision, KV-cache bytes per token
# (`anatomy.kv_cache_bytes`: SmolLM2-1.7B has no grouped-query attention) and the batch-1 decode bound on this
# device's measured bandwidth, bandwidth ÷ weight bytes. Where the lab ran SmolLM2-135M in fp32 (section 3) its
# measured tokens/s is set against its bound. Then, where the models can be had (online, or already in this machine's
# Hugging Face cache), each one is loaded from the Hub by its id and measured: weight bytes, batch-1 decode tokens/s
# and perplexity on the held-out plays. Offline, its row says why it was not.

# %%
from labkit.experiments import model_sizes

fp32_b1 = points[(points.batch == 1) & (points.precision == "fp32")]
sizes_measured = ({"SmolLM2-135M": ("fp32", float(fp32_b1.decode_tok_s.iloc[0]))}
                  if MODEL == "smollm2-135m" and len(fp32_b1) else None)
sizes = model_sizes.on_paper(limits["bandwidth_GBps"], measured=sizes_measured)
st = sizes.table.set_index("model")
print(f"On {limits['bandwidth_GBps']:.1f} GB/s ({dev.label}), bf16 decode at batch 1 is bounded at "
      + ", ".join(f"{n} {st.bound_tok_s_bf16[n]:.0f} tokens/s" for n in st.index)
      + f": {st.params_M.iloc[-1] / st.params_M.iloc[0]:.1f}× the parameters, "
      f"{st.bound_tok_s_bf16.iloc[0] / st.bound_tok_s_bf16.iloc[-1]:.1f}× fewer tokens/s; KV cache per token "
      + ", ".join(f"{v:.0f} KB" for v in st.kv_KB_per_token) + "."
      + (f" Measured here: SmolLM2-135M fp32 at {st.measured_tok_s.iloc[0]:.0f} tokens/s, "
         f"{st.pct_of_bound.iloc[0]:.0f} % of its bound." if sizes_measured else ""))
sizes.figure

# %%
sizes.table.round(2)

# %%
from IPython.display import display

hub = model_sizes.from_hub(HUB_SIZES, device=dev.device, precision=HUB_PRECISION, decode_tokens=max(NEW_TOKENS, 4))
done = hub[hub.measured]
if len(done):  # the measured decode rates, set against their bounds
    hub_sizes = model_sizes.on_paper(limits["bandwidth_GBps"], precisions=("fp32", HUB_PRECISION),
                                     names=tuple(done.model), measured={r.model: (HUB_PRECISION, r.decode_tok_s)
                                                                        for r in done.itertuples()})
    display(hub_sizes.figure)
for r in hub[~hub.measured].itertuples():
    print(f"{r.model}: not measured here: {r.reason}")
hub.round(2)

# %% [markdown]
# ## What theory predicts vs what you measured

# %%
b1 = points[points.batch == ROOFLINE_BATCHES[0]].set_index("precision")
ttft = pd_table[pd_table.batch == str(BATCH_SIZES[0])].set_index("prompt_tokens").ttft_ms
tpot = pd_table[pd_table.batch == str(BATCH_SIZES[0])].set_index("prompt_tokens").tpot_ms
bloom = budgets[(budgets.model == "bloom-176b") & (budgets.precision == "bf16")].iloc[0]
llama16 = budgets[(budgets.model == "llama-30b") & (budgets.precision == "fp16")].iloc[0]
llama8 = budgets[(budgets.model == "llama-30b") & (budgets.precision == "int8")].iloc[0]
print(f"* Theory: the KV cache is 2·layers·kv_heads·head_dim·bytes·tokens·batch. Measured: formula == real cache in "
      f"{int(kv.equal.sum())}/{len(kv)} shapes.")
print(f"* Theory: prefill time grows with the prompt. Measured TTFT (batch {BATCH_SIZES[0]}): "
      + ", ".join(f"{n} tok {v:.1f} ms" for n, v in ttft.items())
      + f"; TPOT stays {tpot.min():.1f}–{tpot.max():.1f} ms.")
print(f"* Theory: batch-{ROOFLINE_BATCHES[0]} decode is bound by {limits['bandwidth_GBps']:.1f} GB/s ÷ weight bytes. "
      "Measured, % of that limit: " + ", ".join(f"{p} {v:.0f} %" for p, v in b1.pct_of_roofline.items())
      + " — the rest is per-op overhead (Python, dispatch, small kernels), not bandwidth.")
fast_b1 = fast.table[fast.table.available & (fast.table.batch == FAST_BATCHES[0])].set_index("generator")
best = fast_b1.decode_tok_s.idxmax()
print(f"* Theory: fewer bytes per token and less overhead per step decode faster. Measured (batch {FAST_BATCHES[0]}): "
      f"fastest is {best} at {fast_b1.decode_tok_s.max():.0f} tok/s, {fast_b1.decode_tok_s.max() / fast_b1.loc['hf-eager-fp32', 'decode_tok_s']:.1f}× "
      f"HF eager fp32 ({fast_b1.loc[best, 'pct_of_bound']:.0f} % of its bandwidth bound)"
      + (f"; {fast_b1.loc[best, 'vs_llama_cpp']:.2f}× llama.cpp." if "llama.cpp" in fast_b1.index else
         "; llama.cpp not measured here (" + fast.table.set_index("generator").reason.get("llama.cpp", "") + ")."))
same4 = [g for g in ("ort-genai-gguf-q4_1", "ort-genai-gguf-q4_1-a4", "ort-genai-gguf-q4_1-a4-zp")
         if g in fast_b1.index]
if same4:
    print("* Theory: the same Q4_1 blocks read by other kernels decode at another speed, with the same weights. "
          "Measured: " + ", ".join(f"{g} {fast_b1.loc[g, 'decode_tok_s']:.0f} tok/s, top-1 agreement "
                                   f"{fast_b1.loc[g, 'top1_agreement']:.2f}, {fast_b1.loc[g, 'step_read_MB']:.0f} MB read "
                                   f"per step" for g in same4)
          + (f"; llama.cpp {fast_b1.loc['llama.cpp', 'decode_tok_s']:.0f} tok/s on the same file."
             if "llama.cpp" in fast_b1.index else "."))
print(f"* Every path's % of its bound counts the bytes a step reads: the highest is "
      f"{fast_b1.pct_of_bound.max():.0f} % ({fast_b1.pct_of_bound.idxmax()}).")
seed_holds = [r.precision for r in (llama16, llama8) if abs(r.weights_GB - SEED_LLAMA_30B_GB) <= 0.1 * SEED_LLAMA_30B_GB]
print(f"* Published: BLOOM-176B needs {specs.BLOOM_176B_BF16_GB} GB in bf16. Calculator: {bloom.weights_GB:.1f} GB of "
      f"weights. A 30B Llama: {llama16.weights_GB:.1f} GB of weights in fp16, {llama8.weights_GB:.1f} GB in int8 — "
      f"the seed's {SEED_LLAMA_30B_GB} GB is within 10 % only in: {', '.join(seed_holds) or 'neither'}.")
print(f"* Theory: below the ridge point a decode step costs the same at any batch. Measured: batch "
      f"{max(STEP_BATCHES)} costs {top_step.step_vs_first:.1f}× batch {STEP_BATCHES[0]} (roofline "
      f"{top_step.roofline_vs_first:.1f}×, ridge at batch {steps.table.attrs['ridge_batch']:.0f}).")
print(f"* Theory: an MoE step at batch 1 reads its active parameters, not its total. Measured: the tiny MoE read "
      f"{read['MoE', moe_b1]:.1f} MB per step, {read['dense, same total', moe_b1]:.1f} MB for the dense model of its "
      f"total size; at batch {moe_bmax} its router ran {mt.experts_per_layer['MoE', moe_bmax]:.1f} experts per layer "
      f"(theory {moe_theory:.1f}).")
print(f"* Theory: the KV caches that fit = memory ÷ one sequence's cache. Measured: {cap.formula_sequences} by the "
      f"formula, {cap.allocated_sequences} real caches allocated on {dev.label}.")
print(f"* Measured on {dev.label}: {launch_counts.launches_per_token.iloc[0]:.0f} {launch_counts.counted.iloc[0]} per "
      "decoded token, each a fixed cost a small model pays on top of its weight reads"
      + (f"; CUDA graphs made a token {graph_speedup:.2f}× faster." if graph_speedup is not None else "."))
pd.DataFrame([
    {"quantity": "ridge point (FLOP/byte)", "theory": f"{ROOF_PRECISION} FLOP/s ÷ bytes/s", "measured": ridge},
    *({"quantity": f"decode step at batch {b}, % of the bandwidth bound",
       "theory": "≤ 100 (100: only weight and KV reads)", "measured": pct}
      for b, pct in steps.table.set_index("batch").pct_of_bandwidth_bound.items()),
    {"quantity": f"{KV_SEQ}-token sequences in {cap.budget_bytes / 2**20:.0f} MiB", "theory": cap.formula_sequences,
     "measured": cap.allocated_sequences},
    {"quantity": "bytes of one sequence's KV cache", "theory": cap.per_sequence_formula_bytes,
     "measured": cap.per_sequence_allocated_bytes},
], columns=["quantity", "theory", "measured"]).set_index("quantity").round(1)

# %% [markdown]
# ## Exercises
#
# 1. How many KV-cache bytes does one extra token add to the lab model's (`MODEL`) cache at batch 1 in fp32?
# 2. At which batch size does decode in `ROOF_PRECISION` on this device stop being memory-bound (see the bounds table)?
# 3. **Implement** one decode step of attention with the KV cache of section 1: append the new token's key and value
#    to the caches (along the sequence axis), then let its query attend to every cached position and to itself,
#    softmax(q Kᵀ / √head_dim) V. With grouped-query attention the caches hold fewer KV heads than there are query
#    heads, and query head h reads KV head h // (heads / kv_heads). The check below runs your function on five cases
#    (an empty cache, a batch, GQA…) and compares it with PyTorch's `scaled_dot_product_attention` run causally over
#    the whole sequence without a cache (the last position), and the caches with their concatenation; it names the
#    first case that fails and how.

# %%
answer_1 = None  # bytes
answer_2 = None  # batch size
expected_1 = anatomy.kv_cache_bytes(MODEL, batch=1, seq=1, precision="fp32")
compute_bound = bounds[bounds.bound_by == "compute"]
expected_2 = int(compute_bound.batch.min()) if len(compute_bound) else None
if answer_1 is not None:
    print("1: ✓" if answer_1 == expected_1 else f"1: ✗ {expected_1:.0f} bytes")
if answer_2 is not None:
    print("2: ✓" if answer_2 == expected_2 else f"2: ✗ {expected_2}")

# %% tags=["exercise"]
import torch

from labkit.exercises import kv_cache_step
from labkit.notebook import exercise


def attend_with_cache(q: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor, k_cache: torch.Tensor,
                      v_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q: (batch, heads, 1, head_dim); k_new, v_new: (batch, kv_heads, 1, head_dim); k_cache, v_cache:
    (batch, kv_heads, past, head_dim), past may be 0. Returns (out (batch, heads, 1, head_dim), k_cache, v_cache
    with past + 1 positions)."""
    # your code: torch.cat the new key/value onto the caches (dim 2), repeat each KV head for its heads // kv_heads
    # query heads (repeat_interleave on dim 1), scores = q @ keysᵀ / √head_dim, softmax, @ values; no mask is needed
    return q, k_cache, v_cache  # the stub: the check says what is wrong


if SOLUTIONS:  # the tests inject the reference answer here; a learner leaves SOLUTIONS = False
    from labkit.exercises.solutions.kv_cache_step import attend_with_cache  # noqa: F811

exercise.report("attend_with_cache", kv_cache_step.grade(attend_with_cache), SOLUTIONS)

# %%
from labkit.notebook import run

run.record({
    "decode_step_profile": {"model": MODEL, "wall_ms": step_time.wall_ms, "unprofiled_ms": step_time.unprofiled_ms,
                            "matmul_share": step_matmul_share, "other_op_calls": step_other_calls,
                            "us_per_other_op": step_us_per_op,
                            "matmul_calls": float(step_time.ops[step_time.ops.category == "matrix multiply"].calls.sum())},
    "model": MODEL,
    "kv_formula_equals_measured": bool(kv.equal.all()),
    "kv_bytes": kv.measured_bytes.tolist(),
    "ttft_ms": ttft.to_dict(),
    "tpot_ms": tpot.to_dict(),
    "bandwidth_GBps": limits["bandwidth_GBps"],
    "gflops": limits["flops"] / 1e9,
    "pct_of_roofline_b1": b1.pct_of_roofline.to_dict(),
    "bandwidth_bound_tok_s_b1": b1.bandwidth_bound_tok_s.to_dict(),
    "decode_tok_s_b1": b1.decode_tok_s.to_dict(),
    "cache_variants": cache_cmp.table.set_index("variant").decode_tok_s.to_dict(),
    "cache_same_tokens": bool(cache_cmp.table.same_tokens_as_dynamic.all()),
    "fast_decode_tok_s_b1": fast_b1.decode_tok_s.to_dict(),
    "fast_pct_of_bound_b1": fast_b1.pct_of_bound.to_dict(),
    "fast_step_read_MB_b1": fast_b1.step_read_MB.to_dict(),
    "fast_weight_MB_b1": fast_b1.weight_MB.to_dict(),
    "fast_exact_same_tokens": bool((fast_b1[fast_b1.exact.astype(bool)].greedy_prefix_agreement == 1.0).all()),
    "fast_best": best,
    "bloom_176b_bf16_GB": bloom.weights_GB,
    "llama_30b_int8_GB": llama8.weights_GB,
    "seed_llama_30b_GB": SEED_LLAMA_30B_GB,
    "seed_llama_30b_holds_in": seed_holds,
    "kv_crossover_tokens": curve.table.attrs["crossover_tokens"],
    "step_batches": list(STEP_BATCHES),
    "step_tpot_ms": steps.table.set_index("batch").tpot_ms.to_dict(),
    "step_roofline_ms": steps.table.set_index("batch").roofline_ms.to_dict(),
    "step_ratio_top_vs_first": top_step.step_vs_first,
    "ridge_batch": steps.table.attrs["ridge_batch"],
    **dev.to_dict(),
    "measured_on": limits["measured_on"],
    "limits_device": limits["device"],
    "flops_half_gflops": limits["flops_half"] / 1e9,
    "half": limits["half"],
    "ridge_flop_per_byte": limits["ridge_flop_per_byte"],
    "ridge_half_flop_per_byte": limits["ridge_half_flop_per_byte"],
    "roofline_precision": ROOF_PRECISION,
    "roofline_gflops": roof_flops / 1e9,
    "roofline_batches": bounds.batch.tolist(),
    "roofline_compute_from_batch": compute_from,
    "step_pct_of_bandwidth_bound": steps.table.set_index("batch").pct_of_bandwidth_bound.to_dict(),
    "step_pct_of_roofline": steps.table.set_index("batch").pct_of_roofline.to_dict(),
    "points_skipped": points.attrs["skipped"],
    "launches_per_token": launch_counts.launches_per_token.tolist(),
    "launch_variants": launch_counts.variant.tolist(),
    "graph_launches_per_token": [None if pd.isna(v) else v for v in launch_counts.graph_launches_per_token],
    "launches_counted": launch_counts.counted.iloc[0],
    "cuda_graph_speedup": graph_speedup,
    "fast_decode_cpu_bandwidth_GBps": cpu_bandwidth,
    "kv_capacity": cap.row(),
    "moe_mixtral_meta_params": list(sizing.meta),
    "moe_mixtral_formula_params": [sizing.count.total, sizing.count.active],
    "moe_dims": MOE_DIMS,
    "moe_batches": list(MOE_BATCHES),
    "moe_params_counted": mt.params_counted.xs(moe_b1, level="batch").to_dict(),
    "moe_experts_per_layer": {int(b): v for b, v in mt.experts_per_layer.xs("MoE").items()},
    "moe_read_per_step_MB": {f"{e}|{b}": v for (e, b), v in read.items()},
    "moe_decode_tok_s": {f"{e}|{b}": v for (e, b), v in mt.decode_tok_s.items()},
    "moe_precision": moe_run.table.attrs["precision"],
    "model_sizes": {n: {k: None if pd.isna(v) else v for k, v in row.items()} for n, row in
                    st[["params_M", "kv_KB_per_token", "bound_tok_s_bf16", "measured_tok_s", "pct_of_bound"]]
                    .to_dict(orient="index").items()},
    "model_sizes_bandwidth_GBps": sizes.table.attrs["bandwidth_GBps"],
    "hub_sizes": [{k: None if pd.isna(v) else v for k, v in row.items()}
                  for row in hub.to_dict(orient="records")],
    "hub_precision": HUB_PRECISION,
})
