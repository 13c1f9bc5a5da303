"""Every OpenAI request field and what labkit's server does with it: one table (FIELDS) for the request validator
(`protocol.py`), the error messages (`app.py`), the docs (`markdown()`) and the tests.

Sources: OpenAI's API reference (platform.openai.com/docs/api-reference: completions/create, chat/create) and the
official `openai` client's `create()` signatures (a test checks that every field they send is in this table).

| status      | what the server does                                                                        |
|-------------|---------------------------------------------------------------------------------------------|
| implemented | what OpenAI documents                                                                       |
| tag         | accepted: it labels the request and has no effect on the output (`user`, `metadata`, ...);  |
|             | nothing is stored (`store`), nothing is cached (`prompt_cache_key`)                         |
| refused     | 400 naming the field when it carries anything but its default (null always means default)   |

A field outside the table is refused too ("not supported by this server"): nothing is silently ignored.
`labkit serve --fields` prints the table. Not implemented on purpose: n / best_of > 1 (one choice per request),
the repetition penalties and logit_bias (the one sampling rule, `decoding.sampling`, has neither), tools and
structured output (no constrained decoding), audio.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

IMPLEMENTED, TAG, REFUSED = "implemented", "tag", "refused"
COMPLETIONS, CHAT, MESSAGE, STREAM_OPTIONS, CONTENT_PART = "completions", "chat", "message", "stream_options", "part"
BOTH = (COMPLETIONS, CHAT)


@dataclass(frozen=True)
class Rule:
    """One field of one object.

    Args:
        name: the JSON key. where: the objects that have it (COMPLETIONS, CHAT bodies; MESSAGE, STREAM_OPTIONS,
            CONTENT_PART inside them). status: IMPLEMENTED, TAG or REFUSED.
        note: what it does here, or why it is refused.
        default: REFUSED only: values besides null that ask for nothing (OpenAI's default) and are accepted.
    """

    name: str
    where: tuple[str, ...]
    status: str
    note: str
    default: tuple = ()


def _r(name: str, where, status: str, note: str, default: tuple = ()) -> Rule:
    return Rule(name, (where,) if isinstance(where, str) else tuple(where), status, note, default)


NO_TOOLS = "this server has no tool or function calling"
FIELDS: tuple[Rule, ...] = (
    _r("model", BOTH, IMPLEMENTED, "a served model's name (GET /v1/models)"),
    _r("prompt", COMPLETIONS, IMPLEMENTED, "one string or one list of token ids (a batch of prompts: 400)"),
    _r("messages", CHAT, IMPLEMENTED, "roles system, developer, user, assistant"),
    _r("max_tokens", BOTH, IMPLEMENTED, "completions: int >= 1, null = 16; chat: deprecated max_completion_tokens"),
    _r("max_completion_tokens", CHAT, IMPLEMENTED, "null = up to the context and the server's --max-tokens"),
    _r("temperature", BOTH, IMPLEMENTED, "0..2, default 1; 0 = greedy ('hf-continuous': 0 only)"),
    _r("top_p", BOTH, IMPLEMENTED, "(0, 1], default 1"),
    _r("stop", BOTH, IMPLEMENTED, "string or list, matched in the text with special tokens rendered"),
    _r("seed", BOTH, IMPLEMENTED, "seeds the request's own sampler"),
    _r("stream", BOTH, IMPLEMENTED, "server-sent events"),
    _r("stream_options", BOTH, IMPLEMENTED, "{'include_usage': bool}, only with stream: true"),
    _r("logprobs", BOTH, IMPLEMENTED, "completions: int 0..5; chat: bool; not on 'hf-continuous' or 'paged'"),
    _r("top_logprobs", CHAT, IMPLEMENTED, "0..20 alternatives per token; needs logprobs: true"),
    _r("echo", COMPLETIONS, IMPLEMENTED, "the prompt before the completion (with logprobs: its tokens' too)"),
    _r("user", BOTH, TAG, "an end-user id; no effect on the output"),
    _r("safety_identifier", CHAT, TAG, "an end-user id; no effect on the output"),
    _r("metadata", CHAT, TAG, "key-value labels; no effect on the output"),
    _r("store", CHAT, TAG, "nothing is stored; no effect on the output"),
    _r("prompt_cache_key", CHAT, TAG, "a cache-routing hint; no effect on the output"),
    _r("n", BOTH, REFUSED, "one choice per request", (1,)),
    _r("best_of", COMPLETIONS, REFUSED, "one candidate per request", (1,)),
    _r("suffix", COMPLETIONS, REFUSED, "no fill-in-the-middle", ("",)),
    _r("presence_penalty", BOTH, REFUSED, "no repetition penalties", (0,)),
    _r("frequency_penalty", BOTH, REFUSED, "no repetition penalties", (0,)),
    _r("logit_bias", BOTH, REFUSED, "no logit bias", ({},)),
    _r("tools", CHAT, REFUSED, NO_TOOLS, ([],)),
    _r("tool_choice", CHAT, REFUSED, NO_TOOLS, ("none",)),
    _r("parallel_tool_calls", CHAT, REFUSED, NO_TOOLS),
    _r("functions", CHAT, REFUSED, NO_TOOLS, ([],)),
    _r("function_call", CHAT, REFUSED, NO_TOOLS, ("none",)),
    _r("response_format", CHAT, REFUSED, "plain text only (no JSON mode or schema)", ({"type": "text"},)),
    _r("modalities", CHAT, REFUSED, "text output only", (["text"],)),
    _r("audio", CHAT, REFUSED, "text output only"),
    _r("prediction", CHAT, REFUSED, "no predicted outputs"),
    _r("reasoning_effort", CHAT, REFUSED, "not a reasoning model"),
    _r("verbosity", CHAT, REFUSED, "no verbosity control"),
    _r("web_search_options", CHAT, REFUSED, "no web search"),
    _r("moderation", CHAT, REFUSED, "no moderation model"),
    _r("service_tier", CHAT, REFUSED, "one service tier", ("auto", "default")),
    _r("prompt_cache_options", CHAT, REFUSED, "no prompt cache"),
    _r("prompt_cache_retention", CHAT, REFUSED, "no prompt cache"),
    _r("role", MESSAGE, IMPLEMENTED, "system, developer, user or assistant"),
    _r("content", MESSAGE, IMPLEMENTED, "a string, a list of text parts (joined), or null on assistant messages"),
    _r("name", MESSAGE, REFUSED, "participant names are not put into the prompt"),
    _r("tool_calls", MESSAGE, REFUSED, NO_TOOLS, ([],)),
    _r("tool_call_id", MESSAGE, REFUSED, NO_TOOLS),
    _r("function_call", MESSAGE, REFUSED, NO_TOOLS),
    _r("refusal", MESSAGE, REFUSED, "no refusal messages"),
    _r("audio", MESSAGE, REFUSED, "text only"),
    _r("include_usage", STREAM_OPTIONS, IMPLEMENTED, "one last chunk with usage and no choices"),
    _r("include_obfuscation", STREAM_OPTIONS, REFUSED, "no obfuscation field is added to the chunks", (False,)),
    _r("type", CONTENT_PART, IMPLEMENTED, "'text' only"),
    _r("text", CONTENT_PART, IMPLEMENTED, "the part's text"),
)


def rules(where: str, status: str | None = None) -> dict[str, Rule]:
    """The fields of one object (COMPLETIONS, CHAT, MESSAGE, STREAM_OPTIONS or CONTENT_PART), by name."""
    return {r.name: r for r in FIELDS if where in r.where and (status is None or r.status == status)}


def supported(where: str) -> list[str]:
    """The fields of `where` that the server accepts with any value: implemented ones and tags."""
    return [n for n, r in rules(where).items() if r.status != REFUSED]


def refusal(where: str, name: str, value) -> str | None:
    """The 400 message for a refused field carrying `value`, or None when the value is accepted (its default)."""
    rule = rules(where).get(name)
    if rule is None or rule.status != REFUSED or value is None or _is_default(value, rule.default):
        return None
    allowed = " or ".join(["null", *map(repr, rule.default)])
    return f"'{name}' = {value!r} is not supported by this server: {rule.note} (send {allowed}, or leave it out)"


def _is_default(value, defaults: tuple) -> bool:
    """`value` is one of `defaults`, a JSON boolean only where a default is one (true == 1 in Python, not in JSON)."""
    return any(value == d and isinstance(value, bool) == isinstance(d, bool) for d in defaults)


def unknown(where: str, name: str) -> str:
    """The 400 message for a field outside the table."""
    return f"field '{name}' is not supported by this server; supported fields: {', '.join(supported(where))}"


def markdown(where: str) -> str:
    """The table of one object's fields as Markdown (name | status | note), for docs and notebooks."""
    def note(r: Rule) -> str:
        return r.note if r.status != REFUSED else f"{r.note}; accepted: {', '.join(['null', *map(repr, r.default)])}"

    rows = [f"| `{r.name}` | {r.status} | {note(r)} |" for r in rules(where).values()]
    return "\n".join(["| field | status | note |", "|---|---|---|", *rows])


_UNION_TAG = re.compile(r"^(str|int|float|bool|none|dict|list)$|[^A-Za-z0-9_]")  # pydantic's union member tags


def validation_message(errors: list[dict], where: str) -> tuple[str, str | None]:
    """pydantic's errors for a body of `where` (COMPLETIONS or CHAT) -> (one message naming each field, param).

    An unknown key says it is not supported by this server and lists the supported fields of its object; a body
    that is not JSON says so; pydantic's union member tags ("str", "list[int]") are left out of the field paths.
    """
    found: dict[tuple[str, str], list[str]] = {}  # (where it is written, param) -> messages (union alternatives)
    for e in errors:
        loc = list(e.get("loc", ()))
        path = [str(x) for x in loc[loc[:1] == ["body"]:] if isinstance(x, int) or not _UNION_TAG.search(x)]
        kind, ctx = e.get("type"), e.get("ctx") or {}
        full, where_in = path, path
        if kind == "json_invalid":
            message, full, where_in = f"the request body is not valid JSON ({ctx.get('error', 'invalid')})", [], []
        elif kind == "extra_forbidden":
            inner = {"messages": MESSAGE, "stream_options": STREAM_OPTIONS}.get(path[0], where) if path else where
            message, where_in = unknown(inner if len(path) > 1 else where, path[-1]), path[:-1]
        elif kind == "invalid_field":
            message, name = ctx["message"], ctx.get("param")
            full = path + [name] if name and path[-1:] != [name] else path
        else:
            message = e.get("msg", "invalid")
        messages = found.setdefault((".".join(where_in), ".".join(full)), [])
        if message not in messages:
            messages.append(message)
    parts = [f"{at}: {' or '.join(ms)}" if at else " or ".join(ms) for (at, _), ms in found.items()]
    return "; ".join(parts) or "invalid request", next((p for _, p in found if p), None)
