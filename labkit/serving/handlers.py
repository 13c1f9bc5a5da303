"""One completion's flow, from a validated body to the response: prepare -> submit -> stream | collect.

    completions = Completions(repo, ServerMetrics(repo), max_tokens_limit=512, request_timeout_s=120)
    return await completions.serve(http_request, body, chat=False)     # inside a FastAPI route

prepare: route to a version, tokenize (chat template or a plain transcript), check the limits (4xx).
submit:  the engine's admission control (429 with Retry-After when the queue is full, 503 while draining).
stream:  server-sent events, one per text delta; collect: one JSON body when generation ends.
Either way the request's status, tokens and latencies are recorded in the metrics once, at the end.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from fastapi import Request as HttpRequest
from fastapi.responses import JSONResponse, Response, StreamingResponse

from labkit.serving import protocol as P
from labkit.serving.metrics import Counter, Gauge, Histogram, Registry
from labkit.serving.repository import Deployment, ModelRepository
from labkit.serving.request import QueueFull, Request, SamplingParams, ShuttingDown


class ApiError(Exception):
    """An error answer: HTTP status, message, extra headers and OpenAI error type."""

    def __init__(self, status: int, message: str, headers: dict | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.headers, self.kind = status, message, headers, kind


class ServerMetrics(Registry):
    """The server's Prometheus metrics: requests by status, tokens, latencies (s), queue depth and batch size."""

    def __init__(self, repo: ModelRepository):
        super().__init__()

        def per_version(read):
            return lambda: {(("model", m), ("version", v)): read(d) for (m, v), d in list(repo.deployments.items())}

        self.requests = self.add(Counter("labkit_requests_total", "Requests by model, version and HTTP status"))
        self.tokens = self.add(Counter("labkit_generated_tokens_total", "Tokens generated"))
        self.ttft = self.add(Histogram("labkit_time_to_first_token_seconds", "Arrival to first token"))
        self.tpot = self.add(Histogram("labkit_time_per_output_token_seconds", "Mean gap between later tokens"))
        self.e2e = self.add(Histogram("labkit_request_duration_seconds", "Arrival to last token"))
        self.add(Gauge("labkit_queue_depth", "Requests waiting for a batch slot",
                       per_version(lambda d: d.engine.queue_depth)))
        self.add(Gauge("labkit_running_batch_size", "Requests holding a batch slot",
                       per_version(lambda d: len(d.engine.running))))

    def observe(self, req: Request, status: int, t0: float, **labels: str) -> None:
        """Record one finished HTTP request (`t0`: its arrival, perf_counter seconds)."""
        self.requests.inc(**labels, status=status)
        self.tokens.inc(len(req.tokens), **labels)
        now = time.perf_counter()
        if req.t_first is not None:
            self.ttft.observe(req.t_first - t0, **labels)
            self.e2e.observe(now - t0, **labels)
            if len(req.tokens) > 1:
                self.tpot.observe(((req.t_done or now) - req.t_first) / (len(req.tokens) - 1), **labels)


