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
# # Lab 03 — Model conversion and graph optimization
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/inference-lab/inference-lab/blob/main/labs/03_conversion_and_graph_optimization.ipynb)
# [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/inference-lab/inference-lab/main?urlpath=lab/tree/labs/03_conversion_and_graph_optimization.ipynb)
#
# An inference engine has an **offline** half and an **online** half. Offline, a *frontend* converts
# the trained model out of its training framework into the engine's own format, and a *graph
# optimizer* rewrites that graph: it fuses chains of small operators into one, replaces operators by
# faster equivalents, precomputes whatever depends only on constants, and changes the memory layout
# of tensors to suit the hardware. Online, a *runtime* executes the result (lab 04).
#
# Here you convert three models — a tiny BLOOM, the real SmolLM2-135M and a small CNN — to ONNX,
# OpenVINO IR and TorchScript, check each copy computes what PyTorch computes, and count exactly what
# ONNX Runtime's optimisation levels change.
#
# **By the end you can**
# - convert a PyTorch model to ONNX, OpenVINO IR and TorchScript, and prove each computes the same;
# - count what a graph optimizer fuses, folds and re-lays out, level by level;
# - explain why an attention no fusion recognises has to be exported as one operator.
#
# **Before this lab:** lab 01.
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

print(durations.describe("03"))  # measured: the last recorded smoke and full runs
labkit.setup()

# %% tags=["parameters"]
SMOKE = False  # True: small sizes for a quick headless run
WORKLOADS = ["tiny-bloom", "digits-cnn", "smollm2-135m"]  # SmolLM2's first ONNX export is slow: see `seconds` below
REPEAT = 100  # timed runs per engine in section 7, after warm-up
ROUNDS = 5  # engines take turns this many times (drift lands on all alike)
SKLEARN_MODELS = ["logistic-regression", "mlp"]  # section 8: scikit-learn pipelines converted to ONNX by skl2onnx
SKLEARN_BIG_BATCH = 1024  # section 8: rows per call of the big batch (batch 1 is always timed too)
DEVICE = "auto"  # "auto": the GPU when there is one, else the CPU; or "cpu", "cuda", "cuda:N"
SOLUTIONS = False  # True: the reference answers replace your code in the exercises (the tests prove each check can pass)

# %%
if SMOKE:
    WORKLOADS = ["tiny-bloom", "digits-cnn"]
    REPEAT = 30
    ROUNDS = 2
    SKLEARN_MODELS = ["logistic-regression"]

# %%
from labkit import devices

dev = devices.choose(DEVICE)  # a bad DEVICE fails here, naming the valid choices
print(dev.summary())
if dev.is_cuda:
    print(f"Export, conversion and graph optimisation (sections 1-6) run on the CPU on purpose: an ONNX file is the same "
          f"whatever device runs it later; section 7 times the engines on {dev.label}.")

# %% [markdown]
# ## 1. Frontends: one model, three formats
#
# * **ONNX** — an open graph format; `torch.onnx.export(dynamo=True)` captures the model with
#   `torch.export` and translates each ATen op into ONNX ops.
# * **OpenVINO IR** — Intel's format (`.xml` graph + `.bin` weights), converted here from the ONNX file.
# * **TorchScript** — PyTorch's own serialised graph, recorded by tracing one call. **Deprecated**: the
#   PyTorch documentation says "TorchScript is deprecated, please use torch.export instead"
#   ([TorchScript language reference](https://docs.pytorch.org/docs/stable/jit_language_reference.html)), and
#   `torch.jit.trace` itself warns (the cell below prints the installed PyTorch's warning). It is here as the
#   legacy format that many deployed models still ship in; new code captures a graph with `torch.export`,
#   as the ONNX frontend above already does.
#
# A conversion is only useful if the copy computes the same function: *relative diff* is the largest
# difference from PyTorch's fp32 output, divided by the largest output value.

# %%
import pandas as pd

from labkit import convert, engines

from labkit.experiments import graph_optimization

