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
# # Lab 08 — Big models with Accelerate: device maps, offload and hooks
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/inference-lab/inference-lab/blob/main/labs/08_big_models_with_accelerate.ipynb)
# [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/inference-lab/inference-lab/main?urlpath=lab/tree/labs/08_big_models_with_accelerate.ipynb)
#
# When a model does not fit on the device that computes, HF Accelerate splits it: it builds the
# model **without memory** (on the `meta` device), decides a **device map** — which block lives on
# which GPU, in CPU RAM, or on disk — from a `max_memory` budget, then loads the checkpoint block by
# block. Blocks that live elsewhere get **hooks**: just before a block's forward, its weights are copied
# to the compute device; just after, they are dropped again. The model runs unchanged — slower, by
# exactly the bytes that have to move for every token.
#
# The compute device is the lab's `DEVICE`: on a GPU machine the same code maps GPU → CPU RAM → disk, and every
# weight not on the GPU crosses the host link (PCIe) at every token; on a CPU-only machine the CPU computes from
# CPU RAM, so only the weights on disk are read back. The seed compares BLOOM-176B on two A100s with CPU offload (seconds per
# token) with the same model on eight A100s (milliseconds per token). Section 5 predicts the first from
# link speeds stated in advance, and compares it with the eight-GPU figure at the same batch size.
#
# **By the end you can**
# - build a device map for a model bigger than your memory;
# - follow Accelerate's hooks through one forward pass with offloaded weights;
# - predict the cost of offloading from bytes ÷ bandwidth, then measure it.
#
# **Before this lab:** lab 07.
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

print(durations.describe("08"))  # measured: the last recorded smoke and full runs
labkit.setup()

# %% tags=["parameters"]
SMOKE = False  # True: small sizes for a quick headless run
DEVICE = "auto"  # "auto": the GPU when there is one, else the CPU; or "cpu", "cuda", "cuda:N"
MODEL = "smollm2-135m"
NEW_TOKENS = 8
TORCH_THREADS = None  # None: PyTorch's default
SOLUTIONS = False  # True: the reference answers replace your code in the exercises (the tests prove each check can pass)

# %%
if SMOKE:  # tiny Llama: the same architecture and the same code, 20 MB instead of 540 MB
    MODEL, NEW_TOKENS, TORCH_THREADS = "tiny-llama", 4, 1
import torch

if TORCH_THREADS:  # on a busy 2-core machine one thread avoids OpenMP spin-waits on tiny models
    torch.set_num_threads(TORCH_THREADS)

# %%
from labkit import devices

dev = devices.choose(DEVICE)  # a bad DEVICE fails here, naming the valid choices
print(dev.summary())
DTYPE = dev.half if dev.is_cuda else "fp32"  # the precision every model of this lab loads, offloads and computes in
print(f"Weights in {DTYPE}: " + ("the GPU's native 16-bit float, half the bytes to move per token" if dev.is_cuda
                                 else "the checkpoint's own precision (the CPU run keeps it, so nothing is converted)"))

# %% [markdown]
# ## 1. Build it empty, then decide where each block goes
#
# `init_empty_weights()` creates every parameter on the `meta` device: shapes, no storage. From those
# shapes `infer_auto_device_map` fills devices in order until each `max_memory` budget is spent. Tied
# weights (SmolLM2's embedding *is* its LM head) must be tied first, or the head is placed on its own.

# %%
import pandas as pd

from labkit import models, offload
from labkit.experiments import big_models

spec = models.resolve(MODEL)  # the name, resolved once: config, parameter count, checkpoint folder
total_mb = spec.weight_bytes(DTYPE) / 1e6
budgets = big_models.scenarios_for(dev.device)  # (share on the compute device, share in CPU RAM); the rest: disk
maps = {f"budget: {a:.0%} on {dev.type}" + (f", {h:.0%} in CPU RAM" if dev.is_cuda else ""):
        {m: offload.tier(d) for m, d in offload.device_map(spec, offload.max_memory_for(spec, a, h, dev.device, DTYPE), DTYPE).items()}
        for a, h in budgets}
print(f"{MODEL}: {total_mb:.0f} MB of {DTYPE} weights; compute device: {offload.execution_device(dev.device)}")
pd.DataFrame({label: pd.Series(m) for label, m in maps.items()}).fillna("(inside a larger block)")

# %% [markdown]
# ## 2. Load with part of the model on disk and look at the placement

