"""Faults found by driving `labkit serve` as a new user and an evaluation tool would: values the body accepted that
then failed the whole running batch (500), wrong JSON types read as something else, invalid Unicode, error shapes
and the request counter. Each expectation comes from OpenAI's spec, vLLM's protocol or a second measurement."""

import concurrent.futures as cf
import json

import pytest
import torch

httpx = pytest.importorskip("httpx", reason="the serving extra is not installed (pip install labkit[serve])")
pytest.importorskip("fastapi", reason="the serving extra is not installed (pip install labkit[serve])")
openai = pytest.importorskip("openai", reason="the test extra is not installed (pip install labkit[test])")

from openai.types.chat import ChatCompletionStreamOptionsParam
from pydantic import ValidationError

from labkit.serving import fields, metrics
from labkit.serving.app import create_app
from labkit.serving.batch_engine import sample_tokens
from labkit.serving.fields import validation_message
from labkit.serving.protocol import ChatBody, CompletionBody
from labkit.serving.repository import ModelRepository
from labkit.serving.request import Request, SamplingParams
from tests.unit.serving_server import serving

M = "bard"
INT64 = torch.iinfo(torch.long)  # OpenAI's spec and vLLM's protocol: seed is a signed 64-bit integer
BASE = {fields.COMPLETIONS: {"model": "m", "prompt": "x"},
        fields.CHAT: {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}


def refused(where: str, body: dict) -> tuple[str, str | None]:
    """(message, param) of a body that must fail validation (validated from JSON-decoded data, as FastAPI does)."""
    cls = CompletionBody if where == fields.COMPLETIONS else ChatBody
    with pytest.raises(ValidationError) as err:
        cls.model_validate({**BASE[where], **body})
    return validation_message(err.value.errors(), where)


# --- values that used to fail every request in the batch ---------------------------------------------------------
@pytest.mark.parametrize("seed", [INT64.max + 1, INT64.min - 1, 2**64])
def test_a_seed_outside_int64_is_a_400_naming_seed(seed):
    message, param = refused(fields.COMPLETIONS, {"seed": seed})
    assert param == "seed" and "seed" in message
    for ok in (INT64.min, INT64.max, 0):
        CompletionBody.model_validate({**BASE[fields.COMPLETIONS], "seed": ok})
    with pytest.raises(ValueError, match="seed"):
        SamplingParams(seed=seed)


def test_a_tiny_temperature_is_greedy_not_nan():
    """vLLM treats temperature < 1e-5 as greedy (_SAMPLING_EPS); dividing fp32 logits by 1e-300 gives inf/NaN."""
    torch.manual_seed(0)
    logits = torch.randn(3, 50) * 5
    reqs = [Request([1], SamplingParams(temperature=t, seed=1)) for t in (1e-300, 1e-30, 1e-6)]
    assert all(r.params.greedy for r in reqs)
    assert sample_tokens(logits, reqs) == logits.argmax(-1).tolist()
    assert not SamplingParams(temperature=1e-4).greedy


# --- wrong JSON types are errors, as OpenAI answers them --------------------------------------------------------
@pytest.mark.parametrize(("where", "body", "param"), [
    (fields.COMPLETIONS, {"max_tokens": "5"}, "max_tokens"),
    (fields.COMPLETIONS, {"max_tokens": True}, "max_tokens"),
    (fields.COMPLETIONS, {"temperature": "0"}, "temperature"),
    (fields.COMPLETIONS, {"top_p": True}, "top_p"),
    (fields.COMPLETIONS, {"seed": "7"}, "seed"),
    (fields.COMPLETIONS, {"stream": "true"}, "stream"),
    (fields.COMPLETIONS, {"echo": 1}, "echo"),
    (fields.COMPLETIONS, {"n": True}, "n"),
    (fields.COMPLETIONS, {"presence_penalty": False}, "presence_penalty"),
    (fields.CHAT, {"logprobs": 1}, "logprobs"),
    (fields.CHAT, {"logprobs": True, "top_logprobs": "2"}, "top_logprobs"),
    (fields.CHAT, {"max_completion_tokens": 4.0}, "max_completion_tokens"),
    (fields.CHAT, {"stream": True, "stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
])  # fmt: skip
def test_wrong_json_types_are_refused_by_name(where, body, param):
    _, got = refused(where, body)
    assert got == param


def test_numbers_of_the_right_kind_still_pass():
    body = CompletionBody.model_validate({**BASE[fields.COMPLETIONS], "temperature": 1, "top_p": 1, "n": 1,
                                          "presence_penalty": 0.0, "frequency_penalty": 0, "best_of": 1})
    assert (body.temperature, body.top_p) == (1.0, 1.0)


# --- invalid Unicode, union errors, empty content --------------------------------------------------------------
@pytest.mark.parametrize(("where", "body", "param"), [
    (fields.COMPLETIONS, {"prompt": "ROMEO \ud800"}, "prompt"),
    (fields.COMPLETIONS, {"stop": ["a", "\udfff"]}, "stop.1"),
    (fields.CHAT, {"messages": [{"role": "user", "content": "x\ud83d"}]}, "messages.0.content"),
    (fields.CHAT, {"messages": [{"role": "user", "content": [{"type": "text", "text": "\ud800"}]}]},
     "messages.0.content.0.text"),
])  # fmt: skip
def test_lone_surrogates_are_a_400_naming_the_field(where, body, param):
    message, got = refused(where, body)
    assert got == param and "surrogate" in message


@pytest.mark.parametrize(("body", "param"), [({"prompt": None}, "prompt"), ({"stop": 5}, "stop"),
                                             ({"prompt": {"a": 1}}, "prompt")])
def test_union_errors_name_the_field_not_pydantics_member_tags(body, param):
    message, got = refused(fields.COMPLETIONS, body)
    assert got == param and ".str" not in message and "list[" not in message, message


def test_an_empty_list_of_content_parts_is_refused():
    message, param = refused(fields.CHAT, {"messages": [{"role": "user", "content": []}]})
    assert param == "messages.0.content" and "at least one" in message


# --- stream_options: every field of the official client is in the table ----------------------------------------
def test_every_stream_option_of_the_official_client_is_in_the_table():
    assert set(fields.rules(fields.STREAM_OPTIONS)) == set(ChatCompletionStreamOptionsParam.__annotations__)
    stream = {"stream": True}
    for value in (False, None):  # asks for no obfuscation: what the server does
        body = ChatBody.model_validate({**BASE[fields.CHAT], **stream,
                                        "stream_options": {"include_usage": True, "include_obfuscation": value}})
        assert body.include_usage
    message, param = refused(fields.CHAT, {**stream, "stream_options": {"include_obfuscation": True}})
    assert param == "stream_options.include_obfuscation" and "'include_obfuscation' = True is not supported" in message


# --- over HTTP ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server():
    with serving({M: "tiny-bloom-shakespeare"}, 16) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def is_openai_error(r, status: int, param: str | None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["param"] == param, body
    return body["error"]


def test_bad_seed_and_tiny_temperature_leave_the_batch_alone(http):
    """Sent together: the bad seed is refused up front, the others are served (it used to fail all three: 500)."""
    base = {"model": M, "prompt": "ROMEO:", "max_tokens": 8}
    bodies = [{**base, "temperature": 0}, {**base, "seed": 2**64}, {**base, "temperature": 1e-300}]
    with cf.ThreadPoolExecutor(3) as pool:
        greedy, bad, tiny = pool.map(lambda b: http.post("/v1/completions", json=b), bodies)
    assert greedy.status_code == 200, greedy.text
    is_openai_error(bad, 400, "seed")
    assert tiny.status_code == 200 and tiny.json()["choices"][0]["text"] == greedy.json()["choices"][0]["text"]


def test_invalid_unicode_and_invalid_json_are_json_400s(http):
    raw = b'{"model": "bard", "prompt": "ROMEO \\ud800", "max_tokens": 2}'  # a lone surrogate, JSON-escaped
    json_type = {"content-type": "application/json"}
    r = http.post("/v1/completions", content=raw, headers=json_type)
    assert "surrogate" in is_openai_error(r, 400, "prompt")["message"]
    r = http.post("/v1/completions", content=b'{"model": "bard", "prompt": ', headers=json_type)
    assert "JSON" in is_openai_error(r, 400, None)["message"]


def test_every_refused_request_is_counted(http):
    """sent = served + refused in the server's own counter: 4xx answered before the engine count too."""
    def counted(status: str) -> float:
        return metrics.total(metrics.parse(http.get("/metrics").text), "labkit_requests_total", status=status)

    before = {s: counted(s) for s in ("200", "400", "404")}
    sent = [({"model": "nope", "prompt": "x"}, 404),  # unknown model
            ({"model": M, "prompt": [99999]}, 400),  # a token id outside the vocabulary
            ({"model": M, "prompt": "x", "max_tokens": 17}, 400),  # over the server's limit
            ({"model": M, "prompt": "x", "max_tokens": 1}, 200)]
    for body, status in sent:
        assert http.post("/v1/completions", json=body).status_code == status
    assert {s: counted(s) - before[s] for s in before} == {"200": 1, "400": 2, "404": 1}


def test_models_retrieve_with_the_official_client(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    listed = client.models.list().data
    model = client.models.retrieve(M)
    assert model.id == M and model.model_dump() == listed[0].model_dump()
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("nope")
    assert err.value.body["param"] == "model" and M in err.value.body["message"]
    assert json.loads(err.value.response.text)["error"]["type"] == "not_found_error"


def test_a_bug_is_still_an_openai_shaped_500_and_is_counted():
    """A fault in the server itself (not bad input) must not come back as plain text: clients parse error bodies."""
    from starlette.testclient import TestClient

    repo = ModelRepository()

    def broken(_name):
        raise RuntimeError("boom")

    repo.route = broken
    app = create_app(repo)
    client = TestClient(app, raise_server_exceptions=False)
    resp = client.post("/v1/completions", json={"model": "m", "prompt": "x"})
    assert resp.status_code == 500
    err = resp.json()["error"]
    assert err["type"] == "server_error" and "RuntimeError: boom" in err["message"]
    assert 'status="500"' in app.state.metrics.render()


def test_generation_stops_at_every_eos_id_of_the_generation_config(server):
    """generate() stops at every id in `generation_config.eos_token_id`; the server must too, not only at the
    tokenizer's single EOS. Make the greedy first token an extra EOS id: the answer is then 1 token, "stop"."""
    dep = server.app.state.repo.route(M)
    model, tok = dep.engine.model, dep.tokenizer
    body = {"model": M, "prompt": "ROMEO:", "max_tokens": 4, "temperature": 0}
    assert httpx.post(server.url + "/v1/completions", json=body, timeout=60).json()["usage"]["completion_tokens"] == 4
    with torch.no_grad():  # the greedy first token, from the model itself
        first_id = int(model(**tok("ROMEO:", return_tensors="pt")).logits[0, -1].argmax())
    assert first_id != tok.eos_token_id
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [tok.eos_token_id, first_id]
    try:
        again = httpx.post(server.url + "/v1/completions", json=body, timeout=60).json()
    finally:
        model.generation_config.eos_token_id = saved
    assert again["usage"]["completion_tokens"] == 1 and again["choices"][0]["finish_reason"] == "stop", again
