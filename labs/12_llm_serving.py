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
# * **paged** — labkit's own PagedAttention engine (section 6): continuous batching over KV blocks, with
#   admission by KV capacity, prefix caching and chunked prefill.
# * **hf-continuous** — the same idea in transformers v5 (`ContinuousBatchingManager`), with a
#   paged KV cache — PagedAttention (vLLM, SOSP '23) stores the cache in fixed-size blocks so
#   memory is not reserved for the longest possible answer.
#
# The same server (lab 02), the same load, only the scheduler changes. In `labkit.serving.policies` the
# first three are `schedule()` functions of a few lines each over one engine loop (`labkit.serving.engine`):
# they differ only in when requests join the batch and when they leave it.
#
# **By the end you can**
# - compare static, dynamic and continuous batching on tokens/s, TTFT and p99 latency;
# - explain PagedAttention, block tables and prefix caching with a working engine;
# - benchmark your server against vLLM on the same requests.
#
# **Before this lab:** lab 02 and lab 07.
# **Time:** the setup cell below prints how long this lab took when it was last run, with smoke and full parameters.

# %%
# Setup. Locally `make lab` installed everything; on Colab this cell installs the lab first (on a GPU
# runtime too: Runtime → Change runtime type → T4 GPU; DEVICE="auto" then measures that GPU).
import sys

if "google.colab" in sys.modules:  # pragma: no cover - only on Colab
    # !git clone -q --depth 1 https://github.com/inference-lab/inference-lab /content/inference-lab
    # %pip install -q -c /content/inference-lab/requirements/constraints.txt -e "/content/inference-lab[serve]"
    # !labkit prepare
    sys.path.insert(0, "/content/inference-lab")
    from labkit.colab import setup_colab  # widgets on Colab; on a GPU runtime, the CUDA builds

    print("\n".join(setup_colab()))
assert sys.version_info >= (3, 11), f"Inference Lab needs Python 3.11+, this is {sys.version}"

import labkit
from labkit.notebook import durations

print(durations.describe("12"))  # measured: the last recorded smoke and full runs
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
KV_BLOCK = 16  # section 6: tokens per KV block of the paged engine
WASTE_REQUESTS = 12  # section 6: requests through the padded and the paged KV cache
KV_BUDGET, BUDGET_REQUESTS = 2048, 32  # section 6: one KV budget (tokens), and the requests queued for it
PREFIX_TOKENS = 512  # section 6: the shared system prompt
LONG_PROMPT, PREFILL_CHUNK = 1024, 128  # section 6: a long prompt arriving while others decode; the chunk (tokens)
ENGINE_CLIENTS = (1, 4)  # section 7: loads at which the paged engine's runners and vLLM are compared
PAD_BATCH, PAD_LENGTHS = 8, (16, 192)  # section 8: prompts in one prefill, their lengths uniform in (low, high) tokens
PAD_REPEAT = 3  # section 8: timed prefills per layout
PEER_LIVE = True  # section 7: start vLLM (its own venv: `make peers`) when it is installed — about 3 minutes
SOLUTIONS = False  # True: the reference answers replace your code in the exercises (the tests prove each check can pass)

# %%
if SMOKE:  # tiny Llama (random weights, same architecture as SmolLM2): seconds instead of minutes
    MODEL, CLIENTS, MAX_TOKENS, RATES, OPEN_REQUESTS, TORCH_THREADS = "tiny-llama", (1, 4, 16), 12, (5.0, 40.0), 8, 1
    WASTE_REQUESTS, KV_BUDGET, BUDGET_REQUESTS, LONG_PROMPT, PREFILL_CHUNK = 8, 1024, 16, 512, 64
    ENGINE_CLIENTS, PEER_LIVE = (1,), False
    PAD_BATCH, PAD_LENGTHS, PAD_REPEAT = 6, (8, 128), 6
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

