"""labkit's beam search stops and scores like transformers' `generate(num_beams=...)`: the early-stopping rules
(False / True / "never"), length penalties of either sign, several end-of-text ids, n-gram blocking; and its tree
says when and why it stopped."""

import copy
import itertools

import pytest
import torch
from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor

from labkit import decoding, models


def generate_beam(model, ids, pad, **params) -> list[int]:
    """transformers' own beam search: the reference. Finished hypotheses shorter than the longest are padded."""
    config = decoding.config_for("beam", **params)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config, pad_token_id=pad)
    return out[0, ids.shape[1]:].tolist()


def same_tokens(ours: list[int], theirs: list[int], pad: int) -> bool:
    return theirs[: len(ours)] == ours and all(t == pad for t in theirs[len(ours):])


@pytest.fixture(scope="module")
def smollm2():
    return models.load_cached("smollm2-135m")


@pytest.fixture
def shakespeare_with_stops():
    """The Shakespeare BLOOM, whose own end-of-text id it almost never emits, made to stop at tokens it does emit
    (generate() and labkit both read the model's generation config): "\\n" and ",", so that beams finish early."""
    model, tok = models.load_cached("tiny-bloom-shakespeare")
    saved = copy.deepcopy(model.generation_config)
    newline, comma = (tok(s, add_special_tokens=False)["input_ids"][-1] for s in ("\n", ","))
    yield model, tok, newline, comma
    model.generation_config = saved


def test_the_reported_case_stops_where_generate_stops(smollm2):
    """Reported: 'No. Water is a' where generate() answers 'Yes.<|im_end|>': generate() stops at step 3 because no
    running beam can beat the worst finished hypothesis (early_stopping=False's heuristic)."""
    model, tok = smollm2
    ids = models.encode_prompt(tok, "Is water wet? Yes or no.")["input_ids"]
    trace = decoding.step_through(model, tok, ids, "beam", steps=5, num_beams=2, length_penalty=2.0)
    assert trace.token_ids == [10539, 30, 2] == generate_beam(model, ids, tok.pad_token_id, num_beams=2,
                                                              length_penalty=2.0, max_new_tokens=5)
    assert trace.steps == 3
    assert trace.stop_reason.startswith("stopped at step 3: no running beam can beat the worst finished score")
    worst = trace.kept(2)[-1].score
    assert f"{worst:.2f}" in trace.stop_reason and all(n.step < 2 for n in trace.nodes)


@pytest.mark.parametrize("prompt, num_beams, length_penalty, early_stopping", [
    ("Is water wet? Yes or no.", 3, 1.0, True),
    ("Is water wet? Yes or no.", 4, -1.0, "never"),
    ("What is 2+2? Answer with a number.", 3, 2.0, "never"),
])  # fmt: skip
def test_smollm2_beams_equal_generate(smollm2, prompt, num_beams, length_penalty, early_stopping):
    model, tok = smollm2
    ids = models.encode_prompt(tok, prompt)["input_ids"]
    params = dict(num_beams=num_beams, length_penalty=length_penalty, early_stopping=early_stopping)
    trace = decoding.beam_step_through(model, tok, ids, steps=8, **params)
    assert same_tokens(trace.token_ids, generate_beam(model, ids, tok.pad_token_id, max_new_tokens=8, **params),
                       tok.pad_token_id), trace.stop_reason


def test_beam_search_equals_generate_over_the_whole_grid(shakespeare_with_stops):
    """num_beams 1-4 × length_penalty -1, 0, 1, 2 × early_stopping False / True / "never", with one end-of-text id
    (2 × num_beams candidates per step) and with two (3 × num_beams); every stop rule must fire somewhere."""
    model, tok, newline, comma = shakespeare_with_stops
    mismatches, reasons = [], set()
    for (prompt, eos), num_beams, lp, es in itertools.product(
        [("ROMEO:\n", newline), ("KING HENRY:\nOnce more unto the", [newline, comma])],
        [1, 2, 3, 4], [-1.0, 0.0, 1.0, 2.0], [False, True, "never"],
    ):
        model.generation_config.eos_token_id = eos
        ids = tok(prompt, return_tensors="pt")["input_ids"]
        trace = decoding.beam_step_through(model, tok, ids, num_beams, 8, lp, es)
        expected = generate_beam(model, ids, tok.pad_token_id, num_beams=num_beams, length_penalty=lp,
                                 early_stopping=es, max_new_tokens=8)
        reasons.add(trace.stop_reason.split(": ")[1].split(" (")[0].split(" can ")[0])
        if not same_tokens(trace.token_ids, expected, tok.pad_token_id):
            mismatches.append((prompt, num_beams, lp, es, trace.token_ids, expected, trace.stop_reason))
    assert not mismatches
    assert {"max_new_tokens=8 reached, every running beam finished there", "end of text", "no running beam",
            "2 hypotheses finished", "4 hypotheses finished"} <= reasons


def test_step_through_passes_no_repeat_ngram_size_like_generate(shakespeare_with_stops):
    model, tok, _, _ = shakespeare_with_stops
    ids = tok("ROMEO:\n", return_tensors="pt")["input_ids"]
    plain = decoding.step_through(model, tok, ids, "beam", steps=12, num_beams=3)
    blocked = decoding.step_through(model, tok, ids, "beam", steps=12, num_beams=3, no_repeat_ngram_size=2)
    assert blocked.token_ids == generate_beam(model, ids, tok.pad_token_id, num_beams=3, no_repeat_ngram_size=2,
                                              max_new_tokens=12)
    assert blocked.token_ids != plain.token_ids  # the greedy-ish beam repeats bigrams here: the block changed it


@pytest.mark.parametrize("n", [1, 2, 3])
def test_banned_ngram_tokens_equal_transformers_processor(n):
    gen = torch.Generator().manual_seed(n)
    for _ in range(20):
        ids = torch.randint(0, 6, (1, 12), generator=gen)
        scores = NoRepeatNGramLogitsProcessor(n)(ids, torch.zeros(1, 6))
        assert decoding.banned_ngram_tokens(ids[0].tolist(), n) == set(torch.isinf(scores[0]).nonzero()[:, 0].tolist())


@pytest.mark.parametrize("value", ["sometimes", 1, 0, None, "True"])
def test_early_stopping_must_be_false_true_or_never(shakespeare_with_stops, value):
    model, tok, _, _ = shakespeare_with_stops
    with pytest.raises(ValueError, match=r"early_stopping=.* choose from False, True, 'never'"):
        decoding.config_for("beam", early_stopping=value)
    with pytest.raises(ValueError, match="choose from False, True, 'never'"):
        decoding.beam_step_through(model, tok, torch.tensor([[5, 6]]), 2, 4, early_stopping=value)


def test_true_stops_once_num_beams_have_finished_and_never_searches_on(shakespeare_with_stops):
    model, tok, newline, _ = shakespeare_with_stops
    model.generation_config.eos_token_id = newline
    ids = tok("ROMEO:\n", return_tensors="pt")["input_ids"]
    early = decoding.beam_step_through(model, tok, ids, 2, 12, 1.0, True)
    never = decoding.beam_step_through(model, tok, ids, 2, 12, 1.0, "never")
    assert early.stop_reason.endswith("2 hypotheses finished (early_stopping=True)")
    assert len(early.finished) >= 2 and early.finished[1].step == early.steps - 1  # the second one ended it
    assert never.steps >= early.steps and never.score >= early.score  # "never" searches at least as long