print("torch.jit.trace says:", graph_optimization.torchscript_deprecation())
conversions = pd.concat([graph_optimization.convert_three_ways(w).table.assign(workload=w) for w in WORKLOADS])
conversions[["workload", "format", "MiB", "seconds", "max_abs_diff", "relative_diff", "parity_ok"]]

# %% [markdown]
# ## 2. Graph optimisation, level by level
#
# ONNX Runtime optimises a graph when it loads it. Its `GraphOptimizationLevel` has five settings
# ([ORT graph optimizations](https://onnxruntime.ai/docs/performance/model-optimizations/graph-optimizations.html);
# the enum `GraphOptimizationLevel` in ORT's C API header `onnxruntime_c_api.h`), each including the ones before it:
#
# * **disable** (`ORT_DISABLE_ALL`): no optimisation rewrites, only what loading a graph does anyway (the
#   cell prints what that changed);
# * **basic** (`ORT_ENABLE_BASIC`): constant folding, removing redundant nodes, and semantics-preserving fusions
#   that any execution provider can run, such as folding a BatchNorm into the convolution before it;
# * **extended** (`ORT_ENABLE_EXTENDED`): fusions into ORT's own kernels (LayerNorm, GELU, MatMul+Add, Conv+ReLU);
# * **layout** (`ORT_ENABLE_LAYOUT`): layout transformations, e.g. the CPU's NCHW → blocked NCHWc;
# * **all** (`ORT_ENABLE_ALL`, the default): every rewrite the installed onnxruntime has.
#
# The *layout* level is recent: the cell below prints which levels the installed onnxruntime has, and each of
# them is measured. We start from the raw export — the graph exactly as traced — so every change below is
# ORT's doing.

# %%
import onnxruntime

from labkit.convert.optimize import available_levels

ORT_LEVELS = available_levels()
print(f"onnxruntime {onnxruntime.__version__}: {len(ORT_LEVELS)} levels {list(ORT_LEVELS)}")
levels = {w: graph_optimization.optimization_levels(w) for w in WORKLOADS if w != "smollm2-135m"}
bloom_raw = convert.export_onnx(engines.graph_for("tiny-bloom"), optimize=False, fused_attention=False)
loading = convert.graph_diff(bloom_raw, convert.optimize_onnx(bloom_raw, "disable"))
print(f"tiny-bloom, already at 'disable' (loading): removed {loading.removed}, added {loading.added}")
levels["tiny-bloom"].table

# %%
levels["tiny-bloom"].figure

# %%
levels["digits-cnn"].figure

# %% [markdown]
# ## 3. What exactly was fused? A before/after drawing
#
# BLOOM's MLP uses the tanh approximation of GELU:
# `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` — a chain of multiplies, adds and a `tanh` in the
# exported graph. ONNX Runtime recognises the pattern and replaces it with one `FastGelu` kernel
# that reads the input once and writes the output once.

# %% [markdown]
# **Predict.** How many `FastGelu` nodes will level *all* leave in tiny-bloom's graph (nodes)? Reason from where a
# BLOOM layer computes a GELU, and how many layers tiny-bloom has (`models.get_config("tiny-bloom").n_layer`).

# %%
prediction_fastgelu = None  # your guess (nodes), e.g. 1

# %%
bloom_all = convert.optimize_onnx(bloom_raw, "all")
before_nodes, before_edges = graph_optimization.neighbourhood(bloom_raw, "Tanh", radius=3)
after_nodes, after_edges = graph_optimization.neighbourhood(bloom_all, "FastGelu", radius=1)
graph_optimization.dag_figure(before_nodes, before_edges, "Before: the GELU around one Tanh (raw export)")

# %%
graph_optimization.dag_figure(after_nodes, after_edges, "After ORT 'all': one FastGelu between the two MatMuls")

# %%
from labkit import models
from labkit.notebook import predict

