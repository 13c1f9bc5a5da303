"""The server: FastAPI routes (OpenAI-compatible) in front of the model repository and its engines.

    repo = ModelRepository(); repo.load("shakespeare", "v1", source="tiny-bloom-shakespeare")
    with Server(create_app(repo)) as server:      # uvicorn on 127.0.0.1, a free port, in a thread
        httpx.post(server.url + "/v1/completions", json={"model": "shakespeare", "prompt": "ROMEO:"})

The request path: access layer (parse, validate, admit: `handlers.py`) -> the version's queue -> its engine's
worker thread (the model) -> token events back to the handler -> JSON or server-sent events.
"""

from __future__ import annotations

import logging
import threading
import time

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException

from labkit.serving import protocol as P
from labkit.serving.fields import CHAT, COMPLETIONS, validation_message
from labkit.serving.handlers import Completions, ServerMetrics
from labkit.serving.protocol import ApiError
from labkit.serving.repository import ModelRepository

log = logging.getLogger("labkit.serving")


def create_app(repo: ModelRepository, max_tokens_limit: int = 512, request_timeout_s: float = 120.0) -> FastAPI:
    """The FastAPI app serving `repo`'s models.

    Args:
        repo: the served models. max_tokens_limit: the most new tokens one request may get (the most that
            max_tokens / max_completion_tokens may ask for, and the cap of a chat request that asks for none).
        request_timeout_s: time one request may take (s) before the answer is 504.
    Returns:
        the app (routes /v1/completions, /v1/chat/completions, /v1/models, /v1/models/{model}, /health,
        /metrics). The request
        fields each route implements, accepts as tags or refuses are in `serving.fields.FIELDS`.
    """
    app = FastAPI(title="labkit inference server")
    metrics = ServerMetrics(repo)
    completions = Completions(repo, metrics, max_tokens_limit, request_timeout_s)
    app.state.repo, app.state.metrics, app.state.closing = repo, metrics, False

    @app.exception_handler(ApiError)
    async def _api_error(_req, err: ApiError):
        return JSONResponse(P.error_body(err.message, err.kind, param=err.param), err.status, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(req, err: RequestValidationError):
        """Every invalid body is a 400 naming the field; an unknown field is "not supported by this server"."""
        where = CHAT if req.url.path.endswith("/chat/completions") else COMPLETIONS
        message, param = validation_message(list(err.errors()), where)
        metrics.requests.inc(model="-", version="-", status=400)
        return JSONResponse(P.error_body(message, param=param), 400)

    @app.exception_handler(HTTPException)
    async def _http(_req, err: HTTPException):
        return JSONResponse(P.error_body(str(err.detail), code=str(err.status_code)), err.status_code)

    @app.exception_handler(Exception)
    async def _bug(_req, err: Exception):
        """A bug, not bad input: still an OpenAI-shaped error body (clients parse it), and the traceback is logged."""
        log.exception("unhandled error", exc_info=err)
        metrics.requests.inc(model="-", version="-", status=500)
        return JSONResponse(P.error_body(f"internal error: {type(err).__name__}: {err}", "server_error"), 500)

    @app.get("/health")
    async def health():
        ok = not app.state.closing and bool(repo.models())
        return JSONResponse({"status": "ok" if ok else "unavailable", "models": repo.models()}, 200 if ok else 503)

    @app.get("/metrics")
    async def metrics_text():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [P.model_card(m, repo.route(m).loaded_at, repo.versions(m))
                                           for m in repo.models()]}

    @app.get("/v1/models/{model:path}")
    async def model(model: str):
        """OpenAI's "retrieve model": one entry of the list, 404 naming the served models for any other name."""
        return P.model_card(model, completions.route(model).loaded_at, repo.versions(model))

    @app.post("/v1/completions")
    async def completion(body: P.CompletionBody, request: Request):
        return await completions.serve(request, body, chat=False)

    @app.post("/v1/chat/completions")
    async def chat(body: P.ChatBody, request: Request):
        return await completions.serve(request, body, chat=True)

    return app


class Server:
    """uvicorn serving an app in a background thread.

    Args:
        app: the FastAPI app. host: the address to bind (loopback by default). port: 0 picks a free port.
        log_level: uvicorn's. graceful_s: how long shutdown waits for requests in flight (s).
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                 graceful_s: float = 30.0):
        self.app = app
        config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="off",
                                timeout_graceful_shutdown=graceful_s)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def start(self, timeout_s: float = 30.0) -> Server:
        """Start serving; returns once the socket listens. Raises RuntimeError if it does not within timeout_s."""
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
        """Graceful shutdown: stop accepting, let in-flight requests finish, then stop the engines."""
        self.app.state.closing = True
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join()
        self.app.state.repo.close(drain=drain)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
