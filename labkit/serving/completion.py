"""One completion in flight: submit -> token events -> text deltas (and logprobs) -> JSON body or server-sent events.

Streamed (`stream: true`), a chat answer starts with a chunk carrying the role; then one chunk per text delta, the
last one with `finish_reason`; with `stream_options.include_usage` one more chunk, `choices: []` and the usage (every
other chunk then has `"usage": null`, as OpenAI does); then `data: [DONE]`. Without include_usage no chunk carries
usage. Not streamed, the body always carries it.

usage.completion_tokens counts the tokens the text stream consumed: every token up to and including the one that
completed a stop string (the engine may have made more before the cancel took effect; those are not counted).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from fastapi import Request as HttpRequest
from fastapi.responses import JSONResponse, Response

from labkit.decoding.lm import eos_ids
from labkit.serving import protocol as P
from labkit.serving.logprobs import TokenText, chat_logprobs, completion_logprobs
from labkit.serving.protocol import ApiError
from labkit.serving.request import QueueFull, Request, SamplingParams, ShuttingDown
from labkit.serving.textstream import TextStream


class Completion:
    """One request in flight: its engine Request, the queue its token events arrive on, its text stream.

    Args:
        owner: the `handlers.Completions` that made it (metrics, timeout). dep: the serving version.
        ids: the prompt's token ids. params: its SamplingParams. body: the validated request body.
        chat: the chat endpoint. t0: arrival (perf_counter s). prompt: the prompt text (completions: echo and
            text offsets count from its start).
    """

    def __init__(self, owner, dep, ids: list[int], params: SamplingParams, body, chat: bool, t0: float,
                 prompt: str = ""):
        self.owner, self.dep, self.ids, self.body, self.chat, self.t0 = owner, dep, ids, body, chat, t0
        self.labels = {"model": dep.model, "version": dep.version}
        self.text = TextStream(dep.tokenizer, body.stops())
        self.tokens = TokenText(dep.tokenizer) if params.wants_logprobs else None
        self.prompt, self.echo = prompt, (not chat and body.echo)
        self.rid, self.created, self.lp_sent, self.echoed = P.new_id(chat), int(time.time()), 0, False
        loop, self.queue = asyncio.get_running_loop(), asyncio.Queue()
        self.req = Request(ids, params, stop_ids(dep),
                           on_event=lambda kind, value: loop.call_soon_threadsafe(self.queue.put_nowait, (kind, value)))

    def submit(self) -> None:
        try:
            self.dep.engine.submit(self.req)
        except QueueFull as err:
            self.owner.metrics.requests.inc(**self.labels, status=429)
            raise ApiError(429, str(err), {"Retry-After": str(round(err.retry_after_s))}, "rate_limit_error") from None
        except ShuttingDown as err:
            self.owner.metrics.requests.inc(**self.labels, status=503)
            raise ApiError(503, str(err), kind="server_error") from None

    async def next_piece(self) -> tuple[str, str | None]:
        """(text delta, finish reason or None): waits for the next token event."""
        kind, value = await self.queue.get()
        if kind == "token":
            delta, stopped = self.text.add(value)
            if stopped:
                self.dep.engine.cancel(self.req)  # a stop string: free the slot now
            return delta, "stop" if stopped else None
        if kind == "error":
            raise ApiError(500, f"generation failed: {value}", kind="server_error")
        return self.text.flush(), {"stop": "stop", "length": "length"}.get(value, value)

    def finish(self, status: int) -> None:
        """Cancel the request if it did not end well, and record it in the metrics."""
        if self.req.finish_reason is None and status != 200:
            self.dep.engine.cancel(self.req)
        self.owner.metrics.observe(self.req, status, self.t0, **self.labels)

    def usage(self) -> dict:
        return P.usage(len(self.ids), self.text.consumed)

    def _echo(self) -> str:
        """The prompt text, the first time it is asked for with echo on; "" otherwise."""
        if not self.echo or self.echoed:
            return ""
        self.echoed = True
        return self.prompt

    def take_logprobs(self, echoed: bool) -> dict | list | None:
        """The logprobs of the tokens consumed since the last call (with the prompt's, when `echoed` now)."""
        if self.tokens is None:
            return None
        start, end = self.lp_sent, self.text.consumed
        self.lp_sent = end
        ids, entries = self.req.tokens[start:end], self.req.logprobs[start:end]
        if self.chat:
            return chat_logprobs(self.tokens, ids, entries)
        cut = len(self.text.text)  # the token that completed a stop string starts at most at the cut
        offsets = [len(self.prompt) + min(o, cut) for o in self.text.offsets[start:end]]
        if echoed:
            ids, entries = self.ids + ids, self.req.prompt_logprobs + entries
            offsets = prompt_offsets(self.dep.tokenizer, self.ids, self.prompt) + offsets
        return completion_logprobs(self.tokens, ids, entries, offsets)

    def chunk(self, choice: dict) -> str:
        extra = {"usage": None} if self.body.include_usage else {}
        return _sse(P.response(self.rid, self.body.model, self.chat, [choice], self.created, chunk=True, **extra))

    async def events(self) -> AsyncIterator[str]:
        """Server-sent events (see the module docstring), then `[DONE]` (or an error event)."""
        status = 499  # the client went away unless we reach the end
        try:
            async with asyncio.timeout(self.owner.timeout_s):
                if self.chat:
                    yield self.chunk(P.role_chunk_choice())
                reason = None
                while not reason:
                    delta, reason = await self.next_piece()
                    echo = self._echo()
                    if echo or delta or reason:
                        lp = self.take_logprobs(echoed=bool(echo))
                        yield self.chunk(P.choice(echo + delta, reason, self.chat, delta=True, logprobs=lp))
                if self.body.include_usage:
                    yield _sse(P.response(self.rid, self.body.model, self.chat, [], self.created, chunk=True,
                                          usage=self.usage()))
            status = 200
            yield "data: [DONE]\n\n"
        except TimeoutError:
            status = 504
            yield _sse(P.error_body(f"request timed out after {self.owner.timeout_s:g} s", "timeout"))
        except ApiError as err:
            status = err.status
            yield _sse(P.error_body(err.message, err.kind, param=err.param))
        finally:  # also runs when the client disconnects (the task is cancelled)
            self.finish(status)

    async def _until_done(self) -> str:
        while True:
            _delta, reason = await self.next_piece()
            if reason:
                return reason

    async def collect(self, http: HttpRequest) -> Response:
        """Wait for the whole completion (504 past the timeout, 499 if the client left) and answer in one body."""
        task, status = asyncio.ensure_future(self._until_done()), 499
        deadline = self.t0 + self.owner.timeout_s
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=min(0.2, max(0.0, deadline - time.perf_counter())))
                if task.done():
                    break
                if time.perf_counter() >= deadline:
                    status = 504
                    raise ApiError(504, f"request timed out after {self.owner.timeout_s:g} s", kind="timeout")
                if await http.is_disconnected():  # nobody is waiting: free the batch slot
                    return Response(status_code=499)
            reason = task.result()  # re-raises a generation error
            status = 200
        except ApiError as err:
            status = err.status
            raise
        finally:
            task.cancel()
            self.finish(status)
        echo = self._echo()
        choice = P.choice(echo + self.text.text, reason, self.chat, logprobs=self.take_logprobs(echoed=bool(echo)))
        body = P.response(self.rid, self.body.model, self.chat, [choice], self.created, usage=self.usage())
        return JSONResponse(body, headers={"X-Model-Version": self.dep.version})


def prompt_offsets(tokenizer, ids: list[int], prompt: str) -> list[int]:
    """Each prompt token's character offset in the prompt text (special tokens rendered, as the prompt has them).

    A token inside a multi-byte character gets the character's offset; a token the tokenizer added (a BOS the
    text does not have) counts as zero characters at the start.
    """
    stream = TextStream(tokenizer, [])
    for token in ids:
        stream.add(token)
    shift = max(0, len(stream.raw) - len(prompt)) if stream.raw.endswith(prompt) else 0
    return [min(max(0, o - shift), len(prompt)) for o in stream.raw_offsets]


def stop_ids(dep) -> tuple[int, ...] | None:
    """The ids that end a completion: the model's generation config's, as generate() uses (several for some chat
    models); the tokenizer's EOS when the config names none. None: only the length limit stops it."""
    ids = eos_ids(dep.engine.model) or ({dep.tokenizer.eos_token_id} - {None})
    return tuple(sorted(ids)) or None


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj)}\n\n"
