"""The OpenAI protocol without HTTP: the field table against the official client, the request bodies, text streaming
(special tokens, stop strings, byte fallback) and token bytes, against independent sources."""

import inspect
import random

import pytest

pytest.importorskip("fastapi", reason="the serving extra is not installed (pip install labkit[serve])")
openai = pytest.importorskip("openai", reason="the test extra is not installed (pip install labkit[test])")

from pydantic import ValidationError
from tokenizers import Tokenizer, decoders, models, normalizers
from transformers import PreTrainedTokenizerFast

from labkit.models import load_cached
from labkit.serving import fields
from labkit.serving.fields import validation_message
from labkit.serving.logprobs import TokenText
from labkit.serving.protocol import ChatBody, CompletionBody
from labkit.serving.textstream import TextStream

CLIENT_ONLY = {"self", "extra_headers", "extra_query", "extra_body", "timeout"}  # the client's, not the API's


def byte_fallback_tokenizer(strip: bool = False) -> PreTrainedTokenizerFast:
    """A Llama-style tokenizer: a tiny BPE whose vocabulary has the 256 byte tokens <0x00>..<0xFF> (byte fallback)
    and a few pieces; decoder Replace("▁", " ") + ByteFallback + Fuse (+ Strip of one leading space, as Llama's
    decoder has: a decode call treats its first token differently)."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for piece in ["▁", "a", "b", "c", "ab", "▁a", "▁b", "END"]:
        vocab[piece] = len(vocab)
    merges = [("a", "b"), ("▁", "a"), ("▁", "b")]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    tok.decoder = decoders.Sequence(steps + [decoders.Strip(" ", 1, 0)] * strip)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


@pytest.fixture(scope="module")
def smol_tok():
    return load_cached("smollm2-135m")[1]


def random_texts(n: int, seed: int = 0) -> list[str]:
    """Strings mixing ASCII, 2-, 3- and 4-byte UTF-8 characters (é, €, CJK, emoji)."""
    pool = list("ab c") + ["é", "€", "中", "文", "😀", "🎉", "\n", "END"]
    rng = random.Random(seed)
    return ["".join(rng.choice(pool) for _ in range(rng.randint(1, 12))) for _ in range(n)]


def stream_all(tok, ids, stops=()) -> tuple[list[str], TextStream]:
    stream = TextStream(tok, list(stops))
    deltas = []
    for t in ids:
        delta, stopped = stream.add(t)
        deltas.append(delta)
        if stopped:
            break
    else:
        deltas.append(stream.flush())
    return deltas, stream


# --- the field table -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("where", "create", "body"), [
    (fields.COMPLETIONS, openai.resources.completions.Completions.create, CompletionBody),
    (fields.CHAT, openai.resources.chat.completions.Completions.create, ChatBody),
])  # fmt: skip
def test_every_field_the_official_client_sends_is_in_the_table_and_the_body(where, create, body):
    sent = set(inspect.signature(create).parameters) - CLIENT_ONLY
    assert set(fields.rules(where)) == sent  # implemented, tag or refused: none unknown, none invented
    assert set(body.model_fields) == sent


def test_refused_fields_are_refused_by_name_unless_default():
    for where, body, base in ((fields.COMPLETIONS, CompletionBody, {"model": "m", "prompt": "x"}),
                              (fields.CHAT, ChatBody, {"model": "m", "messages": [{"role": "user", "content": "x"}]})):
        for name, rule in fields.rules(where, fields.REFUSED).items():
            with pytest.raises(ValidationError) as err:
                body(**base, **{name: 7})
            message, param = validation_message(err.value.errors(), where)
            assert f"'{name}' = 7 is not supported" in message and param == name
            for value in (None, *rule.default):  # the default asks for nothing: accepted
                body(**base, **{name: value})
        for name in fields.rules(where, fields.TAG):
            body(**base, **{name: {"team": "a"} if name == "metadata" else "tag"})


@pytest.mark.parametrize(("extra", "says", "param"), [
    ({"foo": 1}, "field 'foo' is not supported by this server; supported fields: model, messages", "foo"),
    ({"stream_options": {"include_usage": True}}, "stream_options is only allowed when stream is true",
     "stream_options"),
    ({"stream": True, "stream_options": {"include_usage": True, "include_obfuscation": True}},
     "'include_obfuscation' = True is not supported by this server", "stream_options.include_obfuscation"),
    ({"stream": True, "stream_options": {"include_usage": True, "obfuscate": False}},
     "field 'obfuscate' is not supported by this server; supported fields: include_usage",
     "stream_options.obfuscate"),
    ({"max_tokens": 3, "max_completion_tokens": 4}, "max_tokens (3) and max_completion_tokens (4) disagree",
     "max_completion_tokens"),
    ({"top_logprobs": 2}, "top_logprobs needs logprobs: true", "top_logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs: Input should be less than or equal to 20", "top_logprobs"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "role 'tool' is not supported", "messages.0.role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}]},
     "content part type 'image_url' is not supported; supported: 'text'", "messages.0.content"),
    ({"messages": [{"role": "user", "content": None}]}, "content may be null on assistant messages only",
     "messages.0.content"),
    ({"messages": [{"role": "user", "content": "x", "name": "bob"}]}, "'name' = 'bob' is not supported",
     "messages.0.name"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}]},
     "'tool_calls' = [{'id': '1'}] is not supported", "messages.0.tool_calls"),
])  # fmt: skip
def test_chat_body_errors_name_the_field(extra, says, param):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}
    with pytest.raises(ValidationError) as err:
        ChatBody(**body)
    message, got = validation_message(err.value.errors(), fields.CHAT)
    assert says in message and got == param


def test_bodies_read_null_as_default_and_join_text_parts():
    body = CompletionBody(model="m", prompt="x", max_tokens=None, temperature=None, top_p=None, echo=None)
    assert (body.max_tokens, body.temperature, body.top_p, body.echo) == (16, 1.0, 1.0, False)
    assert CompletionBody(model="m", prompt=["x"]).prompt == "x"
    assert CompletionBody(model="m", prompt=[[5, 6]]).prompt == [5, 6]
    chat = ChatBody(model="m", messages=[{"role": "user", "content": [{"type": "text", "text": "Speak, "},
                                                                       {"type": "text", "text": "ROMEO."}]},
                                         {"role": "assistant", "content": None}])
    assert [m.text for m in chat.messages] == ["Speak, ROMEO.", ""] and chat.requested_tokens is None
    assert ChatBody(model="m", messages=[{"role": "developer", "content": "x"}], max_tokens=5).requested_tokens == 5
    with pytest.raises(ValidationError, match="batch of 2 prompts"):
        CompletionBody(model="m", prompt=["a", "b"])


# --- text streaming ---------------------------------------------------------------------------------------------
def test_byte_fallback_euro_streams_whole_and_keeps_the_following_letter():
    tok = byte_fallback_tokenizer()
    ids = [tok.convert_tokens_to_ids(f"<0x{b:02X}>") for b in "€".encode()] + [tok.convert_tokens_to_ids("b")]
    assert tok.decode(ids) == "€b"  # the tokenizer's own final text
    deltas, stream = stream_all(tok, ids)
    assert "".join(deltas) == stream.text == "€b" and not any("\ufffd" in d for d in deltas)
    assert stream.offsets == [0, 0, 0, 1]  # the three byte tokens start the same character


def tokenizer_called(which: str, smol_tok):
    return {"byte-fallback": byte_fallback_tokenizer, "byte-fallback-strip": lambda: byte_fallback_tokenizer(True),
            "smollm2-byte-level": lambda: smol_tok}[which]()


@pytest.mark.parametrize("which", ["byte-fallback", "byte-fallback-strip", "smollm2-byte-level"])
def test_deltas_add_up_to_the_final_text_for_any_utf8(which, smol_tok):
    tok = tokenizer_called(which, smol_tok)
    for text in random_texts(150, seed=1):
        ids = tok.encode(text, add_special_tokens=False)
        want = tok.decode(ids)  # the tokenizer's own decode of the whole sequence
        assert want == (text.removeprefix(" ") if which.endswith("strip") else text)
        deltas, stream = stream_all(tok, ids)
        assert "".join(deltas) == stream.text == want, (text, deltas)
        assert not any("\ufffd" in d for d in deltas)


@pytest.mark.parametrize("which", ["byte-fallback", "byte-fallback-strip", "smollm2-byte-level"])
def test_stop_strings_cut_at_the_first_hit_and_count_the_tokens_consumed(which, smol_tok):
    tok = tokenizer_called(which, smol_tok)
    rng = random.Random(2)
    for text in random_texts(150, seed=3):
        start = rng.randrange(len(text))
        ids = tok.encode(text, add_special_tokens=False)
        text = tok.decode(ids)  # what the model's tokens say (the strip variant drops a leading space)
        if not text:
            continue
        start = min(start, len(text) - 1)
        stop = text[start: start + rng.randint(1, 3)]
        deltas, stream = stream_all(tok, ids, [stop, "never in there"])
        assert stream.text == "".join(deltas) == text[: text.find(stop)]
        # the token that completed the stop string: the first prefix whose decoded text holds it
        k = next(k for k in range(1, len(ids) + 1) if stop in tok.decode(ids[:k]))
        assert stream.stopped and stream.consumed == k


def test_special_tokens_are_seen_by_stops_and_left_out_of_the_text(smol_tok):
    ids = smol_tok("Hi<|im_end|>\n<|im_start|>user\nHow", add_special_tokens=False)["input_ids"]
    deltas, stream = stream_all(smol_tok, ids)
    assert stream.text == "".join(deltas) == smol_tok.decode(ids, skip_special_tokens=True) == "Hi\nuser\nHow"
    deltas, stream = stream_all(smol_tok, ids, ["<|im_start|>"])
    assert stream.text == "".join(deltas) == "Hi\n" and stream.consumed == ids.index(1) + 1  # 1 = <|im_start|>
    deltas, stream = stream_all(smol_tok, [1], ["<|im_start|>"])
    assert (stream.text, stream.stopped, stream.consumed) == ("", True, 1)
    _, stream = stream_all(smol_tok, ids, ["m_end|>\n<|im"])  # a stop across a special token's rendering
    assert stream.text == "Hi"


# --- token bytes ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["byte-fallback", "smollm2-byte-level"])
def test_token_bytes_add_up_to_the_utf8_of_the_text(which, smol_tok):
    tok = byte_fallback_tokenizer() if which == "byte-fallback" else smol_tok
    tt = TokenText(tok)
    partial = 0
    for text in random_texts(100, seed=4):
        ids = tok.encode(text, add_special_tokens=False)
        assert b"".join(tt.bytes(t) for t in ids) == text.encode()  # the true bytes, independent of decode()
        for t in ids:
            raw = tt.bytes(t)
            try:
                assert tt.text(t) == raw.decode()
            except UnicodeDecodeError:  # part of a character: OpenAI's "bytes:\xNN" spelling
                partial += 1
                assert tt.text(t) == "bytes:" + "".join(f"\\x{b:02x}" for b in raw)
    assert partial > 0  # the strings did split characters across tokens
    assert TokenText(smol_tok).bytes(1) == b"<|im_start|>" and TokenText(smol_tok).text(1) == "<|im_start|>"
