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
# # Lab 12 — LLM serving: why schedulers changed
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/inference-lab/inference-lab/blob/main/labs/12_llm_serving.ipynb)
# [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/inference-lab/inference-lab/main?urlpath=lab/tree/labs/12_llm_serving.ipynb)
#
# The BLOOM inference server of 2022 is **synchronous**: one request (or one fixed batch) at a
# time, everyone else waits in the queue. Generating a token reads every weight once, whether the
# batch holds one sequence or many, so below the ridge point of lab 07's roofline a decode step costs
# about the same for a batch as for one sequence, and serving one at a time wastes the hardware.
# Above the ridge point a step grows with the batch; section 5 measures where the lab's device stands. A GPU's
# ridge sits far higher than a CPU's, so there a step at batch 32 costs about what one at batch 1 does, and
# continuous batching gains far more than on a CPU.
#
# * **sync** — the BLOOM server: FIFO, batch of one.
# * **dynamic** — wait up to B requests or T ms, run them together *until the longest is done*.
# * **continuous** — Orca's iteration-level scheduling (OSDI '22), used by TGI and vLLM: the batch
#   is re-formed at every decode step; finished sequences leave, queued ones join at once.
# * **hf-continuous** — the same idea in transformers v5 (`ContinuousBatchingManager`), with a
#   paged KV cache — PagedAttention (vLLM, SOSP '23) stores the cache in fixed-size blocks so
#   memory is not reserved for the longest possible answer.
#
# The same server (lab 02), the same load, only the scheduler changes. In `labkit.serving.policies` the
# first three are `schedule()` functions of a few lines each over one engine loop (`labkit.serving.engine`):
# they differ only in when requests join the batch and when they leave it.

# %%
# Setup. Locally `make lab` installed everything; on Colab this cell installs the lab first (on a GPU
# runtime too: Runtime → Change runtime type → T4 GPU; DEVICE="auto" then measures that GPU).
import sys

if "google.colab" in sys.modules:  # pragma: no cover - only on Colab
    # !git clone -q --depth 1 https://github.com/inference-lab/inference-lab /content/inference-lab
    # %pip install -q -e "/content/inference-lab[serve]"
    # !labkit prepare
    sys.path.insert(0, "/content/inference-lab")
    from labkit.colab import setup_colab  # widgets on Colab; on a GPU runtime, the CUDA builds

    print("\n".join(setup_colab()))
assert sys.version_info >= (3, 11), f"Inference Lab needs Python 3.11+, this is {sys.version}"

import labkit

labkit.setup()

# %% tags=["parameters"]
SMOKE = False  # True: small sizes for a quick headless run
DEVICE = "auto"  # "auto": the GPU when there is one, else the CPU; or "cpu", "cuda", "cuda:N"
MODEL = "smollm2-135m"
CLIENTS = (1, 4, 16, 32)
REQUESTS_PER_CLIENT = 1
MAX_TOKENS = 32  # benchmarks/serving.py uses 64
RATES = (0.5, 2.0, 8.0)  # open loop: arrivals per second
OPEN_REQUESTS = 16
TORCH_THREADS = None  # None: PyTorch's default

# %%
if SMOKE:  # tiny Llama (random weights, same architecture as SmolLM2): seconds instead of minutes
    MODEL, CLIENTS, MAX_TOKENS, RATES, OPEN_REQUESTS, TORCH_THREADS = "tiny-llama", (1, 4, 16), 12, (5.0, 40.0), 8, 1
import torch

if TORCH_THREADS:  # on a busy 2-core machine one thread avoids OpenMP spin-waits on tiny models
    torch.set_num_threads(TORCH_THREADS)
PROMPTS = ("Write a haiku about the sea.", "What is the capital of France?", "Tell me a joke about cats.",
           "Explain what a GPU does in one sentence.")

# %%
from labkit import devices

dev = devices.choose(DEVICE)  # a bad DEVICE fails here, naming the valid choices
print(dev.summary())

# %% [markdown]
# ## 1. Every scheduler gives greedy's exact text
#
# Batching must not change the answer. With left padding, an attention mask and per-row positions,
# each row of a batch computes what it would compute alone; requests join and leave mid-batch here.
# The model is loaded once on `dev` (fp32) and every engine of this lab serves it there.

# %%
from labkit import models
from labkit.serving.hf_engine import check_supported
from labkit.serving.repository import SCHEDULERS, make_engine
from labkit.serving.request import SamplingParams

