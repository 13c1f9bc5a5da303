"""Beam search's systems cost: the forwards and cache generate() really uses per beam width, against the KV formula
written out by hand; the repeated n-gram count against transformers' own no-repeat processor."""

import pytest
import torch
from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor

from labkit import anatomy, devices
from labkit.experiments import beam_cost

pytestmark = pytest.mark.usefixtures("one_thread")


def test_repeated_ngrams_by_hand():
    assert beam_cost.repeated_ngrams([1, 2, 1, 2, 1], 2) == 2  # (1, 2) and (2, 1) come back once each
    assert beam_cost.repeated_ngrams([1, 2, 1, 2, 1], 2, start=4) == 1  # only the n-gram ending at position 4
    assert beam_cost.repeated_ngrams([5, 5, 5], 1) == 2 and beam_cost.repeated_ngrams([1, 2, 3], 2) == 0


@pytest.mark.parametrize("n", [1, 2, 3])
def test_repeated_ngrams_counts_what_transformers_would_ban(n):
    ids = torch.randint(0, 6, (40,), generator=torch.Generator().manual_seed(n)).tolist()
    processor, start = NoRepeatNGramLogitsProcessor(n), 5
    banned = 0
    for i in range(start, len(ids)):  # would the processor have banned the token at position i, given ids[:i]?
        scores = processor(torch.tensor([ids[:i]]), torch.zeros(1, 6))
        banned += bool(scores[0, ids[i]] == -float("inf"))
    assert beam_cost.repeated_ngrams(ids, n, start=start) == banned > 0


def test_beam_widths_multiply_the_batch_and_the_cache():
    r = beam_cost.beam_cost("tiny-llama", "Hello there", widths=(1, 3), new_tokens=5, ngram=2, warmup=0, repeat=1,
                            device="cpu")
    t, shape = r.table.set_index("num_beams"), r.table.attrs
    d = anatomy.dims("tiny-llama")
    assert d.kv_heads < d.heads  # grouped-query attention: the formula must count K/V heads, not query heads
    positions = shape["prompt_tokens"] + 5 - 1  # the last new token is never fed back
    for width in (1, 3):
        row = t.loc[width]
        assert row.prefill_batch == row.decode_batch == row.cache_batch == width
        assert row.decode_forwards == 4 and row.cache_tokens == positions
        assert row.kv_bytes == row.kv_bytes_formula == 2 * d.layers * d.kv_heads * d.head_dim * 4 * positions * width
        assert row.ms_per_token > 0
    assert t.kv_ratio[3] == t.batch_ratio[3] == 3.0
    assert set(t.device) == {devices.device_label("cpu")}  # every row names the device it ran on
    assert list(r.figure.data[0].y) == [1.0, 3.0]  # the formula's line: num_beams

    o = r.options
    assert len(o) == 4 and o.attrs["ngram"] == 2
    assert (o[o.no_repeat_ngram_size > 0].repeated_ngrams == 0).all()
    assert (o.sequences == o.distinct_sequences).all() and (o.sequences == o.num_return_sequences).all()
    assert o.num_return_sequences.max() == 3  # the widest beam returns all of its beams


@pytest.mark.parametrize("kwargs, match", [({"widths": (2, 4)}, "widths starting with 1"),
                                           ({"widths": (1, 0)}, "every width >= 1"),
                                           ({"new_tokens": 1}, "new_tokens >= 2"), ({"ngram": 0}, "ngram >= 1"),
                                           ({"repeat": 0}, "repeat >= 1"), ({"rounds": 0}, "rounds >= 1"),
                                           ({"device": "tpu"}, "tpu")])
def test_bad_input_is_refused_before_loading(kwargs, match, monkeypatch):
    monkeypatch.setattr(beam_cost.models, "load_cached", lambda *a, **k: pytest.fail("loaded before checking"))
    with pytest.raises(ValueError, match=match):
        beam_cost.beam_cost("tiny-llama", **kwargs)
    with pytest.raises(ValueError, match="n >= 1"):
        beam_cost.repeated_ngrams([1, 2], 0)
