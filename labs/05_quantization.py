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
# Quantization stores weights (and sometimes activations) in fewer bits: fp32 → bf16/fp16 (2 bytes),
# int8 (1 byte), int4 (half a byte). Fewer bytes means a smaller download, less memory and — because
# generating a token reads every weight once — often faster decoding. The price is accuracy.
#
# You will quantize a real LLM (SmolLM2-135M) with every method labkit knows — PyTorch casts,
# torch.ao dynamic int8, torchao and optimum-quanto weight-only, bitsandbytes int8/NF4, ONNX Runtime
# int8/int4, and the GGUF Q4_1 file SmolLM2 ships in — and measure all three sides of the trade:
# **bytes**, **speed** (prefill latency, decode tokens/s) and **quality** (perplexity on plays the
# model never saw, top-1 agreement and KL divergence against fp32 on the same text).

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
SOURCE = "smollm2-135m"  # the model to quantize
BUDGET = 2048  # evaluation tokens from the held-out plays
DECODE_TOKENS = 32  # tokens generated per decode measurement
BATCH_SIZES = [1, 8]  # decode batch sizes

# %%
if SMOKE:  # the trained tiny BLOOM from lab 01: same quantizers, seconds instead of minutes
    SOURCE, BUDGET, DECODE_TOKENS, BATCH_SIZES = "tiny-bloom-shakespeare", 512, 8, [1]

# %% [markdown]
# ## 1. The quantizers
#
# Two families differ in *what* is quantized *when*:
#
# * **Weight-only** (torchao / quanto int8 and int4, bitsandbytes NF4, GGUF): weights are stored in
#   few bits and expanded back to floating point inside each matrix multiply; activations stay in
#   floating point. Saves memory and bandwidth; the arithmetic is unchanged.
# * **Dynamic int8** (torch.ao, ONNX Runtime): weights are int8 ahead of time, and each call also
#   quantizes the incoming activations to int8, so the matrix multiply itself runs in integer
#   arithmetic (VNNI instructions on this CPU).
# * **Block-quantized weights with integer kernels** (ONNX Runtime GenAI `genai-int8` / `genai-int4`,
#   llama.cpp's GGUF): weights in blocks of 32 with one scale each; the kernel quantizes the activation
#   vector to int8 and multiplies packed blocks directly — and the whole decode loop (KV cache kept in
#   place) runs in C++. Part of their speed is that engine rather than the bits: lab 07 §6 measures the
#   same engine in fp32 next to them. (Its model builder covers Llama-family models, not BLOOM: in smoke
#   mode, on the tiny BLOOM, those rows show the reason instead of numbers.)

# %%
import pandas as pd

from labkit import quant

from labkit.experiments import quantization

pd.DataFrame([{"quantizer": q.name, "library": q.library, "what": q.what, "devices": ", ".join(q.devices)}
              for q in quant.QUANTIZERS.values()])

# %% [markdown]
# ## 2. Measure every quantizer
#
# Rows that could not run here stay in the table with the reason in `error`.

# %%
comparison = quantization.compare_quantizers(SOURCE, budget=BUDGET, decode_tokens=DECODE_TOKENS, batch_sizes=BATCH_SIZES)
table = comparison.table
columns = ["quantizer", "library", "stored_MiB", "resident_MiB", "size_vs_fp32", "perplexity", "perplexity_vs_fp32",
           "top1_agreement", "kl_vs_fp32", "prefill_ms"] + [c for c in table.columns if c.startswith("decode_")] + ["error"]
table[[c for c in columns if c in table.columns]].round(3)

# %%
comparison.figure

# %%
quantization.pareto(table, f"decode_tok_s_b{BATCH_SIZES[0]}", f"decode tokens/s (batch {BATCH_SIZES[0]})")

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
from labkit import models

PROMPT = "What is the capital of France?" if SOURCE == "smollm2-135m" else "ROMEO:\n"
answers = {name: models.complete(q.model, comparison.tokenizer, PROMPT, max_new_tokens=16)
           for name, q in comparison.models.items() if q.model is not None}
pd.DataFrame({"answer": answers})

# %% [markdown]
# ## 5. How much memory does a model need? A calculator
#
# Weights = parameters × bytes per parameter; the KV cache grows with batch × context
# (lab 07 measures it). Check two claims: the seed's "a 30B Llama takes about 32 GB" and the published
# BLOOM-176B figure printed below (from `labkit.models.specs`).

