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
# # Lab 00 — Start here
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/inference-lab/inference-lab/blob/main/labs/00_start_here.ipynb)
# [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/inference-lab/inference-lab/main?urlpath=lab/tree/labs/00_start_here.ipynb)
#
# **Inference Lab** is about what happens *after* training: how a trained model is run to answer
# requests, quickly and cheaply. Every lab measures its claims on **your** machine — a laptop CPU,
# a Colab GPU or an 8-GPU server — and shows what theory predicted next to what you measured.
#
# This notebook checks your machine, shows the map of the labs and takes a first measurement.

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
SMOKE = False  # True: small sizes for a quick headless run (tests, `labkit run-labs --smoke`)
BANDWIDTH_MIB = 512  # buffer for the memory-bandwidth probe: larger than any CPU cache
REPEAT = 30  # timed repeats per benchmark

# %%
if SMOKE:
    BANDWIDTH_MIB, REPEAT = 256, 10

# %% [markdown]
# ## 1. What does this machine have?
#
# `labkit doctor` in a terminal prints the same table. Labs that need something you lack (a GPU,
# two GPUs, DeepSpeed) say so and show what they do instead — nothing is silently skipped.

# %%
import pandas as pd

from labkit import hardware

hw = hardware.detect()
pd.DataFrame(hw.rows(), columns=["item", "value"]).set_index("item")

# %%
for capability in ("cuda", "multi-gpu", "avx512_bf16", "onnxruntime", "deepspeed"):
    try:
        hardware.require(capability)
        print(f"✓ {capability}")
    except hardware.CapabilityMissing as missing:
        print(f"✗ {missing}")

# %% [markdown]
# ## 2. The map of the labs
#
# | # | Lab | What you measure |
# |---|---|---|
# | 00 | Start here | your hardware, memory bandwidth, a first latency distribution |
# | 01 | Lifecycle: training vs inference | train a tiny BLOOM on Shakespeare; time and memory of a training vs an inference step; batch size vs latency and throughput |
# | 02 | Inference system architecture | request path, queue, batching, model repository and versions, metrics |
# | 03 | Conversion and graph optimization | PyTorch → ONNX / OpenVINO / TorchScript; parity; fusions and op counts |
# | 04 | Runtimes compared | eager, TorchScript, torch.compile, ONNX Runtime, OpenVINO, TensorRT: latency and speed-up |
# | 05 | Quantization and model size | fp32 → bf16 / int8 / int4: size, speed, perplexity |
# | 06 | Decoding strategies | greedy, beam, top-k, top-p, penalties, speculative decoding, step by step |
# | 07 | LLM anatomy | KV cache, prefill vs decode, the memory-bandwidth roofline |
# | 08 | Big models with Accelerate | meta-device init, device maps, CPU/disk offload |
# | 09 | Tensor vs pipeline parallelism | real 2-rank runs, communication, bubbles, a cost model to 8×A100 |
# | 10 | ZeRO-1/2/3 | per-rank memory: formula vs measured |
# | 11 | DeepSpeed-Inference and ZeRO-Inference | AutoTP, kernel injection, ZeRO-3 inference |
# | 12 | LLM serving | synchronous vs dynamic vs continuous batching under load |
# | 13 | Capstone: BLOOM-176B on paper | memory and cost model vs the published benchmark |
#
# The notebooks present in your copy:

# %%
from labkit.notebook import run

available_labs = [p.name for p in run.list_labs()]
available_labs

# %% [markdown]
# ## 3. A first measurement: memory bandwidth
#
# Generating one token of a large language model reads every weight once, so on most machines the
# speed of an LLM is set by how fast memory can be read, not by arithmetic. Measure it here: the
# time of a matrix-vector product (what a decode step is made of) over a matrix far larger than the CPU caches.
# The bound it gives holds only for the device whose memory was read, so every row names that device
# (a GPU, when there is one, gets its own row).

# %%
from labkit import models
from labkit.experiments import roofline

