"""Each OpenAI-conformance case's exact request body over raw HTTP (httpx), with the answer OpenAI would give."""

import json

import pytest

httpx = pytest.importorskip("httpx", reason="the serving extra is not installed (pip install labkit[serve])")
pytest.importorskip("fastapi", reason="the serving extra is not installed (pip install labkit[serve])")

from tests.unit.serving_server import serving

LIMIT = 24
M = "bard"
SMOL_PROMPT = ("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n"
               "How are you?<|im_end|>\n<|im_start|>assistant\nI am fine, thanks.<|im_end|>\n")
CHAT = "/v1/chat/completions"
DONE = "/v1/completions"


@pytest.fixture(scope="module")
def http():
    with serving({M: "tiny-bloom-shakespeare", "smol": "smollm2-135m"}, LIMIT) as srv, \
            httpx.Client(base_url=srv.url, timeout=60) as c:
        yield c


def events(http, path: str, body: dict) -> list[dict]:
    """The data events of a streamed answer, after checking it ends with [DONE]."""
    with http.stream("POST", path, json=body) as r:
        assert r.status_code == 200, r.read()
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(ln[len("data: "):]) for ln in lines[:-1]]


def test_include_usage_body(http):
    body = {"model": M, "prompt": "ROMEO:", "max_tokens": 5, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    *answer, last = events(http, DONE, body)
    assert last["choices"] == [] and last["usage"] == {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}
    assert set(last) == {"id", "object", "created", "model", "choices", "usage"}
    assert answer[-1]["choices"][0]["finish_reason"] == "length" and answer[-1]["usage"] is None
    assert all(c["usage"] is None for c in answer)
    del body["stream_options"]
    assert all("usage" not in c for c in events(http, DONE, body))  # not asked: no chunk carries usage


@pytest.mark.parametrize(("path", "body", "tokens"), [
    (CHAT, {"model": M, "messages": [{"role": "user", "content": "Speak"}], "max_completion_tokens": 4,
            "temperature": 0}, 4),
    (CHAT, {"model": M, "messages": [{"role": "user", "content": "Speak"}], "temperature": 0}, LIMIT),
    (DONE, {"model": M, "prompt": "ROMEO:", "max_tokens": None, "temperature": 0}, 16),
])  # fmt: skip
def test_length_bodies(http, path, body, tokens):
    r = http.post(path, json=body)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == tokens and r.json()["choices"][0]["finish_reason"] == "length"


def test_message_content_bodies(http):
    parts = {"model": M, "messages": [{"role": "user", "content": [{"type": "text", "text": "Speak, ROMEO."}]}],
             "max_completion_tokens": 4, "temperature": 0}
    plain = {**parts, "messages": [{"role": "user", "content": "Speak, ROMEO."}]}
    assert http.post(CHAT, json=parts).json()["choices"] == http.post(CHAT, json=plain).json()["choices"]
    null = {**plain, "messages": [*plain["messages"], {"role": "assistant", "content": None}, *plain["messages"]]}
    assert http.post(CHAT, json=null).status_code == 200
    image = {**plain, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}]}
    r = http.post(CHAT, json=image)
    assert r.status_code == 400 and "'image_url'" in r.json()["error"]["message"]
    assert r.json()["error"]["param"] == "messages.0.content"


def test_logprobs_and_echo_bodies(http):
    r = http.post(DONE, json={"model": M, "prompt": "ROMEO:", "max_tokens": 4, "temperature": 0, "logprobs": 2}).json()
    lp = r["choices"][0]["logprobs"]
    assert set(lp) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"} and len(lp["tokens"]) == 4
    assert all(len(t) <= 3 for t in lp["top_logprobs"])  # 2 alternatives, and the chosen token if not among them
    r = http.post(CHAT, json={"model": M, "messages": [{"role": "user", "content": "Speak"}],
                              "max_completion_tokens": 4, "temperature": 0, "logprobs": True, "top_logprobs": 2}).json()
    lp = r["choices"][0]["logprobs"]
    assert lp["refusal"] is None and len(lp["content"]) == 4
    assert all(set(c) == {"token", "logprob", "bytes", "top_logprobs"} and len(c["top_logprobs"]) == 2
               for c in lp["content"])
    r = http.post(DONE, json={"model": M, "prompt": "ROMEO:", "max_tokens": 4, "temperature": 0, "echo": True}).json()
    assert r["choices"][0]["text"].startswith("ROMEO:") and r["choices"][0]["logprobs"] is None


