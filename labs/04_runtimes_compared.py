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
# # Lab 04 — Runtimes compared
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/inference-lab/inference-lab/blob/main/labs/04_runtimes_compared.ipynb)
# [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/inference-lab/inference-lab/main?urlpath=lab/tree/labs/04_runtimes_compared.ipynb)
#
# The online half of an inference engine: the runtime that executes the graph. You will run the
# same models through PyTorch eager, TorchScript, torch.compile (Inductor), ONNX Runtime and
# OpenVINO — and TensorRT or ONNX Runtime's CUDA provider where a GPU is present. (TorchScript is deprecated in
# favour of `torch.export`, per the PyTorch docs' TorchScript Language Reference; it is here because models
# deployed in it still exist.) You will measure:
#
# * **steady-state latency** (median and p90 after warm-up) over batch size × sequence length,
# * **cold start**: what the first request pays for export, optimisation and compilation,
# * **threads**: how each runtime uses one core vs two.
#
# Every session is first checked against PyTorch's output (parity); an engine that computed
# something else would stop the lab with the numbers.

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
WORKLOADS = ["tiny-bloom", "digits-cnn", "smollm2-135m"]
BATCH_SIZES = [1, 8, 32]
SEQ_LENS = [32, 128]
THREADS = [1, 2]
REPEAT = 20  # timed runs per measurement, after warm-up
ROUNDS = 5  # engines take turns this many times (drift lands on all alike)

# %%
if SMOKE:
    WORKLOADS, BATCH_SIZES, SEQ_LENS, THREADS, REPEAT = ["tiny-bloom", "digits-cnn"], [1], [32], [1, 2], 10
    ROUNDS = 2

# %% [markdown]
# ## 1. Which engines run here?
#
# Engines that cannot run on this machine stay in every table with the reason.

# %%
from labkit import engines
from labkit.experiments import engine_comparison

engines.engine_table()

# %% [markdown]
# ## 2. Latency and speed-up over eager
#
# For each model: every engine at every shape, with the default 2 threads. Speed-up = eager's
# median latency ÷ the engine's, at the same shape.
#
# A shared machine speeds up and slows down while you measure. So all engines of one shape are prepared
# first and then timed in alternating rounds (`measure.benchmark_rounds`): a slow patch of time hits
# every engine alike instead of whichever happened to run then — the ratios are what to trust.
# (Strictly alternating single calls would be worse: each runtime keeps its own thread pool spinning
# after a call, so the next runtime would pay for it.)

# %%
import pandas as pd

results = {}
for workload in WORKLOADS:
    batches = BATCH_SIZES if workload != "smollm2-135m" else BATCH_SIZES[:2]
    results[workload] = engine_comparison.compare_engines(workload, batch_sizes=batches, seq_lens=SEQ_LENS, threads=(2,), repeat=REPEAT, rounds=ROUNDS)
table = pd.concat([r.table for r in results.values()])
table[["workload", "engine", "batch_size", "seq_len", "available", "median_ms", "p90_ms", "speedup_vs_eager", "cold_start_s", "reason"]].round(3)

# %%
results["tiny-bloom"].figure

# %%
results["digits-cnn"].figure

# %% [markdown]
# ### What the two fastest engines were given
#
# Two choices in how labkit prepares them, each worth measuring on its own:
#
# * **ONNX Runtime** runs the export in which BLOOM's attention is one `Attention` node (lab 03, section 7);
#   `fused_attention=False` gives the plain export.
# * **OpenVINO** compiles for the shapes it will see (`static_shapes=True`, as a fixed-shape deployment
#   or a TensorRT optimisation profile would): memory is planned and kernels are picked once, not per call.
#   The price: that session refuses any other shape.

