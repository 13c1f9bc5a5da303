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
# # Lab 10 — ZeRO 1/2/3: sharding training state across data-parallel ranks
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/inference-lab/inference-lab/blob/main/labs/10_zero_sharding.ipynb)
# [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/inference-lab/inference-lab/main?urlpath=lab/tree/labs/10_zero_sharding.ipynb)
#
# **On Binder:** this lab starts two DeepSpeed ranks beside the notebook, and together they need about all the
# memory Binder gives a user (the tests measure it: `make test` prints each lab's peak). Binder may stop the kernel
# here; run it on Colab or on your machine (`make lab`).
#
# Plain data parallelism keeps a full copy of the *model states* — parameters, gradients and optimizer
# states — on every device. With Adam the optimizer states dominate: for every parameter a master copy,
# a momentum and a variance. **ZeRO** (Rajbhandari et al., 2019) removes the redundancy step by step:
#
# | stage | sharded across the N data-parallel ranks | sharded model states per device (Ψ params) |
# |---|---|---|
# | stage 0 (plain DP) | nothing | $(P + G + K)\,\Psi$ |
# | stage 1 | optimizer states | $(P + G)\,\Psi + K\Psi / N$ |
# | stage 2 | + gradients | $P\Psi + (G + K)\,\Psi / N$ |
# | stage 3 | + parameters | $(P + G + K)\,\Psi / N$ |
#
# That is the paper's formula, and it is not all a stage-3 rank holds: to run a layer it all-gathers that
# layer's parameters whole, and in the backward it holds the layer's whole gradient until the reduce-scatter.
# The largest layer (in most LLMs the token embedding) sets that **gathered-layer** term, $2P\,\Psi_{\text{largest}}$,
# which does not shrink with N. DeepSpeed's own estimator (`estimate_zero3_model_states_mem_needs` in
# `deepspeed/runtime/zero/stage3.py`) adds it; so does every number below. Activations and communication buckets
# come on top of both.
#
# PyTorch has its own versions: `ZeroRedundancyOptimizer` (≈ stage 1) and FSDP2's `fully_shard`. With its default
# `reshard_after_forward=True` FSDP2 frees each layer after its forward and gathers it again in the backward:
# ≈ stage 3. With `reshard_after_forward=False` it keeps the gathered parameters from the forward to the backward
# and skips the second all-gather — ≈ stage 2: whole parameters during the step, sharded gradients and optimizer
# states. See the [`fully_shard` docs](https://docs.pytorch.org/docs/stable/distributed.fsdp.fully_shard.html) for
# the parameter; the [FSDP2 migration guide](https://docs.pytorch.org/tutorials/intermediate/FSDP_tutorial.html#fsdp1-to-fsdp2-migration-guide)
# maps FSDP1's `SHARD_GRAD_OP` to `reshard_after_forward=False`, and FSDP1 names that strategy's hybrid variant
# `_HYBRID_SHARD_ZERO2`.
# Below, real DeepSpeed and real PyTorch train the same model on two real ranks and we read the bytes each rank
# holds straight from the engine's and optimizer's tensors. The ranks are gloo processes on the CPU, on a GPU
# machine too: the bytes per rank do not depend on the device, one GPU cannot give two ranks a device each, and
# DeepSpeed runs there with its CPU accelerator.
#
# **Byte convention.** The paper uses mixed precision: $P = 2$, $G = 2$, $K = 12$ (fp32 master + m + v).
# DeepSpeed's estimator counts $G = 4$: its stage-3 gradient partition is fp32. Here everything is fp32, so
# $P = 4$ and $G = 4$; DeepSpeed's ZeRO optimizer *still* keeps an fp32 master copy of its partition, so $K = 12$
# at every sharded stage. At stage 0, and with PyTorch's optimizers, the fp32 parameters are updated directly: no
# master copy, $K = 8$. The formula takes P, G and K as arguments, so each row uses its own.
#
# **By the end you can**
# - say what ZeRO-1, ZeRO-2 and ZeRO-3 shard and compute the bytes each rank holds;
# - measure those bytes on real DeepSpeed ranks and on FSDP2;
# - measure the communication each stage adds per step.
#
# **Before this lab:** lab 09.
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