# %% [markdown]
# **Predict.** At the largest concurrency of `CLIENTS`, how many times sync's tokens/s does continuous batching serve
# (×)? Reason from which scheduler's tokens/s grows with N and which stays flat: sync decodes one sequence per step,
# continuous up to N, and a step at batch N costs about what one at batch one does only below the ridge point.

# %%
prediction_continuous_vs_sync = None  # your guess (×), e.g. 4

# %%
from labkit.experiments import scheduler_comparison
from labkit.notebook import predict

sweep = scheduler_comparison.compare_schedulers(MODEL, tuple(SCHEDS), clients=CLIENTS, requests_per_client=REQUESTS_PER_CLIENT,
                                       max_tokens=MAX_TOKENS, prompts=PROMPTS, device=dev.device, loaded=(net, tok))
print("served on:", ", ".join(sweep.table.device.unique()))
at_top = sweep.table[sweep.table.clients == max(CLIENTS)].set_index("scheduler").tokens_per_s
predict.compare(f"tokens/s at {max(CLIENTS)} clients, continuous ÷ sync", prediction_continuous_vs_sync,
                measured=float(at_top["continuous"] / at_top["sync"]), unit="×")
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

# %% [markdown]
# **Predict.** How many times the time of a decode step at batch one does a step at the largest concurrency of
# `CLIENTS` take (×)? Reason from lab 07's roofline: below the ridge batch a step reads the same weights at any batch.

# %%
prediction_step_ratio = None  # your guess (×), e.g. 2

# %%
from labkit.experiments import llm_anatomy

top = max(CLIENTS)
step_cost = llm_anatomy.decode_step_cost(MODEL, batch_sizes=(1, top), device=str(dev.device))
step_ratio = step_cost.table.set_index("batch").step_vs_first[top]
ridge_batch = step_cost.table.attrs["ridge_batch"]
predict.compare(f"decode step at batch {top} ÷ batch 1", prediction_step_ratio, measured=float(step_ratio),
                theory=float(step_cost.table.set_index("batch").roofline_vs_first[top]), unit="×")
print(f"measured on {step_cost.table.attrs['measured_on']}: a decode step at batch {top} takes {step_ratio:.1f}× "
      f"the time of batch 1 (roofline: {step_cost.table.set_index('batch').roofline_vs_first[top]:.1f}×; ridge point "
      f"at batch {ridge_batch:.0f} in fp32), so batching {top} sequences can raise decode throughput at most "
      f"{top / step_ratio:.1f}×")
step_cost.table.round(2)

# %% [markdown]
# ## 6. PagedAttention: KV blocks, prefix caching, chunked prefill
#
# labkit's sync, dynamic and continuous schedulers keep each layer's keys and values in one left-padded tensor
# (`labkit.serving.kv_batch`): every row is as long as the longest, and a row that joins or leaves changes the whole
# tensor. PagedAttention (Kwon et al., SOSP '23)
# stores them in fixed-size blocks of `KV_BLOCK` tokens anywhere in one pool; a per-sequence *block table* maps its
# logical blocks to physical ones, so a sequence wastes only the unfilled tail of its last block. labkit's paged
# engine (`labkit.serving.paged`, scheduler `"paged"`) is built that way from scratch: a block manager with a free
# list and reference counts, admission by KV capacity, preemption by recomputation, prefix caching and chunked
# prefill (`labkit.experiments.paged_kv` measures it).
#
# **KV waste at the same load.** The same requests (mixed prompt lengths and `max_tokens`, all queued at once,
# `max_batch=4` in both engines) through the padded batch and through the blocks. At every forward: the KV
# positions the padded cache tensors hold (batch × positions) or the paged sequences' blocks hold, against the
# tokens really there.

# %% [markdown]
# **Predict.** Which share of the padded cache's KV positions is padding, over every forward (%)? Reason from the
# mixed prompt lengths and `max_tokens`: every row is as long as the longest in the batch.

# %%
prediction_padding_pct = None  # your guess (%), e.g. 20

# %%
from labkit.experiments import paged_kv

