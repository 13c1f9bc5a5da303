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
#
# **By the end you can**
# - time several engines fairly (warm-up, alternating rounds, medians) over batch × sequence;
# - say where an engine's speed-up comes from: fused attention, static shapes, threads;
# - weigh an engine's cold start against its steady-state speed.
#
# **Before this lab:** lab 03.
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

    print("\n".join(setup_colab(onnxruntime_gpu=True)))
assert sys.version_info >= (3, 11), f"Inference Lab needs Python 3.11+, this is {sys.version}"

import labkit
from labkit.notebook import durations

print(durations.describe("04"))  # measured: the last recorded smoke and full runs
labkit.setup()

# %% tags=["parameters"]
SMOKE = False  # True: small sizes for a quick headless run
WORKLOADS = ["tiny-bloom", "digits-cnn", "smollm2-135m"]
BATCH_SIZES = [1, 8, 32]
SEQ_LENS = [32, 128]
THREADS = [1, 2]
REPEAT = 20  # timed runs per measurement, after warm-up
ROUNDS = 5  # engines take turns this many times (drift lands on all alike)
DEVICE = "auto"  # "auto": the GPU when there is one, else the CPU; or "cpu", "cuda", "cuda:N"
SOLUTIONS = False  # True: the reference answers replace your code in the exercises (the tests prove each check can pass)

# %%
if SMOKE:
    WORKLOADS, BATCH_SIZES, SEQ_LENS, THREADS, REPEAT = ["tiny-bloom", "digits-cnn"], [1], [32], [1, 2], 10
    ROUNDS = 2

# %%
from labkit import devices

dev = devices.choose(DEVICE)  # a bad DEVICE fails here, naming the valid choices
print(dev.summary())

# %% [markdown]
# ## 1. Which engines run here?
#
# Engines that cannot run on the lab's device stay in every table with the reason: OpenVINO's plugin here is the
# CPU's, TensorRT needs an NVIDIA GPU, and ONNX Runtime runs on a GPU only through the CUDA provider of the
# `onnxruntime-gpu` build.

# %%
from labkit import engines
from labkit.experiments import engine_comparison

engines.engine_table(dev.device)

# %% [markdown]
# ## 2. Latency and speed-up over eager
#
# For each model: every engine at every shape, with the default 2 threads, all on the lab's device. Speed-up =
# eager's median latency ÷ the engine's, at the same shape **and on the same device**: on a GPU, the baseline is
# GPU eager. Every engine takes its inputs from the host and returns its output to it, so on a GPU each call
# includes the same two copies (and waits for the GPU's kernels to finish).
#
# A shared machine speeds up and slows down while you measure. So all engines of one shape are prepared
# first and then timed in alternating rounds (`measure.benchmark_rounds`): a slow patch of time hits
# every engine alike instead of whichever happened to run then — the ratios are what to trust.
# (Strictly alternating single calls would be worse: each runtime keeps its own thread pool spinning
# after a call, so the next runtime would pay for it.)

# %% [markdown]
# **Predict.** How many times faster than eager does TorchScript run tiny-bloom at the first shape of `BATCH_SIZES`
# and `SEQ_LENS` (×)? Reason from what it changes: the same kernels, called from a recorded graph instead of from
# Python.

# %%
prediction_torchscript = None  # your guess (×), e.g. 1.2

# %%
import pandas as pd

from labkit.notebook import predict

results = {}
for workload in WORKLOADS:
    batches = BATCH_SIZES if workload != "smollm2-135m" else BATCH_SIZES[:2]
    results[workload] = engine_comparison.compare_engines(workload, batch_sizes=batches, seq_lens=SEQ_LENS, threads=(2,), repeat=REPEAT, rounds=ROUNDS,
                                                          device=dev.device)
table = pd.concat([r.table for r in results.values()])
script_first = table[(table.workload == "tiny-bloom") & (table.engine == "torchscript")
                     & (table.batch_size == BATCH_SIZES[0]) & (table.seq_len == SEQ_LENS[0])]
