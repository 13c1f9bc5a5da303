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
#
# **By the end you can**
# - say what your machine is (cores, memory, GPU) and which device each lab will measure;
# - measure memory bandwidth and turn it into a speed limit for LLM decoding;
# - read a latency distribution (median, p99) instead of trusting one number.
#
# **Before this lab:** none: this is the first one.
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

print(durations.describe("00"))  # measured: the last recorded smoke and full runs
labkit.setup()

# %% tags=["parameters"]
SMOKE = False  # True: small sizes for a quick headless run (tests, `labkit run-labs --smoke`)
BANDWIDTH_MIB = 512  # buffer for the memory-bandwidth probe: larger than any CPU cache (a GPU reads at least 1 GiB)
REPEAT = 30  # timed repeats per benchmark
DEVICE = "auto"  # "auto": the GPU when there is one, else the CPU; or "cpu", "cuda", "cuda:N"
SOLUTIONS = False  # True: the reference answers replace your code in the exercises (the tests prove each check can pass)

# %%
if SMOKE:
    BANDWIDTH_MIB, REPEAT = 256, 10

# %%
from labkit import devices

dev = devices.choose(DEVICE)  # a bad DEVICE fails here, naming the valid choices
print(dev.summary())

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
# speed of an LLM is set by how fast memory can be read, not by arithmetic. Measure it here, on the
# device chosen above: the time of a matrix-vector product (what a decode step is made of) over a matrix far
# larger than the device's caches. The bound it gives holds only for the device whose memory was read, so
# every row names that device.

# %% [markdown]
# **Predict.** How fast does this device read its memory (GB/s)? Reason from what section 1 says it is: a laptop's or a
# server's DRAM (how many channels?) or a GPU's own memory, which is built for bandwidth.

# %%
prediction_bandwidth = None  # your guess (GB/s), e.g. 20

# %%
from labkit import models, precision
from labkit.notebook import predict
from labkit.experiments import roofline

from labkit import measure

bounds = roofline.batch1_bounds("smollm2-135m", precisions=("fp32", dev.half), devices=[dev.device],
                                size_mib=max(BANDWIDTH_MIB, measure.DEFAULT_BANDWIDTH_MIB[dev.type]))
here = bounds.set_index("precision").loc["fp32"]
bandwidth = here.read_GBps  # GB/s of this device's memory (the exercise below uses it)
for row in bounds.itertuples():
    print(f"read bandwidth {row.read_GBps:.1f} GB/s, measured on {row.measured_on} ({row.device}): a decoder with "
          f"{row.weights_GB:.2f} GB of {row.precision} weights (SmolLM2-135M) there produces at most "
          f"{row.bound_tok_s:.0f} tokens/s at batch 1 (lab 07 checks this bound)")
predict.compare(f"read bandwidth of {here.measured_on}", prediction_bandwidth, measured=float(bandwidth), unit="GB/s")
bounds.round(2)

# %% [markdown]
# ## 3b. The other limit: arithmetic, and the ridge point
#
# A product of two $n \times n$ matrices does $2n^3$ FLOPs on $3n^2$ values: enough arithmetic per byte that
# its time is set by the multipliers, not by memory. Timed in fp32 and in this device's half-precision float
# (`dev.half`; on a GPU that product runs on the tensor cores), it gives the device's FLOP/s. Divided by the
# bandwidth above it gives the **ridge point**: the FLOPs a kernel must do per byte it reads before arithmetic,
# not memory, limits it. A decode step does two FLOPs per weight and sequence, so it reaches the ridge only at
# a batch of $\text{ridge} \times \text{bytes per weight} / 2$ sequences (lab 07 measures where it really turns).

# %% [markdown]
# **Predict.** How many times faster does this device multiply matrices in its half-precision float (`dev.half`) than
# in fp32 (×)? Reason from section 1: tensor cores, AMX or AVX-512 BF16 multiply half-precision floats natively;
# without them each value is converted to fp32 first.

# %%
prediction_half_speedup = None  # your guess (×), e.g. 2

