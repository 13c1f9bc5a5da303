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
# # Lab 02 — Inference system architecture, live
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/inference-lab/inference-lab/blob/main/labs/02_inference_system_architecture.ipynb)
# [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/inference-lab/inference-lab/main?urlpath=lab/tree/labs/02_inference_system_architecture.ipynb)
#
# A trained model is not yet a service. Around it sits an **inference system**:
#
# | part | here | what it does |
# |---|---|---|
# | access layer | FastAPI routes (`labkit.serving.app`) | parse and validate requests (OpenAI-compatible API), say no early (`4xx`, `429`) |
# | queue | one bounded queue per model version (`labkit.serving.engine`) | absorb bursts; full → `429 Retry-After` instead of unbounded waiting |
# | scheduler | `labkit.serving.policies` | decide which requests run together on the model (lab 12 compares them) |
# | model repository | `labkit.serving.repository` | load / unload named models and versions, route traffic, canary, roll back |
# | backend | PyTorch in one worker thread, on the lab's `DEVICE` | the model itself (labs 03–05 make it faster) |
# | metrics | `GET /metrics` (Prometheus text) | queue depth, batch size, requests by status, TTFT / per-token / end-to-end latency |
# | model registry | `labkit.serving.registry`, `labkit.serving.promotion` | which bytes each version is (SHA-256), where they came from, how they measured; a promotion gate |
#
# In this lab you start that system from the notebook, send it real HTTP requests, read its
# metrics, check Little's law against the server's own gauge, deploy a second version of the model
# to a share of the traffic, and let a rule computed from the data promote it or roll it back. Last, you keep a
# registry of model versions (content hash, lineage, measurements) and let a gate decide which one is production.
#
# **By the end you can**
# - start an inference server and send it OpenAI-style requests, streamed, queued and refused;
# - read a server's metrics and check Little's law against them;
# - roll out a second model version as a canary and let data decide: promote or roll back;
# - register model versions by content hash and lineage, and gate a promotion on measured quality and latency.
#
# **Before this lab:** lab 01.
# **Time:** the setup cell below prints how long this lab took when it was last run, with smoke and full parameters.

# %%
# Setup. Locally `make lab` installed everything; on Colab this cell installs the lab first (on a GPU
# runtime too: Runtime → Change runtime type → T4 GPU; DEVICE="auto" then measures that GPU).
import sys

if "google.colab" in sys.modules:  # pragma: no cover - only on Colab
    # !git clone -q --depth 1 https://github.com/inference-lab/inference-lab /content/inference-lab
    # %pip install -q -c /content/inference-lab/requirements/constraints.txt -e "/content/inference-lab[serve,engines]"
    # !labkit prepare
    sys.path.insert(0, "/content/inference-lab")
    from labkit.colab import setup_colab  # widgets on Colab; on a GPU runtime, the CUDA builds

    print("\n".join(setup_colab()))
assert sys.version_info >= (3, 11), f"Inference Lab needs Python 3.11+, this is {sys.version}"

import labkit
from labkit.notebook import durations

print(durations.describe("02"))  # measured: the last recorded smoke and full runs
labkit.setup()

# %% tags=["parameters"]
SMOKE = False  # True: small sizes for a quick headless run
DEVICE = "auto"  # "auto": the GPU when there is one, else the CPU; or "cpu", "cuda", "cuda:N"
SOLUTIONS = False  # True: the reference answers replace your code in the exercises (the tests prove each check can pass)
MODEL = "smollm2-135m"
PROMPT = "What is the capital of France?"
CANARY_SHARE = 0.2
CANARY_REQUESTS = 100
BURST = 48  # concurrent clients against a small queue
MAX_TOKENS = 16
OPEN_LOAD = 0.5  # open-loop arrival rate, as a share of the throughput the burst measured
OPEN_REQUESTS = 60
# The canary rule, fixed before anything is measured: promote v2 only if it answered at least MIN_CANARY_REQUESTS
# of the canary traffic, its greedy tokens agree with v1's on at least MIN_AGREEMENT of the positions (prefix
# agreement) and its median TTFT is at most MAX_TTFT_RATIO × v1's.
MIN_CANARY_REQUESTS = 5
MIN_AGREEMENT = 0.9
MAX_TTFT_RATIO = 1.25
AGREEMENT_PROMPTS = ["What is the capital of France?", "Name three primary colours.", "Write one sentence about the sea.",
                     "What does a CPU do?"]