print(durations.describe("10"))  # measured: the last recorded smoke and full runs
labkit.setup()

# %% tags=["parameters"]
SMOKE = False  # True: small sizes for a quick headless run
HIDDEN = 2048  # MLP width: parameters = (HIDDEN² + HIDDEN) × LAYERS
LAYERS = 6
STEPS = 3
WORLD_SIZE = 2
DEVICE = "auto"  # "auto": the GPU when there is one, else the CPU; or "cpu", "cuda", "cuda:N"
SOLUTIONS = False  # True: the reference answers replace your code in the exercises (the tests prove each check can pass)

# %%
if SMOKE:
    HIDDEN, LAYERS = 1024, 4

# %%
from labkit import devices
from labkit.parallel.launch import place_ranks

dev = devices.choose(DEVICE)  # a bad DEVICE fails here, naming the valid choices
print(dev.summary())
placement = place_ranks(dev.device, WORLD_SIZE, nccl_ok=False,  # DeepSpeed's CPU path: gloo ranks on the CPU
                        cpu_reason="bytes per rank do not depend on the device, and gloo's sockets show what is sent")
print(placement.sentence())

# %% [markdown]
# ## 1. The formula at scale
#
# Per-device GB for the ZeRO paper's example and three published architectures (the paper's convention), each
# with its largest layer read from its config the way DeepSpeed finds it (the most parameters one module owns).

# %%
import pandas as pd

from labkit import plots
from labkit.experiments import zero_sharding
from labkit.models import specs
from labkit.parallel import zero

PAPER_EXAMPLE = "ZeRO paper, 7.5 B"  # figure 1: 7.5 B parameters on 64 devices
sizes = {name: zero.model_size(name) for name in ("llama-2-7b", "llama-3-70b", "bloom-176b")}
print(pd.DataFrame([{"model": n, "params_B": s.params / 1e9, "largest_layer": s.largest_layer,
                     "largest_layer_M": s.largest_layer_params / 1e6} for n, s in sizes.items()]).round(2).to_string())
table = zero.memory_table({PAPER_EXAMPLE: (7.5e9, zero.EXAMPLE_LARGEST_LAYER),
                           **{n: (s.params, s.largest_layer_params) for n, s in sizes.items()}},
                          dp_degrees=(1, 2, 4, 8, 16, 64))
example = table[table.model == PAPER_EXAMPLE]
curves = example.pivot(index="dp_degree", columns="stage", values="total_GB").rename(columns=lambda s: f"stage {s}")
curves["stage 3, sharded states only"] = example[example.stage == 3].set_index("dp_degree").sharded_states_GB
fig = plots.line(curves.reset_index(), "dp_degree", list(curves.columns),
                 "7.5 B parameters: GB per device vs data-parallel degree", ylabel="GB per device",
                 log_x=True, log_y=True)
fig

# %%
stage3 = table[(table.stage == 3) & table.dp_degree.isin([8, 64])]
stage3[["model", "dp_degree", "sharded_states_GB", "gathered_GB", "total_GB"]].round(2)

# %% [markdown]
# The paper's example, and DeepSpeed's own estimate of it (its convention, printed with it: bytes per sharded
# parameter and per parameter of the largest layer):

# %%
deepspeed_pgk = zero.CONVENTIONS["DeepSpeed ZeRO-3 estimator (fp32 grad partition)"]
paper_3 = zero.zero_memory(7.5e9, 3, 64, zero.EXAMPLE_LARGEST_LAYER)
deepspeed_3 = zero.zero_memory(7.5e9, 3, 64, zero.EXAMPLE_LARGEST_LAYER, bytes_per_param=deepspeed_pgk[0],
                               bytes_per_grad=deepspeed_pgk[1], bytes_per_optimizer_state=deepspeed_pgk[2])
