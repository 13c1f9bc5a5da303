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
# # Lab 09 — Tensor vs pipeline parallelism
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/inference-lab/inference-lab/blob/main/labs/09_tensor_vs_pipeline_parallelism.ipynb)
# [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/inference-lab/inference-lab/main?urlpath=lab/tree/labs/09_tensor_vs_pipeline_parallelism.ipynb)
#
# A model too big for one GPU has to be split. There are two ways to cut it:
#
# * **Tensor parallelism (TP)** — what DeepSpeed-Inference does: every layer is split across all GPUs
#   (Megatron-LM's scheme). All GPUs work on every layer at once, then combine their partial results
#   with an **all-reduce** — two per transformer layer.
# * **Pipeline parallelism (PP)** — what Accelerate's `device_map="auto"` does, naively: GPU 0 holds the
#   first layers, GPU 1 the next ones, and so on. A batch walks through them in turn, so **only one GPU
#   is busy at a time**. GPipe fixes part of that by cutting the batch into micro-batches; what is left
#   idle is the *bubble*.
#
# Here both run for real, with `torch.distributed` on 2 ranks (gloo on this CPU, NCCL on GPUs; the code
# is the same under `torchrun` on 8 GPUs). We check that they compute exactly what one process computes,
# count the all-reduces, draw each rank's timeline, and measure the bubble. Then a cost model, fitted on
# part of the published BLOOM-176B numbers and tested on the rest, scales the comparison up to where it matters.
#
# **By the end you can**
# - split layers across 2 ranks (tensor parallel) and a model into stages (pipeline parallel), with parity;
# - count the all-reduces and measure the pipeline bubble;
# - fit a cost model to published rows and report its error on the rows it was not fitted on.
#
# **Before this lab:** lab 07.
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

print(durations.describe("09"))  # measured: the last recorded smoke and full runs
labkit.setup()

# %% tags=["parameters"]
SMOKE = False  # True: small sizes for a quick headless run
MODEL = "tiny-llama"  # a Llama-architecture model whose heads split over 2 ranks
BATCH, SEQ = 4, 32  # for the parity and communication checks
SWEEP_BATCHES = (1, 2, 4, 8, 16)  # latency / throughput vs batch
MICROBATCHES = (1, 2, 4, 8)  # GPipe micro-batch counts for the bubble
BUBBLE_REPEAT = 7  # pipeline runs per micro-batch count (the median is reported)
REPEAT = 5  # timed forwards per measurement
DEVICE = "auto"  # "auto": the GPU when there is one, else the CPU; or "cpu", "cuda", "cuda:N"
SOLUTIONS = False  # True: the reference answers replace your code in the exercises (the tests prove each check can pass)

# %%
if SMOKE:
    BATCH, SEQ, SWEEP_BATCHES, BUBBLE_REPEAT, REPEAT = 2, 16, (1, 4), 5, 2

# %%
from labkit import devices
from labkit.parallel.launch import place_ranks

dev = devices.choose(DEVICE)  # a bad DEVICE fails here, naming the valid choices
print(dev.summary())
placement = place_ranks(dev.device, world_size=2)  # NCCL with a GPU per rank, else gloo on the CPU
print(placement.sentence())

# %% [markdown]
# ## 1. Two real ranks, one launch
#
# `run_distributed` starts two processes that join a process group, runs one function on each and
# returns what each rank returned. One launch runs everything below: imports cost seconds per process,
# the experiments themselves much less. (A rank that raises ends the run at once, with its traceback.)

# %%
import time

import pandas as pd

from labkit.experiments import parallelism
from labkit.models import specs
from labkit.parallel import costmodel, pp
from labkit.parallel.launch import run_distributed

start = time.perf_counter()
ranks = run_distributed(
    parallelism.modes_rank,
    tensor=dict(model_name=MODEL, batch=BATCH, seq=SEQ, sweep_batches=SWEEP_BATCHES, repeat=REPEAT),
    pipeline=dict(model_name=MODEL, batch=BATCH, seq=SEQ, steps=3, microbatches=min(4, BATCH), sweep_batches=SWEEP_BATCHES, repeat=REPEAT),
    bubble=dict(microbatches=MICROBATCHES, repeat=BUBBLE_REPEAT),
    world_size=2,
    backend=placement.backend,
)
print(f"2 ranks, {ranks[0].tensor.threads} thread(s) each, finished in {time.perf_counter() - start:.1f} s")