predict.compare(f"TorchScript ÷ eager speed, tiny-bloom at batch {BATCH_SIZES[0]} × {SEQ_LENS[0]}",
                prediction_torchscript, measured=float(script_first.speedup_vs_eager.iloc[0]), unit="×")
table[["workload", "engine", "device", "batch_size", "seq_len", "available", "median_ms", "p90_ms", "speedup_vs_eager", "cold_start_s", "reason"]].round(3)

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
#
# OpenVINO runs on the CPU here, so on a GPU this comparison runs on the CPU, eager included (the cell says so).

# %%
options_device, note = engine_comparison.device_for("openvino", dev.device)
print(note or f"timed on {dev.label}")
variants = {
    "ORT, plain export": ("onnxruntime", {"fused_attention": False}),
    "ORT, fused attention": ("onnxruntime", {}),
    "OpenVINO, dynamic shapes": ("openvino", {"static_shapes": False}),
    "OpenVINO, static shapes": ("openvino", {}),
}
variants = {k: v for k, v in variants.items() if v[0] in engines.available_engines(options_device)}  # skip what is not installed
options = engine_comparison.compare_variants("tiny-bloom", variants, batch_size=1, seq_len=SEQ_LENS[0], threads=2, repeat=5 * REPEAT, rounds=ROUNDS,
                                             device=options_device)
options.table[["variant", "device", "provider", "median_ms", "p90_ms", "speedup_vs_eager"]].round(3)

# %%
options.figure

# %% [markdown]
# ### Where eager's extra time goes: a profiler, not a guess
#
# ONNX Runtime beats eager on the same model and input. Faster arithmetic, or less work around the arithmetic? One
# forward of tiny-bloom at batch 1 runs under each engine's own profiler (`torch.profiler` for eager, ONNX Runtime's
# for its session; `measure.op_time`), on the CPU (ONNX Runtime here is its CPU build). Each operator's own time
# goes to *matrix multiply* (eager BLOOM's attention products included), *attention* (ONNX Runtime's fused
# `Attention` node), *communication* (none here), *other operators* (norms, GELU, softmax, reshapes, copies) and
# *outside operators*: the wall time between them (Python and module calls in eager; the session's own scheduling in
# ONNX Runtime). A profiler slows what it watches: the table gives each engine's unprofiled median beside the
# profiled wall time.

# %%
from labkit.experiments import where_time_goes

profiled = where_time_goes.eager_vs_onnxruntime("tiny-bloom", batch_size=1, seq_len=SEQ_LENS[0], repeat=REPEAT)
profiled.figure

# %%
eager_t, ort_t = profiled.results  # one OpTime each: "PyTorch eager", "ONNX Runtime"
extra_ms = eager_t.wall_ms - ort_t.wall_ms
extra_in_matmul = eager_t.ms("matrix multiply") - ort_t.ms("matrix multiply")
print(f"eager {eager_t.wall_ms:.2f} ms vs ONNX Runtime {ort_t.wall_ms:.2f} ms per forward (profiled; unprofiled "
      f"{eager_t.unprofiled_ms:.2f} vs {ort_t.unprofiled_ms:.2f} ms): of eager's extra {extra_ms:.2f} ms, "
      f"{extra_in_matmul:.2f} ms is in matrix multiplies and {extra_ms - extra_in_matmul:.2f} ms in everything else")
profiled.table.round(3)

# %%
profiled.ops.round(4)

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
# Build time against steady state: an engine that saves *s* ms per request over eager pays back its cold start
# after cold start ÷ *s* requests (never, if it saves nothing).

# %%
payback = engine_comparison.payback(results["tiny-bloom"].table)
payback.round(3)

# %% [markdown]
# ## 4. One thread or two?
#
# Each runtime splits large operators across its intra-op threads. On a 2-core machine the best case
# is 2× — small operators gain less because splitting costs time too. Intra-op threads are CPU threads, so this
# section runs on the CPU whatever the lab's device.