TORCH_THREADS = None  # None: PyTorch's default
# Section 7's promotion gate, fixed before anything is measured: a candidate replaces the production version only if
# its files still hash to what was registered, its held-out perplexity is at most MAX_PPL_INCREASE above production's
# and its p99 latency at most MAX_P99_INCREASE above production's.
MAX_PPL_INCREASE = 0.02
MAX_P99_INCREASE = 0.10
REGISTRY_EVAL_TOKENS = 2048  # held-out test tokens scored per version (perplexity, agreement)
REGISTRY_REPEAT = 100  # timed forward passes per version (their p99: the second-largest of 100)
REGISTRY_LATENCY_TOKENS = 64  # tokens in each timed forward pass

# %%
if SMOKE:  # the Shakespeare-trained tiny BLOOM from lab 01: same system, seconds instead of minutes
    MODEL, PROMPT, CANARY_REQUESTS, MAX_TOKENS, TORCH_THREADS = "tiny-bloom-shakespeare", "ROMEO:\n", 80, 8, 1
    OPEN_REQUESTS, AGREEMENT_PROMPTS = 24, ["ROMEO:\n", "JULIET:\nO Romeo,", "KING HENRY:\nOnce more unto the",
                                            "HAMLET:\nTo be, or not"]
    REGISTRY_EVAL_TOKENS, REGISTRY_REPEAT, REGISTRY_LATENCY_TOKENS = 256, 20, 32
import torch

if TORCH_THREADS:  # on a busy 2-core machine one thread avoids OpenMP spin-waits on tiny models
    torch.set_num_threads(TORCH_THREADS)

# %%
from labkit import devices

dev = devices.choose(DEVICE)  # a bad DEVICE fails here, naming the valid choices
print(dev.summary())

# %% [markdown]
# ## 1. The model repository
#
# Clients ask for a *name* (`"assistant"`); the repository maps it to a loaded *version*. The first
# version loaded is the stable one. Each version gets its own queue and engine (one worker thread that owns the model),
# and computes on the repository's device (`device=`; `labkit serve --device` on the command line).

# %%
from labkit.serving.repository import ModelRepository

MAX_BATCH, MAX_QUEUE = 4, 8
repo = ModelRepository(scheduler="continuous", max_batch=MAX_BATCH, max_queue=MAX_QUEUE, device=dev.device)
repo.load("assistant", "v1", source=MODEL)
repo.table()

# %% [markdown]
# ## 2. Start the server and send a request
#
# The server runs in a background thread of this kernel, bound to 127.0.0.1 only, on a free port.
# Any OpenAI client works against `server.url + "/v1"`; here we use plain `httpx`.

# %%
import json

import httpx

from labkit.serving.app import Server, create_app

