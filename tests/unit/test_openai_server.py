"""labkit's server driven by the official `openai` client: stream_options, lengths, message content, refused fields,
logprobs and echo, stop strings that are special tokens; each checked against an independent source."""

import pytest
import torch

pytest.importorskip("fastapi", reason="the serving extra is not installed (pip install labkit[serve])")
openai = pytest.importorskip("openai", reason="the test extra is not installed (pip install labkit[test])")

from labkit.models import load_cached
from labkit.serving.logprobs import TokenText
from tests.unit.serving_server import serving

LIMIT = 40  # the server's --max-tokens
TRANSCRIPT = ("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n"
                     "How are you?<|im_end|>\n<|im_start|>assistant\nI am fine, thanks.<|im_end|>\n")
USER = [{"role": "user", "content": "Speak, ROMEO."}]


@pytest.fixture(scope="module")
def server():
    with serving({"bard": "tiny-bloom-shakespeare", "llama": "tiny-llama", "llama-hf": ("tiny-llama", "hf-continuous"),
                  "smol": "smollm2-135m"}, LIMIT) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)


def refused(call, *names: str) -> str:
    """Run a call that must be a 400; returns its message after checking it names every one of `names`."""
    with pytest.raises(openai.BadRequestError) as err:
        call()
    message = err.value.body["message"]
    assert all(n in message for n in names), message
    return message


def both_ways(client, chat: bool, **kw) -> tuple:
    """(text, finish_reason, usage) of one request, after checking the streamed answer gives the same three."""
    create = client.chat.completions.create if chat else client.completions.create
    whole = create(**kw)
    chunks = list(create(**kw, stream=True, stream_options={"include_usage": True}))
    text = "".join((c.choices[0].delta.content or "") if chat else c.choices[0].text for c in chunks if c.choices)
    choice = whole.choices[0]
    assert text == (choice.message.content if chat else choice.text)
    assert chunks[-2].choices[0].finish_reason == choice.finish_reason
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump()
    return text, choice.finish_reason, whole.usage


def greedy_ids(name: str, prompt_ids: list[int], new: int) -> list[int]:
    model, tok = load_cached(name)
    out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=new, do_sample=False,
                         pad_token_id=tok.pad_token_id)
    return out[0, len(prompt_ids):].tolist()


def forward_logprobs(name: str, ids: list[int]) -> torch.Tensor:
    """log_softmax of the model's own logits over the whole sequence: row p is the distribution of token p + 1."""
    with torch.no_grad():
        return load_cached(name)[0](torch.tensor([ids])).logits[0].float().log_softmax(-1)


# --- 1. stream_options.include_usage -----------------------------------------------------------------------------
@pytest.mark.parametrize("chat", [False, True])
def test_usage_comes_in_its_own_last_chunk_only_when_asked(client, chat):
    def create(**kw):
        if chat:
            return client.chat.completions.create(model="bard", messages=USER, max_completion_tokens=5,
                                                  temperature=0, **kw)
        return client.completions.create(model="bard", prompt="ROMEO:", max_tokens=5, temperature=0, **kw)

    whole = create()
    assert whole.usage.completion_tokens == 5  # not streamed: always there
    chunks = list(create(stream=True, stream_options={"include_usage": True}))
    *answer, last = chunks
    assert last.choices == [] and last.usage.model_dump() == whole.usage.model_dump()
    assert all(c.usage is None for c in answer)  # the finish_reason chunk included
    assert answer[-1].choices[0].finish_reason == "length"
    text = "".join((c.choices[0].delta.content or "") if chat else c.choices[0].text for c in answer)
    assert text == (whole.choices[0].message.content if chat else whole.choices[0].text)
    plain = list(create(stream=True))
    assert all(c.usage is None for c in plain) and all(c.choices for c in plain)
    refused(lambda: create(stream_options={"include_usage": True}), "stream_options")
    refused(lambda: create(stream=True, stream_options={"include_usage": True, "include_obfuscation": True}),
            "include_obfuscation", "not supported by this server")
    unobfuscated = list(create(stream=True, stream_options={"include_usage": True, "include_obfuscation": False}))
    assert unobfuscated[-1].usage.model_dump() == whole.usage.model_dump()  # false asks for what the server does


