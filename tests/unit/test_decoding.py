"""Decoding: from-scratch loops agree with generate(); cut-offs, contrastive and speculative behave."""

import math

import pytest
import torch

from labkit import decoding, models

PROMPTS = ["ROMEO:\n", "To be, or not to be,", "KING HENRY:\nOnce more unto the"]


@pytest.fixture(scope="module")
def lm():
    return models.load_model("tiny-bloom-shakespeare", device="cpu")


def ids_of(tok, prompt):
    return tok(prompt, return_tensors="pt")["input_ids"]


def new_tokens(model, ids, config, **kwargs) -> list[int]:
    """transformers' own generate(): the reference the from-scratch loops must reproduce."""
    with torch.no_grad():
        out = model.generate(input_ids=ids, generation_config=config, **kwargs)
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("prompt", PROMPTS)
def test_step_through_greedy_equals_generate(lm, prompt):
    model, tok = lm
    ids = ids_of(tok, prompt)
    trace = decoding.step_through(model, tok, ids, steps=12)
    assert trace.token_ids == new_tokens(model, ids, decoding.greedy(12), pad_token_id=tok.pad_token_id)
    assert all(s.candidates[0][1] == pytest.approx(s.chosen_prob) for s in trace.steps)  # greedy = the top bar
    assert trace.steps[-1].cum_logprob == pytest.approx(sum(math.log(s.chosen_prob) for s in trace.steps))


def test_step_through_matches_generate_on_the_real_llm():
    model, tok = models.load_model("smollm2-135m", device="cpu")
    ids = models.encode_prompt(tok, "What is the capital of France?")["input_ids"]
    greedy = new_tokens(model, ids, decoding.greedy(8), pad_token_id=tok.eos_token_id)
    assert decoding.step_through(model, tok, ids, steps=8).token_ids == greedy
    beams = new_tokens(model, ids, decoding.beam(3, max_new_tokens=6), pad_token_id=tok.eos_token_id)
    assert decoding.beam_step_through(model, tok, ids, num_beams=3, steps=6).token_ids == beams


def test_top_k_1_and_tiny_top_p_reduce_to_greedy(lm):
    model, tok = lm
    ids = ids_of(tok, PROMPTS[0])
    greedy = decoding.step_through(model, tok, ids, steps=10).token_ids
    assert decoding.step_through(model, tok, ids, "top-k", 10, seed=3, k=1).token_ids == greedy
    assert decoding.step_through(model, tok, ids, "top-p", 10, seed=3, p=1e-6).token_ids == greedy


def test_seeded_sampling_is_reproducible_and_cutoffs_are_recorded(lm):
    model, tok = lm
    ids = ids_of(tok, PROMPTS[1])
    a = decoding.step_through(model, tok, ids, "top-p", 10, seed=7, p=0.9, temperature=0.9)
    b = decoding.step_through(model, tok, ids, "top-p", 10, seed=7, p=0.9, temperature=0.9)
    assert a.token_ids == b.token_ids
    assert all(1 <= s.kept < 4096 and s.kept_mass >= 0.9 - 1e-6 for s in a.steps)
    k = decoding.step_through(model, tok, ids, "top-k", 5, seed=1, k=7)
    assert all(s.kept == 7 for s in k.steps)


def test_contrastive_scores_match_the_definition():
    probs = torch.tensor([0.6, 0.4])
    cand = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # candidate 0 repeats the context direction
    ctx = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    scores = decoding.contrastive_scores(probs, cand, ctx, alpha=0.5)
    # cand0: max cos = 1 -> 0.5*0.6 - 0.5*1 = -0.2; cand1: max cos = 1/sqrt(2) -> 0.2 - 0.3536 = -0.1536
    assert scores.tolist() == pytest.approx([-0.2, 0.2 - 0.5 / math.sqrt(2)])
    assert int(scores.argmax()) == 1  # the less likely but less repetitive token wins


def test_contrastive_with_alpha_0_is_greedy(lm):
    model, tok = lm
    ids = ids_of(tok, PROMPTS[2])
    out = decoding.contrastive_search(model, ids, k=4, alpha=0.0, max_new_tokens=6)
    assert out[0, ids.shape[1]:].tolist() == decoding.step_through(model, tok, ids, steps=6).token_ids


def test_speculative_returns_exactly_the_target_greedy_output(lm):
    from labkit import quant

    model, tok = lm
    draft = quant.quantize("int8-dynamic", "tiny-bloom-shakespeare", model=model).model
    ids = ids_of(tok, PROMPTS[0])
    spec = decoding.speculative_greedy(model, draft, ids, gamma=3, max_new_tokens=12)
    greedy = decoding.step_through(model, tok, ids, steps=12).token_ids
    assert spec.token_ids[0, ids.shape[1]:].tolist() == greedy
    assert 0 <= spec.acceptance_rate <= 1 and spec.target_calls <= 12
    assisted = new_tokens(model, ids, decoding.greedy(12), assistant_model=draft, pad_token_id=tok.pad_token_id)
    assert assisted == greedy