waste = paged_kv.kv_waste(MODEL, requests=WASTE_REQUESTS, max_batch=4, block_size=KV_BLOCK, device=dev.device,
                          loaded=(net, tok))
w = waste.table.set_index("engine")
padded_name = w.index[0]
predict.compare("share of the padded cache that is padding", prediction_padding_pct,
                measured=float(w.mean_waste_pct[padded_name]), unit="%")
print(f"measured on {dev.label}: over every forward, {w.mean_waste_pct[padded_name]:.0f} % of the padded batch's KV "
      f"positions held padding, {w.mean_waste_pct['paged']:.0f} % of the paged blocks were empty; at no forward did the "
      f"paged blocks hold more than {w.max_unfilled_per_seq['paged']:.0f} empty slots per running sequence (under one "
      f"{KV_BLOCK}-token block), the padded cache up to {w.max_unfilled_per_seq[padded_name]:.0f}; same greedy "
      f"tokens: {bool(w.same_tokens.all())}")
waste.table.drop(columns="device").round(2)

# %%
waste.figure

# %% [markdown]
# **Concurrency in one KV budget.** Before vLLM a server reserved a request's whole cache when it admitted it:
# prompt + `max_tokens`, whether the answer would need it or not (`paged_kv.reserved_schedule` steps that rule). The
# paged engine admits a request when the blocks its tokens need *now* are free, keeping one block of headroom per
# running sequence for its next token; when a running sequence still needs a block and none is left, it preempts the
# newest one and recomputes it later. Same budget (`KV_BUDGET` tokens), same
# requests; batch slots are not the limit here.

# %%
budget = paged_kv.budget_concurrency(MODEL, kv_tokens=KV_BUDGET, requests=BUDGET_REQUESTS, block_size=KV_BLOCK,
                                     device=dev.device, loaded=(net, tok))
b = budget.table.set_index("rule")
reserve_rule = b.index[0]
print(f"in {KV_BUDGET} KV tokens: reserving prompt + max_tokens admits {b.first[reserve_rule]} requests at once "
      f"(peak {b.peak[reserve_rule]}, mean {b.mean_running[reserve_rule]:.1f}, {b.steps[reserve_rule]} steps); the "
      f"paged engine {b.first['paged']} (peak {b.peak['paged']}, mean {b.mean_running['paged']:.1f}, "
      f"{b.steps['paged']} steps), paying {b.preemptions['paged']} preemptions (recomputed prompts)")
b.drop(columns="device").round(2)

# %%
budget.figure

# %% [markdown]
# **Prefix caching.** Chat requests share a system prompt. A full block is named by the hash of its tokens and every
# token before it; a new prompt that starts with the same blocks reuses them instead of computing them again. Each
# request below is a different question after the same `PREFIX_TOKENS`-token system prompt, sent one at a time (its
# TTFT is its prefill, not a queue). Predict: with caching on, how close does TTFT come to having no system prompt?

# %%
prefix = paged_kv.prefix_ttft(MODEL, prefix_tokens=PREFIX_TOKENS, block_size=KV_BLOCK, device=dev.device,
                              loaded=(net, tok))
pt = prefix.table.set_index("setting")
prefix_off, prefix_on = pt.ttft_p50_s["system prompt, caching off"], pt.ttft_p50_s["system prompt, caching on"]
print(f"TTFT p50 ({dev.label}): {prefix_off * 1e3:.1f} ms without caching, {prefix_on * 1e3:.1f} ms with it "
      f"({prefix_off / prefix_on:.1f}× lower; the issue's target: 3×), {pt.ttft_p50_s['no system prompt'] * 1e3:.1f} ms "
      f"with no system prompt; prefix-cache hit rate {pt.prefix_hit_rate['system prompt, caching on']:.0%} of the "
      f"prompt tokens; same greedy tokens with and without caching: {prefix.table.attrs['same_tokens']}")
prefix.table.drop(columns="device").round(4)