# %%
half = offload.load_offloaded(spec, offload.max_memory_for(spec, 0.5, device=dev.device, dtype=DTYPE), dtype=DTYPE)
placement = offload.placement_table(half)
print("where the bytes landed:", offload.placement_name(placement))
offload.placement_figure(placement, title=f"{MODEL} with half its bytes allowed on {dev.device}")

# %%
placement.groupby("device").MB.sum().round(1)

# %% [markdown]
# ## 3. Stepping through one forward: the hooks
#
# Every block Accelerate placed has an `AlignDevicesHook`. Its `pre_forward` moves the inputs to the
# compute device and, for an offloaded block, loads the block's weights (from CPU RAM or the offload folder);
# its `post_forward` puts them back on `meta`. Below, each hook call is timestamped during one forward, and
# `bytes_in` counts the bytes of the block's tensors that went from `meta` to real memory in its `pre_forward`.

# %% [markdown]
# **Predict.** How many MB will the hooks bring in during one forward of this half-offloaded model (MB)? Reason from
# the placement above: every weight not on the compute device is loaded once per forward (a tied weight once per
# block that uses it).

# %%
prediction_hook_MB = None  # your guess (MB), e.g. 200

# %%
events = big_models.trace_hooks(half, torch.tensor([[1, 2, 3, 4]]))
big_models.hook_timeline_figure(events, f"{MODEL} on {dev.device}: one forward, hook by hook")  # blocks, not every sub-layer

# %%
from labkit.notebook import predict

print(f"bytes the hooks brought in during that forward: {events.bytes_in.sum() / 1e6:.1f} MB; from the device map "
      f"and the parameter sizes: {offload.bytes_moved_per_forward(half) / 1e6:.1f} MB")
predict.compare("MB the hooks bring in during one forward", prediction_hook_MB,
                measured=float(events.bytes_in.sum() / 1e6), theory=float(offload.bytes_moved_per_forward(half) / 1e6),
                unit="MB")
events.head(12)

# %% [markdown]
# ## 4. What offload costs per token
#
# The same checkpoint loaded under each budget — everything on the compute device, part of it in CPU RAM (GPU
# only), part on disk, (nearly) everything on disk — each scenario named after where its bytes actually landed,
# each generating greedy tokens timed by `labkit.decoding.timing.time_greedy` (the decode timing every lab uses:
# one warm-up generation, then the median time per decode step).
#
# **What moves per token.** On a GPU every weight in CPU RAM or on disk is copied host→device at every forward
# (one forward per generated token). On the CPU the weights in CPU RAM are already where the CPU computes from
# (nothing moves), and only the weights on disk are read back from the offload folder. A weight two blocks share
# (SmolLM2's embedding *is* its LM head) is read by each block's hook: twice per token when it is offloaded.
#
# **Same device, stated tolerance.** The reference is the same model loaded whole on the same device in the same
# precision; the next-token logits must agree within `precision.tolerance` of that precision (relative to the
# largest logit): offload moves bytes, it does not change the math.

# %% [markdown]
# **Predict.** How many times slower per token is the scenario with the most bytes on disk than the one with everything
# on the compute device (×)? Reason from the MB it moves per token and how fast this machine reads them back.

# %%
prediction_disk_slowdown = None  # your guess (×), e.g. 2

# %%
offload_run = big_models.offload_latency(MODEL, new_tokens=NEW_TOKENS, device=dev.device, dtype=DTYPE)
most_on_disk = offload_run.table.loc[offload_run.table.disk_MB.idxmax()]
predict.compare(f"ms/token with '{most_on_disk.scenario}' ÷ everything on the compute device", prediction_disk_slowdown,
                measured=float(most_on_disk.slowdown), unit="×")
offload_run.figure

# %%
offload_run.table.drop(columns="hardware", errors="ignore").round(3)

# %% [markdown]
# ### The host link, measured (GPU only)
#
# On a GPU the offloaded bytes cross PCIe (or NVLink-C2C) from host memory. Pinned (page-locked) memory is read by
# the GPU's copy engine directly; pageable memory — what Accelerate's offloaded weights are — is staged through a
# pinned buffer by the driver. Measured here with `offload.host_to_device_gbps`, and used to predict each scenario's
# extra time per token: MB moved ÷ pageable GB/s.

# %%
from IPython.display import display