@pytest.mark.parametrize("stream", [False, True])
def test_special_token_stop_body(http, stream):
    body = {"model": "smol", "prompt": SMOL_PROMPT, "stop": ["<|im_start|>"], "temperature": 0}
    if stream:
        chunks = events(http, DONE, {**body, "stream": True, "stream_options": {"include_usage": True}})
        text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
        finish, usage = chunks[-2]["choices"][0]["finish_reason"], chunks[-1]["usage"]
    else:
        r = http.post(DONE, json=body).json()
        text, finish, usage = r["choices"][0]["text"], r["choices"][0]["finish_reason"], r["usage"]
    assert (text, finish, usage["completion_tokens"]) == ("", "stop", 1)


@pytest.mark.parametrize(("path", "extra", "names"), [
    (DONE, {"stream_options": {"include_usage": True}}, ["stream_options"]),
    (DONE, {"max_tokens": 0}, ["max_tokens"]),
    (DONE, {"logprobs": 6}, ["logprobs"]),
    (DONE, {"logprobs": True}, ["logprobs", "valid integer"]),
    (DONE, {"n": 2}, ["'n'"]),
    (DONE, {"best_of": 3}, ["'best_of'"]),
    (DONE, {"suffix": "x"}, ["'suffix'"]),
    (DONE, {"logit_bias": {"1": 5}}, ["'logit_bias'"]),
    (DONE, {"frequency_penalty": 1}, ["'frequency_penalty'"]),
    (DONE, {"top_k": 3}, ["'top_k'", "not supported by this server", "supported fields: model, prompt"]),
    (CHAT, {"tools": [{"type": "function", "function": {"name": "f"}}]}, ["'tools'"]),
    (CHAT, {"tool_choice": "auto"}, ["'tool_choice'"]),
    (CHAT, {"functions": [{"name": "f"}]}, ["'functions'"]),
    (CHAT, {"function_call": "auto"}, ["'function_call'"]),
    (CHAT, {"response_format": {"type": "json_object"}}, ["'response_format'"]),
    (CHAT, {"audio": {"voice": "alloy", "format": "mp3"}}, ["'audio'"]),
    (CHAT, {"modalities": ["text", "audio"]}, ["'modalities'"]),
    (CHAT, {"prediction": {"type": "content", "content": "x"}}, ["'prediction'"]),
    (CHAT, {"presence_penalty": 0.5}, ["'presence_penalty'"]),
    (CHAT, {"top_logprobs": 2}, ["top_logprobs", "logprobs"]),
    (CHAT, {"max_tokens": 3, "max_completion_tokens": 4}, ["max_tokens", "max_completion_tokens"]),
    (CHAT, {"messages": [{"role": "function", "content": "x", "name": "f"}]}, ["role 'function'"]),
    (CHAT, {"messages": [{"role": "user", "content": "x", "name": "bob"}]}, ["'name'"]),
    (CHAT, {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
     ["'input_audio'"]),
])  # fmt: skip
def test_refused_bodies_name_the_field(http, path, extra, names):
    base = {"model": M, "prompt": "x", "temperature": 0, "max_tokens": 2} if path == DONE else \
        {"model": M, "temperature": 0, "messages": [{"role": "user", "content": "x"}]}
    r = http.post(path, json={**base, **extra})
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert all(n in message for n in names), message
    assert r.json()["error"]["type"] == "invalid_request_error" and r.json()["error"]["param"]