bloom_diff = convert.graph_diff(bloom_raw, bloom_all)
print(f"nodes: {bloom_diff.nodes_before} → {bloom_diff.nodes_after}")
print("ops that appeared through fusion:", bloom_diff.fused)
fast_gelus = convert.graph_stats(bloom_all).op_counts.get("com.microsoft:FastGelu", 0)
predict.compare("FastGelu nodes in tiny-bloom after ORT 'all'", prediction_fastgelu, measured=float(fast_gelus),
                theory=float(models.get_config("tiny-bloom").n_layer), unit="nodes")  # theory: one GELU per layer
pd.DataFrame({"removed": pd.Series(bloom_diff.removed), "added": pd.Series(bloom_diff.added)}).fillna(0).astype(int)

# %% [markdown]
# ## 4. Constant folding, by hand
#
# A layer computes `x @ (W·2 + 1)ᵀ`. The weight expression depends only on constants, so the
# optimiser can compute it once, at load time, instead of on every request.

# %%
folding = graph_optimization.constant_folding_demo()
print("raw export:     ", folding["ops_before"])
print("after ORT basic:", folding["ops_after"])

# %% [markdown]
# ## 5. The CNN: BatchNorm folding, Conv+ReLU fusion, and a layout change
#
# At inference a BatchNorm is a fixed per-channel scale and shift, which can be folded into the
# convolution's weights and bias. A ReLU after a convolution can be applied while the convolution's
# output is still in registers. And at the layout level, ORT's CPU provider switches convolutions to the
# blocked **NCHWc** layout (channels in blocks as wide as the SIMD registers), adding `Reorder` nodes where
# the graph leaves that layout (and enters it, unless the first convolution reads plain NCHW directly).
# Which of these happened, step by step:

# %% [markdown]
# **Predict.** How many `BatchNormalization` nodes will level *basic* remove from the CNN's graph (nodes)? Reason
# from the CNN's layers: which BatchNorms follow a convolution?

# %%
prediction_bn_folded = None  # your guess (nodes), e.g. 1

# %%
cnn_raw = convert.export_onnx(engines.graph_for("digits-cnn"), optimize=False)
cnn_levels = {lv: convert.optimize_onnx(cnn_raw, lv) for lv in ORT_LEVELS}
steps = list(zip(ORT_LEVELS, ORT_LEVELS[1:]))
cnn_diffs = {f"{a} → {b}": convert.graph_diff(cnn_levels[a], cnn_levels[b]) for a, b in steps}
cnn_changes = pd.DataFrame([{"step": step, "removed": d.removed, "added": d.added,
                             "nodes": f"{d.nodes_before} → {d.nodes_after}"} for step, d in cnn_diffs.items()])
layout_step = "extended → layout" if "layout" in ORT_LEVELS else "extended → all"
reorders = sorted(op for op in cnn_diffs[layout_step].added if "Reorder" in op)
print(f"layout change ({layout_step}): Reorder nodes added: {reorders}")
bn_layers = sum(1 for m in engines.graph_for("digits-cnn").module.modules() if m.__class__.__name__ == "BatchNorm2d")
bn_folded = convert.graph_diff(cnn_levels["disable"], cnn_levels["basic"]).removed.get("BatchNormalization", 0)
predict.compare("BatchNorm nodes the CNN loses at level 'basic'", prediction_bn_folded, measured=float(bn_folded),
                theory=float(bn_layers), unit="nodes")  # theory: every BatchNorm after a convolution folds into it
cnn_changes

# %% [markdown]
# ## 6. Transformer-specific fusions
#
# `onnxruntime.transformers.optimizer` knows the shapes of whole transformer blocks (attention,
# residual + LayerNorm, biased GELU) and fuses more than the generic levels do — when it recognises
# them. Run it on the plain BLOOM export and look for an attention op among what it produced.

# %%
from labkit import models

bloom_config = models.get_config("tiny-bloom")
fused_path = convert.transformer_fusions(convert.export_onnx(engines.graph_for("tiny-bloom"), fused_attention=False),
                                         num_heads=bloom_config.n_head, hidden_size=bloom_config.hidden_size)
transformer_ops = {op: n for op, n in convert.graph_stats(fused_path).op_counts.items() if op.startswith("com.microsoft")}
attention_fusions = sum(n for op, n in transformer_ops.items() if "Attention" in op)
print(f"attention ops the optimizer produced for BLOOM: {attention_fusions}")
transformer_ops