h2d = None
if dev.gpu_section("PCIe host→device bandwidth, pinned and pageable"):
    h2d = {kind: offload.host_to_device_gbps(dev.device, pinned=kind == "pinned") for kind in ("pinned", "pageable")}
    measured = offload_run.table
    base_ms = measured.ms_per_token[measured.MB_moved_per_token.idxmin()]
    predicted = measured.assign(predicted_ms_per_token=base_ms + measured.MB_moved_per_token / h2d["pageable"])  # MB / (GB/s) = ms
    print(f"host→{dev.label}: pinned {h2d['pinned']:.1f} GB/s, pageable {h2d['pageable']:.1f} GB/s")
    display(predicted[["scenario", "MB_moved_per_token", "ms_per_token", "predicted_ms_per_token"]].round(2))

# %% [markdown]
# ## 5. Seconds vs milliseconds per token, from bytes and bandwidth
#
# A decode step reads every weight once. Whatever does not sit in GPU memory crosses a slower link every
# step. The published facts come from `labkit.models.specs`: BLOOM-176B's bf16 weight bytes, the A100-80GB
# datasheet (HBM bandwidth), Accelerate's published ms/token on eight A100s (a naive pipeline: one GPU works
# at a time) and the seed's seconds per token on two A100s with CPU offload.
#
# Two rules before comparing. **Like with like**: the published ms/token is wall time ÷ (batch × tokens), a
# throughput; in a large batch every sequence shares each weight read, so its per-token figure is not what
# one sequence waits. The offload figure is for one sequence, so it is compared with the one-sequence row.
# **Predict, then compare**: the host link's speed is *assumed* from its specs (`specs.HOST_LINK_GBPS`: copies
# from pinned host memory, from ordinary pageable memory, and from an NVMe drive), not fitted to the
# published time. What stays on the two GPUs is Accelerate's placement as the cost model of lab 09 computes it
# (it leaves headroom on each GPU for activations).

# %% [markdown]
# **Predict.** How many seconds per token does BLOOM-176B take on two A100-80GB with the rest of its weights in CPU
# memory (s)? Reason from the GB that do not fit on the two GPUs ÷ the host link's GB/s (Accelerate's offloaded weights
# are ordinary pageable tensors), plus the GPUs' own reading time.

# %%
prediction_offload_s = None  # your guess (s), e.g. 5

# %%
from labkit.models import specs
from labkit.parallel import costmodel

bloom_gb, a100 = specs.BLOOM_176B_BF16_GB, specs.A100_80GB
hbm_gbps = a100.hbm_TBps * 1e3
published = specs.PUBLISHED_MS_PER_TOKEN["accelerate"]  # batch -> ms per token, 8×A100
offload_s = specs.ACCELERATE_2XA100_OFFLOAD_S_PER_TOKEN
placed, _ = costmodel.accelerate_placement(costmodel.shape("bloom-176b"), a100, 2)
resident_gb = sum(placed) / 1e9  # weights Accelerate keeps on the two GPUs; the rest stays in CPU memory
eight = offload.offload_seconds_per_token(bloom_gb, 8 * a100.memory_GB, link_gbps=1, fast_gbps=hbm_gbps)  # nothing streamed
batch32 = offload.offload_seconds_per_token(bloom_gb, 8 * a100.memory_GB, link_gbps=1, fast_gbps=hbm_gbps, batch=32)
two = {link: offload.offload_seconds_per_token(bloom_gb, resident_gb, link_gbps=gbps, fast_gbps=hbm_gbps)
       for link, gbps in specs.HOST_LINK_GBPS.items()}
disk = offload_run.table.loc[offload_run.table.disk_MB.idxmax()]  # the scenario with the most bytes on disk
print(f"BLOOM-176B bf16: {bloom_gb} GB; {a100.name}: {a100.memory_GB:.0f} GB at {hbm_gbps:.0f} GB/s. Source: {specs.BLOOM_SOURCE}")
print(f"On 2 GPUs Accelerate keeps {resident_gb:.0f} GB; {bloom_gb - resident_gb:.0f} GB cross the host link every token.")
arithmetic = pd.DataFrame(
    [{"case": "8×A100, batch 1 (one GPU at a time)", "batch": 1, "predicted_ms_per_token": 1e3 * eight["s_per_token"],
      "published_ms_per_token": published[1]},
     {"case": "8×A100, batch 32 (32 sequences share each weight read)", "batch": 32,
      "predicted_ms_per_token": 1e3 * batch32["s_per_token"], "published_ms_per_token": published[32]}]
    + [{"case": f"2×A100 + offload, {link} at {specs.HOST_LINK_GBPS[link]:g} GB/s", "batch": 1,
        "predicted_ms_per_token": 1e3 * r["s_per_token"], "published_ms_per_token": 1e3 * offload_s} for link, r in two.items()])