# %% [markdown]
# ## 2. Tensor parallelism: each layer, then the whole model
#
# A linear layer y = x·Aᵀ splits two ways. **Column-parallel**: each rank keeps some output features
# (rows of A) and computes its slice of y — no communication. **Row-parallel**: each rank keeps some
# input features and multiplies its slice of x; the partial results must be summed — an all-reduce.
# Megatron chains them: column then row, so the elementwise work in between needs nothing. Attention
# splits by heads (q, k, v column-parallel, the output projection row-parallel); the MLP splits its
# intermediate features. Each from-scratch layer against the unsharded original (max |difference|):

# %%
parallelism.layer_parity_table([r.tensor for r in ranks])


# %% [markdown]
# The whole model — from-scratch TP, DTensor's `parallelize_module` with the same plan, and one
# unsplit process — on the same token ids:

# %%
tp_table = ranks[0].tensor.table()
tp_table.round(6)

# %% [markdown]
# Where does each rank's time go in that forward? `torch.profiler` on each rank, during one from-scratch TP forward
# (`measure.op_time`): *communication* is the time inside the all-reduces, waiting for the other rank included —
# a rank that finishes its share first waits there for the slower one.

# %%
from labkit.experiments import where_time_goes

tp_profile = where_time_goes.per_rank([r.tensor.profile for r in ranks], f"{MODEL}: one tensor-parallel forward, per rank")
tp_comm_share = [r.ms("communication") / r.wall_ms for r in tp_profile.results]
tp_allreduce_calls = [float(r.ops[r.ops.op.str.startswith("c10d::allreduce")].calls.sum()) for r in tp_profile.results]
print(", ".join(f"rank {i}: {100 * c:.0f} % of the forward in {n:.0f} all-reduces" for i, (c, n)
                in enumerate(zip(tp_comm_share, tp_allreduce_calls, strict=True))))
tp_profile.figure

# %%
tp_profile.table.round(3)

# %% [markdown]
# ## 3. How many all-reduces? Megatron's formula
#
# Per transformer layer: one after attention (row-parallel output projection), one after the MLP
# (row-parallel down projection): **2 per layer in the forward**. The vocabulary-split embedding adds
# one more, and the vocabulary-split output layer gathers the logits once. Each all-reduce moves the
# activations: batch × seq × hidden × 4 bytes (fp32 here).

# %% [markdown]
# **Predict.** How many all-reduces did one from-scratch TP forward of `MODEL` make (all-reduces)? Reason from
# Megatron's count above and the model's number of layers (`labkit.models.get_config(MODEL).num_hidden_layers`).

# %%
prediction_all_reduces = None  # your guess (all-reduces), e.g. 20

# %%
from labkit.notebook import predict

scratch = ranks[0].tensor.runs["scratch"]
layers = scratch.layers
predict.compare(f"all-reduces in one TP forward of {MODEL}", prediction_all_reduces,
                measured=float(scratch.comm.count("all_reduce")), theory=float(2 * layers + 1), unit="all-reduces")
parallelism.megatron_table(scratch)

# %% [markdown]
# ### The same code across machines
#
# Nothing above depends on the ranks sharing a machine. On a cluster each node starts a `torchrun` agent with the
# same command and its own `--node-rank`; the agents meet at a rendezvous endpoint (the first node's address), start their
# workers, and the workers join one process group. Here two agents are started separately on this machine, as two
# nodes would be, with the endpoint on 127.0.0.1; each worker runs the same TP layer check as section 2. (Each
# agent and worker imports PyTorch anew — half a minute on 2 cores — so a smoke run only prints the commands;
# `tests/unit/test_multinode.py` runs them.)

# %%
from labkit.parallel import multinode

for node in (0, 1):
    print(f"node {node}:", " ".join(multinode.torchrun_command("labkit.parallel.multinode:tp_on_node", node,
                                                                endpoint="<node-0 address>:29500")[1:]))
nodes = [] if SMOKE else multinode.run_local_nodes("labkit.parallel.multinode:tp_on_node", nnodes=2)
pd.concat([r.table() for r in nodes]).round(8) if nodes else None

# %% [markdown]
# ## 4. Pipeline parallelism: same output, a different timeline
#
# Rank 0 holds layers 0–1 (and the embedding), rank 1 layers 2–3 (and the output head). The naive
# pipeline sends one whole batch through; GPipe (`torch.distributed.pipelining.ScheduleGPipe`) sends
# micro-batches. Both must give the unsplit model's logits:

# %%
pp_parity = ranks[-1].pipeline.max_diff()  # the last stage holds the logits
pp_parity

# %% [markdown]
# Each rank recorded what it did and when (one clock: the ranks share a machine). Three generation-like
# steps through the naive pipeline — the next step can start only when the last stage has answered, as
# in token-by-token generation.

# %% [markdown]
# **Predict.** What share of the time is each rank of the naive pipeline idle (%)? Reason from how many of the
# stages work at once while one batch walks through them, and from what a hand-over between ranks costs.

# %%
prediction_naive_idle_pct = None  # your guess (%), e.g. 30

# %%
parallelism.timeline_figure([r.pipeline.naive_events for r in ranks], "Naive pipeline (Accelerate-style): one rank busy at a time")

# %%
naive_idle = pp.idle_fractions([r.pipeline.naive_events for r in ranks])
predict.compare("naive pipeline, share of the time each rank is idle", prediction_naive_idle_pct,
                measured=100 * float(naive_idle["total"]), theory=100 * pp.bubble_formula(len(ranks), 1), unit="%")
print(f"naive pipeline: each rank idle {naive_idle['total']:.0%} of the time (at least 50 % on 2 ranks; the rest is the "
      "hand-over between ranks, as long as the compute itself for a model this small)")
parallelism.timeline_figure([r.pipeline.gpipe_events for r in ranks], f"GPipe, {min(4, BATCH)} micro-batches: the stages overlap")

# %% [markdown]
# ## 5. Latency and throughput vs batch
#
# One forward over `batch × SEQ` tokens: the unsplit model on one rank's share of the machine (one
# core: "one device"), TP over both ranks, the naive pipeline, and GPipe (up to 4 micro-batches). On a
# CPU the ranks share a memory bus, and every gloo all-reduce or send costs tens of microseconds —
# as much as a whole layer of this tiny model — so do not expect the split versions to win here. The
# point is the shape of the curves and where the time goes; section 7 scales the comparison to GPUs.

# %%
latency, throughput = parallelism.latency_tables(ranks)
latency.round(2)

# %%
from labkit import plots

plots.line(latency, "batch", list(latency.columns[1:]), f"Forward latency, {SEQ} tokens per sequence", ylabel="ms", log_x=True)

# %%
plots.line(throughput, "batch", list(throughput.columns[1:]), "Throughput", ylabel="tokens / s", log_x=True)

# %% [markdown]
# ## 6. The bubble, measured
#
# To time the bubble we need stages whose work dominates everything else: here each stage is a stack of
# 1024×1024 matmuls (a few ms per micro-batch), passing small activations. The batch is fixed and cut
# into m micro-batches. With p stages, the first stage waits for nothing but the last one idles until
# the pipe fills, and the first one idles while it drains: (p − 1) of (m + p − 1) slots.
# "measured_bubble" counts exactly that fill and drain; "measured_total_idle" adds any stall between
# micro-batches (unequal stages, other programs on this shared CPU). The formula assumes every micro-batch
# takes the same time. "replayed" is GPipe's schedule replayed with the compute times this run measured and
# free hand-offs (`labkit.parallel.bubble`): on a shared CPU a stage computes faster while it runs alone
# (fill and drain) than while both ranks compute, which shrinks the measured bubble below the formula.

# %% [markdown]
# **Predict.** With the largest micro-batch count of `MICROBATCHES` on the two stages, what share of the time is the
# bubble (%)? Reason from GPipe's count of idle slots above, with `p` stages and `m` micro-batches.

# %%
prediction_bubble_pct = None  # your guess (%), e.g. 10

# %%
bubble = parallelism.bubble_sweep(ranks)
m_most = bubble.table.set_index("microbatches").loc[max(MICROBATCHES)]
predict.compare(f"GPipe bubble with {max(MICROBATCHES)} micro-batches", prediction_bubble_pct,
                measured=100 * float(m_most.measured_bubble), theory=100 * float(m_most.formula), unit="%")
bubble.figure

# %%
bubble.table.round(3)

# %%
m_show = 4 if 4 in MICROBATCHES else MICROBATCHES[-1]
parallelism.timeline_figure([r.bubble.runs[m_show][0] for r in ranks], f"GPipe with {m_show} micro-batches on matmul stages")

