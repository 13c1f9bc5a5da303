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
# # Lab 06 — Decoding strategies, step by step
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/inference-lab/inference-lab/blob/main/labs/06_decoding_strategies.ipynb)
# [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/inference-lab/inference-lab/main?urlpath=lab/tree/labs/06_decoding_strategies.ipynb)
#
# A language model outputs a probability for every token in its vocabulary; a **decoding method**
# turns those probabilities into text. Greedy takes the most likely token, beam search keeps several
# candidate continuations, sampling draws at random — restricted by top-k, top-p (nucleus) or min-p
# cut-offs and sharpened or flattened by temperature. Contrastive search trades likelihood against
# repetition; speculative decoding produces exactly greedy's text, faster — when its guesses are good.
#
# Every method below runs through `model.generate()` *and* through labkit's from-scratch loop, which
# records why each token was picked; the tests check the two agree token for token.

# %%
# Setup. Locally `make lab` installed everything; on Colab this cell installs the lab first.
import sys

if "google.colab" in sys.modules:  # pragma: no cover - only on Colab
    # !git clone -q --depth 1 https://github.com/inference-lab/inference-lab /content/inference-lab
    # %pip install -q -e "/content/inference-lab[engines,quant]"
    # !labkit prepare
    sys.path.insert(0, "/content/inference-lab")
assert sys.version_info >= (3, 11), f"Inference Lab needs Python 3.11+, this is {sys.version}"

import labkit

labkit.setup()

# %% tags=["parameters"]
SMOKE = False  # True: small sizes for a quick headless run
MODEL = "smollm2-135m"
PROMPT = "Write a short poem about the sea."
NEXT_TOKEN_PROMPT = "The capital of France is"
MAX_NEW_TOKENS = 32

# %%
if SMOKE:  # the Shakespeare-trained tiny BLOOM from lab 01: same code, seconds instead of minutes
    MODEL, PROMPT, NEXT_TOKEN_PROMPT, MAX_NEW_TOKENS = "tiny-bloom-shakespeare", "ROMEO:\n", "KING HENRY:\nOnce more unto the", 12

# %% [markdown]
# ## 1. One prompt, every method
#
# Each method generates exactly `MAX_NEW_TOKENS` tokens (end-of-text is suppressed until then, so every row
# does the same work), timed by `labkit.decoding.timing`: one warm-up, then three timed generations;
# `tokens_per_s` is new tokens ÷ the median whole generation, prompt included. The text shown is the last
# timed generation's.

# %%
from labkit import decoding
from labkit.experiments import decoding_methods

methods = decoding_methods.compare_methods(MODEL, PROMPT, max_new_tokens=MAX_NEW_TOKENS)
methods.table[["method", "text", "tokens_per_s", "mean_logprob", "distinct_1", "distinct_2", "repetition_4gram"]].round(3)

# %%
methods.figure

# %% [markdown]
# ## 2. Where the cut-offs fall
#
# The next-token distribution after one prompt, and the tokens each rule keeps (in colour): top-k
# keeps a fixed number, top-p the smallest set holding p of the probability, min-p every token at
# least `min_p` times as likely as the best one. Before running the next cell, predict which token
# greedy will pick.

# %%
cutoffs = decoding_methods.next_token_cutoffs(MODEL, NEXT_TOKEN_PROMPT, temperature=1.0, k=5, p=0.9, min_p=0.1)
cutoffs.figure

# %%
print("tokens kept out of the whole vocabulary:", cutoffs.table.attrs["kept_counts"])
greedy_pick = cutoffs.table.token.iloc[0]
print("greedy picks:", greedy_pick)

# %% [markdown]
# ## 3. Temperature
#
# Logits are divided by T before the softmax: T < 1 sharpens the distribution toward greedy, T > 1
# flattens it toward uniform. Entropy measures how spread out it is.

# %%
temps = decoding_methods.temperature_entropy(MODEL, NEXT_TOKEN_PROMPT)
temps.figure

# %% [markdown]
# Move the temperature slider and watch the bars — and the entropy in the title — change, and with
# them what each cut-off keeps.

# %%
from labkit import widgets

widgets.panel(decoding_methods.next_token_cutoffs, model=[MODEL], prompt=NEXT_TOKEN_PROMPT, temperature=(0.1, 3.0, 0.1),
              k=(1, 50), p=(0.05, 1.0, 0.05), min_p=(0.0, 0.5, 0.01), auto=True)

# %% [markdown]
# ## 4. Step through: why each token?

# %%
from labkit import models