# %% [markdown]
# **Chunked prefill.** A long prompt prefilled in one step makes every decoding request wait for that whole step.
# With `prefill_chunk`, each step computes at most that many tokens: the decoding requests' tokens first, then a
# chunk of the prompt. A few requests decode; a `LONG_PROMPT`-token prompt arrives. Predict: what happens to their
# longest gap between tokens, and to the long prompt's TTFT?

# %%
chunked = paged_kv.chunked_prefill(MODEL, long_prompt=LONG_PROMPT, chunks=(None, PREFILL_CHUNK), block_size=KV_BLOCK,
                                   device=dev.device, loaded=(net, tok))
ct = chunked.table.set_index("prefill_chunk")
whole, part = "whole", str(PREFILL_CHUNK)
print(f"while a {LONG_PROMPT}-token prompt was prefilled ({dev.label}): the decoders' longest gap was "
      f"{ct.gap_max_s[whole] * 1e3:.0f} ms whole vs {ct.gap_max_s[part] * 1e3:.0f} ms in chunks of {PREFILL_CHUNK} "
      f"(median gap {ct.gap_p50_s[whole] * 1e3:.0f} vs {ct.gap_p50_s[part] * 1e3:.0f} ms; "
      f"{ct.tpot_before_s[whole] * 1e3:.0f} ms before it arrived); the long prompt's TTFT "
      f"{ct.long_ttft_s[whole] * 1e3:.0f} ms whole vs {ct.long_ttft_s[part] * 1e3:.0f} ms chunked; same greedy "
      f"tokens: {bool(ct.same_tokens.all())}")
ct.drop(columns="device").round(4)

# %%
chunked.figure

# %% [markdown]
# ## 7. The engine under the scheduler, and the real engine
#
# At one client no scheduler can batch: a request decodes exactly as fast as the model under the scheduler computes
# one step. The paged engine has two model runners (`labkit.serving.limits.RUNNERS`). `torch` runs the transformers
# model with the paged attention of section 6. `onnxruntime` hands each step to ONNX Runtime as one graph
# (`labkit.serving.paged.onnx_layers`): the same pool and block tables; labkit gathers each sequence's cached keys and
# values through its block table into one buffer, ONNX Runtime's fused attention kernel (GroupQueryAttention, the
# one its own model builder uses) reads it in place and writes the new keys and values into it, and labkit copies
# those into their slots. Decode steps go as one call for the whole batch, a lone prompt's prefill as its own call;
# several prompts in one step are packed into one transformers forward. Same scheduler, same tokens. Predict: how
# much faster is one stream on the second runner, and does the gap stay when more clients share the steps?

# %%
from labkit.experiments import serving_engines

engines = serving_engines.runner_comparison(MODEL, (net, tok), clients=ENGINE_CLIENTS, max_tokens=MAX_TOKENS,
                                            prompts=PROMPTS)  # fmt: skip
et = engines.table
for row in et[~et.available].itertuples():
    print(f"{row.server}: not run here — {row.reason}")
ran = et[et.available].set_index(["server", "clients"])
print(f"({dev.label}) decode tokens/s per stream (1 / TPOT p50) and tokens/s of the server:")
ran[["tokens_per_s", "decode_tok_s", "ttft_p50_s", "tpot_p50_s"]].round(3)

# %%
engines.figure

# %% [markdown]
# **The real engine.** vLLM, where PagedAttention comes from, runs in its own environment (`make peers` builds
# `.venv-vllm`: it pins other versions than the lab's). When it is installed and `PEER_LIVE` is on, it is started
# here and measured under the same load, side by side with the runners above. Otherwise the rows that
# `benchmarks/serving.py` recorded on this machine are shown, when there are any, with their file and hardware.

# %%
import pandas as pd

peer = serving_engines.peer_comparison(MODEL, clients=ENGINE_CLIENTS, max_tokens=MAX_TOKENS, live=PEER_LIVE,
                                       prompts=PROMPTS)  # fmt: skip