# %% [markdown]
# ## 7. Scaling up on paper: BLOOM-176B on 8×A100
#
# The published benchmark (transformers-bloom-inference): greedy generation of 100 tokens, ms per
# token = wall time / (batch × 100). Accelerate (bf16) is a naive pipeline over 8 GPUs; DeepSpeed-
# Inference (fp16) is tensor parallel over 8 GPUs with fused kernels. `labkit.parallel.costmodel` adds
# up, per decode step: streaming the weights from HBM, the matmuls, KV-cache reads, all-reduces (TP) or
# activation hops (PP), and a per-layer overhead. Its free constants — each engine's matmul efficiency,
# per-layer overhead and workspace — are **fitted**: by least squares, on the *fit cells* of the published
# table (`specs.BLOOM_ROWS`, one place marks them: the bf16 and fp16 rows, and the one-sequence cell of
# Accelerate's int8 row for the one constant of LLM.int8's cost that bytes do not give). A fit reproduces the cells it
# was fitted on by construction; whether the model is worth anything shows on the **held-out** cells it never
# saw: DeepSpeed's int8 rows (priced from bytes alone: its kernels dequantize each int8 weight to fp16
# before the matmul), the rest of Accelerate's int8 row, ZeRO-Inference (ds-zero), and the same page's
# 4×A100 rows.

# %%
fit = costmodel.published_vs_predicted()
fit.figure

# %%
errors = costmodel.side_by_side(fit.table)  # in-sample and held-out errors in separate columns
errors.round(2)

# %%
fit_summary = costmodel.summary(fit.table)
for name, s in fit_summary.items():
    print(f"{name:9s}: median |error| {s['median_abs_error_pct']:.1f} % (worst {s['max_abs_error_pct']:.1f} %) over "
          f"{s['timed_cells']} timed cells; out-of-memory cells right: {s['oom_right']} of {s['oom_cells']}")

# %%
engines = costmodel.calibrate()
pd.DataFrame([{"engine": e.name, "strategy": e.strategy, "matmul efficiency": e.flop_efficiency,
               "overhead per layer (ms)": e.layer_overhead_ms, "workspace factor": e.workspace,
               "LLM.int8 ms per weight GB": e.int8_ms_per_GB,
               "consistent range": costmodel.workspace_interval(e.name) if e.name in costmodel.COMPARED else None}
              for e in engines.values()]).round(3)

# %% [markdown]
# Why the out-of-memory cells? Weights and KV cache alone would fit at those batches; the engines'
# activations and buffers (the "workspace", fitted between the last batch that ran and the first that
# did not) tip them over. Memory on the fullest GPU at every row's edge — the last batch that ran and the
# first that did not (Accelerate's fullest GPU at its edge is GPU 0, where its hooks gather every layer's
# KV cache):

# %%
parallelism.oom_table(engines).round(1)

# %% [markdown]
# ### Try it: GPUs × memory × link × batch
#
# The bars show where a token's time goes. Things to try: 2 GPUs (BLOOM no longer fits: Accelerate
# offloads to the CPU, DeepSpeed-Inference cannot run); a PCIe link (16–32 GB/s) at batch 128; 16 GPUs.

# %%
from labkit import widgets

a100, gpus = specs.A100_80GB, specs.BLOOM_BENCHMARK_GPUS  # the published benchmark's node
memories = list(dict.fromkeys([a100.memory_GB, *(g.memory_GB for g in specs.GPUS.values())]))  # datasheets
links = list(dict.fromkeys([a100.link_GBps, *(g.link_GBps for g in specs.GPUS.values())]))
widgets.panel(costmodel.predict, gpus=(1, 16), gpu_memory_gb=memories, link_GBps=links, batch=(1, 256))

# %%
costmodel.predict(gpus=gpus, batch=16).figure

# %% [markdown]
# ## 8. The seed's questions
#
# **Why does TP give more throughput than Accelerate's pipeline?** A decode step is dominated by
# reading every weight once. With TP, 8 GPUs each read 1/8 of the weights *at the same time*; the
# naive pipeline reads the same bytes one GPU after another, at one GPU's bandwidth. TP pays for it with
# 2 all-reduces per layer, but for a decode step those are small (batch × hidden numbers) and NVLink is
# fast. DeepSpeed-Inference's fused kernels cut the per-layer overhead further.
#
# **When can naive PP look competitive?** When something else dominates: weights that do not fit and
# stream from the CPU (both would crawl; TP cannot even start), a slow link (PCIe) with big batches, where
# TP's two all-reduces per layer grow with the batch while a pipeline sends one activation per GPU
# boundary — and for throughput, when the pipeline is not naive but keeps several batches in flight.