net, tok = models.load_cached(MODEL)
ids = decoding_methods.prompt_ids(tok, PROMPT)
trace = decoding.step_through(net, tok, ids, "top-p", steps=MAX_NEW_TOKENS // 2, p=0.9, seed=0)
import pandas as pd

pd.DataFrame([{"step": s.position, "chosen": repr(s.chosen), "p(chosen)": round(s.chosen_prob, 3), "kept": s.kept,
               "kept mass": round(s.kept_mass, 3), "top-3": [t for t, _ in s.candidates[:3]]} for s in trace.steps])

# %% [markdown]
# ## 5. Beam search as a tree
#
# Each column is a step; each dot a running beam, coloured by its cumulative log-probability; lines
# show which beam each one grew from. Beams that fall out of the top `num_beams` disappear.

# %%
beam_trace = decoding.step_through(net, tok, ids, "beam", steps=8, num_beams=3)
print("best:", tok.decode(beam_trace.token_ids))
decoding_methods.beam_tree_figure(beam_trace, f"Beam search (3 beams) on {PROMPT!r}")

# %% [markdown]
# ## 6. Repetition, with and without a penalty

# %%
plain = decoding.step_through(net, tok, ids, "greedy", steps=MAX_NEW_TOKENS)
penalised = decoding.step_through(net, tok, ids, "repetition-penalty", steps=MAX_NEW_TOKENS, penalty=1.3)
repetition = pd.DataFrame([{"decoding": "greedy", "text": plain.text, **decoding.text_metrics(plain.token_ids)},
                           {"decoding": "greedy + penalty 1.3", "text": penalised.text, **decoding.text_metrics(penalised.token_ids)}])
repetition

# %% [markdown]
# ## 7. Speculative decoding: same text, faster?
#
# A cheap **draft** guesses a few tokens; the target checks them all in one forward pass and keeps
# the longest prefix it agrees with. The output is exactly greedy's. It pays off only when the draft
# is both much faster and usually right. Here the draft is an int8 copy of the same model (lab 05);
# prompt lookup drafts by copying n-grams from the prompt.

# %%
spec = decoding_methods.speculative_report(MODEL, PROMPT, gamma=4, max_new_tokens=MAX_NEW_TOKENS)
print(f"acceptance rate of the int8 draft: {spec.table.attrs['acceptance_rate']:.0%}; "
      f"labkit's loop gives greedy's tokens: {spec.table.attrs['labkit_same_tokens']}")
spec.table.round(3)

# %%
spec.figure

# %% [markdown]
# ## 8. Try it yourself

# %%
widgets.panel(decoding_methods.explore, model=[MODEL], prompt=PROMPT, method=["top-p", "greedy", "sample", "top-k", "min-p", "top-k+top-p"],
              temperature=(0.1, 2.0, 0.1), top_k=(1, 100), top_p=(0.05, 1.0, 0.05), min_p=(0.0, 0.5, 0.01), steps=(1, 48))

# %% [markdown]
# ## What theory predicts vs what you measured

# %%
t = methods.table.set_index("method")
print(f"* Theory: greedy and beam maximise likelihood, sampling trades it for diversity.\n  Measured mean log-prob: "
      f"greedy {t.loc['greedy', 'mean_logprob']:.2f}, beam {t.loc['beam', 'mean_logprob']:.2f}, "
      f"sample {t.loc['sample', 'mean_logprob']:.2f}; distinct-2: greedy {t.loc['greedy', 'distinct_2']:.2f} vs sample {t.loc['sample', 'distinct_2']:.2f}.")
print(f"* Theory: a repetition penalty lowers repetition. Measured 4-gram repetition: "
      f"{repetition.repetition_4gram.iloc[0]:.2f} → {repetition.repetition_4gram.iloc[1]:.2f}.")
ent = temps.table.set_index("temperature").entropy_nats
print(f"* Theory: entropy grows with temperature. Measured: {ent.iloc[0]:.2f} nats at T={ent.index[0]} → {ent.iloc[-1]:.2f} at T={ent.index[-1]}.")
print(f"* Theory: speculative decoding keeps greedy's output and wins only with a fast, accurate draft. Measured: same tokens "
      f"{bool(spec.table.same_tokens.all())}; int8 draft acceptance {spec.table.attrs['acceptance_rate']:.0%}, "
      f"speed-up {spec.table.speedup.iloc[1]:.2f}×; prompt lookup {spec.table.speedup.iloc[2]:.2f}×.")

# %% [markdown]
# ## Exercises
#
# 1. With top-k = 5 and the prompt of section 2, how many tokens can sampling choose from?
# 2. With min-p = 0.1, how many? (Look at the bars, then check.)

# %%
answer_1 = None
answer_2 = None
kept_counts = cutoffs.table.attrs["kept_counts"]
expected_1, expected_2 = kept_counts["top-k (k=5)"], kept_counts["min-p (min_p=0.1)"]
if answer_1 is not None:
    print("1: ✓" if answer_1 == expected_1 else f"1: ✗ {expected_1}")
if answer_2 is not None:
    print("2: ✓" if answer_2 == expected_2 else f"2: ✗ {expected_2}")

# %%
from labkit.notebook import run

run.record({
    "model": MODEL,
    "methods": list(t.index),
    "mean_logprob": t.mean_logprob.to_dict(),
    "distinct_2": t.distinct_2.to_dict(),
    "tokens_per_s": t.tokens_per_s.to_dict(),
    "greedy_equals_prompt_lookup": t.loc["greedy", "text"] == t.loc["prompt-lookup", "text"],
    "kept_counts": kept_counts,
    "entropy_by_temperature": ent.to_dict(),
    "repetition_4gram": repetition.repetition_4gram.tolist(),
    "speculative_same_tokens": bool(spec.table.same_tokens.all()) and spec.table.attrs["labkit_same_tokens"],
    "acceptance_rate": spec.table.attrs["acceptance_rate"],
    "speculative_speedup": spec.table.speedup.iloc[1],
    "beam_best": tok.decode(beam_trace.token_ids),
})