# %% [markdown]
# ## 7. When no optimiser knows your attention: export it as one op
#
# BLOOM adds ALiBi — a per-head penalty proportional to the distance between tokens — to its attention
# scores. That pattern is in none of ORT's fusion rules, so above the attention stayed a chain of small nodes
# in every layer (the table below counts them). Production exporters (optimum's model patchers, ORT GenAI's model builder) do what
# `labkit.convert.export_patches` does: *while exporting*, swap the module's Python for code whose graph maps
# onto a fused op. Here a custom op `labkit::alibi_attention` runs as `scaled_dot_product_attention` in
# PyTorch and is written to ONNX as **one standard `Attention` node** (an op of recent ONNX opsets: the cell
# prints the one the file declares), with ALiBi + the causal mask as its additive bias. Eager PyTorch keeps
# running transformers' code; engines get the patched graph by default (`fused_attention=False` gives the
# plain one).
#
# Two questions: how much smaller is the graph ONNX Runtime runs, and is the speed-up the runtime's
# fused kernel or just the rewrite? The last row answers the second: eager running the patched forward.
# All rows run on one device, eager included: the lab's, when ONNX Runtime can run there (on a GPU: its CUDA
# provider, from `onnxruntime-gpu`), else the CPU — the cell says which.

# %% [markdown]
# **Predict.** How many times faster does ONNX Runtime run tiny-bloom from the fused-attention export than from the
# plain one (×)? Reason from the node counts above, and from what a fused node gains only where the runtime has a
# kernel for it.

# %%
prediction_fused_gain = None  # your guess (×), e.g. 1.5

# %%
import onnx

plain_path = convert.export_onnx(engines.graph_for("tiny-bloom"), fused_attention=False)
fused_export = convert.export_onnx(engines.graph_for("tiny-bloom"))
opset = max(o.version for o in onnx.load(str(fused_export)).opset_import if o.domain in ("", "ai.onnx"))
print(f"the fused export declares ONNX opset {opset}")
attention_table = pd.DataFrame({
    name: {"nodes exported": convert.graph_stats(path).nodes,
           "nodes after ORT all": convert.graph_stats(convert.optimize_onnx(path, "all")).nodes,
           "Attention nodes": convert.graph_stats(path).op_counts.get("Attention", 0),
           "Softmax nodes": convert.graph_stats(path).op_counts.get("Softmax", 0)}
    for name, path in {"plain export": plain_path, "fused attention": fused_export}.items()
})
attention_table

# %%
from labkit.experiments import engine_comparison

attention_device, note = engine_comparison.device_for("onnxruntime", dev.device)
print(note or f"timed on {dev.label}")
attention_runs = engine_comparison.compare_variants("tiny-bloom", {
    "ORT, plain export": ("onnxruntime", {"fused_attention": False}),
    "ORT, fused attention": ("onnxruntime", {"fused_attention": True}),
    "eager, patched forward": ("torch-eager", {"export_patches": True}),
}, batch_size=1, seq_len=32, threads=2, repeat=REPEAT, rounds=ROUNDS, device=attention_device)
speed = attention_runs.table.set_index("variant").speedup_vs_eager
kernel_gain = speed["ORT, fused attention"] / speed["ORT, plain export"]
predict.compare("ORT speed, fused-attention export ÷ plain export", prediction_fused_gain, measured=float(kernel_gain),
                unit="×")
attention_runs.table[["variant", "device", "provider", "median_ms", "p90_ms", "speedup_vs_eager", "relative_diff"]].round(4)

# %%
attention_runs.figure