print(f"7.5 B parameters on 64 devices, stage 3: {paper_3.sharded_states / 1e9:.2f} GB sharded model states (the "
      f"paper's formula) + {paper_3.gathered / 1e9:.2f} GB gathered embedding = {paper_3.total / 1e9:.2f} GB/device")
print(f"with DeepSpeed's convention, P/G/K = {'/'.join(map(str, deepspeed_pgk))}: {sum(deepspeed_pgk)} bytes per "
      f"sharded parameter and 2P = {2 * deepspeed_pgk[0]} per parameter of the largest layer: "
      f"{deepspeed_3.total / 1e9:.2f} GB")
bloom_8 = table[(table.model == "bloom-176b") & (table.dp_degree == 8) & (table.stage == 3)].iloc[0]
print(f"BLOOM-176B on 8 devices: the gathered embedding alone is {bloom_8.gathered_GB:.1f} GB of the "
      f"{bloom_8.total_GB:.1f} GB per device")

# %% [markdown]
# ## 2. Measured on real ranks: DeepSpeed stages 0–3, ZeroRedundancyOptimizer, FSDP2
#
# Each method trains a fresh copy of the same MLP for a few AdamW steps on the same data. After the last
# backward every rank reports the bytes of the tensors it holds, deduplicated by storage (views into
# DeepSpeed's flat buffers count once); during the last forward it also reports the most whole parameters it
# held at once beyond its shards (`gathered_MB`). DeepSpeed would normally use its own compiled CPU Adam
# (`DeepSpeedCPUAdam`, built into `TORCH_EXTENSIONS_DIR` on first use — labkit points that into its cache so
# it happens once per machine); here a client `torch.optim.AdamW` avoids that compile.

# %% [markdown]
# **Predict.** With `WORLD_SIZE` ranks, how many times less model state (parameters, gradients, optimizer states)
# does a DeepSpeed stage-3 rank hold than a stage-0 rank (×)? Reason from the table at the top: at stage 3 every
# term is divided by N, at stage 1 only the optimizer's; mind the byte convention (a sharded stage keeps an fp32
# master copy: $K = 12$ against $K = 8$ at stage 0).

# %%
prediction_stage3_shrink = None  # your guess (×), e.g. 3

# %%
import time

from labkit.notebook import predict

start = time.perf_counter()
measured = zero_sharding.train_all_methods(hidden=HIDDEN, layers=LAYERS, steps=STEPS, world_size=WORLD_SIZE,
                                           backend=placement.backend)
measure_s = time.perf_counter() - start
df = measured.table
print(f"{df.params_M.iloc[0]:.1f} M parameters, {WORLD_SIZE} ranks, {measure_s:.0f} s for all methods")
by_method = df.set_index("method")
predict.compare("model state per rank, DeepSpeed stage 0 ÷ stage 3", prediction_stage3_shrink,
                measured=float(by_method.total_MB["deepspeed-0"] / by_method.total_MB["deepspeed-3"]),
                theory=float(by_method.formula_MB["deepspeed-0"] / by_method.formula_MB["deepspeed-3"]), unit="×")
measured.figure

# %%
df[["method", "stage", "bytes P/G/K", "params_MB", "grads_MB", "optimizer_MB", "total_MB", "formula_MB",
    "measured/formula", "gathered_MB", "formula_gathered_MB", "grads_kept_after_backward_MB", "other_buffers_MB",
    "final_loss"]].round(3)