source = peer.table.attrs["source"]
if not source:
    print(f"vLLM not measured: {peer.table.attrs['reason']}. `make peers`, then rerun with PEER_LIVE = True, or "
          "run `python benchmarks/serving.py`.")
    side = ran.reset_index()
elif source.startswith("measured now"):
    side = pd.concat([peer.table, ran.reset_index()], ignore_index=True)
else:
    side = peer.table
print(source or "labkit's runners only:")
side[[c for c in serving_engines.COLUMNS if c in side]].round(3)

# %% [markdown]
# ## 8. Padding removal: one prefill, packed
#
# Sections 2-7 batch requests; a batch of prompts of different lengths is usually a (batch, longest) tensor, the
# short rows filled with padding that every linear layer computes and attention scores. The share of the batch's token
# slots that hold padding is $1 - \sum_i l_i / (B \cdot \max_i l_i)$; the linear layers' FLOPs fall by exactly that
# share when the padding goes, and attention's, which grow with the square of a sequence's length, from
# $B \cdot \max_i l_i^2$ scored pairs to $\sum_i l_i (l_i + 1) / 2$ (a causal kernel scores a sequence's lower
# triangle). One prefill of `PAD_BATCH` random prompts, lengths uniform in `PAD_LENGTHS`, in three layouts
# (`labkit.experiments.padding_removal`):
#
# * **padded** — (B, longest), right-padded, with an attention mask: the usual batch.
# * **packed** — every prompt's tokens concatenated into one row, the position ids starting over with each prompt;
#   transformers sees the restarts and builds a block-diagonal causal mask. The linear layers lose the padding, but
#   masked SDPA still scores the whole $T^2$ square of the row's $T = \sum_i l_i$ tokens.
# * **varlen** — the same row, attention run inside each sequence alone (an attention function registered with
#   transformers' `AttentionInterface`, fed the sequence boundaries `cu_seqlens`): what FlashAttention's
#   `flash_attn_varlen_func` does on a GPU in one kernel. labkit's loops over the prompts, one SDPA call each: next to
#   the matrix multiplies a CPU hardly notices, but a small model's prefill on a GPU is bound by kernel launches, and
#   the loop adds one launch per prompt and layer; there the single kernel is what makes removing padding pay.
#
# Every real token's logits must equal the padded batch's (checked below), and the three are timed side by side; the
# decoder stack is timed without the LM head, which a server runs on one token per prompt in every layout.
#
# **Where this comes from.** ByteDance's Effective Transformer (`github.com/bytedance/effective_transformer`, built
# on FasterTransformer v1) removed the padding before the linear layers of BERT and put it back around attention;
# NVIDIA took it into FasterTransformer v2.1 as "Effective FasterTransformer" (`NVIDIA/DeepLearningExamples`,
# `FasterTransformer/v2.1/README.md`). ByteTransformer (Zhai et al., IPDPS '23, arXiv:2210.03052) removed it from
# attention too, with a fused variable-length attention kernel. FasterTransformer's successor, TensorRT-LLM, packs
# every request's tokens into one row (`remove_input_padding`; its in-flight batching requires packed input), and
# vLLM (Kwon et al., SOSP '23) flattens a step's tokens the same way, each sequence found by its start offset: the
# labkit paged engine of section 6 packs its steps like this too.
#
# **Predict.** How many times faster is the varlen prefill than the padded one, on this device?

# %%
prediction_padding_speedup = None  # your guess (×): padded prefill time ÷ varlen prefill time

# %%
from labkit.experiments import padding_removal

unpadded = padding_removal.padding_removal(MODEL, batch=PAD_BATCH, length_range=PAD_LENGTHS, repeat=PAD_REPEAT,
                                           device=dev.device, loaded=(net, tok))  # fmt: skip
