"""The decoding-methods and speculative experiments: tables, cut-offs, temperature, beam trees, search likelihood,
timed methods, speculative decoding's prediction and speculative sampling."""

import pytest
import torch

from labkit import decoding, devices, hardware, models, precision
from labkit.experiments import decoding_methods, searches, speculative

MODEL = "tiny-bloom-shakespeare"


def test_compare_methods_table_and_metrics():
    r = decoding_methods.compare_methods(MODEL, "ROMEO:\n", {"greedy": {}, "prompt-lookup": {"num_tokens": 2},
                                                          "contrastive": {"k": 3, "alpha": 0.5}}, max_new_tokens=6,
                                         repeat=1, device="cpu")
    t = r.table.set_index("method")
    assert list(t.index) == ["greedy", "prompt-lookup", "contrastive"]
    assert t.loc["greedy", "text"] == t.loc["prompt-lookup", "text"]
    assert (t.length == 6).all() and (t.tokens_per_s > 0).all() and (t.mean_logprob < 0).all()
    assert (t.warmups == 1).all() and (t.repeats == 1).all()  # every time is a DecodeRun's median
    assert set(t.device) == {devices.device_label("cpu")} == {r.table.attrs["device"]}  # every row names its device


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


def test_speculative_report_predicts_from_measured_alpha_gamma_and_c():
    r = speculative.speculative_report(MODEL, "ROMEO:\n", gamma=3, max_new_tokens=6, repeat=1, device="cpu")
    t, a = r.table.set_index("method"), r.table.attrs
    assert t.same_tokens.drop("draft alone").all() and a["labkit_same_tokens"]
    assert a["draft"] == "int8-dynamic" and set(t.device) == {devices.device_label("cpu")}  # the CPU's draft
    assert t.loc["greedy (target only)", "speedup"] == 1.0 and (t.seconds > 0).all() and (t.repeats == 1).all()
    assert a["alpha"] == pytest.approx(a["accepted"] / (a["accepted"] + a["rejected"]))
    alpha, gamma, c = a["alpha"], a["gamma"], a["cost_ratio"]
    series = sum(alpha**i for i in range(gamma + 1))  # (1 - α^(γ+1)) / (1 - α), summed term by term
    assert a["predicted_speedup"] == pytest.approx(series / (gamma * c + 1)) and a["measured_speedup"] > 0
    assert a["tokens_per_call"] == a["new_tokens"] / a["target_calls"] <= gamma + 1


def test_speculative_sampling_check_follows_the_target():
    r = speculative.speculative_sampling_check(MODEL, "ROMEO:\n", draws=4000, draft_temperatures=(1.0, 3.0))
    t = r.table
    assert (t.tv_output_target < t.tv_noise_floor * 2 + 0.02).all()
    assert (abs(t.acceptance - t.acceptance_expected) < 4 * (t.acceptance_expected * (1 - t.acceptance_expected)
                                                                / 4000) ** 0.5 + 1e-3).all()
    assert t.tv_draft_target.iloc[1] > t.tv_draft_target.iloc[0]  # the hotter draft is the poorer one
    with pytest.raises(ValueError, match="draws >= 1"):
        speculative.speculative_sampling_check(MODEL, draws=0)


def test_search_likelihood_rescores_each_search_independently():
    net, tok = models.load_cached(MODEL)
    r = searches.search_likelihood(MODEL, "ROMEO:\n", widths=(1, 2, 4), max_new_tokens=8, device="cpu")
    t = r.table.set_index("num_beams")
    assert t.logprob.tolist() == pytest.approx(t.search_score.tolist(), rel=1e-4, abs=1e-3)  # cached vs full forward
    greedy = decoding.step_through(net, tok, "ROMEO:\n", steps=8)
    assert t.loc[1, "tokens"] == len(greedy.token_ids) and t.loc[1, "logprob"] == pytest.approx(
        greedy.steps[-1].cum_logprob, abs=1e-3)


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


def test_beam_tree_figure_draws_every_node_every_finished_hypothesis_and_the_stop():
    net, tok = models.load_cached(MODEL)
    trace = decoding.step_through(net, tok, "ROMEO:\n", "beam", steps=5, num_beams=2)
    fig = searches.beam_tree_figure(trace)
    named = {d.name: d for d in fig.data if d.name in ("running", "finished")}
    assert len(named["running"].x) == len(trace.nodes) == 8 and len(named["finished"].x) == len(trace.finished) == 2
    assert trace.stop_reason in fig.layout.title.text and fig.layout.shapes[0].x0 == trace.steps == 5


def test_explore_validates_method():
    r = decoding_methods.explore(MODEL, "ROMEO:\n", "top-k", top_k=3, steps=4)
    assert len(r.table) == 4 and (r.table.kept == 3).all()
    with pytest.raises(ValueError, match="explore steps through"):
        decoding_methods.explore(MODEL, "ROMEO:\n", "beam")


def test_a_bad_device_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        decoding_methods.next_token_cutoffs(MODEL, "ROMEO:\n", device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(hardware.CapabilityMissing):
            decoding_methods.temperature_entropy(MODEL, "ROMEO:\n", device="cuda")


def test_draft_follows_the_device():
    assert speculative.draft_quantizer("cpu") == "int8-dynamic"  # torch.ao's int8 is CPU-only
    net, _ = models.load_cached(MODEL, "cpu")
    draft = speculative.draft_model(MODEL, net, gamma=2)
    assert next(draft.parameters()).device == net.device and draft.generation_config.num_assistant_tokens == 2


@pytest.mark.gpu
def test_methods_and_speculation_on_the_gpu_keep_generate_parity():
    r = decoding_methods.compare_methods(MODEL, "ROMEO:\n", {"greedy": {}, "prompt-lookup": {"num_tokens": 2}},
                                         max_new_tokens=6, repeat=1, device="cuda")
    t = r.table.set_index("method")
    assert set(t.device) == {devices.device_label("cuda")} and t.loc["greedy", "text"] == t.loc["prompt-lookup", "text"]
    cpu = decoding_methods.compare_methods(MODEL, "ROMEO:\n", {"greedy": {}}, max_new_tokens=6, repeat=1, device="cpu")
    assert cpu.table.text[0] == t.loc["greedy", "text"]  # fp32 greedy: the same tokens on both devices
    spec = speculative.speculative_report(MODEL, "ROMEO:\n", gamma=2, max_new_tokens=6, repeat=1, device="cuda")
    assert spec.table.attrs["draft"] == precision.native_half("cuda") and spec.table.attrs["labkit_same_tokens"]
    like = searches.search_likelihood(MODEL, "ROMEO:\n", widths=(1, 2), max_new_tokens=6, device="cuda").table
    assert like.logprob.tolist() == pytest.approx(like.search_score.tolist(), rel=1e-4, abs=1e-3)
