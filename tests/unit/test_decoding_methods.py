"""The decoding-methods experiment: tables, cut-offs, temperature, beam trees, timed methods."""

import pytest
import torch

from labkit import decoding, models
from labkit.experiments import decoding_methods

MODEL = "tiny-bloom-shakespeare"


def test_compare_methods_table_and_metrics():
    r = decoding_methods.compare_methods(MODEL, "ROMEO:\n", {"greedy": {}, "prompt-lookup": {"num_tokens": 2},
                                                          "contrastive": {"k": 3, "alpha": 0.5}}, max_new_tokens=6,
                                         repeat=1)
    t = r.table.set_index("method")
    assert list(t.index) == ["greedy", "prompt-lookup", "contrastive"]
    assert t.loc["greedy", "text"] == t.loc["prompt-lookup", "text"]
    assert (t.length == 6).all() and (t.tokens_per_s > 0).all() and (t.mean_logprob < 0).all()


@pytest.mark.parametrize("method, params", [("beam", {"num_beams": 3}), ("prompt-lookup", {"num_tokens": 2}),
                                            ("contrastive", {"k": 3, "alpha": 0.0})])  # fmt: skip
def test_timed_method_gives_the_untimed_tokens_and_one_step_per_token(method, params):
    net, tok = models.load_cached(MODEL)
    ids = tok("KING HENRY:\nOnce more unto the", return_tensors="pt")["input_ids"]
    run = decoding_methods.timed_method(net, tok, ids, method, params, max_new_tokens=7, warmup=1, repeat=2)
    assert len(run.step_s) == 2 * 6 and len(run.warmups_s) == 1 and run.total_s > 0
    if method == "contrastive":  # alpha 0 is greedy: labkit's trace is the independent reference
        expected = decoding.step_through(net, tok, ids, steps=7).token_ids
    else:
        with torch.no_grad():
            cfg = decoding.config_for(method, **params, max_new_tokens=7)
            out = net.generate(ids, generation_config=cfg, min_new_tokens=7, pad_token_id=tok.pad_token_id)
        expected = out[0, ids.shape[1]:].tolist()
    assert run.tokens == [expected]


def test_speculative_report_keeps_greedy_tokens():
    r = decoding_methods.speculative_report(MODEL, "ROMEO:\n", gamma=3, max_new_tokens=6, repeat=1)
    t = r.table.set_index("method")
    assert t.same_tokens.all() and r.table.attrs["labkit_same_tokens"]
    assert t.loc["greedy (target only)", "speedup"] == 1.0 and (t.seconds > 0).all()
    assert 0 <= r.table.attrs["acceptance_rate"] <= 1


def test_next_token_cutoffs_keep_what_the_rules_say():
    r = decoding_methods.next_token_cutoffs(MODEL, "ROMEO:\n", k=3, p=0.5, min_p=0.2, top=10)
    t = r.table
    assert t["top-k (k=3)"].sum() == 3 and t["top-k (k=3)"].iloc[:3].all()
    assert t.probability.is_monotonic_decreasing
    counts = t.attrs["kept_counts"]
    for rule in ("top-k (k=3)", "top-p (p=0.5)", "min-p (min_p=0.2)"):  # every rule keeps a prefix of the ranking
        n = min(counts[rule], len(t))
        assert t[rule].iloc[:n].all() and not t[rule].iloc[n:].any()
    assert (t[t["min-p (min_p=0.2)"]].probability >= 0.2 * t.probability.iloc[0]).all()
    assert len(r.figure.data) == 3


def test_temperature_entropy_rises_and_rejects_zero():
    t = decoding_methods.temperature_entropy(MODEL, "ROMEO:\n", (0.5, 1.0, 2.0)).table
    assert t.entropy_nats.is_monotonic_increasing and t.top1_probability.is_monotonic_decreasing
    with pytest.raises(ValueError, match="temperature must be > 0"):
        decoding_methods.temperature_entropy(MODEL, "ROMEO:\n", (0.0,))


def test_beam_tree_figure_draws_every_node():
    net, tok = models.load_cached(MODEL)
    trace = decoding.step_through(net, tok, "ROMEO:\n", "beam", steps=5, num_beams=2)
    fig = decoding_methods.beam_tree_figure(trace)
    assert len(fig.data[-1].x) == len(trace.nodes) == 8


def test_explore_validates_method():
    r = decoding_methods.explore(MODEL, "ROMEO:\n", "top-k", top_k=3, steps=4)
    assert len(r.table) == 4 and (r.table.kept == 3).all()
    with pytest.raises(ValueError, match="explore steps through"):
        decoding_methods.explore(MODEL, "ROMEO:\n", "beam")