# %% [markdown]
# Three details the table shows:
#
# * **Gradients at stage 1.** DeepSpeed's stage 1 holds the full gradient at the end of backward (that is what
#   the formula counts), then all-reduces it and keeps only its partition for the step —
#   `grads_kept_after_backward_MB`. At stage 2 a rank never holds it: gradients are reduced bucket by bucket while the
#   backward runs.
# * **The gathered layer.** DeepSpeed's stage 3 and FSDP2 hold one whole `Linear` while it runs (`gathered_MB`),
#   on top of their shards: the largest layer's parameters, `formula_gathered_MB` (in the backward its gradient
#   joins it). Here it is small next to the model; for an LLM it is the embedding (section 1).
# * **Other buffers** (communication buckets) are not model state; the paper calls them residual memory.
#
# Every method reaches the same loss: sharding changes where the bytes live, not the arithmetic.

# %%
print("final loss per method:", df.set_index("method").final_loss.round(6).to_dict())
loss_spread = float(df.final_loss.max() - df.final_loss.min())
print(f"largest difference: {loss_spread:.2e}")
t = df.set_index("method")
for method in ("deepspeed-3", "torch-fsdp2"):
    print(f"{method}: gathered {t.loc[method, 'gathered_MB']:.2f} MB in the forward, the largest layer's "
          f"parameters {t.loc[method, 'formula_gathered_MB']:.2f} MB")

# %% [markdown]
# ## 3. Communication per stage
#
# Every collective a rank calls is counted from inside PyTorch's dispatcher (the same counter sees DeepSpeed,
# DDP, ZeroRedundancyOptimizer and FSDP2) with the size of its tensor (an all-gather's output, a reduce-scatter's
# input). Two conventions turn that into bytes a rank sends, and they disagree:
#
# * `comm_paper_MB`, the ZeRO paper's: an all-reduce counts $2\times$ its tensor (a reduce-scatter then an
#   all-gather), the others $1\times$. With it the paper says the first three stages move $2\Psi$ per step and
#   stage 3 moves $3\Psi$ (`comm_formula_MB`: parameters gathered in the forward *and* again in the backward).
# * `comm_ring_MB`, what a ring algorithm sends from each rank: $2(N-1)/N$ of an all-reduce's tensor — $1\times$
#   at $N = 2$, approaching $2\times$ only for many ranks — and $(N-1)/N$ for the other collectives.
#
# `comm_sent_MB` is neither: it is measured, the bytes each rank handed to its gloo sockets during the step
# (`labkit.parallel.wire`, from Linux's `/proc/self/io`).

# %% [markdown]
# **Predict.** How many MB does each rank send per step with plain data parallelism (`deepspeed-0`: one all-reduce of
# the fp32 gradients) (MB)? Reason from the parameter count printed in section 2 and what a ring all-reduce sends
# from each rank, $2(N-1)/N$ of its tensor.

# %%
prediction_dp_sent_MB = None  # your guess (MB), e.g. 50

# %%
zero_sharding.comm_figure(df)

# %%
df[["method", "comm_paper_MB", "comm_ring_MB", "comm_sent_MB", "comm_formula_MB", "comm_ops"]].round(2)

# %%
n = WORLD_SIZE
dp = t.loc["deepspeed-0"]
print(f"plain data parallel (one all-reduce of the gradients) on {n} ranks: paper convention "
      f"{dp.comm_paper_MB:.1f} MB, ring 2(N−1)/N = {2 * (n - 1) / n:g}× → {dp.comm_ring_MB:.1f} MB, "
      f"measured {dp.comm_sent_MB:.1f} MB sent")
predict.compare("MB each rank sends per step, plain data parallel (deepspeed-0)", prediction_dp_sent_MB,
                measured=float(dp.comm_sent_MB), theory=float(dp.comm_ring_MB), unit="MB")
for method in ("deepspeed-3", "torch-fsdp2"):
    rs = t.loc[method, "comm_ops"].get("reduce_scatter", 0) / 1e6
    print(f"{method}: ring {t.loc[method, 'comm_ring_MB']:.1f} MB, measured {t.loc[method, 'comm_sent_MB']:.1f} MB; "
          f"its reduce-scatter of {rs:.1f} MB sent {t.loc[method, 'comm_sent_MB'] - t.loc[method, 'comm_ring_MB']:.1f}"
          f" MB more than the ring's (N−1)/N")

