"""OpenAI's request bodies (validated, nothing ignored) and response shapes: /v1/completions, /v1/chat/completions.

Every field a body may carry is in `fields.FIELDS`. The implemented ones are declared below with their types; the
tags and the refused ones are added from the table (any value), and a refused one carrying anything but its
default is a 400 that names it. A key outside the table is a 400 too (pydantic's extra="forbid", worded by
`fields.validation_message`). Wrong JSON types are errors (strict: "5" is no integer, true no number), and so is
a string that is not valid Unicode (a lone surrogate). Null means "default" for every field, as in OpenAI's spec.
The tags (`user`, and on chat `metadata`, `store`, `safety_identifier`, `prompt_cache_key`) are accepted and have
no effect on the output: nothing is stored, logged per user or cached.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator
from pydantic_core import PydanticCustomError

from labkit.serving.fields import (
    CHAT,
    COMPLETIONS,
    CONTENT_PART,
    IMPLEMENTED,
    MESSAGE,
    REFUSED,
    STREAM_OPTIONS,
    refusal,
    rules,
    unknown,
)
from labkit.serving.request import SEED_RANGE

ROLES = ("system", "developer", "user", "assistant")
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's legacy default for /v1/completions


def _error(message: str, param: str | None = None) -> PydanticCustomError:
    return PydanticCustomError("invalid_field", "{message}", {"message": message, "param": param})


class _Object(BaseModel):
    """A request object: unknown keys are errors; refused fields (from the table) must keep their default."""

    model_config = ConfigDict(extra="forbid", strict=True)
    where: ClassVar[str]

    @model_validator(mode="after")
    def _refuse(self):
        for name in rules(self.where, REFUSED):
            if (message := refusal(self.where, name, getattr(self, name))) is not None:
                raise _error(message, name)
        return self


def _from_table(base: type[_Object], name: str) -> type[_Object]:
    """`base` plus the table's tag and refused fields of `base.where` (any value; default None)."""
    extra = {n: (Any, None) for n, r in rules(base.where).items() if r.status != IMPLEMENTED}
    return create_model(name, __base__=base, __module__=__name__, __doc__=base.__doc__, **extra)


class _StreamOptions(_Object):
    """`stream_options`: include_usage (one last chunk carries the usage; no other chunk does)."""

    where = STREAM_OPTIONS
    include_usage: bool | None = None


StreamOptions = _from_table(_StreamOptions, "StreamOptions")