net, tok = models.load_model(MODEL, device=dev.device)
ids = [models.encode_prompt(tok, p)["input_ids"][0].tolist() for p in PROMPTS]
reference = [net.generate(torch.tensor([i], device=dev.device), max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id or tok.eos_token_id)[0, len(i):].tolist() for i in ids]
SCHEDS = [s for s in SCHEDULERS if s != "hf-continuous" or net.config.model_type != "bloom"]
parity = {}
for name in SCHEDS:
    engine = make_engine(name, net, tok, max_batch=3, device=dev.device)
    parity[name] = engine.generate(ids, SamplingParams(max_tokens=12), eos_token_id=tok.eos_token_id) == reference
    engine.stop()
print("same tokens as generate():", parity)
print("answer:", repr(tok.decode(reference[1], skip_special_tokens=True)))

# %% [markdown]
# transformers' continuous batching does not run every architecture on CPU. On BLOOM (ALiBi) it fails inside the library:

# %%
try:
    check_supported(models.load_cached("tiny-bloom")[0])
except ValueError as err:
    print("tiny-bloom + hf-continuous:", err)

# %% [markdown]
# ## 2. Throughput and latency against concurrency
#
# Closed loop: N clients, each sends its next request when the previous answer is complete.
# Before running, predict: which scheduler's tokens/s grows with N, and which stays flat?

# %%
from labkit.experiments import scheduler_comparison

sweep = scheduler_comparison.compare_schedulers(MODEL, tuple(SCHEDS), clients=CLIENTS, requests_per_client=REQUESTS_PER_CLIENT,
                                       max_tokens=MAX_TOKENS, prompts=PROMPTS, device=dev.device, loaded=(net, tok))
