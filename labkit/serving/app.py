"""The server: FastAPI routes (OpenAI-compatible) in front of the model repository and its schedulers.

    repo = ModelRepository(); repo.load("shakespeare", "v1", source="tiny-bloom-shakespeare")
    with Server(create_app(repo)) as server:      # uvicorn on 127.0.0.1, a free port, in a thread
        httpx.post(server.url + "/v1/completions", json={"model": "shakespeare", "prompt": "ROMEO:"})

The request path: access layer (parse, validate, admit) -> the version's queue -> its scheduler's
worker thread (the model) -> token events back to the handler -> JSON or server-sent events.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from labkit.serving import protocol as P
from labkit.serving.metrics import Counter, Gauge, Histogram, Registry
from labkit.serving.repository import Deployment, ModelRepository
from labkit.serving.schedulers import GenRequest, QueueFull, ShuttingDown


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.headers, self.kind = status, message, headers, kind


def _metrics(repo: ModelRepository) -> Registry:
    def per_version(read):
        return lambda: {(("model", m), ("version", v)): read(d) for (m, v), d in list(repo.deployments.items())}

    reg = Registry()
    reg.requests = reg.add(Counter("labkit_requests_total", "Requests by model, version and HTTP status"))
    reg.tokens = reg.add(Counter("labkit_generated_tokens_total", "Tokens generated"))
    reg.ttft = reg.add(Histogram("labkit_time_to_first_token_seconds", "Arrival to first token"))
    reg.tpot = reg.add(Histogram("labkit_time_per_output_token_seconds", "Mean gap between later tokens"))
    reg.e2e = reg.add(Histogram("labkit_request_duration_seconds", "Arrival to last token"))
    reg.add(Gauge("labkit_queue_depth", "Requests waiting for a batch slot",
                  per_version(lambda d: d.scheduler.queue_depth)))
    reg.add(Gauge("labkit_running_batch_size", "Requests holding a batch slot",
                  per_version(lambda d: len(d.scheduler.running))))
    return reg


def create_app(repo: ModelRepository, max_tokens_limit: int = 512, request_timeout_s: float = 120.0) -> FastAPI:
    """The FastAPI app; `repo` holds the models. Limits: completion length and time per request."""
    app = FastAPI(title="labkit inference server")
    app.state.repo, app.state.metrics, app.state.closing = repo, _metrics(repo), False
    reg = app.state.metrics

    @app.exception_handler(ApiError)
    async def _api_error(_req, err: ApiError):
        return JSONResponse(P.error_body(err.message, err.kind), err.status, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req, err: RequestValidationError):
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ())[1:]) or 'body'}: {e.get('msg')}" for e in err.errors()]
        reg.requests.inc(model="-", version="-", status=400)
        return JSONResponse(P.error_body("; ".join(parts) or "invalid request"), 400)

    @app.exception_handler(HTTPException)
    async def _http(_req, err: HTTPException):
        return JSONResponse(P.error_body(str(err.detail), code=str(err.status_code)), err.status_code)

    @app.get("/health")
    async def health():
        ok = not app.state.closing and bool(repo.models())
        return JSONResponse({"status": "ok" if ok else "unavailable", "models": repo.models()}, 200 if ok else 503)

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(reg.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models():
        data = [{"id": m, "object": "model", "created": int(d.loaded_at), "owned_by": "labkit",
                 "versions": [v for (mm, v) in repo.deployments if mm == m]}
                for m in repo.models() for d in [repo.route(m)]]
        return {"object": "list", "data": data}

    @app.post("/v1/completions")
    async def completions(body: P.CompletionBody, request: Request):
        return await _serve(request, body, chat=False)

    @app.post("/v1/chat/completions")
    async def chat(body: P.ChatBody, request: Request):
        return await _serve(request, body, chat=True)

    def _prepare(body, chat: bool) -> tuple[Deployment, list[int]]:
        try:
            dep = repo.route(body.model)
        except KeyError:
            raise ApiError(404, f"model {body.model!r} not found; served models: {repo.models()}",
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
        if body.max_tokens > max_tokens_limit:
            raise ApiError(400, f"max_tokens={body.max_tokens} is over this server's limit of {max_tokens_limit}")
        if len(ids) + body.max_tokens > dep.context:
            raise ApiError(400, f"prompt ({len(ids)} tokens) + max_tokens ({body.max_tokens}) exceeds the context "
                                f"of {body.model!r} ({dep.context} tokens)")
        if body.temperature > 0 and not dep.scheduler.supports_sampling:
            raise ApiError(400, f"scheduler {dep.scheduler.name!r} serves greedy decoding only; send temperature=0")
        return dep, list(ids)

    async def _serve(request: Request, body, chat: bool):
        t0 = time.perf_counter()
        dep, ids = _prepare(body, chat)
        loop, events = asyncio.get_running_loop(), asyncio.Queue()
        req = GenRequest(ids, body.max_tokens, body.temperature, body.top_p, body.seed, dep.tokenizer.eos_token_id,
                         on_event=lambda kind, value: loop.call_soon_threadsafe(events.put_nowait, (kind, value)))
        labels = {"model": dep.model, "version": dep.version}
        try:
            dep.scheduler.submit(req)
        except QueueFull as err:
            reg.requests.inc(**labels, status=429)
            raise ApiError(429, str(err), {"Retry-After": str(round(err.retry_after_s))}, "rate_limit_error") from None
        except ShuttingDown as err:
            reg.requests.inc(**labels, status=503)
            raise ApiError(503, str(err), kind="server_error") from None
        stream = P.TextStream(dep.tokenizer, body.stops())
        rid = P.new_id(chat)

        async def next_piece() -> tuple[str, str | None]:
            """(text delta, finish reason or None): waits for the next token event."""
            kind, value = await events.get()
            if kind == "token":
                delta, stopped = stream.add(value)
                if stopped:
                    dep.scheduler.cancel(req)  # a stop string: free the slot now
                return delta, "stop" if stopped else None
            if kind == "error":
                raise ApiError(500, f"generation failed: {value}", kind="server_error")
            return stream.flush(), {"stop": "stop", "length": "length"}.get(value, value)

        def finish(status: int) -> None:
            if req.finish_reason is None and status != 200:
                dep.scheduler.cancel(req)
            reg.requests.inc(**labels, status=status)
            reg.tokens.inc(len(req.tokens), **labels)
            now = time.perf_counter()
            if req.t_first is not None:
                reg.ttft.observe(req.t_first - t0, **labels)
                reg.e2e.observe(now - t0, **labels)
                if len(req.tokens) > 1:
                    reg.tpot.observe(((req.t_done or now) - req.t_first) / (len(req.tokens) - 1), **labels)

        def usage() -> dict:
            return P.usage(len(ids), len(req.tokens))

        if body.stream:
            async def sse():
                status = 499  # the client went away unless we reach the end
                try:
                    async with asyncio.timeout(request_timeout_s):
                        if chat:
                            first = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                            yield _sse(P.response(rid, body.model, chat, [first], None, chunk=True))
                        while True:
                            delta, reason = await next_piece()
                            if delta or reason:
                                c = P.choice(delta, reason, chat, delta=True)
                                yield _sse(P.response(rid, body.model, chat, [c], usage() if reason else None, True))
                            if reason:
                                break
                    status = 200
                    yield "data: [DONE]\n\n"
                except TimeoutError:
                    status = 504
                    yield _sse(P.error_body(f"request timed out after {request_timeout_s:g} s", "timeout"))
                except ApiError as err:
                    status = err.status
                    yield _sse(P.error_body(err.message, err.kind))
                finally:  # also runs when the client disconnects (the task is cancelled)
                    finish(status)

            headers = {"Cache-Control": "no-cache", "X-Model-Version": dep.version}
            return StreamingResponse(sse(), media_type="text/event-stream", headers=headers)

        async def collect() -> str:
            while True:
                _delta, reason = await next_piece()
                if reason:
                    return reason

        task = asyncio.ensure_future(collect())
        status = 499
        try:
            deadline = t0 + request_timeout_s
            while not task.done():
                await asyncio.wait({task}, timeout=min(0.2, max(0.0, deadline - time.perf_counter())))
                if task.done():
                    break
                if time.perf_counter() >= deadline:
                    status = 504
                    raise ApiError(504, f"request timed out after {request_timeout_s:g} s", kind="timeout")
                if await request.is_disconnected():  # nobody is waiting: free the batch slot
                    return Response(status_code=499)
            reason = task.result()  # re-raises a generation error
            status = 200
        except ApiError as err:
            status = err.status
            raise
        finally:
            task.cancel()
            finish(status)
        body_out = P.response(rid, body.model, chat, [P.choice(stream.text, reason, chat)], usage())
        return JSONResponse(body_out, headers={"X-Model-Version": dep.version})

    return app


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj)}\n\n"


class Server:
    """uvicorn serving an app in a background thread; `port=0` picks a free port."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                 graceful_s: float = 30.0):
        import uvicorn

        self.app = app
        config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="off",
                                timeout_graceful_shutdown=graceful_s)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def start(self, timeout_s: float = 30.0) -> Server:
        self._thread = threading.Thread(target=self._server.run, name="uvicorn", daemon=True)
        self._thread.start()
        deadline = time.perf_counter() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.perf_counter() > deadline:
                raise RuntimeError("the server did not start (is the port in use?)")
            time.sleep(0.01)
        return self

    @property
    def url(self) -> str:
        host, port = self._server.servers[0].sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def stop(self, drain: bool = True) -> None:
        """Graceful shutdown: stop accepting, let in-flight requests finish, then stop the schedulers."""
        self.app.state.closing = True
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join()
        self.app.state.repo.close(drain=drain)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