layouts = unpadded.table.set_index("layout")
pad_share = unpadded.table.attrs["padding_share"]
pad_speedup, pad_predicted = layouts.speedup, layouts.predicted_speedup
print(f"{PAD_BATCH} prompts of {unpadded.table.attrs['lengths']} tokens: {pad_share:.0%} of the padded batch's token "
      f"slots are padding, {unpadded.table.attrs['flops_padding_share']:.0%} of its FLOPs. Measured on {dev.label}: "
      f"varlen {pad_speedup['varlen']:.2f}× faster than padded (FLOPs predict {pad_predicted['varlen']:.2f}×), "
      f"packed with a block-diagonal mask {pad_speedup['packed']:.2f}× (predict {pad_predicted['packed']:.2f}×: its "
      f"mask scores "
      f"{layouts.attention_pairs['packed'] / layouts.attention_pairs['padded']:.1f}× the padded attention pairs); "
      f"largest logit difference at a real token {layouts.max_abs_diff.max():.1e}")
layouts.drop(columns="device").round(4)

# %%
from labkit.notebook import predict

predict.compare("varlen prefill speed-up over the padded batch", prediction_padding_speedup,
                measured=float(pad_speedup["varlen"]), theory=float(pad_predicted["varlen"]), unit="×")
unpadded.figure

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
print(f"* Theory: a left-padded batch holds every row as long as the longest; blocks waste less than one block "
      f"({KV_BLOCK} tokens) per sequence.\n"
      f"  Measured (section 6): padding {w.mean_waste_pct[padded_name]:.0f} % of the padded cache, empty slots "
      f"{w.mean_waste_pct['paged']:.0f} % of the paged blocks, at most {w.max_unfilled_per_seq['paged']:.0f} per "
      f"sequence.")
print(f"* Theory: reserving prompt + max_tokens caps concurrency at what the reservations fit; admitting by the "
      f"blocks needed now fits more, until they grow (then it preempts).\n"
      f"  Measured in {KV_BUDGET} KV tokens: {b.first[reserve_rule]} vs {b.first['paged']} requests admitted at "
      f"once, mean {b.mean_running[reserve_rule]:.1f} vs {b.mean_running['paged']:.1f} running, "
      f"{b.preemptions['paged']} preemptions.")
prefix_cost = prefix_off - pt.ttft_p50_s["no system prompt"]  # what computing the system prompt adds to TTFT
print(f"* Theory: with the system prompt's blocks cached, a prefill computes only the question, so caching saves what "
      f"the system prompt's prefill costs: most of TTFT where a prefill step's time grows with its tokens (a CPU; a big "
      f"model on a GPU), almost nothing where a step costs its kernel launches whatever its length (a small model on "
      f"a GPU).\n  Measured ({dev.label}): the {PREFIX_TOKENS}-token system prompt added {prefix_cost * 1e3:.1f} ms "
      f"to TTFT p50 without caching; with it TTFT was {prefix_off / prefix_on:.1f}× lower, hit rate "
      f"{pt.prefix_hit_rate['system prompt, caching on']:.0%}.")
one, (ort, base) = min(ENGINE_CLIENTS), ("paged+onnxruntime", "paged+torch")
if (ort, one) in ran.index:
    print(f"* Theory: at one client nothing batches, so a stream decodes as fast as the engine computes one step: the "
          f"scheduler cannot help.\n  Measured at {one} client ({dev.label}): {ran.decode_tok_s[(base, one)]:.1f} "
          f"tok/s per stream on the transformers runner vs {ran.decode_tok_s[(ort, one)]:.1f} on ONNX Runtime "
          f"({ran.decode_tok_s[(ort, one)] / ran.decode_tok_s[(base, one)]:.1f}×), same scheduler and tokens.")
print(f"* Theory: chunking bounds a decoding request's stall by one chunk's step instead of the whole prompt's, and "
      f"delays the long prompt's first token; where the whole prompt's step costs about one decode step (launch-bound: "
      f"a small model on a GPU) there is no stall to bound.\n  Measured ({dev.label}): median gap "
      f"{ct.gap_p50_s[whole] * 1e3:.0f} ms, longest gap {ct.gap_max_s[whole] * 1e3:.0f} → "
      f"{ct.gap_max_s[part] * 1e3:.0f} ms, long TTFT {ct.long_ttft_s[whole] * 1e3:.0f} → "
      f"{ct.long_ttft_s[part] * 1e3:.0f} ms.")