def test_speculative_stops_at_end_of_text_like_generate():
    """Reported against assisted decoding: a loop that ignores EOS keeps "accepting" tokens after the answer ends.
    SmolLM2 as its own draft (every guess accepted) on a one-word answer: greedy generate() stops at <|im_end|>."""
    model, tok = models.load_cached("smollm2-135m")
    ids = models.encode_prompt(tok, "Is the sky blue? Answer with one word.", chat=True)["input_ids"]
    spec = decoding.speculative_greedy(model, model, ids, gamma=2, max_new_tokens=10)
    with torch.no_grad():
        greedy = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
                                pad_token_id=tok.pad_token_id)[0, ids.shape[1]:].tolist()
    new = spec.token_ids[0, ids.shape[1]:].tolist()
    assert new == greedy and new[-1] == tok.eos_token_id and len(new) < 10
    assert spec.accepted == spec.proposed <= len(new)  # its own draft: all accepted, none drafted past the EOS


def test_prompt_lookup_equals_greedy(lm):
    model, tok = lm
    ids = ids_of(tok, "ROMEO:\nO Romeo, Romeo, wherefore art thou Romeo?\nROMEO:\nO Romeo,")
    plain = new_tokens(model, ids, decoding.greedy(10), pad_token_id=tok.pad_token_id)
    assert new_tokens(model, ids, decoding.prompt_lookup(3, 10), pad_token_id=tok.pad_token_id) == plain


def test_text_metrics():
    m = decoding.text_metrics([1, 2, 3, 4, 1, 2, 3, 4])
    assert m["distinct_1"] == 0.5 and m["length"] == 8
    assert m["repetition_4gram"] == pytest.approx(1 - 4 / 5)


@pytest.mark.parametrize("method, params, message", [
    ("sample", {"temperature": 0}, "temperature > 0"),
    ("top-p", {"p": 1.5}, "0 < top_p <= 1"),
    ("top-p", {"p": 0}, "0 < top_p <= 1"),
    ("top-k", {"k": 0}, "top_k >= 1"),
    ("beam", {"num_beams": 0}, "num_beams >= 1"),
    ("min-p", {"p": 2.0}, "0 <= min_p <= 1"),
])  # fmt: skip
def test_bad_parameters_name_the_valid_range(method, params, message):
    with pytest.raises(ValueError, match=message):
        decoding.config_for(method, **params)


def test_unknown_method_lists_choices():
    with pytest.raises(ValueError, match=r"unknown method 'nucleus'; choose from \['greedy', 'beam'.*'contrastive'"):
        decoding.config_for("nucleus")


@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize("num_beams", [2, 4])
def test_beam_step_through_equals_generate(lm, prompt, num_beams):
    model, tok = lm
    ids = ids_of(tok, prompt)
    trace = decoding.beam_step_through(model, tok, ids, num_beams=num_beams, steps=10)
    assert trace.token_ids == new_tokens(model, ids, decoding.beam(num_beams=num_beams, max_new_tokens=10),
                                         pad_token_id=tok.pad_token_id)
    assert len(trace.nodes) == num_beams * 9  # the tree: every running beam at every step but the last
    assert {n.parent for n in trace.nodes if n.step == 0} == {0}  # the first step expands one beam


def test_beam_search_with_one_beam_is_greedy(lm):
    model, tok = lm
    ids = ids_of(tok, PROMPTS[1])
    beam = decoding.beam_step_through(model, tok, ids, num_beams=1, steps=8).token_ids
    assert beam == decoding.step_through(model, tok, ids, steps=8).token_ids


def test_repetition_penalty_loop_equals_generate(lm):
    model, tok = lm
    ids = ids_of(tok, PROMPTS[0])
    trace = decoding.step_through(model, tok, ids, "repetition-penalty", 12, penalty=1.5)
    config = decoding.repetition_penalty(1.5, 12)
    assert trace.token_ids == new_tokens(model, ids, config, pad_token_id=tok.pad_token_id)
    plain = decoding.step_through(model, tok, ids, steps=12)
    m_pen, m_plain = decoding.text_metrics(trace.token_ids), decoding.text_metrics(plain.token_ids)
    assert m_pen["distinct_1"] >= m_plain["distinct_1"]


def test_step_through_beam_by_name(lm):
    model, tok = lm
    trace = decoding.step_through(model, tok, PROMPTS[2], "beam", steps=6, num_beams=3)
    assert isinstance(trace, decoding.BeamTrace)
    ids = ids_of(tok, PROMPTS[2])
    assert trace.token_ids == new_tokens(model, ids, decoding.beam(3, max_new_tokens=6), pad_token_id=tok.pad_token_id)