# %% [markdown]
# The measured bytes follow the ring, not the paper's $2\times$: at $N = 2$ an all-reduce sends its tensor once.
# One exception, printed above: gloo sends a reduce-scatter's whole input, as much as an all-reduce, where the
# ring algorithm (Thakur, Rabenseifner & Gropp 2005) sends $(N-1)/N$ of it.
#
# DeepSpeed's stage 1 and stage 2 move $3\Psi$ on this path in the paper's convention, not its $2\Psi$: they
# all-reduce the gradient buckets ($2\Psi$) and then all-gather the updated parameters ($\Psi$); a reduce-scatter
# would need only $\Psi$ for the gradients. `ZeroRedundancyOptimizer` does the same (DDP all-reduce + a broadcast of
# each shard). At stage 3, DeepSpeed is configured here with `stage3_max_reuse_distance = 0` so every parameter is
# released after use, as the paper assumes; DeepSpeed's default keeps parameters that will be reused soon and skips
# part of the backward all-gather.
#
# ## 4. Explore
#
# Model size × largest layer × data-parallel degree × stage, with the byte convention as controls.

# %%
from labkit import widgets

widgets.panel(zero.memory_explorer, params_billion=(0.1, 200.0, 0.1), largest_layer_million=(0.0, 4000.0, 0.1),
              dp_degree=(1, 128), stage=[0, 1, 2, 3], bytes_per_param=[2, 4], bytes_per_grad=[2, 4],
              bytes_per_optimizer_state=[12, 8, 16], auto=True)

# %%
bloom = sizes["bloom-176b"]
zero.memory_explorer(params_billion=bloom.params / 1e9, largest_layer_million=bloom.largest_layer_params / 1e6,
                     dp_degree=8, stage=3).figure

# %% [markdown]
# ## What theory predicts vs what you measured

# %%
for method, row in t.iterrows():
    print(f"* {method:22s} stage {row.stage}, P/G/K = {row['bytes P/G/K']}: formula {row.formula_MB:8.2f} MB, "
          f"measured {row.total_MB:8.2f} MB per rank ({row['measured/formula']:.3f}×), "
          f"gathered {row.gathered_MB:.2f} MB")
for method in ("deepspeed-0", "deepspeed-2", "deepspeed-3", "torch-fsdp2"):
    print(f"* {method}: communication formula {t.loc[method, 'comm_formula_MB']:.1f} MB (paper convention), ring "
          f"{t.loc[method, 'comm_ring_MB']:.1f} MB, measured {t.loc[method, 'comm_sent_MB']:.1f} MB sent per step")
ratios = t["measured/formula"]

# %% [markdown]
# ## Exercises
#
# 1. For BLOOM-176B with the paper's convention, what is the smallest data-parallel degree at which stage 3 fits
#    the model states *and* the gathered embedding in an A100-80GB? Use `zero.zero_memory` with
#    `sizes["bloom-176b"]`, then check with the widget. How many devices would the paper's formula alone suggest?
# 2. Set `bytes_per_optimizer_state=16` (Adam with an fp32 gradient copy, as some texts count) — which stage
#    changes most?
# 3. Rerun section 2 with `WORLD_SIZE = 1`. Which columns stop differing between stages, and why?
# 4. Rerun section 2 with `WORLD_SIZE = 4`. What does the ring predict per rank for deepspeed-0's all-reduce
#    now, and what does `comm_sent_MB` say?
# 5. **Implement** the ring all-reduce whose cost section 3 uses (Patarasuk & Yuan 2009; NCCL's ring), on N
#    simulated ranks in this one process: `tensors[r]` is rank r's tensor, and the only way to move data is
#    `send_recv(outgoing)`, one ring step in which rank r sends `outgoing[r]` to rank (r + 1) mod N and gets back
#    what rank (r − 1) mod N sent. Cut each tensor into N chunks; in N − 1 reduce-scatter steps each rank passes
#    on a chunk with its own part added, until rank r holds one chunk summed over all ranks; in N − 1 all-gather
#    steps the summed chunks travel round the ring. The check runs your function on five cases (2 to 5 ranks, a
#    length N does not divide, a 2-D tensor) and compares every rank's result with `torch.stack(tensors).sum(0)`;
#    then it counts the bytes each rank sent, which must be the ring's 2(N − 1)/N × the tensor: passing whole
#    tensors round the ring gives the right sum but fails there.

