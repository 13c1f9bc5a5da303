"""The OpenAI-compatible request bodies and response shapes, and streaming detokenization with stop strings."""

from __future__ import annotations

import time
import uuid

from pydantic import BaseModel, ConfigDict, Field


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")  # unknown OpenAI fields (logprobs, user...) are ignored

    model: str
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)  # OpenAI's default; 0 = greedy
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    n: int = Field(1, ge=1, le=1)

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [s for s in stops if s]


class CompletionBody(_Sampling):
    prompt: str


class Message(BaseModel):
    role: str
    content: str


class ChatBody(_Sampling):
    messages: list[Message] = Field(min_length=1)


def error_body(message: str, kind: str = "invalid_request_error", code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def new_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]


def choice(text: str, finish: str | None, chat: bool, delta: bool = False) -> dict:
    if not chat:
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
    key = "delta" if delta else "message"
    content = {"content": text} if delta and text else ({} if delta else {"role": "assistant", "content": text})
    return {"index": 0, key: content, "finish_reason": finish}


def response(rid: str, model: str, chat: bool, choices: list[dict], usage: dict | None, chunk: bool = False) -> dict:
    kind = ("chat.completion" if chat else "text_completion") + (".chunk" if chunk and chat else "")
    body = {"id": rid, "object": kind, "created": int(time.time()), "model": model, "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return body


def model_card(model: str, created: float, versions: list[str]) -> dict:
    """One entry of GET /v1/models (`created`: Unix time in s), with labkit's loaded versions added."""
    return {"id": model, "object": "model", "created": int(created), "owned_by": "labkit", "versions": versions}


def usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class TextStream:
    """Token ids in, text deltas out, cut at the first stop string.

    Text that could still turn into a stop string, or ends in half a UTF-8 character, is held back
    until it cannot: the streamed deltas always add up to the non-streamed text.
    """

    def __init__(self, tokenizer, stops: list[str]):
        self.tokenizer, self.stops = tokenizer, stops
        self.ids: list[int] = []
        self.text, self.sent = "", 0
        self.hold = max((len(s) for s in stops), default=1) - 1

    def add(self, token: int) -> tuple[str, bool]:
        """Returns (new text safe to send, whether a stop string ended the text)."""
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.text = text[: min(hits)]
            return self.flush(), True
        self.text = text
        safe = len(text) - self.hold - (1 if text.endswith("\ufffd") else 0)
        return self._take(safe), False

    def _take(self, upto: int) -> str:
        delta = self.text[self.sent: max(self.sent, upto)]
        self.sent += len(delta)
        return delta

    def flush(self) -> str:
        return self._take(len(self.text))