# %%
variants = {
    "ORT, plain export": ("onnxruntime", {"fused_attention": False}),
    "ORT, fused attention": ("onnxruntime", {}),
    "OpenVINO, dynamic shapes": ("openvino", {"static_shapes": False}),
    "OpenVINO, static shapes": ("openvino", {}),
}
variants = {k: v for k, v in variants.items() if v[0] in engines.available_engines()}  # skip what is not installed
options = engine_comparison.compare_variants("tiny-bloom", variants, batch_size=1, seq_len=SEQ_LENS[0], threads=2, repeat=5 * REPEAT, rounds=ROUNDS)
options.table[["variant", "provider", "median_ms", "p90_ms", "speedup_vs_eager"]].round(3)

# %%
options.figure

# %% [markdown]
# ## 3. Cold start: the first request's bill
#
# Steady-state speed is bought with work up front: exporting to ONNX, optimising the graph,
# compiling kernels. A server pays it once per model load; a notebook or a serverless function
# may pay it on every start. (labkit caches ONNX exports in `LABKIT_CACHE` and Inductor caches its
# kernels, so a second run of this lab shows a smaller bill: delete both caches to see the full one.)

# %%
engine_comparison.cold_start_figure(results["tiny-bloom"].table)

# %% [markdown]
# ## 4. One thread or two?
#
# Each runtime splits large operators across its intra-op threads. On a 2-core machine the best case
# is 2× — small operators gain less because splitting costs time too.

# %%
thread_runs = engine_comparison.compare_engines("tiny-bloom", engines=["onnxruntime", "openvino"], batch_sizes=(1,),
                                       seq_lens=(SEQ_LENS[-1],), threads=THREADS, repeat=REPEAT, rounds=ROUNDS)
threads_table = thread_runs.table[thread_runs.table.available][["engine", "threads", "median_ms"]]
threads_pivot = threads_table.pivot(index="engine", columns="threads", values="median_ms")
threads_pivot["gain_2_vs_1"] = threads_pivot[THREADS[0]] / threads_pivot[THREADS[-1]]
threads_pivot.round(3)

# %% [markdown]
# ## 5. Try it yourself

# %%
from labkit import widgets

widgets.panel(engine_comparison.engine_latency, workload=list(engines.WORKLOADS), engine=[e for e in engines.ENGINES if e != "torch-eager"],
              batch_size=(1, 64), seq_len=(8, 256, 8), threads=(1, 4), precision=["fp32", "bf16"], repeat=(5, 100))

# %% [markdown]
# ## 6. How far could a graph runtime go?
#
# A runtime removes Python dispatch, fuses small ops and plans memory — but it still has to do every
# matrix multiply. Time ONNX Runtime running *only* tiny-bloom's weight MatMuls (same weights, same shapes,
# one session) next to the whole model: eager ÷ (MatMuls alone) is the speed-up it would reach if every
# other op were free, and the MatMuls' share says how much is left to fuse away.

# %%
ceiling = engine_comparison.matmul_ceiling("tiny-bloom", batch_size=1, seq_len=SEQ_LENS[0], threads=2, repeat=5 * REPEAT, rounds=ROUNDS)
pd.Series(ceiling).round(3)

# %% [markdown]
# ## What theory predicts vs what you measured

# %%
bloom = results["tiny-bloom"].table
ran = bloom[bloom.available]
eager_ms = ran[ran.engine == "torch-eager"].median_ms.iloc[0]
script_ms = ran[ran.engine == "torchscript"].median_ms.iloc[0]
ort_speedup = ran[ran.engine == "onnxruntime"].speedup_vs_eager.iloc[0]
best = ran.loc[ran.speedup_vs_eager.idxmax()]
print(f"* Theory: for a small model at batch 1, eager spends much of its time in Python dispatch, which a "
      f"graph runtime removes.\n  Measured: TorchScript (same kernels, no Python) saves {eager_ms - script_ms:.2f} ms of "
      f"{eager_ms:.2f} ms; ONNX Runtime is {ort_speedup:.2f}× eager.")
