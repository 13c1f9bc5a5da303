"""decoding.timing: the one decode timing. Tokens equal generate()'s, the step count and tokens/s follow from the
definition, bad input raises, and a fake loop with known sleeps is measured as sleeping that long."""

import statistics
import time

import pytest
import torch

from labkit import decoding, models
from labkit.decoding import timing

MODEL = "tiny-bloom-shakespeare"


@pytest.fixture(scope="module")
def lm():
    return models.load_model(MODEL, device="cpu")


def generate_reference(model, ids, new_tokens, **kwargs) -> list[list[int]]:
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, pad_token_id=0, **kwargs)  # fmt: skip
    return out[:, ids.shape[1]:].tolist()


def test_time_greedy_tokens_equal_generate_and_steps_follow_the_definition(lm):
    model, tok = lm
    ids = timing.random_prompt(2, 5, len(tok), seed=1)
    run = timing.time_greedy(model, ids, new_tokens=6, warmup=1, repeat=3)
    assert run.tokens == generate_reference(model, ids, 6, do_sample=False)
    assert (run.batch, run.new_tokens, run.repeats) == (2, 6, 3)
    assert len(run.step_s) == 3 * (6 - 1) and len(run.totals_s) == 3 and len(run.warmups_s) == 1
    assert run.decode_tok_s == pytest.approx(2 / statistics.median(run.step_s))
    assert run.tpot_s == statistics.median(run.step_s) and run.ttft_s == run.prefill_s > 0
    assert run.end_to_end_tok_s == pytest.approx(2 * 6 / run.total_s)
    assert set(run.row()) == {"batch", "new_tokens", "ttft_ms", "tpot_ms", "decode_tok_s"}


def test_time_generate_beam_and_prompt_lookup_give_generate_tokens(lm):
    model, tok = lm
    ids = tok("ROMEO:\nO Romeo, Romeo, wherefore art thou Romeo?\nROMEO:\nO Romeo,", return_tensors="pt").input_ids
    beam = timing.time_generate(model, ids, 5, warmup=0, repeat=1, generation_config=decoding.beam(3), pad_token_id=0)
    assert beam.tokens == generate_reference(model, ids, 5, generation_config=decoding.beam(3))
    assert len(beam.step_s) == 4  # the logits clock: one mark per beam step
    lookup = timing.time_greedy(model, ids, 8, warmup=0, repeat=2, prompt_lookup_num_tokens=3)
    assert lookup.tokens == generate_reference(model, ids, 8, do_sample=False)  # speculation keeps greedy's tokens
    assert len(lookup.step_s) == 2 * 7  # the stream clock: one mark per accepted token, several per step allowed


def test_static_cache_kwargs_and_tokens(lm):
    model, tok = lm
    kwargs = timing.static_cache_compile()
    assert kwargs["cache_implementation"] == "static" and kwargs["compile_config"]._compile_all_devices
    ids = tok("ROMEO:\n", return_tensors="pt").input_ids
    static = timing.time_greedy(model, ids, 5, warmup=0, repeat=1, cache_implementation="static",
                                disable_compile=True)  # fmt: skip
    assert static.tokens == generate_reference(model, ids, 5, do_sample=False)


@pytest.mark.parametrize("kwargs, message", [
    ({"batch": 1, "new_tokens": 0}, "must be >= 1"),
    ({"batch": 0, "new_tokens": 3}, "must be >= 1"),
    ({"batch": 1, "new_tokens": 3, "repeat": 0}, "must be >= 1"),
    ({"batch": 1, "new_tokens": 3, "warmup": -1}, "warmup >= 0"),
])  # fmt: skip
def test_time_decode_rejects_bad_shapes_before_running(kwargs, message):
    calls = []
    with pytest.raises(ValueError, match=message):
        timing.time_decode(lambda mark: calls.append(1) or [[0]], **kwargs)
    assert not calls


def test_a_loop_that_stops_early_is_an_error():
    def loop(mark):
        mark()  # one token, then EOS
        return [[7]]

    with pytest.raises(ValueError, match="marked 1 tokens, expected 4"):
        timing.time_decode(loop, batch=1, new_tokens=4, warmup=0, repeat=1)


def test_time_decode_measures_known_sleeps():
    """The clock against time.sleep, an independent source: a sleep lasts at least what was asked (and, on a busy
    machine, somewhat longer), so each measured interval lies in [asked, asked + slack]."""
    prefill, steps, first_call, slack = 0.030, [0.010, 0.020, 0.015], 0.060, 0.025
    calls = []

    def loop(mark):
        calls.append(1)
        if len(calls) == 1:
            time.sleep(first_call)  # a warm-up that compiles
        time.sleep(prefill)
        mark()
        for s in steps:
            time.sleep(s)
            mark()
        return [[1, 2, 3, 4], [5, 6, 7, 8]]

    run = timing.time_decode(loop, batch=2, new_tokens=4, warmup=1, repeat=3)
    assert len(calls) == 4 and run.tokens == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert first_call + prefill <= run.warmups_s[0] < first_call + prefill + sum(steps) + slack
    assert prefill <= run.prefill_s < prefill + slack  # the warm-up's extra sleep is not in the statistics
    assert len(run.step_s) == 3 * 3
    for measured, asked in zip(run.step_s, steps * 3, strict=True):
        assert asked <= measured < asked + slack
    assert 0.015 <= run.tpot_s < 0.015 + slack  # median of {10, 15, 20} ms
    assert 2 / (0.015 + slack) < run.decode_tok_s <= 2 / 0.015
    assert all(prefill + sum(steps) <= t < prefill + sum(steps) + 2 * slack for t in run.totals_s)


def test_random_prompt_is_reproducible_and_validated():
    a = timing.random_prompt(3, 7, 100, seed=4)
    assert a.shape == (3, 7) and a.dtype == torch.long and int(a.min()) >= 10 and int(a.max()) < 100
    assert torch.equal(a, timing.random_prompt(3, 7, 100, seed=4))
    with pytest.raises(ValueError, match="vocab > 10"):
        timing.random_prompt(1, 4, 10)