# %% [markdown]
# **Predict.** How many times faster does ONNX Runtime run tiny-bloom with the last of `THREADS` than with the first
# (×)? Reason from the ideal (the ratio of the thread counts) and from how small tiny-bloom's operators are.

# %%
prediction_threads_gain = None  # your guess (×), e.g. 1.5

# %%
if dev.is_cuda:
    print(f"Intra-op threads are a CPU matter: this section runs on the CPU on purpose, not on {dev.label}.")
thread_runs = engine_comparison.compare_engines("tiny-bloom", engines=["onnxruntime", "openvino"], batch_sizes=(1,),
                                       seq_lens=(SEQ_LENS[-1],), threads=THREADS, repeat=REPEAT, rounds=ROUNDS, device="cpu")
threads_table = thread_runs.table[thread_runs.table.available][["engine", "threads", "median_ms"]]
threads_pivot = threads_table.pivot(index="engine", columns="threads", values="median_ms")
threads_pivot["gain_2_vs_1"] = threads_pivot[THREADS[0]] / threads_pivot[THREADS[-1]]
predict.compare(f"ONNX Runtime, {THREADS[-1]} threads ÷ {THREADS[0]}, speed", prediction_threads_gain,
                measured=float(threads_pivot.gain_2_vs_1["onnxruntime"]), theory=THREADS[-1] / THREADS[0],
                unit="×")  # theory: perfect splitting across the threads
threads_pivot.round(3)

# %% [markdown]
# ## 5. Try it yourself

# %%
from labkit import widgets

widgets.panel(engine_comparison.engine_latency, workload=list(engines.WORKLOADS), engine=[e for e in engines.ENGINES if e != "torch-eager"],
              batch_size=(1, 64), seq_len=(8, 256, 8), threads=(1, 4), precision=["fp32", dev.half], repeat=(5, 100),
              device=widgets.fixed(dev.device))

# %% [markdown]
# ## 6. How far could a graph runtime go?
#
# A runtime removes Python dispatch, fuses small ops and plans memory — but it still has to do every
# matrix multiply. Time ONNX Runtime running *only* tiny-bloom's weight MatMuls (same weights, same shapes,
# one session) next to the whole model: eager ÷ (MatMuls alone) is the speed-up it would reach if every
# other op were free, and the MatMuls' share says how much is left to fuse away. All three run on one device:
# the lab's when ONNX Runtime can run there, else the CPU (the cell says which).

# %% [markdown]
# **Predict.** How many times faster than eager does ONNX Runtime run the whole tiny-bloom at batch 1 and the first
# of `SEQ_LENS` (×)? Reason from what it removes (Python dispatch, small ops) and what it cannot (the MatMuls).

# %%
prediction_ort_speedup = None  # your guess (×), e.g. 2

# %%
ceiling_device, note = engine_comparison.device_for("onnxruntime", dev.device)
print(note or f"timed on {dev.label}")
ceiling = engine_comparison.matmul_ceiling("tiny-bloom", batch_size=1, seq_len=SEQ_LENS[0], threads=2, repeat=5 * REPEAT, rounds=ROUNDS,
                                           device=ceiling_device)
predict.compare("ONNX Runtime ÷ eager speed, tiny-bloom", prediction_ort_speedup,  # theory: all but the MatMuls free
                measured=float(ceiling["ort_speedup"]), theory=float(ceiling["ceiling_speedup"]), unit="×")
pd.Series(ceiling)

# %% [markdown]
# ## 7. On a GPU: ONNX Runtime's CUDA provider, TensorRT, and fp16 engines
#
# On a GPU, section 2 already ran every engine that runs there against GPU eager: ONNX Runtime through its CUDA
# provider (when `onnxruntime-gpu` is installed) and TensorRT (when `tensorrt` is). Here the same comparison runs in
# fp16, the precision GPU tensor cores are built for: eager, torch.compile and TensorRT in fp16 against eager in fp16
# on the same GPU, with each engine's build time next to its steady state. (ONNX Runtime runs the fp32 export
# only here, so its row says so.)

