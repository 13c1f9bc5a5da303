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
# This lab checks the KV-cache formula against a real cache, times prefill and decode, measures this
# machine's bandwidth and FLOP/s and places each precision on the **roofline**, and works out the
# memory budget of BLOOM-176B and Llama-30B.

# %%
# Setup. Locally `make lab` installed everything; on Colab this cell installs the lab first.
import sys

if "google.colab" in sys.modules:  # pragma: no cover - only on Colab
    # !git clone -q --depth 1 https://github.com/inference-lab/inference-lab /content/inference-lab
    # %pip install -q -e "/content/inference-lab[engines,quant]"
    # !labkit prepare
    sys.path.insert(0, "/content/inference-lab")
assert sys.version_info >= (3, 11), f"Inference Lab needs Python 3.11+, this is {sys.version}"

import labkit

labkit.setup()

# %% tags=["parameters"]
SMOKE = False  # True: small sizes for a quick headless run
MODEL = "smollm2-135m"
PROMPT_LENS = (16, 64, 256)
BATCH_SIZES = (1, 4)
NEW_TOKENS = 16
PRECISIONS = ("fp32", "bf16", "int8-dynamic")
ROOFLINE_BATCHES = (1, 8)
STEP_BATCHES = (1, 4, 16, 32)  # batch sizes whose decode step is timed against the roofline (section 3)
COMPILE = True  # static cache + torch.compile (its first call compiles: reported apart as first_call_s)
GENERATORS = None  # None: every generation engine (section 5); or a list of names
FAST_PROMPT, FAST_NEW, FAST_BATCHES = 128, 64, (1, 8)

# %%
if SMOKE:  # tiny Llama (same architecture, 4 layers): seconds instead of minutes
    MODEL, PROMPT_LENS, BATCH_SIZES, NEW_TOKENS = "tiny-llama", (8, 256), (1, 2), 4
    PRECISIONS, ROOFLINE_BATCHES, STEP_BATCHES, COMPILE = ("fp32", "int8-dynamic"), (1, 4), (1, 16), False
    GENERATORS, FAST_PROMPT, FAST_NEW, FAST_BATCHES = ["hf-eager-fp32", "ort-genai-int4", "llama.cpp"], 16, 6, (1, 2)

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
kv = pd.DataFrame([llm_anatomy.kv_cache_check(MODEL, batch=b, seq=s) for b, s in [(1, 32), (2, 64), (4, 128)]])
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

pd_table = llm_anatomy.prefill_decode(MODEL, prompt_lens=PROMPT_LENS, batch_sizes=BATCH_SIZES, new_tokens=NEW_TOKENS)
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
# ## 3. The roofline of this machine
#
# Two measured numbers bound every kernel here: memory bandwidth (GB/s) and matmul throughput (FLOP/s).
# A decode step at batch *B* does $2B$ FLOPs per weight and reads each weight byte once, so its
# arithmetic intensity is $2B$ / bytes-per-weight FLOP/byte. Below the **ridge point** (FLOP/s ÷ bandwidth)
# the step is memory-bound and tokens/s ≤ B × bandwidth ÷ weight bytes.

# %%
from labkit.experiments import roofline

limits = roofline.machine_limits()
print(f"measured on {limits['measured_on']}: {limits['bandwidth_GBps']:.1f} GB/s read bandwidth, "
      f"{limits['flops'] / 1e9:.0f} GFLOP/s fp32 matmul; ridge point {limits['flops'] / 1e9 / limits['bandwidth_GBps']:.1f} "
      "FLOP/byte")
bounds = llm_anatomy.decode_roofline(MODEL, "fp32", bandwidth_gbps=limits["bandwidth_GBps"], flops=limits["flops"])
bounds.round(2)

# %% [markdown]
# The table shows why batching helps decode: until the ridge point each extra sequence rides on the
# same weight reads for free. Is a decode step really as cheap for many sequences as for one? Time it
# (the median decode step, `labkit.decoding.timing`) at several batch sizes, next to the roofline's
# prediction max(bytes read ÷ bandwidth, FLOPs ÷ FLOP/s):

# %%
steps = llm_anatomy.decode_step_cost(MODEL, batch_sizes=STEP_BATCHES, new_tokens=NEW_TOKENS,
                                     bandwidth_gbps=limits["bandwidth_GBps"], flops=limits["flops"], device="cpu")