# %%
measured_bw = measure.Bandwidth(bandwidth, here.device, here.measured_on)  # section 3's number, with its device
limits = roofline.machine_limits(bandwidth_gbps=measured_bw, device=dev.device, half=dev.half, repeat=REPEAT // 3)
compute = pd.DataFrame([
    {"precision": p, "GFLOP/s": flops / 1e9, "ridge FLOP/byte": ridge,
     "decode batch at the ridge": ridge * precision.bytes_per_value(p) / 2}
    for p, flops, ridge in (("fp32", limits["flops"], limits["ridge_flop_per_byte"]),
                            (limits["half"], limits["flops_half"], limits["ridge_half_flop_per_byte"]))])
compute.attrs["measured_on"] = limits["measured_on"]
print(f"measured on {limits['measured_on']} ({limits['device']}): {bandwidth:.1f} GB/s read; fp32 matmul "
      f"{limits['flops'] / 1e9:.0f} GFLOP/s, {limits['half']} matmul {limits['flops_half'] / 1e9:.0f} GFLOP/s")
predict.compare(f"{limits['half']} ÷ fp32 matmul FLOP/s", prediction_half_speedup,
                measured=float(limits["flops_half"] / limits["flops"]), unit="×")
compute.round(1)

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
# * a training run's throughput (lab 01) is its total tokens over its total time.
#
# Multi-process timings follow the same rule: every rank warms up and repeats, and the slowest rank's
# median counts (`labkit.parallel.launch.time_on_all_ranks` for a parallel step, `labkit.decoding.timing`
# on each rank for lab 11's ZeRO-Inference streams).

# %% [markdown]
# **Predict.** How many times the median time does the p99 of tiny BLOOM's forward pass take (×)? Reason from what
# else shares this machine while it runs: other processes, the OS scheduler, caches, clock frequency.

# %%
prediction_p99_over_median = None  # your guess (×), e.g. 1.5

# %%
from labkit.experiments import training_vs_inference

latency = training_vs_inference.forward_latency("tiny-bloom", batch_size=1, seq_len=32, repeat=REPEAT,
                                               loaded=models.load_cached("tiny-bloom", device=dev.device))
ms = latency.table.iloc[0].to_dict()  # statistics in milliseconds
spread = ms["p99"] / ms["median"]
predict.compare("tiny BLOOM forward, p99 ÷ median", prediction_p99_over_median, measured=float(spread),
                theory=1.0, unit="×")  # the theory below: the same computation takes the same time, every run
latency.table.round(3)

# %%
latency.figure

# %% [markdown]
# Try other models, batch sizes and lengths. Every lab has panels like this one: the controls call
# a plain labkit function (here `training_vs_inference.forward_latency`), which you can also call yourself.

# %%
from labkit import widgets

widgets.panel(training_vs_inference.forward_latency, model=training_vs_inference.TINY_MODELS, batch_size=(1, 64), seq_len=(8, 512, 8), repeat=(5, 100),
              device=widgets.fixed(dev.device))

# %% [markdown]
# ## What theory predicts vs what you measured
#
# * **Theory:** batch-1 decoding of a model with *W* bytes of weights cannot beat bandwidth / *W*
#   tokens per second. **Measured:** the bound printed in section 3, for the device named there.
# * **Theory:** a half-precision float halves the bytes and, where the hardware multiplies it natively (a GPU's
#   tensor cores, a CPU's AMX or AVX-512 BF16), multiplies faster than fp32. **Measured:** the table below.
# * **Theory:** repeated runs of the same computation should take the same time. **Measured:** the
#   spread between median and p99 below — caused by caches, the OS scheduler and frequency scaling.

# %%
pd.DataFrame([
    {"quantity": "batch-1 bound, fp32 (tokens/s)", "theory": "bandwidth ÷ fp32 weight bytes",
     "measured": here.bound_tok_s},
    {"quantity": f"{limits['half']} ÷ fp32 weight bytes", "theory": 0.5,
     "measured": bounds.set_index("precision").weights_GB[dev.half] / here.weights_GB},
    {"quantity": f"{limits['half']} ÷ fp32 matmul FLOP/s", "theory": "> 1 where 16-bit is native",
     "measured": limits["flops_half"] / limits["flops"]},
    {"quantity": "ridge point, fp32 (FLOP/byte)", "theory": "FLOP/s ÷ bytes/s",
     "measured": limits["ridge_flop_per_byte"]},
], columns=["quantity", "theory", "measured"]).set_index("quantity").round(2)

# %%
print(f"on {dev.label}: p99 / median = {spread:.2f}: the slowest 1 % of calls take {100 * (spread - 1):.0f} % "
      "longer than a typical one")

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
# ## Exercises
#
# 1. This device's batch-1 bound for SmolLM2 in its **16-bit float** (`dev.half`, half the bytes): what is it?
#    Put your number in `answer` and run the cell.
# 2. **Implement** `percentile(samples, q)`, the statistic behind section 4's median and p99: sort the samples, find
#    the fractional rank q/100 × (n − 1) (counted from 0), and interpolate linearly between the two samples around
#    it. The check below runs your function on eight cases (odd and even counts, unsorted input, q = 0 and 100, a
#    single sample, the p99 of a long tail) and compares each with `numpy.percentile`, which computed the
#    table's numbers; it names the first case that fails and how.

# %%
answer = None  # tokens/s
half_bound = bandwidth / (models.estimate_memory("smollm2-135m", dev.half).bytes / 1e9)
if answer is not None:
    print("✓ right" if abs(answer - half_bound) / half_bound < 0.05 else f"✗ not quite — it is {half_bound:.0f} tokens/s")

# %% tags=["exercise"]
from labkit.exercises import percentile as percentile_check
from labkit.notebook import exercise


def percentile(samples: list[float], q: float) -> float:
    """samples: one or more numbers, any order; 0 <= q <= 100. Returns the q-th percentile (the samples' unit)."""
    # your code: sort, rank = q / 100 * (n - 1), then a straight line between the samples at floor(rank) and the
    # one after it (there is none after the last: q = 100, or a single sample)
    return sum(samples) / len(samples)  # the stub returns the mean: the check says what is wrong


if SOLUTIONS:  # the tests inject the reference answer here; a learner leaves SOLUTIONS = False
    from labkit.exercises.solutions.percentile import percentile  # noqa: F811

exercise.report("percentile", percentile_check.grade(percentile), SOLUTIONS)

# %%
run.record({
    "cpu": hw.cpu_model,
    "logical_cores": hw.logical_cores,
    "cuda": hw.cuda_available,
    **dev.to_dict(),
    "bandwidth_GBps": bandwidth,
    "bandwidth_measured_on": here.measured_on,
    "bandwidth_devices": sorted(set(bounds.device)),
    "smollm2_fp32_bound_tok_s": here.bound_tok_s,
    "smollm2_half_bound_tok_s": bounds.set_index("precision").bound_tok_s[dev.half],
    "flops_fp32": limits["flops"],
    "flops_half": limits["flops_half"],
    "flops_half_precision": limits["half"],
    "flops_measured_on": limits["flops"].device,
    "ridge_flop_per_byte": limits["ridge_flop_per_byte"],
    "ridge_half_flop_per_byte": limits["ridge_half_flop_per_byte"],
    "labs_available": available_labs,
    "tiny_bloom_forward_median_ms": ms["median"],
    "tiny_bloom_forward_p99_ms": ms["p99"],
})