server = Server(create_app(repo, max_tokens_limit=256)).start()
client = httpx.Client(base_url=server.url, timeout=120)
print("serving at", server.url)
reply = client.post("/v1/chat/completions", json={
    "model": "assistant", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": MAX_TOKENS, "temperature": 0})
print(reply.status_code, "served by version", reply.headers["x-model-version"])
print(json.dumps(reply.json(), indent=2))

# %% [markdown]
# The same request with `"stream": true` comes back as server-sent events, one `data:` line per
# piece of text, so the user sees the first words after one token, not after all of them. (The times
# below are one request's, to show the stream; latency is measured over many requests in section 5.)

# %%
import time

start, pieces = time.perf_counter(), []
with client.stream("POST", "/v1/completions", json={"model": "assistant", "prompt": PROMPT, "max_tokens": MAX_TOKENS,
                                                    "temperature": 0, "stream": True}) as r:
    for line in r.iter_lines():
        if line.startswith("data: {"):
            pieces.append((round(time.perf_counter() - start, 3), json.loads(line[6:])["choices"][0]["text"]))
        elif line == "data: [DONE]":
            print("... data: [DONE]")
for t, text in pieces[:6]:
    print(f"{t:7.3f} s  data: {text!r}")

# %% [markdown]
# ## 3. Saying no: validation and admission control
#
# Bad requests are refused before they reach the model, each with a status and a message.

# %%
import pandas as pd

bad = {
    "malformed JSON": dict(content=b"{not json", headers={"content-type": "application/json"}),
    "unknown model": dict(json={"model": "gpt-9", "prompt": "hi"}),
    "max_tokens over the limit": dict(json={"model": "assistant", "prompt": "hi", "max_tokens": 100_000}),
    "temperature out of range": dict(json={"model": "assistant", "prompt": "hi", "temperature": 9}),
}
refusals = pd.DataFrame([{"request": k, "status": (r := client.post("/v1/completions", **kw)).status_code,
                          "message": r.json()["error"]["message"][:90]} for k, kw in bad.items()])
refusals

# %% [markdown]
# A burst of concurrent clients against the small queue (`MAX_QUEUE`): what does not fit is told to
# come back later (`429` with `Retry-After`). Nothing is dropped silently: every request sent is counted, by the
# clients (the load generator) and by the server (its `/metrics`, read before and after the burst).

# %%
from labkit.serving import metrics
from labkit.serving.loadgen import run_load


def server_count(status: int) -> float:
    """Requests for "assistant" the server has answered with `status` so far."""
    return metrics.total(metrics.parse(client.get("/metrics").text), "labkit_requests_total", model="assistant",
                         status=status)


before_burst = {s: server_count(s) for s in (200, 429)}
burst = run_load(server.url, "assistant", [PROMPT], clients=BURST, requests=BURST, max_tokens=MAX_TOKENS)
accounting = {k: burst.summary[k] for k in ("sent", "succeeded", "rejected", "failed", "rejected_by_status")}
server_saw = {str(s): server_count(s) - before_burst[s] for s in (200, 429)}
print("the server counted:", server_saw)
accounting

# %% [markdown]
# ## 4. Reading the metrics
#
# `/metrics` is what Prometheus scrapes. A few lines of it:

# %%
text = client.get("/metrics").text
print("\n".join(ln for ln in text.splitlines() if ln.startswith(("labkit_requests_total", "labkit_queue_depth",
                                                                  "labkit_running_batch_size", "labkit_generated"))))
scrape = metrics.parse(text)
ttft_mean = (metrics.total(scrape, "labkit_time_to_first_token_seconds_sum")
             / metrics.total(scrape, "labkit_time_to_first_token_seconds_count"))
print(f"mean time to first token so far: {ttft_mean * 1e3:.0f} ms")

# %% [markdown]
# ## 5. Little's law, checked from inside the server
#
# Little's law: in a stable system the mean number of requests inside, *L*, equals the arrival rate
# *λ* times the mean time each one spends inside, *W*. With a closed loop of N clients (each sends
# its next request when the last one returns) it is true by construction — throughput × latency = N
# whatever the server does — so it checks nothing. Under **open-loop** load (Poisson arrivals, as real
# traffic) it relates three numbers measured apart: λ and W from the clients' records, and *L* from
# the server's own gauge — queue depth + running batch size in `/metrics`, read every few milliseconds
# while the load runs. The arrival rate is a share (`OPEN_LOAD`) of the throughput the burst above
# measured, so the queue stays stable.

# %% [markdown]
# **Predict.** How many requests will the server's gauge count inside the engine on average, L̄ (requests)? Reason
# from Little's law, L = λ·W: λ is a share (`OPEN_LOAD`) of what the burst answered per second, and W about one
# request's time in section 2's stream, a little more when requests queue.

# %%
prediction_in_system = None  # your guess (requests), e.g. 2

# %%
from labkit.experiments import inference_system
from labkit.notebook import predict

capacity = burst.summary["requests_per_s"]  # answered requests per second while the burst kept every slot busy
little = inference_system.littles_law(server.url, "assistant", [PROMPT], rate=OPEN_LOAD * capacity,
                                      requests=OPEN_REQUESTS, max_tokens=MAX_TOKENS)
lt = little.table.iloc[0]
print(f"offered {lt.offered_rate:.2f} requests/s ({OPEN_LOAD:.0%} of the burst's {capacity:.2f}/s); "
      f"{lt.answered:.0f} answered, {lt.refused:.0f} refused, {lt.readings:.0f} gauge readings")
predict.compare("mean requests inside the engine (L̄, the gauge)", prediction_in_system, measured=float(lt.gauge_mean),
                theory=float(lt.lambda_W), unit="requests")  # theory: Little's law, λ·W from the clients' records
little.table.round(3)

# %%
little.figure

# %% [markdown]
# The gauge counts the requests inside the engine (waiting or in the batch); the clients' W also holds
# the HTTP layer around it (parsing, tokenizing, streaming the answer). So L̄ from the gauge can only
# be at most λ·W, and the difference is the mean number of requests in that layer.
#
# ## 6. Canary release: a decision from the data
#
# Version `v2` is the same model in this device's half-precision float (`dev.half`: bf16 on CPUs and recent GPUs,
# fp16 on older ones such as the T4): half the memory — is it as good, as fast? Rather than
# switching everyone at once, send it a **canary** share of the traffic and compare. The rule that
# decides was fixed with the parameters, before anything is measured:

# %% [markdown]
# **Predict.** What share of the `CANARY_REQUESTS` requests will v2 answer (%)? Reason from `CANARY_SHARE` and how
# far a random split of that many requests strays from it.

# %%
prediction_canary_pct = None  # your guess (%), e.g. 25

# %%
print(f"promote v2 if (1) it answered >= {MIN_CANARY_REQUESTS} canary requests, (2) its greedy tokens agree with v1's "
      f"on >= {MIN_AGREEMENT:.0%} of the positions of {len(AGREEMENT_PROMPTS)} prompts (prefix agreement) and (3) its "
      f"median TTFT under the canary's traffic is <= {MAX_TTFT_RATIO:g} × v1's; otherwise roll back")
repo.load("assistant", "v2", source=MODEL, dtype=dev.half)
repo.set_canary("assistant", "v2", CANARY_SHARE)
before = metrics.parse(client.get("/metrics").text)
canary = run_load(server.url, "assistant", [PROMPT], clients=4, requests=CANARY_REQUESTS, max_tokens=MAX_TOKENS)
per_version = canary.records.groupby("version").agg(requests=("index", "size"), ttft_p50_s=("ttft_s", "median"),
                                                    e2e_p50_s=("e2e_s", "median"), tokens=("tokens", "sum"))
per_version["share"] = per_version.requests / per_version.requests.sum()
served_on = repo.table().set_index("version").device.to_dict()  # where each version computed (its model's device)
measured_share = per_version.share.get("v2", 0.0)
predict.compare(f"share of {CANARY_REQUESTS} requests answered by the canary v2", prediction_canary_pct,
                measured=float(100 * measured_share), theory=100 * CANARY_SHARE, unit="%")
per_version

# %%
from labkit import plots

scrape = metrics.parse(client.get("/metrics").text)


def served(parsed: dict, version: str) -> float:
    return metrics.total(parsed, "labkit_requests_total", model="assistant", version=version, status="200")


by_version = pd.DataFrame([{"version": v, "requests (server)": served(scrape, v) - served(before, v),
                            "requests (clients saw)": int(per_version.requests.get(v, 0))} for v in ("v1", "v2")])
plots.bars(by_version.melt("version", var_name="counted by", value_name="requests"), "version", "requests",
           f"Canary at {CANARY_SHARE:.0%}: requests per version", color="counted by")

# %% [markdown]
# Now the second half of the rule's data: each version's greedy tokens on the same prompts, through its
# own engine (`inference_system.greedy_tokens`), then the verdict.

# %%
tokens = {v: inference_system.greedy_tokens(repo, "assistant", v, AGREEMENT_PROMPTS, MAX_TOKENS) for v in ("v1", "v2")}
decision = inference_system.canary_decision(tokens["v1"], tokens["v2"], per_version.ttft_p50_s["v1"],
                                            per_version.ttft_p50_s.get("v2", float("nan")),
                                            int(per_version.requests.get("v2", 0)), MIN_AGREEMENT, MAX_TTFT_RATIO,
                                            MIN_CANARY_REQUESTS)
print("decision:", decision.action)
decision.table()

# %% [markdown]
# Carry the decision out. A rollback sends all traffic back to v1 and drains and unloads v2; a
# promotion makes v2 the stable version and unloads v1.

# %%
(repo.promote if decision.promote else repo.rollback)("assistant")
after = run_load(server.url, "assistant", [PROMPT], clients=2, requests=10, max_tokens=4)
print(f"after '{decision.action}', versions serving:", after.records.version.value_counts().to_dict())
repo.table()

# %% [markdown]
# ## 7. Managing model versions: a registry, lineage and a promotion gate
#
# The repository above serves whatever it is told to load; it does not know *which bytes* a version is, where they
# came from, or whether they earned production. That is the **model registry**'s job (`labkit.serving.registry`):
# one entry per version with its format, its **content hash** (SHA-256 of the files: the same bytes, the same hash;
# one byte different, another hash), its size, its **lineage** (the parent's hash and the transformation that made
# it) and the measurements attached to it. A **promotion gate** (`labkit.serving.promotion`) then lets a candidate
# replace the production version only on numbers, with the rule fixed in the parameters cell before anything is
# measured, and lists every reason when it says no.
#
# Registered here (the registry lives in the labkit cache, never in git), on the CPU whatever `DEVICE` is (ONNX
# Runtime's CPU provider runs the ONNX files, so all versions are timed side by side with the same threads):
#
# | version | what | made from |
# |---|---|---|
# | v1 | lab 01's `tiny-bloom-shakespeare`, a safetensors folder (weights, config, tokenizer) | the training plays (their text hashed) |
# | v2 | the same model exported to ONNX, fp32 | v1, `convert.export_onnx` |
# | v3 | v2 with every weight matrix in int8 (ONNX Runtime's dynamic quantization) | v2 |
# | v4 | a byte-for-byte copy of v3 in a deployment folder, then **one byte changed** | v3 |
#
# **Predict.** One byte of v4's file (a few megabytes) changes after registration. How many bits of its SHA-256 hash
# then differ from the registered one?

# %%
prediction_hash_bits = None  # your guess (bits of 256)

# %%
from labkit.experiments import model_registry
from labkit.serving.promotion import PromotionRule

rule = PromotionRule(max_quality_increase=MAX_PPL_INCREASE, max_p99_increase=MAX_P99_INCREASE)
versions = model_registry.model_versions(rule, eval_budget=REGISTRY_EVAL_TOKENS, latency_seq=REGISTRY_LATENCY_TOKENS,
                                         repeat=REGISTRY_REPEAT)
print("registry:", versions.registry.file)
versions.table[["version", "format", "size_MB", "sha256", "parent", "transformation"]]

# %%
versions.figure

# %% [markdown]
# Each version's measurements, then the gate, run in order: v1 has nothing to be compared with (its files must
# verify and its numbers exist); every later one is compared with the production version *at that moment*.
# Perplexity is on held-out test plays, agreement is the share of positions where the version's top token is v1's.
# p99 from a few dozen timings is close to their maximum: one stall of a shared machine can decide the latency check,
# which is why a real gate measures longer (full mode: `REGISTRY_REPEAT` calls) or repeats before it refuses.

# %%
versions.table[["version", "perplexity", "top1_agreement", "p50_ms", "p99_ms", "stage", "gate", "reasons"]].round(4)

# %%
versions.gates.round(3)

# %% [markdown]
# The tampered copy: its bytes were the registered ones, then one byte changed.

# %%
from labkit.notebook import predict

tamper = versions.tamper
print(f"byte {tamper['offset']:,} of {tamper['path']}: {tamper['old_byte']:#04x} -> {tamper['new_byte']:#04x}")
print(f"sha256 before: {tamper['sha256_before']}\nsha256 after:  {tamper['sha256_after']}")
v4_failed = versions.gates.query("version == 'v4' and not passed").check
print(f"v4's gate failed: {', '.join(v4_failed)}")
predict.compare("bits of the SHA-256 that change when one byte changes", prediction_hash_bits,
                measured=float(tamper["bits_changed"]), theory=256 / 2, unit="bits")
print(f"Theory: a cryptographic hash changes each output bit with probability 1/2 (the avalanche property), so "
      f"256 × 1/2 = 128 ± {(256 * 0.25) ** 0.5:.0f} bits (one binomial standard deviation); measured: "
      f"{tamper['bits_changed']} bits differ.")

# %% [markdown]
# ## What theory predicts vs what you measured

# %%
sd = (CANARY_SHARE * (1 - CANARY_SHARE) / CANARY_REQUESTS) ** 0.5
print(f"* Theory: a {CANARY_SHARE:.0%} canary gets {CANARY_SHARE:.0%} ± {sd:.0%} (one binomial standard deviation) "
      f"of {CANARY_REQUESTS} requests.\n  Measured: {measured_share:.0%}.")
print(f"* Theory (Little's law, open loop): requests inside = arrival rate × time inside.\n"
      f"  Measured: the server's gauge averages L̄ = {lt.gauge_mean:.2f} requests in the engine; the clients saw "
      f"λ·W = {lt.arrival_rate:.2f}/s × {lt.mean_latency_s:.3f} s = {lt.lambda_W:.2f} (ratio {lt.gauge_over_lambda_W:.2f}; "
      f"the rest, {lt.lambda_W - lt.gauge_mean:.2f}, is in the HTTP layer).")
print(f"* Theory: with a queue bound nothing is lost: each of the {BURST} requests is answered or refused.\n"
      f"  Measured: clients sent {accounting['sent']}: {accounting['succeeded']} answered + {accounting['rejected']} "
      f"refused + {accounting['failed']} lost; the server counted {server_saw['200']:.0f} answered (200) and "
      f"{server_saw['429']:.0f} refused (429).")
registered = versions.table.set_index("version")
print(f"* Theory: int8 stores each weight in 1 byte instead of 4, so v3's file is about 1/4 of v2's.\n"
      f"  Measured: {registered.size_MB['v3']:.2f} MB / {registered.size_MB['v2']:.2f} MB = "
      f"{registered.size_MB['v3'] / registered.size_MB['v2']:.2f} (the rest: biases, norms and scales kept in fp32); "
      f"perplexity {registered.perplexity['v2']:.2f} → {registered.perplexity['v3']:.2f}, and the gate said "
      f"'{registered.gate['v3']}' to v3 and '{registered.gate['v4']}' to its tampered copy.")
print(f"* Rule: promote only with >= {MIN_CANARY_REQUESTS} canary requests, agreement >= {MIN_AGREEMENT:g} and TTFT "
      f"ratio <= {MAX_TTFT_RATIO:g}.\n  Measured: {decision.canary_requests} canary requests, agreement "
      f"{decision.agreement:.2f}, TTFT v2/v1 {decision.ttft_ratio:.2f} → {decision.action}.")

# %% [markdown]
# ## Exercises
#
# 1. With `MAX_BATCH` running and `MAX_QUEUE` waiting slots, how many requests can the server hold at once
#    before it answers 429?
# 2. Change `CANARY_SHARE` to 0.5 and rerun section 6: how far from 50 % is the measured share?
# 3. Raise `OPEN_LOAD` towards 1 and rerun section 5: what happens to L̄, W and the refusals?
# 4. Stop the server while a long request streams (`server.stop()` in another cell): does the request finish?
# 5. **Implement** `mean_in_system(arrivals, departures)`: from each request's arrival and departure time, the
#    time-averaged number of requests inside over the window from the first arrival to the last departure — the L̄
#    that section 5 read from the server's gauge. Sweep the events in time order, add (requests inside) × (time
#    since the previous event) to an area, and divide by the window's length. The check below runs your function on
#    seven request logs (overlapping, back to back, one request, idle gaps, unsorted, Poisson) and compares each
#    with Little's law λ·W computed from the same timestamps: over a window that starts and ends empty the law is
#    exact, so the two must agree to rounding. It names the first case that fails and how.

# %%
answer_1 = None
expected_1 = MAX_BATCH + MAX_QUEUE
if answer_1 is not None:
    print("1: ✓" if answer_1 == expected_1 else f"1: ✗ {expected_1}")

# %% tags=["exercise"]
from labkit.exercises import littles_law
from labkit.notebook import exercise


def mean_in_system(arrivals: list[float], departures: list[float]) -> float:
    """The i-th request arrives at arrivals[i] and leaves at departures[i] (s), any order. Returns the mean number
    of requests inside over [first arrival, last departure]."""
    # your code: one sorted list of events (time, +1 for an arrival, -1 for a departure); walk it, adding
    # inside × (t - previous t) to an area; divide the area by (last departure - first arrival)
    return len(arrivals) / (max(departures) - min(arrivals))  # the stub returns λ, the arrival rate, not L


if SOLUTIONS:  # the tests inject the reference answer here; a learner leaves SOLUTIONS = False
    from labkit.exercises.solutions.littles_law import mean_in_system  # noqa: F811

exercise.report("mean_in_system", littles_law.grade(mean_in_system), SOLUTIONS)

# %%
server.stop()  # graceful: finishes in-flight requests, then stops every scheduler
print("health after stop:", "server closed")

# %%
from labkit.notebook import run

run.record({
    **dev.to_dict(),
    "model": MODEL,
    "served_on": served_on,
    "canary_dtype": dev.half,
    "first_reply_status": reply.status_code,
    "stream_pieces": len(pieces),
    "refusal_statuses": refusals.set_index("request").status.to_dict(),
    "burst": accounting,
    "burst_clients": BURST,
    "burst_server_statuses": server_saw,
    "canary_target": CANARY_SHARE,
    "canary_measured": float(measured_share),
    "canary_requests": CANARY_REQUESTS,
    "server_counts_by_version": by_version.set_index("version")["requests (server)"].to_dict(),
    "client_counts_by_version": by_version.set_index("version")["requests (clients saw)"].to_dict(),
    "little": {k: float(v) for k, v in lt.items()},
    "agreement_prompts": len(AGREEMENT_PROMPTS),
    "canary_tokens": tokens,
    "canary_ttft_p50_s": per_version.ttft_p50_s.to_dict(),
    "canary_rule": {"min_requests": MIN_CANARY_REQUESTS, "min_agreement": MIN_AGREEMENT,
                    "max_ttft_ratio": MAX_TTFT_RATIO},
    "canary_agreement": decision.agreement,
    "canary_ttft_ratio": decision.ttft_ratio,
    "canary_action": decision.action,
    "versions_after_decision": sorted(after.records.version.unique()),
    "ttft_mean_ms": ttft_mean * 1e3,
    "registry": {e.version: {"format": e.format, "path": e.path, "sha256": e.sha256, "size_bytes": e.size_bytes,
                             "parent": e.parent, "stage": e.stage, **e.measurements}
                 for e in versions.registry.entries.values()},
    "registry_order": versions.registry.versions(model_registry.NAME),
    "registry_rule": {"max_quality_increase": rule.max_quality_increase, "max_p99_increase": rule.max_p99_increase},
    "registry_gates": {v: {"action": g.action, "compared_with": g.production, "reasons": list(g.reasons)}
                       for v, g in versions.decisions.items()},
    "registry_data_sha256": versions.data_sha256,
    "registry_params": versions.params,
    "registry_tamper": versions.tamper,
})
