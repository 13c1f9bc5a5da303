"""Lab 06: checks on the results its smoke run recorded."""

import pytest  # noqa: F401


def check(r: dict) -> None:
    assert len(r["methods"]) == 10 and all(v > 0 for v in r["tokens_per_s"].values())
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