# %%
from labkit import precision
from labkit.experiments import llm_anatomy
from labkit.models import specs

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
# ## What theory predicts vs what you measured

# %%
t = table.set_index("quantizer")
ok = t[t.error.isna()] if "error" in t else t
b = BATCH_SIZES[0]
int8 = ok.loc[[n for n in ("int8-dynamic", "int8-weight", "quanto-int8", "bnb-int8", "ort-int8", "genai-int8") if n in ok.index]]
faithful = int8[int8.perplexity_vs_fp32 <= 1.05]  # int8 paths that keep perplexity within 5 %
best_int8 = (faithful if len(faithful) else int8)[f"decode_tok_s_b{b}"].idxmax()
four_bit = ok.loc[[n for n in ("int4-weight", "bnb-nf4", "ort-int4", "genai-int4", "gguf-q4_1") if n in ok.index]]
smallest_4bit = four_bit.size_vs_fp32.idxmin()
print(f"* Theory: int8 halves bf16's bytes and quarters fp32's. Measured: int8 paths store "
      f"{int8.size_vs_fp32.min():.2f}–{int8.size_vs_fp32.max():.2f}× fp32 (the embedding table usually stays in float).")
print(f"* Theory: batch-{b} decoding reads every weight per token, so fewer bytes → faster, if the kernels keep up.\n"
      f"  Measured: int8 decode speed-ups {int8[f'decode_speedup_b{b}'].min():.2f}–{int8[f'decode_speedup_b{b}'].max():.2f}× fp32 "
      "— weight-only kernels that dequantize on the fly can cost more than the bytes they save.")
print(f"* Theory: quantizing activations too (dynamic int8, W8A8) is riskier than weights alone, because LLM activations "
      f"have outlier channels.\n  Measured perplexity vs fp32: "
      + ", ".join(f"{n} {v:.2f}×" for n, v in int8.perplexity_vs_fp32.items())
      + f". Fastest int8 path within 5 %: {best_int8} ({int8.loc[best_int8, f'decode_speedup_b{b}']:.2f}× fp32 decode).")
print(f"* Theory: 4 bits ≈ 1/8 of fp32. Measured: the smallest 4-bit path ({smallest_4bit}) is "
      f"{four_bit.loc[smallest_4bit, 'size_vs_fp32']:.2f}× fp32; 4-bit perplexity vs fp32 "
      f"{four_bit.perplexity_vs_fp32.min():.2f}–{four_bit.perplexity_vs_fp32.max():.2f}×.")
if SOURCE == "smollm2-135m":
    print("* Note: labkit's fp32 SmolLM2 is the shipped Q4_1 GGUF dequantized — its weights already sit on a 4-bit grid, "
          "so gguf-q4_1 matches it exactly and every other quantizer adds its error on top.")

# %% [markdown]
# ## Exercises
#
# 1. How many GB does Llama-30B need for its weights in int4? Compute it from the parameter count in
#    the claims table.
# 2. Which quantizer here gives the fastest batch-1 decoding?

# %%
answer_1 = None  # GB
answer_2 = None  # quantizer name
expected_1 = claims[claims.model == "llama-30b"].params_B.iloc[0] * precision.bytes_per_value("int4")
expected_2 = ok[f"decode_tok_s_b{b}"].idxmax()
if answer_1 is not None:
    print("1: ✓" if abs(answer_1 - expected_1) < 0.5 else f"1: ✗ {expected_1:.1f} GB")
if answer_2 is not None:
    print("2: ✓" if answer_2 == expected_2 else f"2: ✗ it is {expected_2}")

# %%
from labkit.notebook import run

run.record({
    "source": SOURCE,
    "quantizers": list(t.index),
    "errors": {n: e for n, e in t.error.dropna().items()} if "error" in t else {},
    "size_vs_fp32": ok.size_vs_fp32.to_dict(),
    "perplexity": ok.perplexity.to_dict(),
    "perplexity_vs_fp32": ok.perplexity_vs_fp32.to_dict(),
    "top1_agreement": ok.top1_agreement.to_dict(),
    f"decode_speedup_b{b}": ok[f"decode_speedup_b{b}"].dropna().to_dict(),
    "best_int8": best_int8,
    "smallest_4bit": smallest_4bit,
    "claims_GB": {f"{r.model}/{r.precision}": r.weights_GB for r in claims.itertuples()},
    "hardware": table.attrs["hardware"],
})
