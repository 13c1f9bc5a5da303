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
# Plain data parallelism keeps a full copy of the *model states* — parameters, gradients and optimizer
# states — on every device. With Adam the optimizer states dominate: for every parameter a master copy,
# a momentum and a variance. **ZeRO** (Rajbhandari et al., 2019) removes the redundancy step by step:
#
# | stage | sharded across the N data-parallel ranks | bytes per device (Ψ params) |
# |---|---|---|
# | 0 (plain DP) | nothing | (P + G + K) Ψ |
# | 1 | optimizer states | (P + G) Ψ + K Ψ / N |
# | 2 | + gradients | P Ψ + (G + K) Ψ / N |
# | 3 | + parameters | (P + G + K) Ψ / N |
#
# PyTorch has its own versions: `ZeroRedundancyOptimizer` (≈ stage 1) and FSDP2's `fully_shard` (≈ stage 3).
# Below, real DeepSpeed and real PyTorch train the same model on two real ranks (gloo on this CPU, NCCL on
# GPUs) and we read the bytes each rank holds straight from the engine's and optimizer's tensors.
#
# **Byte convention.** The paper uses mixed precision: P = 2, G = 2, K = 12 (fp32 master + m + v). Here
# everything is fp32, so P = 4 and G = 4; DeepSpeed's ZeRO optimizer *still* keeps an fp32 master copy of its
# partition, so K = 12 at stages 1–3. Stage 0 and PyTorch's optimizers update the fp32 parameters directly:
# no master copy, K = 8. The formula takes P, G and K as arguments, so each row uses its own.

# %%
# Setup. Locally `make lab` installed everything; on Colab this cell installs the lab first.
import sys

if "google.colab" in sys.modules:  # pragma: no cover - only on Colab
    # !git clone -q --depth 1 https://github.com/inference-lab/inference-lab /content/inference-lab
    # %pip install -q -e "/content/inference-lab[parallel]"
    # !labkit prepare
    sys.path.insert(0, "/content/inference-lab")
assert sys.version_info >= (3, 11), f"Inference Lab needs Python 3.11+, this is {sys.version}"

import labkit

labkit.setup()

# %% tags=["parameters"]
SMOKE = False  # True: small sizes for a quick headless run
HIDDEN = 2048  # MLP width: parameters = (HIDDEN² + HIDDEN) × LAYERS
LAYERS = 6
STEPS = 3
WORLD_SIZE = 2

# %%
if SMOKE:
    HIDDEN, LAYERS = 1024, 4

# %% [markdown]
# ## 1. The formula at scale
#
# Per-device GB for models from 1 B to 176 B parameters (the paper's convention, P = G = 2, K = 12).

# %%
from labkit import plots
from labkit.experiments import zero_sharding
from labkit.models import specs
from labkit.parallel import zero

bloom_params = specs.BLOOM_176B_BF16_GB * 1e9 / 2  # BLOOM-176B: 2 bytes per bf16 parameter
table = zero.memory_table(params_list=(1e9, 7.5e9, bloom_params), dp_degrees=(1, 2, 4, 8, 16, 64))
fig = plots.line(table[table.params_B == 7.5].pivot(index="dp_degree", columns="stage", values="total_GB")
                 .rename(columns=lambda s: f"stage {s}").reset_index(), "dp_degree",
                 [f"stage {s}" for s in zero.STAGES], "7.5 B parameters: GB per device vs data-parallel degree",
                 ylabel="GB per device", log_x=True, log_y=True)
fig

# %%
table[table.dp_degree.isin([1, 8, 64])].pivot_table(index=["params_B", "dp_degree"], columns="stage",
                                                    values="total_GB").round(1)

# %% [markdown]
# Before running the next section, predict: with N = 2 ranks, by how much does each stage shrink the
# model state compared to stage 0? (Stage 3 halves everything; stage 1 only halves the optimizer part.)
#
# ## 2. Measured on real ranks: DeepSpeed stages 0–3, ZeroRedundancyOptimizer, FSDP2
#
# Each method trains a fresh copy of the same MLP for a few AdamW steps on the same data. After the last
# backward every rank reports the bytes of the tensors it holds, deduplicated by storage (views into
# DeepSpeed's flat buffers count once). DeepSpeed would normally use its own compiled CPU Adam
# (`DeepSpeedCPUAdam`, built into `TORCH_EXTENSIONS_DIR` on first use — labkit points that into its cache so
# it happens once per machine); here a client `torch.optim.AdamW` avoids that one-minute compile.

# %%
import time

start = time.perf_counter()
measured = zero_sharding.train_all_methods(hidden=HIDDEN, layers=LAYERS, steps=STEPS, world_size=WORLD_SIZE)
measure_s = time.perf_counter() - start
df = measured.table
print(f"{df.params_M.iloc[0]:.1f} M parameters, {WORLD_SIZE} ranks, {measure_s:.0f} s for all methods")
measured.figure

