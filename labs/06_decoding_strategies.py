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
# repetition. Speculative decoding lets a cheap draft guess ahead: with *greedy verification*, the
# variant built here, it reproduces greedy's tokens exactly; *speculative sampling* (Leviathan et al.,
# 2023; Chen et al., 2023) reproduces the target's sampling distribution instead. Either is faster only
# when the draft is cheap and usually right.
#
# Every method below runs through `model.generate()` *and* through labkit's from-scratch loop, which
# records why each token was picked; the tests check the two agree token for token — beam search
# included, down to *when* it stops.
#
# **By the end you can**
# - run greedy, beam, sampling and contrastive decoding and see how each picks the next token;
# - tune temperature, top-k, top-p and min-p and measure diversity and likelihood;
# - predict speculative decoding's speed-up from its acceptance rate, then measure it.
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

print(durations.describe("06"))  # measured: the last recorded smoke and full runs
labkit.setup()

# %% tags=["parameters"]
SMOKE = False  # True: small sizes for a quick headless run
MODEL = "smollm2-135m"
PROMPT = "Write a short poem about the sea."
NEXT_TOKEN_PROMPT = "The capital of France is"
BEAM_PROMPT = "Is water wet? Yes or no."
MAX_NEW_TOKENS = 32
BEAM_WIDTHS = (1, 2, 4, 8)  # section 9: beam widths measured (KV cache, forward batch, time per token); keep 1 and 4
DEVICE = "auto"  # "auto": the GPU when there is one, else the CPU; or "cpu", "cuda", "cuda:N"
SOLUTIONS = False  # True: the reference answers replace your code in the exercises (the tests prove each check can pass)

# %%
if SMOKE:  # the Shakespeare-trained tiny BLOOM from lab 01: same code, seconds instead of minutes
    MODEL, PROMPT, NEXT_TOKEN_PROMPT, MAX_NEW_TOKENS = "tiny-bloom-shakespeare", "ROMEO:\n", "KING HENRY:\nOnce more unto the", 12
    BEAM_PROMPT = "ROMEO:\n"
    BEAM_WIDTHS = (1, 2, 4)

# %%
from labkit import devices

dev = devices.choose(DEVICE)  # a bad DEVICE fails here, naming the valid choices
print(dev.summary())
print("The model runs in fp32 on this device: the lesson is the decoding rule, not the precision.")

# %% [markdown]
# ## 1. One prompt, every method
#
# Each method generates exactly `MAX_NEW_TOKENS` tokens (end-of-text is suppressed until then, so every row
# does the same work), timed by `labkit.decoding.timing`: warm-up generations first, then timed ones;
# `tokens_per_s` is new tokens ÷ the median whole generation, prompt included, on the lab's device. The text
# shown is the last timed generation's.

# %%
import functools

from labkit import decoding
from labkit.experiments import decoding_methods

methods = decoding_methods.compare_methods(MODEL, PROMPT, max_new_tokens=MAX_NEW_TOKENS, device=dev.device)
print(f"every row: {methods.table.warmups.min()} warm-up and {methods.table.repeats.min()} timed generations "
      f"(decoding.timing.DecodeRun), the median reported")
methods.table[["method", "text", "tokens_per_s", "mean_logprob", "distinct_1", "distinct_2", "repetition_4gram"]].round(3)

# %%
methods.figure

# %% [markdown]
# ## 2. Where the cut-offs fall
#
# The next-token distribution after one prompt, and the tokens each rule keeps (in colour): top-k
# keeps a fixed number, top-p the smallest set holding p of the probability, min-p every token at
# least `min_p` times as likely as the best one.

# %% [markdown]
# **Predict.** Which token will greedy pick after `NEXT_TOKEN_PROMPT`, and how likely is it (%)? Reason from the
# prompt: how many continuations would a reader find plausible? (Keep the token in mind: the cell after the figure
# prints it.)

# %%
prediction_greedy_pct = None  # your guess (%), e.g. 30

# %%
cutoffs = decoding_methods.next_token_cutoffs(MODEL, NEXT_TOKEN_PROMPT, temperature=1.0, k=5, p=0.9, min_p=0.1,
                                             device=dev.device)
cutoffs.figure

# %%
from labkit.notebook import predict

