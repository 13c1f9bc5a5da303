"""Lab 06: checks on the results its smoke run recorded."""

import math

import pytest

from labkit import anatomy, precision


def check(r: dict) -> None:
    # every row was measured on the lab's device (test_labs checks that one against the driver / cpuinfo), so the
    # rows compared side by side (methods' tokens/s, the speculative speed-ups, the searches) share it
    for part, labels in r["row_devices"].items():
        assert labels and set(labels) == {r["device"]}, f"{part} rows ran on {set(labels)}, not {r['device']}"
    # parity with generate() on that device: exact tokens in fp32; scores within the precision's tolerance otherwise
    rel = 1e-4 if r["precision"] == "fp32" else precision.tolerance(r["precision"])
    assert len(r["methods"]) == 10 and all(v > 0 for v in r["tokens_per_s"].values())
    # every timing is a decoding.timing DecodeRun: warm-up first, then a median over several timed generations
    assert min(r["timings"]["warmups"]) >= 1 and min(r["timings"]["repeats"]) >= 3
    lp = r["mean_logprob"]
    assert lp["greedy"] > lp["sample"]  # greedy's text is the more likely one
    assert r["distinct_2"]["sample"] >= r["distinct_2"]["greedy"]  # sampling is more diverse
    assert r["greedy_equals_prompt_lookup"]  # speculation never changes greedy's text
    assert r["speculative_same_tokens"] and 0 <= r["acceptance_rate"] <= 1
    k = r["kept_counts"]
    assert k["top-k (k=5)"] == 5 and k["min-p (min_p=0.1)"] >= 1
    ent = list(r["entropy_by_temperature"].values())
    assert ent == sorted(ent)  # entropy rises with temperature
    assert r["repetition_4gram"][1] <= r["repetition_4gram"][0]

    # beam search: labkit's answer is transformers' (the library twin), and it says why it stopped
    assert r["beam_equals_generate"] and r["beam_stop_reason"].startswith("stopped at step ")
    # each search's own running score (cached, incremental) equals a re-score by one full forward pass
    for row in r["search_likelihood"]:
        assert row["search_score"] == pytest.approx(row["logprob"], rel=rel, abs=1e-3)

    # speculative decoding: α from the counts, the prediction from Leviathan et al.'s formula (summed here term by
    # term: (1 - α^(γ+1)) / (1 - α) = Σ_{i<=γ} α^i); the measured speed-up is reported beside it, not forced to match
    s = r["speculative"]
    alpha, gamma, c = s["alpha"], s["gamma"], s["cost_ratio"]
    assert alpha == pytest.approx(s["accepted"] / (s["accepted"] + s["rejected"]))
    assert s["accepted"] + s["rejected"] <= s["proposed"] and c > 0 and s["measured_speedup"] > 0
    series = sum(alpha**i for i in range(gamma + 1))
    assert s["predicted_tokens_per_call"] == pytest.approx(series)
    assert s["predicted_speedup"] == pytest.approx(series / (gamma * c + 1))
    assert 1 <= s["tokens_per_call"] <= gamma + 1  # a target pass yields its own token and at most gamma drafted

    # speculative sampling keeps the draft's token with probability Σ min(p, q) (binomial error bound) and its
    # output stays near p: within twice the noise floor of as many direct draws from p
    n = r["speculative_sampling_draws"]
    for row in r["speculative_sampling"]:
        beta = row["acceptance_expected"]
        assert abs(row["acceptance"] - beta) <= 4 * math.sqrt(beta * (1 - beta) / n) + 1 / n
        assert row["tv_output_target"] <= 2 * row["tv_noise_floor"] + 0.01

    # beam search's cost (section 9): the forwards generate() ran and the cache it returned, against the KV formula
    # written out here by hand from the model's config (2 × layers × kv_heads × head_dim × bytes × positions × batch)
    shape = r["beam_cost_shape"]
    d = anatomy.dims(r["model"])
    assert set(d.layer_types) == {"full_attention"}  # the hand formula below counts every position in every layer
    per_position = 2 * d.layers * d.kv_heads * d.head_dim * precision.bytes_per_value(shape["precision"])
    rows = {row["num_beams"]: row for row in r["beam_cost"]}
    assert rows[1]["decode_batch"] == 1 and 4 in rows
    for width, row in rows.items():
        assert row["prefill_batch"] == row["decode_batch"] == row["cache_batch"] == width  # the batch is the beams
        assert row["decode_forwards"] == shape["new_tokens"] - 1  # one forward per token after the prefill's
        assert row["cache_tokens"] == shape["prompt_tokens"] + shape["new_tokens"] - 1  # the last token is not fed
        assert row["kv_bytes"] == row["kv_bytes_formula"] == per_position * row["cache_tokens"] * width
        assert row["ms_per_token"] > 0
    assert r["kv_ratio_4_beams"]["measured"] == pytest.approx(4.0) == r["kv_ratio_4_beams"]["theory"]
    # the blog's options: no_repeat_ngram_size leaves no repeated n-gram in any output; num_return_sequences=k gives
    # k distinct outputs from one call
    for row in r["beam_options"]:
        if row["no_repeat_ngram_size"]:
            assert row["repeated_ngrams"] == 0, row["setting"]
        assert row["sequences"] == row["distinct_sequences"] == row["num_return_sequences"], row["setting"]
    several = [row for row in r["beam_options"] if row["num_return_sequences"] > 1]
    assert several and several[0]["num_return_sequences"] == several[0]["num_beams"]
    greedy = {row["no_repeat_ngram_size"]: row for row in r["beam_options"] if row["num_beams"] == 1}
    if greedy[0]["repeated_ngrams"]:  # greedy repeated itself: the ban must have changed its text
        assert greedy[r["beam_options_ngram"]]["text"] != greedy[0]["text"]