# %%
bloom = costmodel.shape("bloom-176b")
bs1 = {n: costmodel.ms_per_token(e, bloom, a100, gpus, 1) for n, e in engines.items()}
slow = costmodel.predict(gpus=gpus, link_GBps=16.0, batch=32).table.set_index("engine")
fast = costmodel.predict(gpus=gpus, link_GBps=a100.link_GBps, batch=32).table.set_index("engine")
print(f"batch 1, NVLink: weight streaming {bs1['accelerate']['weights (HBM)']:.1f} ms (pipeline) vs "
      f"{bs1['ds-inference']['weights (HBM)']:.1f} ms (TP) of {bs1['accelerate']['ms_per_token']:.1f} vs {bs1['ds-inference']['ms_per_token']:.1f} ms/token")
print(f"batch 32: TP / naive-PP speed-up {fast.loc['accelerate', 'ms_per_token'] / fast.loc['ds-inference', 'ms_per_token']:.1f}× on NVLink, "
      f"{slow.loc['accelerate', 'ms_per_token'] / slow.loc['ds-inference', 'ms_per_token']:.1f}× on a 16 GB/s link "
      f"(TP communication {slow.loc['ds-inference', 'communication_ms']:.2f} ms/token)")

# %% [markdown]
# ## What theory predicts vs what you measured

# %%
oom_cells = sorted(zip(fit.table.row[fit.table.predicted_oom], fit.table.batch[fit.table.predicted_oom], strict=True))
published = specs.PUBLISHED_MS_PER_TOKEN
print(f"* Megatron: 2 all-reduces per layer (+1 for a vocabulary-split embedding) = {2 * layers + 1}. "
      f"Measured: {scratch.comm.count('all_reduce')} (from scratch), {ranks[0].tensor.runs['dtensor'].comm.count('all_reduce')} (DTensor).")
print(f"* Splitting changes no result. Measured max |difference| vs one process: TP {tp_table.iloc[:2, 1].max():.1e}, "
      f"naive PP {pp_parity['naive']:.1e}, GPipe {pp_parity['gpipe']:.1e}.")
print(f"* Naive pipeline on 2 stages: each rank idle at least half the time. Measured: {naive_idle['total']:.0%}.")
for r in bubble.table.itertuples():
    print(f"* GPipe bubble (p − 1)/(m + p − 1) at m={r.microbatches}: {r.formula:.3f}; measured {r.measured_bubble:.3f} "
          f"(total idle {r.measured_total_idle:.3f}); the schedule replayed with the measured compute times: {r.replayed:.3f}")
ins, held = fit_summary["in-sample"], fit_summary["held-out"]
print(f"* Cost model, fitted on {ins['timed_cells']} published cells: median |error| {ins['median_abs_error_pct']:.1f} % on them "
      f"(a fit's residual, not a test). On {held['timed_cells']} held-out cells: median {held['median_abs_error_pct']:.1f} %, "
      f"worst {held['max_abs_error_pct']:.1f} %; out-of-memory cells right: {ins['oom_right'] + held['oom_right']} of "
      f"{ins['oom_cells'] + held['oom_cells']}" + (f" (wrong: {wrong})." if (wrong := [f'{r.row} {r.batch}' for r in fit.table.itertuples() if not r.oom_right]) else "."))
print(f"* Published batch-1 speed-up of ds-inference over accelerate: {published['accelerate'][1] / published['ds-inference'][1]:.1f}×; "
      f"the model's weight-streaming part alone: "
      f"{bs1['accelerate']['weights (HBM)'] / bs1['ds-inference']['weights (HBM)']:.0f}× (one GPU vs 8 at a time).")

# %% [markdown]
# ## Exercises
#
# 1. BLOOM-176B has 70 layers. How many all-reduces does one TP forward make (count the embedding)?
# 2. A GPipe pipeline over 8 GPUs runs 4 micro-batches. What fraction of the time is idle? (3 decimals)
# 3. With the widget: on a 16 GB/s link at batch 128, which engine is faster? Why?
# 4. **Implement** the forward of section 2's row-parallel linear layer on `world_size` simulated ranks in this one
#    process (Megatron-LM, Shoeybi et al. 2019, section 3): split the weight (out, in) along its input dimension,
#    let each rank multiply its slice of x's input features by its slice of the weight, sum the partial products
#    (what the all-reduce does across real ranks) and add the bias once. The check below runs your function on
#    five cases (1, 2, 4 and 8 ranks, no bias, a (batch, seq, in) activation) and compares each with
#    `torch.nn.functional.linear` on the whole weight; it also checks that no matrix product used more than one
#    rank's in / world_size input features, and names the first case that fails and how.