# %%
from IPython.display import display

fp16_speedups = {}
if dev.gpu_section("ONNX Runtime CUDA provider, TensorRT and fp16 engines against GPU eager"):
    for engine in ("onnxruntime", "tensorrt"):
        rows = table[(table.engine == engine) & (table.workload == "tiny-bloom")]
        print(f"{engine} on {dev.label}: " + (", ".join(f"{s:.2f}×" for s in rows.speedup_vs_eager) + " GPU eager (fp32)"
                                              if rows.available.all() else f"not run — {rows.reason.iloc[0]}"))
    half = engine_comparison.compare_engines("tiny-bloom", engines=["torch-compile", "onnxruntime", "tensorrt"], batch_sizes=BATCH_SIZES,
                                             seq_lens=SEQ_LENS[:1], precision="fp16", repeat=REPEAT, rounds=ROUNDS, device=dev.device)
    fp16_speedups = {f"{r.engine}/b{r.batch_size}": r.speedup_vs_eager for r in half.table[half.table.available].itertuples()}
    eager32 = table[(table.workload == "tiny-bloom") & (table.engine == "torch-eager") & (table.seq_len == SEQ_LENS[0])].set_index("batch_size").median_ms
    eager16 = half.table[half.table.engine == "torch-eager"].set_index("batch_size").median_ms
    print(f"eager fp16 vs eager fp32 on {dev.label}: " + ", ".join(f"batch {b}: {eager32[b] / eager16[b]:.2f}× faster" for b in eager16.index if b in eager32.index))
    display(half.table[["engine", "device", "precision", "batch_size", "available", "median_ms", "speedup_vs_eager", "cold_start_s", "reason"]].round(3))
    display(engine_comparison.payback(half.table).round(3))

# %% [markdown]
# ## What theory predicts vs what you measured

# %%
bloom = results["tiny-bloom"].table
ran = bloom[bloom.available]
eager_ms = ran[ran.engine == "torch-eager"].median_ms.iloc[0]
script_ms = ran[ran.engine == "torchscript"].median_ms.iloc[0]
ort_b1 = ran[(ran.engine == "onnxruntime") & (ran.batch_size == 1)].speedup_vs_eager
ort_says = f"{ort_b1.iloc[0]:.2f}× eager" if len(ort_b1) else "not run on " + dev.label
best = ran.loc[ran.speedup_vs_eager.idxmax()]
print(f"* Theory: for a small model at batch 1, eager spends much of its time in Python dispatch, which a "
      f"graph runtime removes.\n  Measured on {dev.label}: TorchScript (same kernels, no Python) saves {eager_ms - script_ms:.2f} ms of "
      f"{eager_ms:.2f} ms; ONNX Runtime is {ort_says}.")
print(f"* Best engine for tiny-bloom at batch {int(best.batch_size)} × {int(best.seq_len)}: {best.engine}, {best.speedup_vs_eager:.2f}× eager.")
if len(BATCH_SIZES) > 1 and len(ort_b1):
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
# 3. **Implement** the path every ONNX Runtime row above took: export a PyTorch module to ONNX with its batch axis
#    dynamic (`torch.onnx.export`, into an `io.BytesIO`), open an `onnxruntime.InferenceSession` on the CPU, build
#    the feed from the session's input names (`session.get_inputs()`) and return its output for `inputs`, whose
#    batch may differ from the export example's. The check below runs your function on five small models (an MLP,
#    two inputs, batch 1 → 4, a conv net, int64 token ids) and compares each output with the module's own eager
#    output; it also checks that `InferenceSession.run` really ran, and names the first case that fails and how.