# --- 2. length fields --------------------------------------------------------------------------------------------
def test_chat_lengths(client):
    for kw in ({"max_completion_tokens": 4}, {"max_tokens": 4}, {"max_tokens": 4, "max_completion_tokens": 4}):
        _, finish, usage = both_ways(client, True, model="bard", messages=USER, temperature=0, **kw)
        assert usage.completion_tokens == 4 and finish == "length"
    refused(lambda: client.chat.completions.create(model="bard", messages=USER, max_tokens=3,
                                                   max_completion_tokens=4), "max_tokens", "max_completion_tokens")
    # no length asked: no 16-token cap; the server's limit, or what the context leaves
    _, finish, usage = both_ways(client, True, model="llama", messages=USER, temperature=0)
    assert usage.completion_tokens == LIMIT and finish == "length"
    _, finish, usage = both_ways(client, False, model="bard", prompt="ROMEO:", temperature=0)
    assert usage.completion_tokens == 16 and finish == "length"  # completions: OpenAI's legacy default
    context = load_cached("tiny-llama")[0].config.max_position_embeddings
    long = [{"role": "user", "content": "a " * (context - 40)}]
    r = client.chat.completions.create(model="llama", messages=long, temperature=0)
    assert r.usage.completion_tokens == context - r.usage.prompt_tokens < LIMIT
    assert r.choices[0].finish_reason == "length"
    full = [{"role": "user", "content": "a " * context}]
    refused(lambda: client.chat.completions.create(model="llama", messages=full), "fills the context")
    refused(lambda: client.chat.completions.create(model="bard", messages=USER, max_completion_tokens=LIMIT + 1),
            "max_completion_tokens", f"limit of {LIMIT}")


# --- 3. message content ------------------------------------------------------------------------------------------
def test_text_parts_and_null_assistant_content_equal_their_plain_strings(client):
    def chat(messages, model="bard"):
        both_ways(client, True, model=model, messages=messages, max_completion_tokens=6, temperature=0)
        return client.chat.completions.create(model=model, messages=messages, max_completion_tokens=6, temperature=0)

    two = [{"type": "text", "text": "Speak, "}, {"type": "text", "text": "ROMEO."}]
    parts = chat([{"role": "user", "content": two}])
    plain = chat(USER)
    assert parts.choices[0].message.content == plain.choices[0].message.content
    assert parts.usage.prompt_tokens == plain.usage.prompt_tokens
    null = chat([*USER, {"role": "assistant", "content": None}, *USER])
    empty = chat([*USER, {"role": "assistant", "content": ""}, *USER])
    assert null.choices[0].message.content == empty.choices[0].message.content
    refused(lambda: chat([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}]),
            "content part type 'image_url' is not supported")
    refused(lambda: chat([{"role": "tool", "content": "x", "tool_call_id": "1"}]), "role 'tool'")
    refused(lambda: chat([{"role": "user", "content": None}]), "content", "assistant")
    # developer = system for a template that does not know the role (SmolLM2's)
    dev = chat([{"role": "developer", "content": "Be brief."}, *USER], model="smol")
    system = chat([{"role": "system", "content": "Be brief."}, *USER], model="smol")
    assert dev.choices[0].message.content == system.choices[0].message.content
    assert dev.usage.prompt_tokens == system.usage.prompt_tokens


# --- 4. no field ignored: refused by name, or tags with no effect --------------------------------------------------
def test_unsupported_fields_are_refused_by_name_and_tags_change_nothing(client):
    chat = client.chat.completions.create
    kw = {"model": "bard", "messages": USER, "max_completion_tokens": 5, "temperature": 0}
    refused(lambda: chat(**kw, n=2), "'n' = 2")
    refused(lambda: chat(**kw, tools=[{"type": "function", "function": {"name": "f"}}]), "'tools'")
    refused(lambda: chat(**kw, response_format={"type": "json_object"}), "'response_format'")
    refused(lambda: chat(**kw, presence_penalty=0.5), "'presence_penalty'")
    refused(lambda: chat(**kw, extra_body={"top_k": 5}), "field 'top_k' is not supported by this server")
    done = {"model": "bard", "prompt": "ROMEO:", "max_tokens": 5, "temperature": 0}
    refused(lambda: client.completions.create(**done, best_of=2), "'best_of'")
    refused(lambda: client.completions.create(**done, suffix="end"), "'suffix'")
    refused(lambda: client.completions.create(**done, logit_bias={"5": 10}), "'logit_bias'")
    plain = chat(**kw).choices[0].message.content
    tagged = chat(**kw, user="u1", metadata={"team": "a"}, store=True, n=1, tool_choice="none", presence_penalty=0)
    assert tagged.choices[0].message.content == plain