print("tokens kept out of the whole vocabulary:", cutoffs.table.attrs["kept_counts"])
greedy_pick = cutoffs.table.token.iloc[0]
print("greedy picks:", greedy_pick)
predict.compare(f"probability of greedy's pick {greedy_pick}", prediction_greedy_pct,
                measured=float(100 * cutoffs.table.probability.iloc[0]), unit="%")

# %% [markdown]
# ## 3. Temperature
#
# Logits are divided by T before the softmax: T < 1 sharpens the distribution toward greedy, T > 1
# flattens it toward uniform. Entropy measures how spread out it is.

# %%
temps = decoding_methods.temperature_entropy(MODEL, NEXT_TOKEN_PROMPT, device=dev.device)
temps.figure

# %% [markdown]
# Move the temperature slider and watch the bars — and the entropy in the title — change, and with
# them what each cut-off keeps.

# %%
from labkit import widgets

widgets.panel(functools.partial(decoding_methods.next_token_cutoffs, device=dev.device), model=[MODEL],
              prompt=NEXT_TOKEN_PROMPT, temperature=(0.1, 3.0, 0.1), k=(1, 50), p=(0.05, 1.0, 0.05),
              min_p=(0.0, 0.5, 0.01), auto=True)

# %% [markdown]
# ## 4. Step through: why each token?

# %%
from labkit import models