class Completions:
    """The completion endpoints' logic for one server; the routes call `serve`.

    Args:
        repo: the served models. metrics: where requests are counted.
        max_tokens_limit: largest max_tokens a request may ask for. request_timeout_s: time per request (s).
    """

    def __init__(self, repo: ModelRepository, metrics: ServerMetrics, max_tokens_limit: int = 512,
                 request_timeout_s: float = 120.0):
        self.repo, self.metrics = repo, metrics
        self.max_tokens_limit, self.timeout_s = max_tokens_limit, request_timeout_s

    def prepare(self, body: P.CompletionBody | P.ChatBody, chat: bool) -> tuple[Deployment, list[int]]:
        """The version that serves this request and the prompt's token ids; ApiError (404, 400) if it cannot."""
        try:
            dep = self.repo.route(body.model)
        except KeyError:
            raise ApiError(404, f"model {body.model!r} not found; served models: {self.repo.models()}",
                           kind="not_found_error") from None
        tok = dep.tokenizer
        if chat and getattr(tok, "chat_template", None):
            msgs = [m.model_dump() for m in body.messages]
            ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_dict=True)["input_ids"]
        elif chat:  # a base model: a plain transcript
            ids = tok("".join(f"{m.role}: {m.content}\n" for m in body.messages) + "assistant:")["input_ids"]
        else:
            ids = tok(body.prompt)["input_ids"]
        if not ids:
            raise ApiError(400, "the prompt is empty")
        if body.max_tokens > self.max_tokens_limit:
            raise ApiError(400, f"max_tokens={body.max_tokens} is over this server's limit of {self.max_tokens_limit}")
        if len(ids) + body.max_tokens > dep.context:
            raise ApiError(400, f"prompt ({len(ids)} tokens) + max_tokens ({body.max_tokens}) exceeds the context "
                                f"of {body.model!r} ({dep.context} tokens)")
        if body.temperature > 0 and not dep.engine.supports_sampling:
            raise ApiError(400, f"scheduler {dep.engine.name!r} serves greedy decoding only; send temperature=0")
        return dep, list(ids)

    async def serve(self, http: HttpRequest, body: P.CompletionBody | P.ChatBody, chat: bool) -> Response:
        """Answer one completion request: server-sent events if `body.stream`, else one JSON body."""
        t0 = time.perf_counter()
        flow = Completion(self, *self.prepare(body, chat), body, chat, t0)
        flow.submit()
        if body.stream:
            headers = {"Cache-Control": "no-cache", "X-Model-Version": flow.dep.version}
            return StreamingResponse(flow.events(), media_type="text/event-stream", headers=headers)
        return await flow.collect(http)


class Completion:
    """One request in flight: its engine Request, the queue its token events arrive on, its text stream."""

    def __init__(self, owner: Completions, dep: Deployment, ids: list[int], body, chat: bool, t0: float):
        self.owner, self.dep, self.ids, self.body, self.chat, self.t0 = owner, dep, ids, body, chat, t0
        self.labels = {"model": dep.model, "version": dep.version}
        self.text = P.TextStream(dep.tokenizer, body.stops())
        self.rid = P.new_id(chat)
        loop, self.queue = asyncio.get_running_loop(), asyncio.Queue()
        params = SamplingParams(body.max_tokens, body.temperature, body.top_p, seed=body.seed)
        self.req = Request(ids, params, dep.tokenizer.eos_token_id,
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
        return P.usage(len(self.ids), len(self.req.tokens))

    def chunk(self, choice: dict, usage: dict | None = None) -> str:
        return _sse(P.response(self.rid, self.body.model, self.chat, [choice], usage, chunk=True))

    async def events(self) -> AsyncIterator[str]:
        """Server-sent events: a chunk per text delta, the last with the usage, then `[DONE]` (or an error)."""
        status = 499  # the client went away unless we reach the end
        try:
            async with asyncio.timeout(self.owner.timeout_s):
                if self.chat:
                    yield self.chunk({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None})
                reason = None
                while not reason:
                    delta, reason = await self.next_piece()
                    if delta or reason:
                        usage = self.usage() if reason else None
                        yield self.chunk(P.choice(delta, reason, self.chat, delta=True), usage)
            status = 200
            yield "data: [DONE]\n\n"
        except TimeoutError:
            status = 504
            yield _sse(P.error_body(f"request timed out after {self.owner.timeout_s:g} s", "timeout"))
        except ApiError as err:
            status = err.status
            yield _sse(P.error_body(err.message, err.kind))
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
        choice = P.choice(self.text.text, reason, self.chat)
        body = P.response(self.rid, self.body.model, self.chat, [choice], self.usage())
        return JSONResponse(body, headers={"X-Model-Version": self.dep.version})


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj)}\n\n"