print("served on:", ", ".join(sweep.table.device.unique()))
cols = ["scheduler", "clients", "succeeded", "tokens_per_s", "ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "e2e_p99_s", "mean_decode_batch"]
sweep.table[cols].round(3)

# %%
sweep.figure

# %%
scheduler_comparison.by_scheduler(sweep.table, "clients", "ttft_p50_s", "Median time to first token vs concurrency",
                         "TTFT p50 (s)", xlabel="concurrent clients")

# %%
scheduler_comparison.by_scheduler(sweep.table, "clients", "e2e_p99_s", "p99 end-to-end latency vs concurrency",
                         "e2e p99 (s)", xlabel="concurrent clients")

# %% [markdown]
# ## 3. Why the synchronous server queues
#
# Each bar is one request: the light part is waiting for the first token (queue + prefill), the
# dark part decoding. Under sync, request $k$ waits for all $k - 1$ before it; under continuous, all
# start within a step or two and share every forward pass.

# %%
from labkit.serving.app import Server, create_app
from labkit.serving.loadgen import run_load
from labkit.serving.repository import ModelRepository

timelines = {}
for name in ("sync", "continuous"):
    repo = ModelRepository(name, max_batch=32, device=dev.device)
    repo.load(MODEL, "v1", loaded=(net, tok))
    with Server(create_app(repo)) as srv:
        timelines[name] = run_load(srv.url, MODEL, PROMPTS, clients=8, requests=8, max_tokens=MAX_TOKENS)
scheduler_comparison.timeline(timelines["sync"], "sync: 8 requests arrive together")

# %%
scheduler_comparison.timeline(timelines["continuous"], "continuous: the same 8 requests")

# %% [markdown]
# ## 4. Open loop: requests arrive whether or not the server keeps up
#
# Poisson arrivals at a fixed rate. Below a scheduler's capacity latency stays flat; above it the
# queue grows for as long as the load lasts, and so does p99.

# %%
opened = scheduler_comparison.open_loop(MODEL, ("sync", "continuous"), rates=RATES, requests=OPEN_REQUESTS, max_tokens=MAX_TOKENS,
                                       device=dev.device, loaded=(net, tok))
opened.table[["scheduler", "rate", "sent", "succeeded", "rejected", "tokens_per_s", "ttft_p50_s", "e2e_p99_s"]].round(3)

# %%
opened.figure

# %% [markdown]
# ## 5. What does a batch cost? One decode step, timed
#
# Batching pays only as long as a step at batch *B* costs about what a step at batch 1 does. Time
# one decode step of the served model at batch 1 and at the largest concurrency of section 2, with
# the same function lab 07 uses (`llm_anatomy.decode_step_cost`: the median decode step of
# `labkit.decoding.timing`, next to the roofline's prediction and this machine's ridge point).

# %%
from labkit.experiments import llm_anatomy

top = max(CLIENTS)
step_cost = llm_anatomy.decode_step_cost(MODEL, batch_sizes=(1, top), device=str(dev.device))
step_ratio = step_cost.table.set_index("batch").step_vs_first[top]
ridge_batch = step_cost.table.attrs["ridge_batch"]
print(f"measured on {step_cost.table.attrs['measured_on']}: a decode step at batch {top} takes {step_ratio:.1f}× "
      f"the time of batch 1 (roofline: {step_cost.table.set_index('batch').roofline_vs_first[top]:.1f}×; ridge point "
      f"at batch {ridge_batch:.0f} in fp32), so batching {top} sequences can raise decode throughput at most "
      f"{top / step_ratio:.1f}×")
step_cost.table.round(2)

# %% [markdown]
# ## What theory predicts vs what you measured

# %%
from labkit import hardware
from labkit.models import specs

t = sweep.table.set_index(["scheduler", "clients"])
speedup = t.loc[("continuous", top), "tokens_per_s"] / t.loc[("sync", top), "tokens_per_s"]
print(f"* Theory: below the ridge point (batch {ridge_batch:.0f} here, fp32) a decode step costs about the same for 1 or "
      f"{top} sequences, so batching multiplies throughput by up to {top}×; past it, by less.\n"
      f"  Measured step (section 5): batch {top} costs {step_ratio:.1f}× batch 1, a ceiling of {top / step_ratio:.1f}× "
      f"for batching. Measured at {top} clients: continuous {t.loc[('continuous', top), 'tokens_per_s']:.0f} tok/s "
      f"vs sync {t.loc[('sync', top), 'tokens_per_s']:.0f} tok/s = {speedup:.1f}×; mean decode batch "
      f"{t.loc[('continuous', top), 'mean_decode_batch']:.1f} vs 1.")
print(f"* Theory: under sync, the k-th queued request waits for k − 1 full generations (TTFT grows with N).\n"
      f"  Measured TTFT p50 at {top} clients: sync {t.loc[('sync', top), 'ttft_p50_s']:.2f} s, dynamic "
      f"{t.loc[('dynamic', top), 'ttft_p50_s']:.2f} s, continuous {t.loc[('continuous', top), 'ttft_p50_s']:.2f} s.")
a100 = specs.A100_80GB
a100_ridge = a100.tflops / a100.hbm_TBps  # FLOP/byte; bf16 decode does 2 FLOPs per 2-byte weight: also the ridge batch
published = "; ".join(f"{u.system} {u.low:g}×" + (f"–{u.high:g}×" if u.high != u.low else "") + f" over {u.baseline} "
                      f"({u.source})" for u in specs.SERVING_SPEEDUPS)
print(f"* Published: {published}.\n"
      f"  Measured here ({hardware.detect().summary}, {MODEL}): continuous/sync {speedup:.1f}×, continuous/dynamic "
      f"{t.loc[('continuous', top), 'tokens_per_s'] / t.loc[('dynamic', top), 'tokens_per_s']:.1f}×. GPUs gain more: "
      f"an {a100.name}'s datasheet ridge is {a100_ridge:.0f} FLOP/byte, so its bf16 decode step stays memory-bound up "
      f"to batch ≈ {a100_ridge:.0f}, against ≈ {ridge_batch:.0f} (fp32) measured here, on {dev.label}.")

# %% [markdown]
# ## Exercises
#
# 1. With 16 clients and sync scheduling, roughly how many generations does the last request wait for?
# 2. Raise `max_batch` of the continuous scheduler to 64 and rerun section 2 at 32 clients: does throughput change? Why?
# 3. Set `RATES` above the sync server's capacity (its tokens/s ÷ `MAX_TOKENS`) and watch p99.

# %%
answer_1 = None
if answer_1 is not None:
    print("1: ✓" if answer_1 == 15 else "1: ✗ 15 (all the others, if they arrived first)")

# %%
from labkit.notebook import run

run.record({
    **dev.to_dict(),
    "model": MODEL,
    "served_on": sorted(set(sweep.table.device) | set(opened.table.device)),  # each engine's model's device
    "step_measured_on": step_cost.table.attrs["measured_on"],
    "schedulers": list(SCHEDS),
    "greedy_parity": parity,
    "clients": list(CLIENTS),
    "tokens_per_s": {f"{s}@{c}": v for (s, c), v in t.tokens_per_s.items()},
    "ttft_p50_s": {f"{s}@{c}": v for (s, c), v in t.ttft_p50_s.items()},
    "mean_decode_batch": {f"{s}@{c}": v for (s, c), v in t.mean_decode_batch.items()},
    "all_succeeded": bool((sweep.table.succeeded == sweep.table.sent).all()),
    "continuous_over_sync": speedup,
    "step_batches": [1, top],
    "step_ratio_top_vs_1": step_ratio,
    "step_ridge_batch": ridge_batch,
    "step_bandwidth_GBps": step_cost.table.attrs["bandwidth_GBps"],
    "step_gflops": step_cost.table.attrs["flops"] / 1e9,
    "timeline_ttft_p50_s": {k: v.summary["ttft_p50_s"] for k, v in timelines.items()},
    "open_loop_requests": OPEN_REQUESTS,
    "open_loop_succeeded": [int(n) for n in opened.table.succeeded],
})