# %%
answer_1 = None
answer_2 = None
expected_1, expected_2 = 2 * specs.MODEL_CONFIGS["bloom-176b"]["n_layer"] + 1, round(pp.bubble_formula(8, 4), 3)
if answer_1 is not None:
    print("1: ✓" if answer_1 == expected_1 else f"1: ✗ {expected_1}")
if answer_2 is not None:
    print("2: ✓" if abs(answer_2 - expected_2) < 1e-3 else f"2: ✗ {expected_2}")

# %% tags=["exercise"]
import torch

from labkit.exercises import row_parallel
from labkit.notebook import exercise


def row_parallel_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                        world_size: int) -> torch.Tensor:  # fmt: skip
    """x: (..., in); weight: (out, in); bias: (out,) or None. Returns (..., out) = x·weightᵀ + bias."""
    # your code: chunk the weight along dim 1 and x along its last dim into world_size slices, compute each rank's
    # partial product (torch.nn.functional.linear without the bias), sum the partials, then add the bias once
    return torch.zeros(*x.shape[:-1], weight.shape[0])  # the stub: the check says what is wrong


if SOLUTIONS:  # the tests inject the reference answer here; a learner leaves SOLUTIONS = False
    from labkit.exercises.solutions.row_parallel import row_parallel_linear  # noqa: F811

exercise.report("row_parallel_linear", row_parallel.grade(row_parallel_linear), SOLUTIONS)

# %%
from labkit.notebook import run

run.record({
    "tp_profile_comm_share": tp_comm_share,
    "tp_profile_allreduce_calls": tp_allreduce_calls,
    **dev.to_dict(),
    "ranks_device": placement.ranks_device,  # every measured number below came from the ranks
    "ranks_backend": placement.backend,
    "multinode_nodes": [r.node for r in nodes],  # empty in a smoke run
    "multinode_layer_parity_max": max((max(r.result.values()) for r in nodes), default=None),
    "costmodel_source": specs.BLOOM_SOURCE,  # the cost model's numbers: fitted on, and compared with, these
    "model": MODEL,
    "layers": layers,
    "layer_parity_max": max(max(r.tensor.layer_parity.values()) for r in ranks),
    "tp_max_diff": {row["mode"]: row["max |logits − single|"] for _, row in tp_table.iterrows()},
    "all_reduces": {m: r.comm.count("all_reduce") for m, r in ranks[0].tensor.runs.items()},
    "all_reduces_by_tag": scratch.comm.by_tag("all_reduce"),
    "all_reduce_bytes": scratch.comm.nbytes("all_reduce"),
    "batch": BATCH, "seq": SEQ,
    "pp_max_diff": pp_parity,
    "naive_idle": naive_idle["total"],
    "latency_ms": latency.set_index("batch").to_dict(orient="list"),
    "bubble_measured": dict(zip(bubble.table.microbatches.astype(str), bubble.table.measured_bubble, strict=True)),
    "bubble_total_idle": dict(zip(bubble.table.microbatches.astype(str), bubble.table.measured_total_idle, strict=True)),
    "bubble_formula": dict(zip(bubble.table.microbatches.astype(str), bubble.table.formula, strict=True)),
    "bubble_replayed": dict(zip(bubble.table.microbatches.astype(str), bubble.table.replayed, strict=True)),
    "costmodel_predicted_ms": {f"{r.row}/{r.batch}": r.predicted_ms for r in fit.table.itertuples() if not r.published_oom},
    "costmodel_in_sample": sorted(f"{r.row}/{r.batch}" for r in fit.table.itertuples() if r.set == "in-sample"),
    "costmodel_oom": [f"{e}/{b}" for e, b in oom_cells],
    "costmodel_summary": fit_summary,
    "costmodel_constants": {e.name: {"flop_efficiency": e.flop_efficiency, "layer_overhead_ms": e.layer_overhead_ms,
                                     "workspace": e.workspace} for e in engines.values()},
})