arithmetic.round(1)

# %%
from_host = [two[link]["s_per_token"] for link in specs.HOST_LINK_GBPS if link != "NVMe"]  # weights in CPU memory
low, high = min(from_host), max(from_host)
inside = low <= offload_s <= high
predict.compare("BLOOM-176B, 2×A100 + CPU offload, s/token (published)", prediction_offload_s,
                measured=float(offload_s), theory=float(high), unit="s")
print(f"Predicted with the weights in CPU memory: {low:.1f} s (pinned) to {high:.1f} s (pageable) per token; from NVMe: "
      f"{two['NVMe']['s_per_token']:.0f} s. Published: {offload_s:.0f} s — {'inside' if inside else 'outside'} the CPU-memory range "
      f"(Accelerate's offloaded weights are ordinary pageable tensors: {100 * (high / offload_s - 1):+.0f} % from the pageable estimate).")
like, unlike = 1e3 * offload_s / published[1], 1e3 * offload_s / published[32]
print(f"Like with like (one sequence): {offload_s:.0f} s vs {published[1]:.0f} ms = {like:.0f}× slower. Against the batch-32 "
      f"throughput ({published[32]:.1f} ms) the gap would read {unlike:.0f}× — a factor {unlike / like:.0f} of it is the batch.")

# %% [markdown]
# ## What theory predicts vs what you measured

# %%
from labkit import measure

t = offload_run.table.set_index("scenario")
resident = t.index[t.MB_moved_per_token.argmin()]  # everything on the compute device
mem_gbps = measure.memory_bandwidth(device="cpu")  # offloaded bytes come from host memory, on any machine
print(f"* Theory: offloading changes where bytes live, not the math. Measured on {dev.label}: next-token logits within "
      f"{t.tolerance.iloc[0]:g} ({DTYPE}) of the model loaded whole on the same device in {int(t.matches_reference.sum())}/{len(t)} "
      f"scenarios (largest relative difference {t.max_rel_diff.max():.1e}).")
print(f"* Theory: every offloaded byte is read again for every token. Measured on {MODEL}: "
      f"{disk.MB_moved_per_token:.0f} MB moved per token with '{disk.scenario}' ({disk.MB_loaded_by_hooks:.0f} MB counted "
      f"at the hooks); {disk.ms_per_token:.1f} ms/token vs {t.loc[resident, 'ms_per_token']:.1f} ms with "
      f"'{resident}' = {disk.slowdown:.1f}× slower.")
if pd.notna(disk.effective_GBps):
    source = (f"{h2d['pageable']:.1f} GB/s measured host→GPU (pageable)" if h2d else
              f"{mem_gbps:.1f} GB/s of raw host-memory bandwidth ({mem_gbps.label}): the 'disk' here is mostly the OS page "
              "cache, and the hook's per-tensor copies, not the drive, set the pace")
    print(f"* The extra time per token implies {disk.effective_GBps:.2f} GB/s for the offloaded bytes, against {source}.")
print(f"* Theory: at batch 1, naive pipelining on 8×A100 reads {bloom_gb} GB at {hbm_gbps:.0f} GB/s, one GPU at a time: "
      f"{1e3 * eight['s_per_token']:.0f} ms/token (published: {published[1]:.0f} ms). Batch 32 shares each read across 32 "
      f"sequences: {1e3 * batch32['s_per_token']:.1f} ms/token (published: {published[32]:.1f} ms, a throughput).")
if h2d:
    assumed = {kind: next(v for k, v in specs.HOST_LINK_GBPS.items() if k.startswith(kind)) for kind in h2d}
    print(f"* The host link these predictions assume (PCIe 4.0 x16): pinned {assumed['pinned']:g} GB/s, pageable "
          f"{assumed['pageable']:g} GB/s. Measured host→{dev.label}: pinned {h2d['pinned']:.1f} GB/s, pageable "
          f"{h2d['pageable']:.1f} GB/s.")
print(f"* Theory: with 2 GPUs, {bloom_gb - resident_gb:.0f} GB cross a host link per token: {low:.1f}–{high:.1f} s from CPU "
      f"memory (pinned–pageable), {two['NVMe']['s_per_token']:.0f} s from NVMe. Published: {offload_s:.0f} s, {like:.0f}× the "
      f"batch-1 time on 8 GPUs — bytes ÷ bandwidth.")