# %% [markdown]
# ## 8. Other frontends: a scikit-learn model to ONNX
#
# ONNX is not PyTorch's format: any framework with a frontend can write it, and every engine that reads ONNX can
# then run the model. **skl2onnx** is scikit-learn's: it walks a fitted `Pipeline` and writes one ONNX operator per
# step. Here a `StandardScaler` + classifier pipeline learns the digits the CNN of section 1 learned (the same split),
# skl2onnx converts it (the file goes to labkit's cache, never into the repository), and the engines that load the
# file are checked against scikit-learn's own `predict_proba`: probabilities within float32 rounding (scikit-learn
# computes in float64) and the same labels. skl2onnx writes much of a classical model in the **ONNX-ML** operator
# domain (`ai.onnx.ml`: Scaler, LinearClassifier, TreeEnsemble...), which ONNX Runtime implements and which not every
# engine does: the cell names, for each engine that could not load the file, the operators it refused.
#
# Then the cost of a call, side by side at batch 1 and at `SKLEARN_BIG_BATCH` rows, every engine limited to the same
# two threads. This section runs on the CPU whatever `DEVICE` says: scikit-learn has no GPU path.

# %% [markdown]
# **Predict.** At batch 1 — one digit per call, as an online service sees it — how many times faster than
# scikit-learn's `predict_proba` is ONNX Runtime on the same pipeline (×; a ratio under one means slower)? Reason from
# what each does per call besides the arithmetic: a tiny image in, ten classes out, a few thousand multiply-adds.

# %%
prediction_ort_speedup_batch_1 = None  # your guess (×), e.g. 2

# %%
from labkit import precision
from labkit.experiments import other_frontends
from labkit.notebook import predict

frontends = {kind: other_frontends.sklearn_frontend(kind, batches=(1, SKLEARN_BIG_BATCH), repeat=REPEAT,
                                                    rounds=ROUNDS, threads=2) for kind in SKLEARN_MODELS}
sk = frontends[SKLEARN_MODELS[0]]
sk_speed = sk.table.set_index(["engine", "batch"]).speedup_vs_sklearn
arithmetic_ratio = sk.sklearn_multiply_adds / sk.onnx_multiply_adds  # time ∝ arithmetic: the same work on one CPU
predict.compare(f"ONNX Runtime's speed-up over scikit-learn at batch 1 ({SKLEARN_MODELS[0]})",
                prediction_ort_speedup_batch_1, measured=float(sk_speed["onnxruntime", 1]), theory=arithmetic_ratio,
                unit="×")
print(f"Arithmetic alone predicts {arithmetic_ratio:.0f}×: {sk.sklearn_multiply_adds} multiply-adds per row in "
      f"scikit-learn's weights, {sk.onnx_multiply_adds} in the ONNX graph's. Measured: "
      f"{sk_speed['onnxruntime', 1]:.1f}× — the rest of a batch-1 call is overhead, not arithmetic.")
sk_parity = pd.concat([f.parity.assign(model=kind) for kind, f in frontends.items()])
sk_loaded = sk_parity[sk_parity.loaded & (sk_parity.engine != "scikit-learn")]
for kind, f in frontends.items():
    print(f"{kind}: test accuracy {f.accuracy:.3f}; ONNX operators {dict(f.op_counts)}")
for row in sk_parity[~sk_parity.loaded].itertuples():
    print(f"{row.engine} could not load the {row.model} file: {row.reason}")
print(f"Theory: the converted graph computes scikit-learn's probabilities up to float32 rounding "
      f"(≤ {precision.tolerance('fp32'):.0e}). Measured: at most {sk_loaded.max_abs_prob_diff.max():.1e} off, labels "
      f"equal for {sk_loaded.label_agreement.min():.1%} of the held-out digits, on {len(sk_loaded)} engine run(s); "
      f"ONNX Runtime {sk_speed['onnxruntime', 1]:.1f}× scikit-learn at batch 1, "
      f"{sk_speed['onnxruntime', SKLEARN_BIG_BATCH]:.1f}× at batch {SKLEARN_BIG_BATCH}.")
sk_parity[["model", "engine", "loaded", "max_abs_prob_diff", "label_agreement"]]

# %%
pd.concat([f.table.assign(model=kind) for kind, f in frontends.items()])[
    ["model", "engine", "batch", "median_ms", "p90_ms", "us_per_row", "speedup_vs_sklearn"]].round(4)