net, tok = models.load_cached(MODEL, dev.device)
ids = decoding_methods.prompt_ids(tok, PROMPT).to(dev.device)
trace = decoding.step_through(net, tok, ids, "top-p", steps=MAX_NEW_TOKENS // 2, p=0.9, seed=0)
import pandas as pd

pd.DataFrame([{"step": s.position, "chosen": repr(s.chosen), "p(chosen)": round(s.chosen_prob, 3), "kept": s.kept,
               "kept mass": round(s.kept_mass, 3), "top-3": [t for t, _ in s.candidates[:3]]} for s in trace.steps])

# %% [markdown]
# ## 5. Beam search as a tree
#
# Each column is a step; each dot a running beam, coloured by its cumulative log-probability; lines
# show which beam each one grew from. Beams that fall out of the top `num_beams` disappear; diamonds
# below them are finished hypotheses (they ended with end-of-text, or at the length limit), scored
# log p ÷ length^`length_penalty`.
#
# When does the search stop? transformers (generation/utils.py, `_check_early_stop_heuristic` and
# `_beam_search_has_unfinished_sequences`) stops at `max_new_tokens`, or earlier: with the default
# `early_stopping=False`, once `num_beams` hypotheses have finished and the best running beam, scored as
# if it ended *now*, cannot beat the worst of them — a heuristic: with a positive length penalty a
# longer continuation could still have won. `early_stopping=True` stops as soon as `num_beams` have
# finished; `"never"` only when no running beam can win even at the length limit. labkit's search
# applies the same rules, so its answer is `generate()`'s; the figure's subtitle says when and why it
# stopped.

# %%
import torch

from labkit.experiments import searches

beam_params = {"num_beams": 2, "length_penalty": 2.0}
beam_ids = decoding_methods.prompt_ids(tok, BEAM_PROMPT).to(dev.device)
beam_trace = decoding.step_through(net, tok, beam_ids, "beam", steps=5, **beam_params)
with torch.no_grad():
    library = net.generate(beam_ids, attention_mask=torch.ones_like(beam_ids),
                           generation_config=decoding.config_for("beam", max_new_tokens=5, **beam_params))
library = library[0, beam_ids.shape[1]:].tolist()
print(f"labkit: {tok.decode(beam_trace.token_ids)!r}; generate(): {tok.decode(library)!r}; "
      f"same tokens: {beam_trace.token_ids == library}")
print(beam_trace.stop_reason)
searches.beam_tree_figure(beam_trace, f"Beam search ({beam_params}) on {BEAM_PROMPT!r}")

# %% [markdown]
# ## 5b. Greedy and beam search are approximate searches
#
# Neither finds the most likely text for certain: greedy commits to one token at a time, and beam search
# keeps only `num_beams` prefixes out of vocabulary^length possible ones. With a length penalty of zero,
# finished hypotheses are ranked by log-probability alone, so every beam width aims at the same target
# (width one is greedy). Any search that finds a likelier output than another shows that the other missed
# the maximum — and a wider beam is not always the better one. Each output is re-scored by one forward
# pass over the whole sequence.

# %%
likelihood = searches.search_likelihood(MODEL, PROMPT, widths=(1, 2, 4, 8), max_new_tokens=MAX_NEW_TOKENS // 2,
                                        device=dev.device)
lk = likelihood.table.set_index("num_beams").logprob
for width in lk.index:  # every width aims at the same maximum: any likelier output found shows this one missed it
    if lk.max() > lk[width] + 1e-4:
        print(f"{width} beam(s): log p = {lk[width]:.2f} < {lk.max():.2f} found with {lk.idxmax()} beam(s): "
              f"the {width}-beam search missed the most likely output")
if (lk.max() - lk < 1e-4).all():
    print(f"every width found log p = {lk.max():.2f}: that does not show it is the maximum")
likelihood.table[["num_beams", "text", "tokens", "logprob", "search_score"]].round(3)

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
# A cheap **draft** guesses γ tokens; the target checks them all in one forward pass and keeps the
# longest prefix it agrees with, plus its own next token. With this *greedy verification* — the variant
# built here (`decoding.speculative_greedy`), and transformers' assisted generation without sampling —
# the output is exactly greedy's. *Speculative sampling* (Leviathan et al., 2023; Chen et al., 2023;
# transformers' `_speculative_sampling`) keeps a drafted token x with probability min(1, p(x)/q(x)) and
# otherwise draws from max(0, p − q): its output is not greedy's tokens but a sample from the target's
# distribution p, whatever the draft's q (section 7b measures it).
#
# Leviathan et al. (2023, Theorem 3.8) predict the speed-up from α, the probability that the target keeps
# a draft token; γ; and c, the cost of a draft step over a target step:
# (1 − α^(γ+1)) / ((1 − α)(γc + 1)). Below, α is counted by labkit's loop (kept ÷ compared, each compared
# token up to a round's first mismatch), c is the ratio of the two models' median decode steps
# (`decoding.timing`), and the prediction stands beside the measured speed-up of transformers' assisted
# generation with the same draft and γ. The formula assumes independent acceptances and a verification
# pass that costs one target step, with no other overhead: where prediction and measurement part, those
# assumptions are where to look (a small model on a CPU pays per-call costs that a decode step does not
# dwarf). The draft is a cheaper copy of the same model on the same device (lab 05): int8 on the CPU; on a
# GPU, where that int8 kernel does not run, the GPU's half precision (`dev.half`). Prompt lookup drafts by
# copying n-grams from the prompt.

# %% [markdown]
# **Predict.** How many new tokens will each pass of the target yield on average (tokens)? The draft proposes γ per
# round (`gamma=4` below); reason from how often a cheaper copy of the same model agrees with it: each round keeps the
# drafted tokens up to the first mismatch, plus the target's own next token.

# %%
prediction_tokens_per_pass = None  # your guess (tokens), e.g. 2

# %% [markdown]
# **Predict.** How many times faster than plain greedy decoding will transformers' assisted generation be (×)?
# Reason from the tokens per target pass you just guessed and what a draft step costs next to a target step.

# %%
prediction_spec_speedup = None  # your guess (×), e.g. 1.5

# %%
from labkit.experiments import speculative
from labkit.notebook import predict

spec = speculative.speculative_report(MODEL, PROMPT, gamma=4, max_new_tokens=MAX_NEW_TOKENS, device=dev.device)
sa = spec.table.attrs
print(f"draft: the {sa['draft']} copy of {MODEL}, on {sa['device']}")
print(f"labkit's greedy-verification loop gives greedy's tokens: {sa['labkit_same_tokens']}")
print(f"α = {sa['accepted']} kept / {sa['accepted'] + sa['rejected']} compared = {sa['alpha']:.2f} "
      f"(kept / all {sa['proposed']} drafted = {sa['acceptance_rate']:.2f}), γ = {sa['gamma']}, "
      f"c = {sa['cost_ratio']:.2f}")
print(f"tokens per target pass: predicted {sa['predicted_tokens_per_call']:.2f}, measured {sa['tokens_per_call']:.2f}")
print(f"speed-up: predicted {sa['predicted_speedup']:.2f}×, measured {sa['measured_speedup']:.2f}×")
predict.compare("tokens per target pass", prediction_tokens_per_pass, measured=float(sa["tokens_per_call"]),
                theory=float(sa["predicted_tokens_per_call"]), unit="tokens")  # theory: Leviathan et al., from α and γ
predict.compare("speculative (assisted) ÷ greedy speed", prediction_spec_speedup,  # theory: Leviathan et al., Thm 3.8
                measured=float(sa["measured_speedup"]), theory=float(sa["predicted_speedup"]), unit="×")
spec.table.round(3)

# %%
spec.figure

# %% [markdown]
# ## 7b. Speculative sampling keeps the target's distribution
#
# At the prompt's next position, many draws of speculative sampling with the draft, and with the
# same draft made worse (its logits divided by a temperature). Total variation distance (TV) to the
# target's p: the output's should sit at the noise floor of as many direct draws from p, whatever the
# draft's own distance. Greedy verification instead always emits p's most likely token.

# %%
sampling = speculative.speculative_sampling_check(MODEL, PROMPT, device=dev.device)
st = sampling.table
for row in st.itertuples():
    print(f"{row.draft}: TV(draft, target) {row.tv_draft_target:.3f}; output TV to target {row.tv_output_target:.3f} "
          f"(noise floor {row.tv_noise_floor:.3f}); draft token kept {row.acceptance:.1%} "
          f"(Σ min(p, q) = {row.acceptance_expected:.1%})")
print(f"greedy verification's output (one token, always) is at TV {st.attrs['greedy_tv']:.3f} from p")
sampling.figure

# %% [markdown]
# ## 8. Try it yourself

# %%
widgets.panel(functools.partial(decoding_methods.explore, device=dev.device), model=[MODEL], prompt=PROMPT,
              method=["top-p", "greedy", "sample", "top-k", "min-p", "top-k+top-p"], temperature=(0.1, 2.0, 0.1),
              top_k=(1, 100), top_p=(0.05, 1.0, 0.05), min_p=(0.0, 0.5, 0.01), steps=(1, 48))

# %% [markdown]
# ## 9. What beam search costs: memory and batch
#
# Beam search keeps `num_beams` continuations alive, and transformers runs them as one batch: the prompt is copied
# `num_beams` times before the first forward, every decode forward takes `num_beams` rows, and the KV cache — the
# keys and values every layer keeps for every past token, so that a decode step computes them for the new token only
# (lab 07 takes it apart) — holds one copy per beam. The KV formula (`labkit.anatomy.kv_cache_bytes`),
# `2 × layers × kv_heads × head_dim × bytes_per_value × tokens × batch`, is linear in the batch, so with
# batch = `num_beams` it predicts `num_beams` × greedy's bytes. Below, every width generates exactly
# `MAX_NEW_TOKENS` tokens; a hook on the model records the batch of each forward `generate()` really makes, the
# cache `generate()` returns (`return_dict_in_generate=True`) is weighed tensor by tensor, and every width's
# `generate()` is timed side by side (`labkit.measure.benchmark_rounds`: warm-up, then the median).

# %% [markdown]
# **Predict.** With four beams instead of greedy's one, how many times bigger is the KV cache after a generation of
# the same length (×)? Reason from the formula above: what does a beam add to it?

# %%
prediction_kv_4_beams = None  # your guess (×), e.g. 2

# %%
from labkit import anatomy
from labkit.experiments import beam_cost
from labkit.notebook import predict

assert 4 in BEAM_WIDTHS, f"BEAM_WIDTHS={BEAM_WIDTHS}: keep 4 in it, the prediction is about four beams"
cost = beam_cost.beam_cost(MODEL, PROMPT, widths=BEAM_WIDTHS, new_tokens=MAX_NEW_TOKENS, device=dev.device)
bc = cost.table.set_index("num_beams")
positions, kv_precision = int(bc.cache_tokens[1]), cost.table.attrs["precision"]
kv_theory = (anatomy.kv_cache_bytes(net.config, 4, positions, kv_precision)
             / anatomy.kv_cache_bytes(net.config, 1, positions, kv_precision))
predict.compare("KV cache with 4 beams ÷ greedy's", prediction_kv_4_beams, measured=float(bc.kv_ratio[4]),
                theory=kv_theory, unit="×")
print(f"Formula (batch = num_beams): {kv_theory:.0f}× greedy's KV cache with 4 beams. Measured: "
      f"{bc.kv_bytes[4] / 2**10:.0f} KiB vs {bc.kv_bytes[1] / 2**10:.0f} KiB = {bc.kv_ratio[4]:.2f}× "
      f"({positions} positions each); every decode forward ran a batch of {bc.decode_batch[4]} (greedy: "
      f"{bc.decode_batch[1]}), and a token took {bc.time_ratio[4]:.2f}× greedy's time on {bc.device[1]}.")
cost.table[["num_beams", "prefill_batch", "decode_batch", "decode_forwards", "cache_tokens", "kv_bytes",
            "kv_bytes_formula", "kv_ratio", "ms_per_token", "time_ratio"]].round(3)

# %%
cost.figure

# %% [markdown]
# Time need not grow as fast as the batch: a small model's decode step is dominated by reading its weights and by
# per-call overhead, which the beams share (lab 07's roofline says when that stops). The memory is not shared: a
# server running beam search fits `num_beams` times fewer requests in the same KV budget.
#
# Two options from Hugging Face's "How to generate text" blog (von Platen, 2020), each one `generate()` call
# below: `no_repeat_ngram_size=n` bans any token that would complete an n-gram already in the text (prompt
# included), so the count of repeated n-grams in the output goes to zero; `num_return_sequences=k` returns the `k`
# best beams of one search — `k` distinct outputs for the price of one beam search.

# %%
opts = cost.options
print(f"repeated {opts.attrs['ngram']}-grams in the output: "
      + "; ".join(f"{r.setting}: {r.repeated_ngrams}" for r in opts.itertuples()))
opts

# %% [markdown]
# ## What theory predicts vs what you measured

# %%
t = methods.table.set_index("method")
print(f"* Theory: greedy and beam search look for likely text (approximately: section 5b), sampling trades likelihood for "
      f"diversity.\n  Measured mean log-prob: "
      f"greedy {t.loc['greedy', 'mean_logprob']:.2f}, beam {t.loc['beam', 'mean_logprob']:.2f}, "
      f"sample {t.loc['sample', 'mean_logprob']:.2f}; distinct-2: greedy {t.loc['greedy', 'distinct_2']:.2f} vs sample {t.loc['sample', 'distinct_2']:.2f}.")
print(f"* Theory: a repetition penalty lowers repetition. Measured 4-gram repetition: "
      f"{repetition.repetition_4gram.iloc[0]:.2f} → {repetition.repetition_4gram.iloc[1]:.2f}.")
ent = temps.table.set_index("temperature").entropy_nats
print(f"* Theory: entropy grows with temperature. Measured: {ent.iloc[0]:.2f} nats at T={ent.index[0]} → {ent.iloc[-1]:.2f} at T={ent.index[-1]}.")
spec_rows = spec.table.set_index("method")
verified = spec_rows.drop("draft alone")
print(f"* Theory: speculative decoding with greedy verification keeps greedy's output; Leviathan et al. predict "
      f"{sa['predicted_speedup']:.2f}× from α = {sa['alpha']:.2f}, γ = {sa['gamma']}, c = {sa['cost_ratio']:.2f}.\n"
      f"  Measured: same tokens {bool(verified.same_tokens.all())}; speed-up {sa['measured_speedup']:.2f}×; "
      f"prompt lookup {spec_rows.loc['prompt lookup (transformers)', 'speedup']:.2f}×.")
print(f"* Theory: speculative sampling keeps the target's distribution. Measured output TV to the target: "
      f"{st.tv_output_target.max():.3f} (noise floor {st.tv_noise_floor.max():.3f}), with drafts at TV up to "
      f"{st.tv_draft_target.max():.3f}.")
print(f"* Theory: beam search multiplies the KV cache and the forward batch by num_beams ({kv_theory:.0f}× with 4 "
      f"beams, anatomy.kv_cache_bytes). Measured: {bc.kv_ratio[4]:.2f}× the bytes, a batch of {bc.decode_batch[4]} "
      f"per decode forward; {bc.time_ratio[4]:.2f}× the time per token.")

# %% [markdown]
# ## Exercises
#
# 1. With top-k = 5 and the prompt of section 2, how many tokens can sampling choose from?
# 2. With min-p = 0.1, how many? (Look at the bars, then check.)
# 3. **Implement** the top-p (nucleus) filter of section 2 (Holtzman et al. 2020): keep the smallest set of most
#    likely tokens whose probabilities reach `p`, set the others to `-inf`, and leave the kept logits unchanged.
#    The check below runs your function on six cases and compares each with transformers' own
#    `TopPLogitsWarper`; it names the first case that fails and how.

# %%
answer_1 = None
answer_2 = None
kept_counts = cutoffs.table.attrs["kept_counts"]
expected_1, expected_2 = kept_counts["top-k (k=5)"], kept_counts["min-p (min_p=0.1)"]
if answer_1 is not None:
    print("1: ✓" if answer_1 == expected_1 else f"1: ✗ {expected_1}")
if answer_2 is not None:
    print("2: ✓" if answer_2 == expected_2 else f"2: ✗ {expected_2}")

# %% tags=["exercise"]
import torch

from labkit.exercises import top_p
from labkit.notebook import exercise


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """logits: (batch, vocab); 0 < p <= 1. Returns (batch, vocab): kept logits as they were, -inf elsewhere."""
    # your code: sort each row (most likely first), softmax, cumulative sum, find where the mass reaches p,
    # then put -inf on the dropped tokens in vocabulary order
    return logits  # the stub keeps every token: the check says what is wrong


if SOLUTIONS:  # the tests inject the reference answer here; a learner leaves SOLUTIONS = False
    from labkit.exercises.solutions.top_p import top_p_filter  # noqa: F811

exercise.report("top_p_filter", top_p.grade(top_p_filter), SOLUTIONS)

# %%
from labkit.notebook import run

run.record({
    **dev.to_dict(),
    "model": MODEL,
    "precision": "fp32",  # every model here (the speculative draft excepted)
    "row_devices": {"methods": list(methods.table.device), "search_likelihood": list(likelihood.table.device),
                    "speculative": list(spec.table.device), "speculative_sampling": [st.attrs["device"]],
                    "beam_cost": list(cost.table.device)},
    "methods": list(t.index),
    "mean_logprob": t.mean_logprob.to_dict(),
    "distinct_2": t.distinct_2.to_dict(),
    "tokens_per_s": t.tokens_per_s.to_dict(),
    "greedy_equals_prompt_lookup": t.loc["greedy", "text"] == t.loc["prompt-lookup", "text"],
    "kept_counts": kept_counts,
    "entropy_by_temperature": ent.to_dict(),
    "repetition_4gram": repetition.repetition_4gram.tolist(),
    "timings": {"warmups": [*methods.table.warmups, *spec.table.warmups],
                "repeats": [*methods.table.repeats, *spec.table.repeats]},
    "speculative_same_tokens": bool(verified.same_tokens.all()) and sa["labkit_same_tokens"],
    "acceptance_rate": sa["acceptance_rate"],
    "speculative": {k: sa[k] for k in ("alpha", "gamma", "cost_ratio", "accepted", "rejected", "proposed",
                                       "target_calls", "new_tokens", "tokens_per_call", "predicted_tokens_per_call",
                                       "predicted_speedup", "measured_speedup")},
    "speculative_sampling": st.to_dict("records"),
    "speculative_sampling_draws": st.attrs["draws"],
    "beam_best": tok.decode(beam_trace.token_ids),
    "beam_equals_generate": beam_trace.token_ids == library,
    "beam_stop_reason": beam_trace.stop_reason,
    "search_likelihood": likelihood.table[["num_beams", "tokens", "logprob", "search_score"]].to_dict("records"),
    "beam_cost": cost.table[["num_beams", "prefill_batch", "decode_batch", "decode_forwards", "cache_batch",
                             "cache_tokens", "kv_bytes", "kv_bytes_formula", "ms_per_token"]].to_dict("records"),
    "beam_cost_shape": {"new_tokens": MAX_NEW_TOKENS, "prompt_tokens": cost.table.attrs["prompt_tokens"],
                        "precision": kv_precision},
    "kv_ratio_4_beams": {"measured": float(bc.kv_ratio[4]), "theory": kv_theory},
    "beam_options": opts.to_dict("records"),
    "beam_options_ngram": opts.attrs["ngram"],
})