# %%
answer_1 = None  # your smallest dp degree
gpu_bytes = specs.A100_80GB.memory_GB * 1e9
expected_1 = next(n for n in range(1, 1025)
                  if zero.zero_memory(bloom.params, 3, n, bloom.largest_layer_params).total <= gpu_bytes)
formula_only_1 = next(n for n in range(1, 1025)
                      if zero.zero_memory(bloom.params, 3, n, bloom.largest_layer_params).sharded_states <= gpu_bytes)
if answer_1 is not None:
    print("1: ✓" if answer_1 == expected_1 else f"1: ✗ it is {expected_1} (the sharded states alone: {formula_only_1})")

# %% tags=["exercise"]
from collections.abc import Callable

import torch

from labkit.exercises import ring_all_reduce as ring
from labkit.notebook import exercise


def ring_all_reduce(tensors: list[torch.Tensor], send_recv: Callable) -> list[torch.Tensor]:
    """tensors: N tensors of one shape, rank r's is tensors[r]. send_recv(outgoing: N tensors, rank r's goes to rank
    (r + 1) mod N) -> received (N tensors, rank r's came from rank (r - 1) mod N). Returns N tensors, each the sum."""
    # your code: chunks = [list(t.flatten().tensor_split(N)) for t in tensors]; at reduce-scatter step s rank r sends
    # its chunk (r - s) mod N and adds what it receives to its chunk (r - 1 - s) mod N; then N - 1 all-gather steps
    return [t.clone() for t in tensors]  # the stub: every rank keeps its own tensor, the check says what is wrong


if SOLUTIONS:  # the tests inject the reference answer here; a learner leaves SOLUTIONS = False
    from labkit.exercises.solutions.ring_all_reduce import ring_all_reduce  # noqa: F811

exercise.report("ring_all_reduce", ring.grade(ring_all_reduce), SOLUTIONS)

# %%
from labkit.notebook import run

run.record({
    **dev.to_dict(),
    "ranks_device": placement.ranks_device,  # the measured bytes, communication and losses came from the ranks
    "params_M": float(df.params_M.iloc[0]),
    "world_size": WORLD_SIZE,
    "measured_over_formula": ratios.to_dict(),
    "total_MB": t.total_MB.to_dict(),
    "formula_MB": t.formula_MB.to_dict(),
    "gathered_MB": t.gathered_MB.to_dict(),
    "formula_gathered_MB": t.formula_gathered_MB.to_dict(),
    "comm_paper_MB": t.comm_paper_MB.to_dict(),
    "comm_ring_MB": t.comm_ring_MB.to_dict(),
    "comm_sent_MB": t.comm_sent_MB.to_dict(),
    "comm_formula_MB": t.comm_formula_MB.to_dict(),
    "comm_ops": t.comm_ops.to_dict(),
    "final_loss": t.final_loss.to_dict(),
    "loss_spread": loss_spread,
    "measure_s": measure_s,
    "example_stage3_GB": {"sharded": paper_3.sharded_states / 1e9, "gathered": paper_3.gathered / 1e9,
                          "total": paper_3.total / 1e9, "deepspeed_convention": deepspeed_3.total / 1e9},
    "bloom176b": {"params": bloom.params, "largest_layer_params": bloom.largest_layer_params},
    "bloom176b_stage3_min_dp_80GB": expected_1,
    "bloom176b_stage3_min_dp_80GB_sharded_only": formula_only_1,
})