# %%
sk.figure

# %% [markdown]
# At batch 1 the arithmetic is tiny and the call is almost all overhead: scikit-learn checks and converts its input
# in Python on every call, ONNX Runtime runs a pre-planned graph in C++. At a big batch the arithmetic — one
# matrix multiply per layer in both — takes over, and how far apart the two stay depends on the model.

# %% [markdown]
# ## What theory predicts vs what you measured

# %%
n_layers = bloom_config.n_layer
print(f"* Theory: one GELU per transformer layer → {n_layers} FastGelu nodes. Measured: {fast_gelus}.")
print(f"* Theory: every BatchNorm after a convolution folds away → {bn_layers} fewer nodes. Measured: {bn_folded}.")
level_nodes = {lv: convert.graph_stats(path).nodes for lv, path in cnn_levels.items()}
print(f"* CNN nodes after each level: {level_nodes}.")
if "layout" in ORT_LEVELS:
    layout_vs_all = convert.graph_diff(cnn_levels["layout"], cnn_levels["all"])
    print(f"* Theory: 'all' adds to 'layout' only rewrites this CPU provider has beyond layout. Measured on the CNN: "
          f"removed {layout_vs_all.removed or 'nothing'}, added {layout_vs_all.added or 'nothing'}.")
print(f"* Theory: the folded weight expression leaves one MatMul. Measured: {folding['nodes_before']} → {folding['nodes_after']} nodes.")
print(f"* Theory: optimisation changes the graph, not the function. Measured: every format within "
      f"{conversions.relative_diff.max():.1e} (relative) of PyTorch.")
print(f"* Theory: one Attention node per layer replaces the scattered attention → {n_layers} Attention nodes and "
      f"a smaller graph. Measured: {attention_table.loc['Attention nodes', 'fused attention']} Attention nodes; "
      f"{attention_table.loc['nodes after ORT all', 'plain export']} → "
      f"{attention_table.loc['nodes after ORT all', 'fused attention']} nodes after ORT's optimisation.")
verdict = ("the fused node adds a gain of its own" if kernel_gain >= 1.1 else
           "at this size ORT's gain over eager comes from the runtime, with or without the fused node")
print(f"* Theory: a fused node pays only where a runtime has a kernel for it. Measured: ORT {speed['ORT, plain export']:.2f}× "
      f"eager with the plain export, {speed['ORT, fused attention']:.2f}× with the fused node ({kernel_gain:.2f}×); eager "
      f"running the rewrite itself: {speed['eager, patched forward']:.2f}× — {verdict}.")
print(f"* Theory: a frontend changes the framework, not the function. Measured: scikit-learn's {SKLEARN_MODELS} as "
      f"ONNX, within {sk_loaded.max_abs_prob_diff.max():.1e} of scikit-learn's probabilities; ONNX Runtime "
      f"{sk_speed['onnxruntime', 1]:.1f}× scikit-learn at batch 1.")

# %% [markdown]
# ## Exercises
#
# 1. `tiny-llama` uses SiLU, not GELU, in its MLP. How many `FastGelu` nodes will ORT create for it?
#    Predict, then check with `convert.graph_stats(convert.optimize_onnx(convert.export_onnx(engines.graph_for("tiny-llama")), "all"))`.
# 2. How many nodes does level *all* remove from the raw tiny-bloom export, as a percentage?
# 3. **Implement** the BatchNorm folding of section 5: `fold_batchnorm(conv, bn)` returns one `nn.Conv2d` that computes
#    `bn(conv(x))` with `bn` in eval mode. With s = γ / √(σ² + ε) per output channel (σ², μ: the running statistics),
#    the folded weight is W·s (output row c scaled by s_c) and the folded bias (b − μ)·s + β. The check below runs your
#    function on seven conv/BatchNorm pairs (with and without a conv bias, a large ε, BatchNorm without γ and β,
#    stride and dilation, grouped and depthwise convs) and compares the weights and bias with PyTorch's own
#    `torch.nn.utils.fusion.fuse_conv_bn_eval`, and your conv's output with conv then BatchNorm; it names the first
#    case that fails and how.

