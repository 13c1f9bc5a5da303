"""Engines and policies, limits, metrics, repository and text streaming, without HTTP (fast, in-process)."""

import time

import pytest
import torch

pytest.importorskip("fastapi", reason="the serving extra is not installed (pip install labkit[serve])")

from labkit.models import encode_prompt, load_model
from labkit.serving import metrics
from labkit.serving.batch_engine import sample_tokens
from labkit.serving.hf_engine import check_supported
from labkit.serving.policies import POLICIES
from labkit.serving.repository import SCHEDULERS, ModelRepository, make_engine
from labkit.serving.request import QueueFull, Request, SamplingParams, ShuttingDown, Status
from labkit.serving.textstream import TextStream

PROMPTS = ["ROMEO:\n", "KING HENRY:\nOnce more unto the", "A", "JULIET:\nO Romeo, Romeo, wherefore"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


@pytest.fixture(scope="module")
def bard():
    return load_model("tiny-bloom-shakespeare", device="cpu")


def reference(model, tok, prompts, max_new):
    out = []
    for p, n in zip(prompts, max_new, strict=True):
        ids = encode_prompt(tok, p)["input_ids"]
        gen = model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
        out.append(gen[0, ids.shape[1]:].tolist())
    return out


def run_staggered(engine, tok, prompts, max_new):
    """Submit half the requests, wait until they are decoding, then the rest: sequences join and leave mid-batch."""
    reqs = [Request(encode_prompt(tok, p)["input_ids"][0].tolist(), SamplingParams(n), tok.eos_token_id)
            for p, n in zip(prompts, max_new, strict=True)]
    for r in reqs[:2]:
        engine.submit(r)
    deadline = time.perf_counter() + 30
    while not reqs[0].tokens and time.perf_counter() < deadline:
        time.sleep(0.001)
    for r in reqs[2:]:
        engine.submit(r)
    for r in reqs:
        assert r.finished.wait(60), "request never finished"
    return [r.tokens for r in reqs]


@pytest.mark.parametrize("name", ["sync", "dynamic", "continuous"])
def test_greedy_equals_generate(bard, name):
    model, tok = bard
    max_new = [20, 7, 12, 3]  # different lengths: sequences leave the batch at different steps
    engine = make_engine(name, model, tok, max_batch=3, max_queue=8)
    try:
        got = run_staggered(engine, tok, PROMPTS, max_new)
    finally:
        engine.stop()
    assert got == reference(model, tok, PROMPTS, max_new)
    if name == "continuous":
        assert max(engine.batch_sizes) == 3  # the batch really ran several sequences at once


def test_hf_continuous_equals_generate_on_llama():
    model, tok = load_model("tiny-llama", device="cpu")
    max_new = [10, 4, 8, 6]
    engine = make_engine("hf-continuous", model, tok, max_batch=4, max_queue=8)
    try:
        got = run_staggered(engine, tok, PROMPTS, max_new)
    finally:
        engine.stop()
    assert got == reference(model, tok, PROMPTS, max_new)
    assert not engine.running and engine.queue_depth == 0


def test_hf_continuous_refuses_bloom_with_the_reason(bard):
    with pytest.raises(ValueError, match="PagedAttentionCache"):
        check_supported(bard[0])


def test_unknown_scheduler_lists_choices(bard):
    with pytest.raises(ValueError, match="continuous"):
        make_engine("fastest", *bard)
    with pytest.raises(ValueError, match="continuous"):
        ModelRepository("fastest")
    assert set(SCHEDULERS) == {"sync", "dynamic", "continuous", "paged", "hf-continuous"}
    assert set(POLICIES) == set(SCHEDULERS) - {"hf-continuous", "paged"}  # the paged engine runs 'continuous'


def test_cli_parses_serve_and_loadgen_and_refuses_remote_targets(capsys):
    import argparse

    from labkit.serving import cli

    assert set(cli.SCHEDULER_NAMES) == set(SCHEDULERS)
    parser = argparse.ArgumentParser()
    cli.add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--model", "tiny-llama", "--scheduler", "sync", "--port", "9000"])
    assert (args.model, args.scheduler, args.port, args.host) == ("tiny-llama", "sync", 9000, "127.0.0.1")
    assert cli.main(["loadgen", "--url", "http://10.2.3.4:8000"]) == 2
    assert "loopback" in capsys.readouterr().err
    assert parser.parse_args(["loadgen", "--chat"]).chat
    assert parser.parse_args(["serve"]).device == "auto"
    assert parser.parse_args(["serve", "--scheduler", "paged", "--runner", "onnxruntime"]).runner == "onnxruntime"
    with pytest.raises(SystemExit):  # argparse names the choices
        parser.parse_args(["serve", "--runner", "tensorrt"])
    assert "choose from 'torch', 'onnxruntime'" in capsys.readouterr().err
    assert cli.main(["serve", "--model", "tiny-llama", "--device", "gpu"]) == 2  # refused before loading a model
    assert "choose from ['auto', 'cpu', 'cuda', 'cuda:N']" in capsys.readouterr().err
    assert cli.main(["serve", "--fields"]) == 0  # the field table, without loading a model
    table = capsys.readouterr().out
    assert "| `n` | refused | one choice per request; accepted: null, 1 |" in table
    assert "| `echo` | implemented |" in table and "| `user` | tag |" in table


def test_sampling_is_seeded_and_top_p_near_zero_is_greedy(bard):
    model, tok = bard
    ids = encode_prompt(tok, PROMPTS[0])["input_ids"][0].tolist()
    engine = make_engine("continuous", model, tok)
    try:
        a, b, c = engine.generate([ids, ids, ids], SamplingParams(12, temperature=1.0, seed=7))
        d = engine.generate([ids], SamplingParams(12, temperature=1.0, seed=8))[0]
    finally:
        engine.stop()
    assert a == b == c and a != d  # same seed, same tokens; another seed differs
    logits = torch.randn(3, 50)
    reqs = [Request([1], SamplingParams(temperature=1.5, top_p=1e-6, seed=i)) for i in range(3)]
    assert sample_tokens(logits, reqs) == logits.argmax(-1).tolist()


def test_queue_bound_and_cancel_while_queued(bard):
    model, tok = bard
    engine = make_engine("sync", model, tok, max_queue=2)
    long = Request([5, 6, 7], SamplingParams(max_tokens=400))
    try:
        engine.submit(long)
        while long.t_first is None:  # the worker is busy with it
            time.sleep(0.001)
        assert long.status is Status.RUNNING
        queued = [Request([5], SamplingParams(2)), Request([6], SamplingParams(2))]
        for r in queued:
            engine.submit(r)
        assert queued[1].status is Status.WAITING
        with pytest.raises(QueueFull) as err:
            engine.submit(Request([7], SamplingParams(2)))
        assert err.value.retry_after_s >= 1
        engine.cancel(queued[0])
        assert queued[0].finish_reason == "cancelled" and engine.queue_depth == 1  # left the queue at once
        engine.cancel(long)  # a running request stops at its next step
        assert long.finished.wait(10) and long.finish_reason == "cancelled" and len(long.tokens) < 400
        assert queued[1].finished.wait(10) and queued[1].finish_reason == "length"
        assert queued[1].status is Status.FINISHED
    finally:
        engine.stop()


def test_stop_drains_and_then_refuses(bard):
    engine = make_engine("continuous", *bard)
    reqs = [Request([5, 6], SamplingParams(30)) for _ in range(3)]
    for r in reqs:
        engine.submit(r)
    engine.stop(drain=True)
    assert all(r.finish_reason == "length" and len(r.tokens) == 30 for r in reqs)
    with pytest.raises(ShuttingDown):
        engine.submit(Request([1], SamplingParams(1)))


def test_metrics_text_format_round_trips():
    reg = metrics.Registry()
    c = reg.add(metrics.Counter("x_total", "things"))
    h = reg.add(metrics.Histogram("lat_seconds", "latency", buckets=(0.1, 1.0)))
    reg.add(metrics.Gauge("depth", "queue", lambda: {(("model", "m"),): 3}))
    c.inc(2, status=200)
    c.inc(status=429)
    for v in (0.05, 0.5, 5.0):
        h.observe(v, model="m")
    text = reg.render()
    assert "# TYPE lat_seconds histogram" in text and 'x_total{status="429"} 1' in text
    p = metrics.parse(text)
    assert metrics.total(p, "x_total") == 3 and metrics.total(p, "depth", model="m") == 3
    buckets = [p[("lat_seconds_bucket", (("le", le), ("model", "m")))] for le in ("0.1", "1", "+Inf")]
    assert buckets == [1, 2, 3]  # cumulative; 5.0 only in +Inf
    assert p[("lat_seconds_sum", (("model", "m"),))] == pytest.approx(5.55)


def test_canary_split_promote_and_rollback(bard):
    repo = ModelRepository("continuous", seed=1)
    try:
        repo.load("bard", "v1", loaded=bard)
        repo.load("bard", "v2", loaded=bard)
        repo.set_canary("bard", "v2", 0.2)
        share = sum(repo.route("bard").version == "v2" for _ in range(4000)) / 4000
        assert share == pytest.approx(0.2, abs=0.03)
        assert set(repo.table().traffic_share) == {0.8, 0.2}
        with pytest.raises(ValueError, match="share"):
            repo.set_canary("bard", "v2", 1.5)
        with pytest.raises(ValueError, match="stable"):
            repo.unload("bard", "v1")
        repo.rollback("bard")
        assert {repo.route("bard").version for _ in range(50)} == {"v1"} and ("bard", "v2") not in repo.deployments
        repo.load("bard", "v3", loaded=bard)
        repo.set_canary("bard", "v3", 0.5)
        repo.promote("bard")
        assert {repo.route("bard").version for _ in range(50)} == {"v3"} and ("bard", "v1") not in repo.deployments
        with pytest.raises(KeyError, match="served models"):
            repo.route("nope")
    finally:
        repo.close()


class _CharTokenizer:
    def decode(self, ids, **_):
        return "".join(chr(i) for i in ids)


def test_text_stream_holds_back_stop_strings():
    s = TextStream(_CharTokenizer(), ["END"])
    pieces = []
    for ch in "hello EN":
        delta, stopped = s.add(ord(ch))
        pieces.append(delta)
        assert not stopped
    assert "".join(pieces) == "hello "  # "EN" could start "END": held back
    delta, stopped = s.add(ord("D"))
    assert stopped and s.text == "hello " and "".join(pieces) + delta == "hello "
    plain = TextStream(_CharTokenizer(), [])
    assert "".join(plain.add(ord(c))[0] for c in "abc") + plain.flush() == "abc"