bounds = roofline.batch1_bounds("smollm2-135m", precisions=("fp32",), size_mib=BANDWIDTH_MIB)
cpu = bounds[bounds.device == "cpu"].iloc[0]
bandwidth = cpu.read_GBps  # GB/s of this CPU's memory (the exercise below uses it)
for row in bounds.itertuples():
    print(f"read bandwidth {row.read_GBps:.1f} GB/s, measured on {row.measured_on} ({row.device}): a decoder with "
          f"{row.weights_GB:.2f} GB of fp32 weights (SmolLM2-135M) there produces at most {row.bound_tok_s:.0f} "
          "tokens/s at batch 1 (lab 07 checks this bound)")
bounds.round(2)

# %% [markdown]
# ## 4. Latency is a distribution, not a number
#
# One forward pass of a tiny BLOOM model, timed many times after a warm-up. The median is what a
# typical request sees; p90/p99 are what your unluckiest users see. Every latency or decode speed
# the labs report is, like this one, a median over repeated runs after a warm-up (`labkit.measure`
# for one call, `labkit.decoding.timing` for generation), never a single run, except where the
# quantity itself is measured another way:
#
# * a load test (labs 02 and 12) reports percentiles and means over the many requests of one run;
# * a one-off cost (a conversion, a compilation, a cold start, a model load) happens once;
# * a training run's throughput (lab 01) is its total tokens over its total time;
# * two multi-process timings are one timed run each: lab 11's ZeRO-Inference generation and
#   lab 13's burst of all-reduces.

# %%
from labkit.experiments import training_vs_inference

latency = training_vs_inference.forward_latency("tiny-bloom", batch_size=1, seq_len=32, repeat=REPEAT)
ms = latency.table.iloc[0].to_dict()  # statistics in milliseconds
latency.table.round(3)

# %%
latency.figure

# %% [markdown]
# Try other models, batch sizes and lengths. Every lab has panels like this one: the controls call
# a plain labkit function (here `training_vs_inference.forward_latency`), which you can also call yourself.

# %%
from labkit import widgets

widgets.panel(training_vs_inference.forward_latency, model=training_vs_inference.TINY_MODELS, batch_size=(1, 64), seq_len=(8, 512, 8), repeat=(5, 100))

# %% [markdown]
# ## What theory predicts vs what you measured
#
# * **Theory:** batch-1 decoding of a model with *W* bytes of weights cannot beat bandwidth / *W*
#   tokens per second. **Measured:** the bound printed in section 3, for the device named there.
# * **Theory:** repeated runs of the same computation should take the same time. **Measured:** the
#   spread between median and p99 below — caused by caches, the OS scheduler and frequency scaling.

# %%
spread = ms["p99"] / ms["median"]
print(f"p99 / median = {spread:.2f}: the slowest 1 % of calls take {100 * (spread - 1):.0f} % longer than a typical one")

# %% [markdown]
# ## How to run the labs elsewhere
#
# * **Locally:** `make lab` (CPU PyTorch) or `make lab GPU=1` (CUDA PyTorch) starts JupyterLab on
#   127.0.0.1 and prints its URL with the access token.
# * **Colab:** the badge at the top; pick *Runtime → Change runtime type → GPU* for the GPU parts.
#   The first cell of every lab installs the lab and prepares the models.
# * **Binder:** the Binder badge (CPU only, a few GB of memory: the tiny models and SmolLM2 fit).
# * **Headless:** `labkit run-labs --smoke` executes every lab with small parameters and writes HTML
#   reports to `reports/`.
#
# ### Exercise
# This CPU's batch-1 bound for SmolLM2 in **bfloat16** (half the bytes): what is it? Put your
# number in `answer` and run the cell.

# %%
answer = None  # tokens/s
bf16_bound = bandwidth / (models.estimate_memory("smollm2-135m", "bfloat16").bytes / 1e9)
if answer is not None:
    print("✓ right" if abs(answer - bf16_bound) / bf16_bound < 0.05 else f"✗ not quite — it is {bf16_bound:.0f} tokens/s")

# %%
run.record({
    "cpu": hw.cpu_model,
    "logical_cores": hw.logical_cores,
    "cuda": hw.cuda_available,
    "bandwidth_GBps": bandwidth,
    "bandwidth_measured_on": cpu.measured_on,
    "bandwidth_devices": bounds.device.tolist(),
    "smollm2_fp32_bound_tok_s": cpu.bound_tok_s,
    "labs_available": available_labs,
    "tiny_bloom_forward_median_ms": ms["median"],
    "tiny_bloom_forward_p99_ms": ms["p99"],
})
