"""Logprobs computed by the engine's worker thread, against the model's own forward pass and generate()'s logits."""

import pytest
import torch

pytest.importorskip("fastapi", reason="the serving extra is not installed (pip install labkit[serve])")

from labkit.models import encode_prompt, load_cached
from labkit.serving.batch_engine import BatchEngine
from labkit.serving.limits import Limits
from labkit.serving.policies import POLICIES
from labkit.serving.repository import make_engine
from labkit.serving.request import Request, SamplingParams

PROMPTS = ["ROMEO:\n", "KING HENRY:\nOnce more unto the", "A", "JULIET:\nO Romeo, Romeo, wherefore"]
NEW = 6


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


def served(model, tok, k: int) -> list[Request]:
    """Four prompts of different lengths prefilled together (left padding) and decoded together."""
    engine = BatchEngine(model, tok, POLICIES["continuous"], Limits(max_batch=4))
    reqs = [Request(encode_prompt(tok, p)["input_ids"][0].tolist(), SamplingParams(NEW, logprobs=k,
                                                                                   prompt_logprobs=True))
            for p in PROMPTS]
    for r in reqs:
        engine.submit(r)  # all queued before the worker starts: one prefill for all four
    engine.start().stop(drain=True)
    assert dict(engine.batch_sizes) == {4: NEW - 1}  # they really ran as one batch
    return reqs


@pytest.mark.parametrize("name", ["tiny-bloom-shakespeare", "tiny-llama"])  # ALiBi and RoPE under left padding
def test_logprobs_equal_the_models_own_log_softmax(name):
    model, tok = load_cached(name)
    k = 3
    for r in served(model, tok, k):
        full = torch.tensor([r.prompt_ids + r.tokens])
        with torch.no_grad():
            ref = model(full).logits[0].float().log_softmax(-1)  # (seq, vocab): position p predicts token p + 1
        n = len(r.prompt_ids)
        assert len(r.logprobs) == len(r.tokens) == NEW and len(r.prompt_logprobs) == n
        assert r.prompt_logprobs[0] is None  # nothing comes before the first prompt token
        for j in range(1, n):  # prompt tokens
            assert r.prompt_logprobs[j].logprob == pytest.approx(float(ref[j - 1, r.prompt_ids[j]]), abs=2e-4)
        for i, (token, entry) in enumerate(zip(r.tokens, r.logprobs, strict=True)):  # generated tokens
            row = ref[n - 1 + i]
            assert entry.logprob == pytest.approx(float(row[token]), abs=2e-4)
            top = row.topk(k)
            assert [t for t, _ in entry.top] == top.indices.tolist()
            assert [lp for _, lp in entry.top] == pytest.approx(top.values.tolist(), abs=2e-4)
            assert entry.top[0][0] == token  # greedy: the chosen token is the most likely one


def test_logprobs_equal_generates_raw_logits():
    model, tok = load_cached("tiny-llama")
    reqs = served(model, tok, 0)
    for r in reqs:
        out = model.generate(torch.tensor([r.prompt_ids]), max_new_tokens=NEW, do_sample=False, output_logits=True,
                             return_dict_in_generate=True, pad_token_id=tok.pad_token_id)
        assert out.sequences[0, len(r.prompt_ids):].tolist() == r.tokens
        want = [float(step[0].float().log_softmax(-1)[t]) for step, t in zip(out.logits, r.tokens, strict=True)]
        assert [e.logprob for e in r.logprobs] == pytest.approx(want, abs=2e-4)
        assert all(e.top == () for e in r.logprobs)  # logprobs=0: the chosen token's only


def test_rows_that_do_not_ask_get_none_and_temperature_does_not_change_the_logprobs():
    model, tok = load_cached("tiny-llama")
    ids = encode_prompt(tok, PROMPTS[1])["input_ids"][0].tolist()
    engine = make_engine("continuous", model, tok, max_batch=3)
    reqs = [Request(ids, SamplingParams(NEW)), Request(ids, SamplingParams(NEW, logprobs=2)),
            Request(ids, SamplingParams(NEW, temperature=5.0, seed=1, logprobs=2))]
    try:
        for r in reqs:
            engine.submit(r)
        for r in reqs:
            assert r.finished.wait(60)
    finally:
        engine.stop()
    assert reqs[0].logprobs == [] and reqs[0].prompt_logprobs == []
    with torch.no_grad():
        hot = model(torch.tensor([ids + reqs[2].tokens])).logits[0].float().log_softmax(-1)
    # raw logprobs: the log_softmax of the logits before temperature, even for a sampled token
    want = [float(hot[len(ids) - 1 + i, t]) for i, t in enumerate(reqs[2].tokens)]
    assert [e.logprob for e in reqs[2].logprobs] == pytest.approx(want, abs=2e-4)