# %% [markdown]
# ## Exercises
#
# 1. With 4×A100-80GB instead of 2, how many GB of BLOOM-176B bf16 must stream per token? (Use
#    `costmodel.accelerate_placement` for what stays on the GPUs.)
# 2. From pageable CPU memory (`specs.HOST_LINK_GBPS`), how many seconds per token would that take?
# 3. **Implement** the placement rule of section 1 for a model whose layers must each stay whole (as
#    `no_split_module_classes` keeps a decoder layer): given each layer's bytes in forward order and a byte budget
#    per device, fill the devices in order (GPUs by index, then `"cpu"`, then `"disk"`, which has no limit). A layer
#    goes on the current device if the bytes already there plus its own fit the budget (≤); otherwise the next device
#    becomes current, for it and every later layer (nothing goes back). On the first GPU and on the CPU (the CPU alone
#    when there is no GPU) the budget is first reduced by the largest layer still to come after this one: an
#    offloaded layer is brought there to run. The check below compares your map with Accelerate's
#    `infer_auto_device_map` on eight cases (a reserve, spilling to the CPU and disk, a second GPU, a zero budget…)
#    and names the first case and layer that differ.

# %%
answer_1 = None  # GB
answer_2 = None  # seconds
placed_4, on_cpu_4 = costmodel.accelerate_placement(costmodel.shape("bloom-176b"), a100, 4)
four = offload.offload_seconds_per_token(bloom_gb, sum(placed_4) / 1e9, link_gbps=specs.HOST_LINK_GBPS["pageable (PCIe 4.0 x16)"],
                                         fast_gbps=hbm_gbps)
if answer_1 is not None:
    print("1: ✓" if abs(answer_1 - four["streamed_GB"]) < 1 else f"1: ✗ {four['streamed_GB']:.0f} GB")
if answer_2 is not None:
    print("2: ✓" if abs(answer_2 - four["s_per_token"]) < 0.5 else f"2: ✗ {four['s_per_token']:.1f} s")

# %% tags=["exercise"]
from labkit.exercises import device_map
from labkit.notebook import exercise


def device_map_for(module_sizes: dict[str, int], budgets: dict[int | str, int]) -> dict[str, int | str]:
    """module_sizes: layer name -> bytes, in forward order; budgets: device -> bytes (GPU indices, then "cpu").
    Returns layer name -> device: a GPU index, "cpu" or "disk"."""
    # your code: devices = the budgets' keys + ["disk"]; for each layer, reserve = the largest layer after it;
    # on the first GPU and "cpu" the room is budget - reserve; move to the next device while used + size > room
    return {name: "disk" for name in module_sizes}  # the stub: everything on disk; the check says what is wrong


if SOLUTIONS:  # the tests inject the reference answer here; a learner leaves SOLUTIONS = False
    from labkit.exercises.solutions.device_map import device_map_for  # noqa: F811

exercise.report("device_map_for", device_map.grade(device_map_for), SOLUTIONS)

# %%
from labkit.notebook import run

scenario_keys = ["scenario", "memory_MB", "host_MB", "disk_MB", "MB_moved_per_token", "MB_loaded_by_hooks", "ms_per_token",
                 "same_tokens", "max_rel_diff", "tolerance", "matches_reference", "slowdown"]
run.record({
    **dev.to_dict(),
    "model": MODEL,
    "compute_device": str(offload.execution_device(dev.device)),
    "dtype": DTYPE,
    "budget_placements": {label: sorted(set(m.values())) for label, m in maps.items()},
    "scenarios": offload_run.table[scenario_keys].to_dict("records"),
    "device_maps": offload_run.table.attrs["device_maps"],
    "module_bytes": offload_run.table.attrs["module_bytes"],
    "disk_slowdown": float(disk.slowdown),
    "h2d_GBps": {k: float(v) for k, v in h2d.items()} if h2d else None,
    "host_memory_GBps_cpu": float(mem_gbps),  # measured on the CPU whatever DEVICE is
    "hook_events": len(events),
    "offloaded_hook_events": int(events.offloaded.sum()),
    "bloom_predicted_ms": dict(zip(arithmetic.case, arithmetic.predicted_ms_per_token, strict=True)),
    "resident_GB": resident_gb,
    "offload_predicted_s": {link: r["s_per_token"] for link, r in two.items()},
    "offload_inside_cpu_range": inside,
    "like_for_like_ratio": like,
    "hardware": offload_run.table.attrs["hardware"],
})