print(f"* Theory: removing the padding removes {pad_share:.0%} of the linear layers' FLOPs (1 − Σl / (B · max l)) "
      f"and most of attention's (B · max l² → Σ l(l + 1)/2 pairs): {pad_predicted['varlen']:.2f}× fewer FLOPs.\n"
      f"  Measured (section 8, {dev.label}): the varlen prefill {pad_speedup['varlen']:.2f}× faster, the packed one "
      f"with a block-diagonal mask {pad_speedup['packed']:.2f}×.")

# %% [markdown]
# ## Exercises
#
# 1. With 16 clients and sync scheduling, roughly how many generations does the last request wait for?
# 2. Raise `max_batch` of the continuous scheduler to 64 and rerun section 2 at 32 clients: does throughput change? Why?
# 3. Set `RATES` above the sync server's capacity (its tokens/s ÷ `MAX_TOKENS`) and watch p99.
# 4. With blocks of 16 tokens, at most how many KV slots can the paged engine leave empty while 10 sequences run?
# 5. Set `PREFILL_CHUNK` to 32 and rerun section 6: what happens to the longest gap, and to the long prompt's TTFT?
# 6. **Implement** the block-table lookup of section 6 (PagedAttention, Kwon et al. 2023; vLLM's `slot_mapping`):
#    for each token position of a sequence, the flat slot of the KV pool where its key and value live,
#    `block_table[position // block_size] × block_size + position % block_size`. A position past the table's
#    last block must raise `IndexError` (or `ValueError`): no block of this sequence holds it. The check below runs
#    your function on seven cases (block boundaries, a block's last slot, a fragmented table from labkit's
#    `BlockManager`, positions in any order, a position out of range) and compares each with labkit's paged
#    engine (`labkit.serving.paged.attention.slot`); it names the first case that fails and how.
# 7. **Implement** one step of continuous batching (section 2's `continuous` scheduler; Orca, Yu et al. 2022):
#    between two decode steps, the sequences that finished leave the batch at once, and queued requests join
#    into every free slot, first come first served; a request cancelled while it waited is dropped and takes no
#    slot. Return the next batch (those still running, in their order, then the joiners) and the joiners. The check
#    below compares six cases with labkit's own engine (`labkit.serving.engine.Engine` and `policies.continuous`).

# %%
answer_1 = None
if answer_1 is not None:
    print("1: ✓" if answer_1 == 15 else "1: ✗ 15 (all the others, if they arrived first)")
answer_4 = None
if answer_4 is not None:
    print("4: ✓" if answer_4 == 10 * (16 - 1) else "4: ✗ 150: each sequence's last block may lack 15 tokens")

# %% tags=["exercise"]
from labkit.exercises import block_table as block_table_exercise  # the grader (block_table is the argument below)
from labkit.notebook import exercise


def slot_mapping(block_table: list[int], positions: list[int], block_size: int) -> list[int]:
    """block_table: physical block ids (logical block i -> block_table[i]). Returns one pool slot per position."""
    # your code: for each position, its logical block (position // block_size) gives a physical block through the
    # table; the slot is that block's first slot plus the offset; raise IndexError past the table's last block
    return list(positions)  # the stub treats the pool as one contiguous cache: the check says what is wrong


if SOLUTIONS:  # the tests inject the reference answer here; a learner leaves SOLUTIONS = False
    from labkit.exercises.solutions.block_table import slot_mapping  # noqa: F811

exercise.report("slot_mapping", block_table_exercise.grade(slot_mapping), SOLUTIONS)

# %% tags=["exercise"]
from labkit.exercises import continuous_batching
from labkit.exercises.continuous_batching import Req
from labkit.notebook import exercise