# %%
answer_1 = None  # number of requests (or float("inf") if never)
answer_2 = None  # engine name
compiled = payback[(payback.engine == "torch-compile") & (payback.batch_size == 1) & (payback.seq_len == SEQ_LENS[0])]
expected_1 = compiled.break_even_requests.iloc[0] if len(compiled) else float("inf")
cnn = results["digits-cnn"].table
cnn = cnn[cnn.available & (cnn.batch_size == 1)]
expected_2 = cnn.loc[cnn.speedup_vs_eager.idxmax(), "engine"]
if answer_1 is not None:
    print("1: ✓" if abs(answer_1 - expected_1) <= 0.05 * expected_1 else f"1: ✗ about {expected_1:,.0f} requests")
if answer_2 is not None:
    print("2: ✓" if answer_2 == expected_2 else f"2: ✗ it is {expected_2}")

# %% tags=["exercise"]
import io

import numpy as np
import onnxruntime as ort
import torch

from labkit.exercises import onnx_runtime
from labkit.notebook import exercise


def run_with_onnxruntime(model: torch.nn.Module, example: tuple, inputs: tuple) -> np.ndarray:
    """example, inputs: one tensor per forward argument (the batch, axis 0, may differ). Returns the session's output."""
    # your code: torch.onnx.export(model.eval(), example, buffer, input_names=..., dynamic_axes=... or
    # dynamic_shapes=...), ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"]), then
    # session.run(None, {name: array}) with one numpy array per name in session.get_inputs()
    return model(*inputs).detach().numpy()  # the stub runs PyTorch eager: the check says what is wrong


if SOLUTIONS:  # the tests inject the reference answer here; a learner leaves SOLUTIONS = False
    from labkit.exercises.solutions.onnx_runtime import run_with_onnxruntime  # noqa: F811

exercise.report("run_with_onnxruntime", onnx_runtime.grade(run_with_onnxruntime), SOLUTIONS)

# %%
from labkit.notebook import run

speedups = {f"{r.workload}/{r.engine}/b{r.batch_size}s{r.seq_len}": r.speedup_vs_eager for r in table[table.available].itertuples()}
b1 = lambda engine: ran[(ran.engine == engine) & (ran.batch_size == 1)].speedup_vs_eager  # noqa: E731
run.record({
    "engines": sorted(table.engine.unique()),
    "profile_ms": {r.engine: {"wall": r.wall_ms, "unprofiled": r.unprofiled_ms, **r.table.set_index("category").ms.to_dict()}
                   for r in profiled.results},
    "profile_eager_matmul_calls": float(eager_t.ops[eager_t.ops.category == "matrix multiply"].calls.sum()),
    "unavailable": {r.engine: r.reason for r in table[~table.available].drop_duplicates("engine").itertuples()},
    "speedups": speedups,
    "ort_speedup_tiny_bloom_b1": float(b1("onnxruntime").iloc[0]) if len(b1("onnxruntime")) else None,
    "openvino_speedup_tiny_bloom_b1": float(b1("openvino").iloc[0]) if len(b1("openvino")) else None,
    "max_relative_diff": float(max(table.relative_diff.max(), options.table.relative_diff.max())),
    "option_speedups": {r.variant: float(r.speedup_vs_eager) for r in options.table.itertuples()},
    "threads_gain": threads_pivot.gain_2_vs_1.to_dict(),
    "matmul_ceiling": ceiling,
    "cold_start_s": cold.to_dict(),
    "break_even_requests": {f"{r.engine}/b{r.batch_size}s{r.seq_len}": r.break_even_requests if r.saved_ms > 0 else None  # None: never
                            for r in payback.itertuples()},
    "engine_rows": table[table.available][["workload", "engine", "device", "provider", "batch_size", "seq_len", "threads"]].to_dict("records"),
    "option_rows": options.table[["variant", "engine", "device", "provider"]].to_dict("records"),
    "options_device": str(options_device),
    "threads_devices": sorted(set(thread_runs.table.device)),
    "fp16_speedups": fp16_speedups,
    "hardware": bloom.attrs["hardware"],
    **dev.to_dict(),
})