top_step = steps.table.set_index("batch").loc[max(STEP_BATCHES)]
print(f"a decode step at batch {max(STEP_BATCHES)} takes {top_step.step_vs_first:.1f}× the time of batch "
      f"{STEP_BATCHES[0]} (roofline: {top_step.roofline_vs_first:.1f}×); the ridge point is at batch "
      f"{steps.table.attrs['ridge_batch']:.0f} in fp32 on this CPU")
steps.figure

# %%
steps.table.round(2)

# %% [markdown]
# Now the measured points — each precision at each batch size:

# %%
points = roofline.precision_points(MODEL, precisions=PRECISIONS, batch_sizes=ROOFLINE_BATCHES, new_tokens=NEW_TOKENS,
                                   limits=limits)
roofline.roofline_figure(points, title=f"{MODEL}: decode on this machine's roofline")

# %%
eager_b1 = points[(points.batch == ROOFLINE_BATCHES[0]) & (points.precision == "fp32")].pct_of_roofline.iloc[0]
print(f"PyTorch eager fp32 at batch {ROOFLINE_BATCHES[0]} reaches {eager_b1:.0f} % of its bandwidth bound")
points[["engine", "batch", "read_per_step_MB", "decode_tok_s", "bandwidth_bound_tok_s", "pct_of_roofline"]].round(1)

# %% [markdown]
# ## 4. Static KV cache and `torch.compile`
#
# The default (dynamic) cache grows by concatenation every step, so tensor shapes change each step.
# A **static** cache is allocated once at its maximum length; fixed shapes let `torch.compile` build
# one graph for every decode step (and, on GPUs, capture it as a CUDA graph). The first compiled call
# pays for compilation — reported separately — and all variants must produce the same tokens.

# %%
cache_cmp = roofline.static_vs_dynamic(MODEL, new_tokens=max(NEW_TOKENS, 8), compile=COMPILE, repeat=2)
cache_cmp.figure

# %%
cache_cmp.table.round(2)

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

# %%
from labkit.experiments import fast_decode

fast = fast_decode.compare_generators(MODEL, GENERATORS, prompt_tokens=FAST_PROMPT, new_tokens=FAST_NEW,
                                   batch_sizes=FAST_BATCHES, repeat=2, bandwidth_gbps=limits["bandwidth_GBps"])
fast.figure

# %%
fast_cols = ["generator", "batch", "decode_tok_s", "prefill_ms", "weight_MB", "pct_of_bound", "top1_agreement",
             "greedy_prefix_agreement", "vs_llama_cpp", "reason"]
fast.table[[c for c in fast_cols if c in fast.table]].round(2)

# %% [markdown]
# ## 6. Budgets of the big models
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
seed_holds = [r.precision for r in (llama16, llama8) if abs(r.weights_GB - SEED_LLAMA_30B_GB) <= 0.1 * SEED_LLAMA_30B_GB]
print(f"* Published: BLOOM-176B needs {specs.BLOOM_176B_BF16_GB} GB in bf16. Calculator: {bloom.weights_GB:.1f} GB of "
      f"weights. A 30B Llama: {llama16.weights_GB:.1f} GB of weights in fp16, {llama8.weights_GB:.1f} GB in int8 — "
      f"the seed's {SEED_LLAMA_30B_GB} GB is within 10 % only in: {', '.join(seed_holds) or 'neither'}.")
print(f"* Theory: below the ridge point a decode step costs the same at any batch. Measured: batch "
      f"{max(STEP_BATCHES)} costs {top_step.step_vs_first:.1f}× batch {STEP_BATCHES[0]} (roofline "
      f"{top_step.roofline_vs_first:.1f}×, ridge at batch {steps.table.attrs['ridge_batch']:.0f}).")

# %% [markdown]
# ## Exercises
#
# 1. How many KV-cache bytes does one extra token add to the lab model's (`MODEL`) cache at batch 1 in fp32?
# 2. At which batch size does fp32 decode on this machine stop being memory-bound (see the bounds table)?

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

# %%
from labkit.notebook import run

run.record({
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
    "hardware": points.attrs["hardware"],
})