def schedule_step(running: list[Req], waiting: list[Req], max_batch: int) -> tuple[list[Req], list[Req]]:
    """running: the batch after the last step (Req.finished); waiting: the queue, oldest first (Req.cancelled).
    Returns (the next batch, the requests admitted), lists of the Req objects given."""
    # your code: keep the running requests that have not finished, then admit waiting ones in order, skipping
    # cancelled ones, while the batch has fewer than max_batch
    return running, []  # the stub admits nobody and lets nobody leave: the check says what is wrong


if SOLUTIONS:  # the tests inject the reference answer here; a learner leaves SOLUTIONS = False
    from labkit.exercises.solutions.continuous_batching import schedule_step  # noqa: F811

exercise.report("schedule_step", continuous_batching.grade(schedule_step), SOLUTIONS)

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
    "kv_block_size": KV_BLOCK,
    "kv_waste_pct": {"padded": w.mean_waste_pct[padded_name], "paged": w.mean_waste_pct["paged"]},
    "kv_max_unfilled_per_seq": {"padded": w.max_unfilled_per_seq[padded_name],
                                "paged": w.max_unfilled_per_seq["paged"]},
    "kv_waste_same_tokens": bool(w.same_tokens.all()),
    "budget_kv_tokens": KV_BUDGET,
    "budget_prompt_tokens": budget.table.attrs["prompt_tokens"],
    "budget_max_tokens": budget.table.attrs["max_tokens"],
    "budget_first": {"reserve": int(b.first[reserve_rule]), "paged": int(b.first["paged"])},
    "budget_peak": {"reserve": int(b.peak[reserve_rule]), "paged": int(b.peak["paged"])},
    "budget_mean_running": {"reserve": b.mean_running[reserve_rule], "paged": b.mean_running["paged"]},
    "budget_preemptions": int(b.preemptions["paged"]),
    "prefix_tokens": PREFIX_TOKENS,
    "prefix_requests": prefix.table.attrs["requests"],
    "prefix_prompt_tokens_sent": prefix.table.attrs["prompt_tokens_sent"],
    "prefix_ttft_p50_s": pt.ttft_p50_s.to_dict(),
    "prefix_hit_rate": pt.prefix_hit_rate["system prompt, caching on"],
    "prefix_same_tokens": prefix.table.attrs["same_tokens"],
    "chunk_long_prompt": LONG_PROMPT,
    "chunk_size": PREFILL_CHUNK,
    "chunk_gap_max_s": {"whole": ct.gap_max_s[whole], "chunked": ct.gap_max_s[part]},
    "chunk_gap_p50_s": {"whole": ct.gap_p50_s[whole], "chunked": ct.gap_p50_s[part]},
    "chunk_long_ttft_s": {"whole": ct.long_ttft_s[whole], "chunked": ct.long_ttft_s[part]},
    "chunk_same_tokens": bool(ct.same_tokens.all()),
    "engine_clients": list(ENGINE_CLIENTS),
    "engine_unavailable": dict(zip(et.server[~et.available], et.reason[~et.available], strict=True)),
    "engine_decode_tok_s": {f"{s}@{c:.0f}": v for (s, c), v in ran.decode_tok_s.items()},
    "engine_tokens_per_s": {f"{s}@{c:.0f}": v for (s, c), v in ran.tokens_per_s.items()},
    "engine_all_succeeded": bool((ran.succeeded == ran.sent).all()),
    "peer_source": source,
    "pad_lengths": unpadded.table.attrs["lengths"],
    "pad_share": pad_share,
    "pad_tokens": layouts.tokens.to_dict(),
    "pad_attention_pairs": layouts.attention_pairs.to_dict(),
    "pad_speedup": layouts.speedup.to_dict(),
    "pad_predicted_speedup": layouts.predicted_speedup.to_dict(),
    "pad_max_abs_diff": layouts.max_abs_diff.to_dict(),
})