# %%
df[["method", "stage", "bytes P/G/K", "params_MB", "grads_MB", "optimizer_MB", "total_MB", "formula_MB",
    "measured/formula", "grads_kept_after_backward_MB", "other_buffers_MB", "final_loss"]].round(3)

# %% [markdown]
# Two details the table shows:
#
# * **Stage 1 gradients.** DeepSpeed's stage 1 holds the full gradient at the end of backward (that is what
#   the formula counts), then all-reduces it and keeps only its partition for the step —
#   `grads_kept_after_backward_MB`. Stage 2 never holds it: gradients are reduced bucket by bucket while the
#   backward runs.
# * **Other buffers** (communication buckets, parameters still gathered) are not model state; the paper calls
#   them residual memory. They stay small here.
#
# Every method reaches the same loss: sharding changes where the bytes live, not the arithmetic.

# %%
print("final loss per method:", df.set_index("method").final_loss.round(6).to_dict())
loss_spread = float(df.final_loss.max() - df.final_loss.min())
print(f"largest difference: {loss_spread:.2e}")

# %% [markdown]
# ## 3. Communication per stage
#
# Every collective a rank calls is counted from inside PyTorch's dispatcher (the same counter sees DeepSpeed,
# DDP, ZeroRedundancyOptimizer and FSDP2). An all-reduce counts 2× its tensor (reduce-scatter + all-gather),
# an all-gather its output, a reduce-scatter its input. The paper: stages 0–2 move 2Ψ per step, stage 3 moves
# 3Ψ (parameters gathered in the forward *and* again in the backward).

# %%
zero_sharding.comm_figure(df)

# %%
df[["method", "comm_MB_per_step", "comm_formula_MB", "comm_ops"]]

# %% [markdown]
# DeepSpeed's stages 1–2 move 3Ψ on this path, not the paper's 2Ψ: they all-reduce the gradient buckets
# (2Ψ) and then all-gather the updated parameters (Ψ); a reduce-scatter would need only Ψ for the gradients.
# `ZeroRedundancyOptimizer` does the same (DDP all-reduce + a broadcast of each shard). Stage 3 is configured
# here with `stage3_max_reuse_distance = 0` so every parameter is released after use, as the paper assumes;
# DeepSpeed's default keeps parameters that will be reused soon and skips part of the backward all-gather.
#
# ## 4. Explore
#
# Model size × data-parallel degree × stage, with the byte convention as controls.

# %%
from labkit import widgets

widgets.panel(zero.memory_explorer, params_billion=(0.1, 200.0, 0.1), dp_degree=(1, 128), stage=[0, 1, 2, 3],
              bytes_per_param=[2, 4], bytes_per_grad=[2, 4], bytes_per_optimizer_state=[12, 8, 16], auto=True)

# %%
zero.memory_explorer(params_billion=bloom_params / 1e9, dp_degree=8, stage=3).figure

# %% [markdown]
# ## What theory predicts vs what you measured

# %%
t = df.set_index("method")
for method, row in t.iterrows():
    print(f"* {method:22s} stage {row.stage}, P/G/K = {row['bytes P/G/K']}: formula {row.formula_MB:8.2f} MB, "
          f"measured {row.total_MB:8.2f} MB per rank ({row['measured/formula']:.3f}×)")
for method in ("deepspeed-0", "deepspeed-2", "deepspeed-3", "torch-fsdp2"):
    print(f"* {method}: communication formula {t.loc[method, 'comm_formula_MB']:.1f} MB, measured "
          f"{t.loc[method, 'comm_MB_per_step']:.1f} MB per step")
ratios = t["measured/formula"]

# %% [markdown]
# ## Exercises
#
# 1. For BLOOM-176B (176 B params) with the paper's convention, what is the smallest data-parallel degree at
#    which stage 3 fits the model states in 80 GB per GPU? Use `zero.zero_memory`, then check with the widget.
# 2. Set `bytes_per_optimizer_state=16` (Adam with an fp32 gradient copy, as some texts count) — which stage
#    changes most?
# 3. Rerun section 2 with `WORLD_SIZE = 1`. Which columns stop differing between stages, and why?

# %%
answer_1 = None  # your smallest dp degree
expected_1 = next(n for n in range(1, 1025) if zero.zero_memory(bloom_params, 3, n).total <= specs.A100_80GB.memory_GB * 1e9)
if answer_1 is not None:
    print("1: ✓" if answer_1 == expected_1 else f"1: ✗ it is {expected_1}")

# %%
from labkit.notebook import run

run.record({
    "params_M": float(df.params_M.iloc[0]),
    "world_size": WORLD_SIZE,
    "measured_over_formula": ratios.to_dict(),
    "total_MB": t.total_MB.to_dict(),
    "formula_MB": t.formula_MB.to_dict(),
    "comm_MB_per_step": t.comm_MB_per_step.to_dict(),
    "comm_formula_MB": t.comm_formula_MB.to_dict(),
    "final_loss": t.final_loss.to_dict(),
    "loss_spread": loss_spread,
    "measure_s": measure_s,
    "bloom176b_stage3_min_dp_80GB": expected_1,
})