# --- 5. logprobs and echo ----------------------------------------------------------------------------------------
def test_completion_logprobs_and_echo_equal_the_forward_pass(client):
    prompt, tok = "KING HENRY:\nOnce more unto the", load_cached("tiny-bloom-shakespeare")[1]
    ids = tok(prompt)["input_ids"]
    new = greedy_ids("tiny-bloom-shakespeare", ids, 6)
    ref = forward_logprobs("tiny-bloom-shakespeare", ids + new)
    r = client.completions.create(model="bard", prompt=prompt, max_tokens=6, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert lp.tokens == [tok.decode([t]) for t in new]
    assert lp.token_logprobs == pytest.approx([float(ref[len(ids) - 1 + i, t]) for i, t in enumerate(new)], abs=2e-4)
    for top, row in zip(lp.top_logprobs, ref[len(ids) - 1:], strict=False):
        best = row.topk(2)
        assert list(top) == [tok.decode([t]) for t in best.indices.tolist()]  # greedy: the chosen one is the best
        assert list(top.values()) == pytest.approx(best.values.tolist(), abs=2e-4)
    whole = prompt + r.choices[0].text  # offsets count from the prompt's start, as OpenAI's do
    assert [whole[o: o + len(t)] for o, t in zip(lp.text_offset, lp.tokens, strict=True)] == lp.tokens
    e = client.completions.create(model="bard", prompt=prompt, max_tokens=6, temperature=0, logprobs=2, echo=True)
    elp = e.choices[0].logprobs
    assert e.choices[0].text == whole and e.usage.model_dump() == r.usage.model_dump()
    assert elp.tokens == [tok.decode([t]) for t in ids + new] and elp.text_offset[len(ids):] == lp.text_offset
    assert elp.token_logprobs[0] is None and elp.top_logprobs[0] is None
    assert elp.token_logprobs[1:] == pytest.approx([float(ref[p - 1, t]) for p, t in enumerate(ids + new)][1:],
                                                   abs=2e-4)
    chunks = list(client.completions.create(model="bard", prompt=prompt, max_tokens=6, temperature=0, logprobs=2,
                                            echo=True, stream=True))
    assert chunks[0].choices[0].text.startswith(prompt)  # the first chunk carries the prompt
    assert "".join(c.choices[0].text for c in chunks) == whole
    for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
        assert [x for c in chunks for x in getattr(c.choices[0].logprobs, key)] == getattr(elp, key)


def test_chat_logprobs(client):
    tok = load_cached("smollm2-135m")[1]
    ask = {"model": "smol", "messages": [{"role": "user", "content": "Say hi in Chinese."}],
           "max_completion_tokens": 8, "temperature": 0, "logprobs": True, "top_logprobs": 3}
    r = client.chat.completions.create(**ask)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens == 8
    # the true bytes; the text ends in U+FFFD when the 8th token stops inside a character
    assert b"".join(bytes(c.bytes) for c in content).decode(errors="replace") == r.choices[0].message.content
    assert all(len(c.top_logprobs) == 3 and c.top_logprobs[0].logprob == pytest.approx(c.logprob) for c in content)
    ids = tok.apply_chat_template([{"role": "user", "content": "Say hi in Chinese."}], add_generation_prompt=True,
                                  return_dict=True)["input_ids"]
    new = greedy_ids("smollm2-135m", ids, 8)
    tt = TokenText(tok)
    assert [c.token for c in content] == [tt.text(t) for t in new]
    ref = forward_logprobs("smollm2-135m", ids + new)
    assert [c.logprob for c in content] == pytest.approx([float(ref[len(ids) - 1 + i, t]) for i, t in enumerate(new)],
                                                         abs=2e-4)
    streamed = list(client.chat.completions.create(**ask, stream=True))
    assert [x.model_dump() for c in streamed if c.choices and c.choices[0].logprobs
            for x in c.choices[0].logprobs.content] == [x.model_dump() for x in content]
    refused(lambda: client.chat.completions.create(model="smol", messages=USER, top_logprobs=2), "top_logprobs")


def test_hf_continuous_refuses_logprobs_by_name_and_echoes(client):
    refused(lambda: client.completions.create(model="llama-hf", prompt="A", max_tokens=3, temperature=0, logprobs=1),
            "'logprobs'", "hf-continuous")
    refused(lambda: client.chat.completions.create(model="llama-hf", messages=USER, max_completion_tokens=3,
                                                   temperature=0, logprobs=True), "'logprobs'", "hf-continuous")
    echo = client.completions.create(model="llama-hf", prompt="ROMEO:", max_tokens=3, temperature=0, echo=True)
    plain = client.completions.create(model="llama", prompt="ROMEO:", max_tokens=3, temperature=0)
    assert echo.choices[0].text == "ROMEO:" + plain.choices[0].text


# --- 6. a stop string that is a special token ----------------------------------------------------------------------
def test_special_token_stop_ends_at_once_streamed_and_not(client):
    kw = {"model": "smol", "prompt": TRANSCRIPT, "stop": ["<|im_start|>"], "temperature": 0}
    text, finish, usage = both_ways(client, False, **kw)
    assert (text, finish, usage.completion_tokens) == ("", "stop", 1)
    # in a chat, the special token <|im_end|> as a stop string (the model's EOS) ends it the same way
    text, finish, usage = both_ways(client, True, model="smol", messages=[{"role": "user", "content": "Hi"}],
                                    stop=["<|im_end|>"], temperature=0, max_completion_tokens=LIMIT)
    assert finish == "stop" and "<|im_end|>" not in text
    # the independent check: the model's greedy next token is <|im_start|>
    tok = load_cached("smollm2-135m")[1]
    im_start = tok.convert_tokens_to_ids("<|im_start|>")
    assert greedy_ids("smollm2-135m", tok(TRANSCRIPT)["input_ids"], 1) == [im_start]