def _lone_surrogate(value: Any, path: tuple = ()) -> tuple | None:
    """The path of the first string in `value` (JSON data) holding a lone surrogate (not Unicode), or None."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return path
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return next((p for k, v in items if (p := _lone_surrogate(v, (*path, k))) is not None), None)


def _text_parts(content: Any) -> Any:
    """A list of content parts -> their texts joined (OpenAI concatenates text parts); other values unchanged."""
    if not isinstance(content, list):
        return content
    if not content:
        raise _error("content needs at least one part (or send a string)", "content")
    texts = []
    for part in content:
        if not isinstance(part, dict) or "type" not in part:
            raise _error(f"a content part must be an object with a 'type'; got {part!r}", "content")
        if part["type"] != "text":
            raise _error(f"content part type {part['type']!r} is not supported; supported: 'text'", "content")
        for key in set(part) - set(rules(CONTENT_PART)):
            raise _error(unknown(CONTENT_PART, key), key)
        if not isinstance(part.get("text"), str):
            raise _error("a text content part needs a string 'text'", "content")
        texts.append(part["text"])
    return "".join(texts)


class _Message(_Object):
    """One chat message: role system | developer | user | assistant; content a string, text parts, or null
    (assistant only, read as "")."""

    where = MESSAGE
    role: str
    content: str | None

    @field_validator("role", mode="before")
    @classmethod
    def _role(cls, role):
        if role not in ROLES:
            raise _error(f"role {role!r} is not supported; supported roles: {', '.join(ROLES)} "
                         "(this server has no tool or function calling)", "role")
        return role

    @field_validator("content", mode="before")
    @classmethod
    def _content(cls, content):
        return _text_parts(content)

    @model_validator(mode="after")
    def _null_content(self):
        if self.content is None and self.role != "assistant":
            raise _error(f"content may be null on assistant messages only (this one's role is {self.role!r})",
                         "content")
        return self

    @property
    def text(self) -> str:
        return self.content or ""


Message = _from_table(_Message, "Message")


class _Sampling(_Object):
    model: str
    temperature: float = Field(1.0, ge=0.0, le=2.0)  # OpenAI's default; 0 = greedy
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])  # a signed 64-bit integer (OpenAI, vLLM)
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("temperature", "top_p", "stream", "max_tokens", "echo", "logprobs", mode="before",
                     check_fields=False)
    @classmethod
    def _null_is_default(cls, value, info):
        return cls.model_fields[info.field_name].default if value is None else value

    @model_validator(mode="before")
    @classmethod
    def _unicode(cls, data):
        if (path := _lone_surrogate(data)) is not None:
            raise _error(f"{'.'.join(map(str, path))} holds a lone surrogate: not valid Unicode (send UTF-8 text)",
                         ".".join(map(str, path)))
        return data

    @model_validator(mode="after")
    def _stream_options_need_stream(self):
        if self.stream_options is not None and not self.stream:
            raise _error("stream_options is only allowed when stream is true", "stream_options")
        return self

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [s for s in stops if s]

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class _CompletionBody(_Sampling):
    """POST /v1/completions. max_tokens: null = 16 (OpenAI's legacy default). logprobs: 0..5 alternatives per
    token. echo: the prompt comes back before the completion (and, with logprobs, its tokens' logprobs)."""

    where = COMPLETIONS
    prompt: str | list[int]
    max_tokens: int = Field(COMPLETIONS_DEFAULT_MAX_TOKENS, ge=1)
    logprobs: int | None = Field(None, ge=0, le=5, strict=True)  # strict: `true` (chat's form) is an error
    echo: bool = False

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_prompt(cls, prompt):
        if isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
            if len(prompt) > 1:
                raise _error(f"a batch of {len(prompt)} prompts is not supported; send one prompt per request",
                             "prompt")
            prompt = prompt[0]
        if isinstance(prompt, list) and not all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            raise _error("prompt must be a string or a list of token ids", "prompt")
        return prompt


class _ChatBody(_Sampling):
    """POST /v1/chat/completions. max_completion_tokens (or the deprecated max_tokens; both set: they must agree):
    null = as many as the context and the server's limit allow. logprobs: true, with top_logprobs 0..20."""

    where = CHAT
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)

    @model_validator(mode="after")
    def _consistent(self):
        if None not in (self.max_tokens, self.max_completion_tokens) and self.max_tokens != self.max_completion_tokens:
            raise _error(f"max_tokens ({self.max_tokens}) and max_completion_tokens ({self.max_completion_tokens}) "
                         "disagree; send max_completion_tokens only (max_tokens is its deprecated name)",
                         "max_completion_tokens")
        if self.top_logprobs is not None and not self.logprobs:
            raise _error("top_logprobs needs logprobs: true", "top_logprobs")
        return self

    @property
    def requested_tokens(self) -> int | None:
        """The length the client asked for (max_completion_tokens or max_tokens); None = no cap asked."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


CompletionBody = _from_table(_CompletionBody, "CompletionBody")
ChatBody = _from_table(_ChatBody, "ChatBody")


class ApiError(Exception):
    """An error answer: HTTP status, message, extra headers, OpenAI error type and the field at fault (`param`)."""

    def __init__(self, status: int, message: str, headers: dict | None = None, kind: str = "invalid_request_error",
                 param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.headers, self.kind, self.param = status, message, headers, kind, param


def error_body(message: str, kind: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def new_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]


def choice(text: str, finish: str | None, chat: bool, delta: bool = False, logprobs: dict | list | None = None) -> dict:
    """One choice: completions {"text"}, chat {"message"} or, streamed, {"delta"}; `logprobs` in the endpoint's
    format (chat: the `content` list, wrapped here), null when not asked."""
    if not chat:
        return {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}
    lp = None if logprobs is None else {"content": logprobs, "refusal": None}
    if delta:
        return {"index": 0, "delta": {"content": text} if text else {}, "logprobs": lp, "finish_reason": finish}
    message = {"role": "assistant", "content": text, "refusal": None}
    return {"index": 0, "message": message, "logprobs": lp, "finish_reason": finish}


def role_chunk_choice() -> dict:
    """The first choice of a streamed chat answer: the role, and no text yet."""
    return {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}


def response(rid: str, model: str, chat: bool, choices: list[dict], created: int | None = None, chunk: bool = False,
             **extra) -> dict:
    """A response body (or a streamed chunk); `extra` adds keys such as usage."""
    kind = ("chat.completion" if chat else "text_completion") + (".chunk" if chunk and chat else "")
    created = int(time.time()) if created is None else created
    return {"id": rid, "object": kind, "created": created, "model": model, "choices": choices, **extra}


def model_card(model: str, created: float, versions: list[str]) -> dict:
    """One entry of GET /v1/models (`created`: Unix time in s), with labkit's loaded versions added."""
    return {"id": model, "object": "model", "created": int(created), "owned_by": "labkit", "versions": versions}


def usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