print(f"* Best engine for tiny-bloom at batch {int(best.batch_size)} × {int(best.seq_len)}: {best.engine}, {best.speedup_vs_eager:.2f}× eager.")
if len(BATCH_SIZES) > 1:
    ort = ran[(ran.engine == "onnxruntime") & (ran.seq_len == SEQ_LENS[0])].set_index("batch_size").speedup_vs_eager
    print(f"* Theory: the fixed per-call overhead matters less as the batch grows, so speed-ups shrink.\n"
          f"  Measured (ONNX Runtime): {ort.iloc[0]:.2f}× at batch {ort.index[0]} vs {ort.iloc[-1]:.2f}× at batch {ort.index[-1]}.")
cold = ran.groupby("engine").cold_start_s.max()
print(f"* Theory: compiling costs seconds. Measured cold start: torch.compile {cold.get('torch-compile', float('nan')):.1f} s, "
      f"ONNX Runtime {cold.get('onnxruntime', float('nan')):.1f} s (export included), eager {cold.get('torch-eager', float('nan')):.2f} s.")
print(f"* Theory: a graph runtime cannot make the matrix multiplies go away. Measured: ORT's {ceiling['matmuls']} weight "
      f"MatMuls alone take {ceiling['matmuls_only_ms']:.2f} ms = {100 * ceiling['matmul_share']:.0f} % of its "
      f"{ceiling['ort_ms']:.2f} ms, so even with everything else free it would be {ceiling['ceiling_speedup']:.2f}× eager "
      f"(it is {ceiling['ort_speedup']:.2f}×).")

# %% [markdown]
# ## Exercises
#
# 1. How many requests at batch 1 must tiny-bloom serve before torch.compile's cold start is paid
#    back by its faster steady state (if it is faster at all)? Compute it from the table.
# 2. Which engine is fastest for the CNN at batch 1, and by how much over eager?

# %%
answer_1 = None  # number of requests (or float("inf") if never)
answer_2 = None  # engine name
row = lambda e: ran[(ran.engine == e) & (ran.batch_size == 1) & (ran.seq_len == SEQ_LENS[0])].iloc[0]
saved_ms = row("torch-eager").median_ms - row("torch-compile").median_ms
expected_1 = row("torch-compile").cold_start_s * 1e3 / saved_ms if saved_ms > 0 else float("inf")
cnn = results["digits-cnn"].table
cnn = cnn[cnn.available & (cnn.batch_size == 1)]
expected_2 = cnn.loc[cnn.speedup_vs_eager.idxmax(), "engine"]
if answer_1 is not None:
    print("1: ✓" if abs(answer_1 - expected_1) <= 0.05 * expected_1 else f"1: ✗ about {expected_1:,.0f} requests")
if answer_2 is not None:
    print("2: ✓" if answer_2 == expected_2 else f"2: ✗ it is {expected_2}")

# %%
from labkit.notebook import run

speedups = {f"{r.workload}/{r.engine}/b{r.batch_size}s{r.seq_len}": r.speedup_vs_eager for r in table[table.available].itertuples()}
run.record({
    "engines": sorted(table.engine.unique()),
    "unavailable": {r.engine: r.reason for r in table[~table.available].drop_duplicates("engine").itertuples()},
    "speedups": speedups,
    "ort_speedup_tiny_bloom_b1": float(ran[(ran.engine == "onnxruntime") & (ran.batch_size == 1)].speedup_vs_eager.iloc[0]),
    "openvino_speedup_tiny_bloom_b1": float(ran[(ran.engine == "openvino") & (ran.batch_size == 1)].speedup_vs_eager.iloc[0]),
    "max_relative_diff": float(max(table.relative_diff.max(), options.table.relative_diff.max())),
    "option_speedups": {r.variant: float(r.speedup_vs_eager) for r in options.table.itertuples()},
    "threads_gain": threads_pivot.gain_2_vs_1.to_dict(),
    "matmul_ceiling": ceiling,
    "cold_start_s": cold.to_dict(),
    "hardware": bloom.attrs["hardware"],
})