# %%
answer_1 = None  # number of FastGelu nodes in tiny-llama
answer_2 = None  # percent of nodes removed
llama_all = convert.optimize_onnx(convert.export_onnx(engines.graph_for("tiny-llama")), "all")
expected_1 = convert.graph_stats(llama_all).op_counts.get("com.microsoft:FastGelu", 0)
expected_2 = 100 * (1 - bloom_diff.nodes_after / bloom_diff.nodes_before)
if answer_1 is not None:
    print("1: ✓" if answer_1 == expected_1 else f"1: ✗ it is {expected_1}")
if answer_2 is not None:
    print("2: ✓" if abs(answer_2 - expected_2) < 2 else f"2: ✗ it is {expected_2:.0f} %")

# %% tags=["exercise"]
from torch import nn

from labkit.exercises import batchnorm_folding
from labkit.notebook import exercise


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """conv: weight (out, in / groups, kh, kw), bias (out,) or None; bn: eval mode, over the out channels.
    Returns a new nn.Conv2d computing bn(conv(x))."""
    # your code: s = γ / sqrt(running_var + eps) (γ = 1, β = 0 when bn.affine is False); copy.deepcopy(conv)
    # keeps stride, padding, dilation and groups; set its weight to W * s[:, None, None, None] and its bias to
    # (b - running_mean) * s + β (b = 0 when the conv has none), both as nn.Parameter
    return conv  # the stub ignores the BatchNorm: the check says what is wrong


if SOLUTIONS:  # the tests inject the reference answer here; a learner leaves SOLUTIONS = False
    from labkit.exercises.solutions.batchnorm_folding import fold_batchnorm  # noqa: F811

exercise.report("fold_batchnorm", batchnorm_folding.grade(fold_batchnorm), SOLUTIONS)

# %%
from labkit.notebook import run

bloom_levels = levels["tiny-bloom"].table.set_index("level").nodes
run.record({
    "workloads": WORKLOADS,
    "parity_ok": bool(conversions.parity_ok.all()),
    "max_relative_diff": float(conversions.relative_diff.max()),
    "bloom_nodes": {k: int(v) for k, v in bloom_levels.items()},
    "loading_fused": loading.fused,
    "bloom_fused_ops": bloom_diff.fused,
    "fastgelu_nodes": fast_gelus,
    "n_layers": n_layers,
    "bn_folded": bn_folded,
    "ort_levels": list(ORT_LEVELS),
    "cnn_layout_ops": sorted(cnn_diffs[layout_step].fused),
    "cnn_reorders": reorders,
    "cnn_nodes": level_nodes,
    "folding_nodes": [folding["nodes_before"], folding["nodes_after"]],
    "transformer_fused_ops": transformer_ops,
    "transformer_attention_fusions": attention_fusions,
    "attention_nodes": {k: int(v) for k, v in attention_table.loc["Attention nodes"].items()},
    "nodes_after_all": {k: int(v) for k, v in attention_table.loc["nodes after ORT all"].items()},
    "attention_speedups": {k: float(v) for k, v in speed.items()},
    "attention_device": str(attention_device),
    "attention_rows": attention_runs.table[["variant", "engine", "device", "provider"]].to_dict("records"),
    "attention_max_relative_diff": float(attention_runs.table.relative_diff.max()),
    "sklearn": {kind: {"onnx_path": str(f.onnx_path), "op_counts": dict(f.op_counts), "accuracy": f.accuracy,
                       "multiply_adds": {"sklearn": f.sklearn_multiply_adds, "onnx": f.onnx_multiply_adds},
                       "parity": f.parity.to_dict("records"),
                       "timings": f.table.drop(columns="device").to_dict("records"), "device": f.table.device.iloc[0]}
                for kind, f in frontends.items()},
    "sklearn_big_batch": SKLEARN_BIG_BATCH,
    "sklearn_speedup_batch_1": {"measured": float(sk_speed["onnxruntime", 1]), "theory": arithmetic_ratio},
    **dev.to_dict(),
})
