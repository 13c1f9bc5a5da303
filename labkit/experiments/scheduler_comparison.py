"""The same load against each scheduler, measured over real HTTP on 127.0.0.1.

Widget-friendly: plain arguments in, `Measured(table, figure)` out. Server throughput and latency come from the
load generator (`serving.loadgen`): what clients experienced, not a single-stream model timing.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import plotly.graph_objects as go
import torch

from labkit.devices import device_label
from labkit.measure import results_frame
from labkit.plots import Measured, style
from labkit.serving.app import Server, create_app
from labkit.serving.loadgen import DEFAULT_PROMPTS, LoadResult, run_load
from labkit.serving.repository import SCHEDULERS, ModelRepository, model_on


def _serve(model: str, scheduler: str, max_batch: int, max_queue: int, loaded: tuple,
           **limits) -> tuple[Server, ModelRepository]:  # fmt: skip
    repo = ModelRepository(scheduler, max_batch=max_batch, max_queue=max_queue, device=loaded[0].device, **limits)
    repo.load(model, "v1", loaded=loaded)
    return Server(create_app(repo, max_tokens_limit=4096, request_timeout_s=TIMEOUT_S)).start(), repo


THREE = ("sync", "dynamic", "continuous")
TIMEOUT_S = 900.0  # a synchronous server at 32 clients keeps the last one waiting for minutes on a CPU


def compare_schedulers(model: str = "tiny-bloom-shakespeare", schedulers: tuple[str, ...] = THREE,
                       clients: tuple[int, ...] = (1, 4, 16), requests_per_client: int = 2, max_tokens: int = 32,
                       max_batch: int = 32, prompts: tuple[str, ...] = DEFAULT_PROMPTS,
                       device: str | torch.device = "auto", loaded: tuple | None = None) -> Measured:
    """Closed-loop load at each concurrency against a fresh server per scheduler (same weights, same device).

    Args:
        model: a labkit model name. schedulers: which to compare (from serving.repository.SCHEDULERS).
        clients: concurrent clients per run. requests_per_client: requests each client sends.
        max_tokens: new tokens per request. max_batch: batch slots of every engine.
        prompts: cycled through by the requests.
        device: where the engines compute ("auto": the GPU when there is one; "cpu", "cuda", "cuda:N").
        loaded: a ready (model, tokenizer) on `device`, shared by every scheduler (None: `model` is loaded once).
    Returns:
        Measured: one row per (scheduler, clients) with loadgen's summary (tokens_per_s, ttft_p50_s, ... in s),
        mean_decode_batch (sequences per decode step; NaN for 'hf-continuous', which counts no steps) and device
        (where the engine computed, with its hardware); the figure is tokens/s against clients.
    Raises:
        ValueError: an unknown scheduler or device (naming the valid ones), or `loaded` on another device.
    """
    _check(schedulers)
    loaded = model_on(model, device, loaded)
    rows = []
    for name in schedulers:
        server, repo = _serve(model, name, max_batch, max(clients) * 2, loaded)
        try:
            run_load(server.url, model, prompts, clients=2, requests=2, max_tokens=4)  # warm-up
            engine = repo.route(model).engine
            for n in clients:
                engine.batch_sizes.clear()
                res = run_load(server.url, model, prompts, clients=n, requests=n * requests_per_client,
                               max_tokens=max_tokens, timeout_s=TIMEOUT_S)
                rows.append({"scheduler": name, **res.summary, **_decode_batches(engine)})
        finally:
            server.stop()
    df = results_frame(rows, model=model, max_tokens=max_tokens)
    return Measured(df, by_scheduler(df, "clients", "tokens_per_s", f"Throughput vs concurrency — {model}",
                                     "tokens/s (all clients)"))


def open_loop(model: str = "tiny-bloom-shakespeare", schedulers: tuple[str, ...] = ("sync", "continuous"),
              rates: tuple[float, ...] = (2.0, 8.0), requests: int = 16, max_tokens: int = 32,
              max_batch: int = 32, device: str | torch.device = "auto", loaded: tuple | None = None) -> Measured:
    """Poisson arrivals at each rate: below capacity latency is flat, above it the queue (and p99) grows.

    Args:
        model: a labkit model name. schedulers: which to compare. rates: arrivals per second.
        requests: requests per rate (also each engine's queue bound). max_tokens: new tokens per request.
        max_batch: batch slots of every engine. device, loaded: as in `compare_schedulers`.
    Returns:
        Measured: one row per (scheduler, rate) with loadgen's summary and device; the figure is p99 latency (s)
        against rate.
    Raises:
        ValueError: an unknown scheduler or device (naming the valid ones), or `loaded` on another device.
    """
    _check(schedulers)
    loaded = model_on(model, device, loaded)
    rows = []
    for name in schedulers:
        server, repo = _serve(model, name, max_batch, requests, loaded)
        try:
            run_load(server.url, model, clients=2, requests=2, max_tokens=4)
            for rate in rates:
                res = run_load(server.url, model, mode="open", rate=rate, requests=requests, max_tokens=max_tokens,
                               timeout_s=TIMEOUT_S)
                rows.append({"scheduler": name, **res.summary, "device": device_label(repo.route(model).engine.device)})
        finally:
            server.stop()
    df = results_frame(rows, model=model)
    return Measured(df, by_scheduler(df, "rate", "e2e_p99_s", f"p99 latency vs arrival rate — {model}",
                                     "end-to-end p99 (s)", xlabel="arrivals per second"))


def _decode_batches(engine) -> dict:
    """Mean sequences per decode step since the engine's counts were last cleared (then clears them), and device."""
    sizes = dict(engine.batch_sizes)
    engine.batch_sizes.clear()
    steps = sum(sizes.values())  # hf-continuous runs its own loop: no step counts (NaN)
    mean_batch = sum(k * v for k, v in sizes.items()) / steps if steps else float("nan")
    return {"mean_decode_batch": mean_batch, "device": device_label(engine.device)}


def measure_server(url: str, model: str, server: str, clients: tuple[int, ...] = (1, 4, 16, 32),
                   requests_per_client: int = 2, rates: tuple[float, ...] = (), open_requests: int = 16,
                   after_level: Callable[[], dict] | None = None, **load) -> list[dict]:
    """Any OpenAI-compatible server on this machine (labkit's or a peer's) under one load: closed loop at each
    concurrency, then open loop at each rate, all with `serving.loadgen.run_load` (tokens from `usage`).

    Args:
        url: the server's base URL (loopback). model: the model name requests ask for.
        server: the row label, e.g. 'continuous' or 'vLLM 0.32.0'. clients: concurrent clients, closed loop.
        requests_per_client: requests each client sends. rates: open-loop arrival rates (requests/s).
        open_requests: requests per open-loop rate.
        after_level: called after the warm-up (result dropped) and after each run: more columns for its row.
        **load: more `run_load` arguments, the same for every run (prompts, max_tokens, temperature, chat, ...).
    Returns:
        one dict per run: server, then loadgen's summary (mode, clients or rate, tokens_per_s, ttft_p50_s, ... s).
    Raises:
        ValueError: a non-loopback URL or a non-positive count.
    """
    load = {"timeout_s": TIMEOUT_S, **load}
    run_load(url, model, **{**load, "max_tokens": 4}, clients=2, requests=2)  # warm-up
    extra = after_level or dict
    extra()
    rows = []
    for n in clients:
        res = run_load(url, model, clients=n, requests=n * requests_per_client, **load)
        rows.append({"server": server, **res.summary, **extra()})
    for rate in rates:
        res = run_load(url, model, mode="open", rate=rate, requests=open_requests, **load)
        rows.append({"server": server, **res.summary, **extra()})
    return rows


def measure_scheduler(model: str, scheduler: str, loaded: tuple, max_batch: int = 32, max_queue: int = 64,
                      limits: dict | None = None, label: str | None = None, **measure) -> list[dict]:
    """`measure_server` against a fresh labkit server with `scheduler`, serving `loaded` under the name `model`.

    Args:
        model: the model name. scheduler: one of serving.repository.SCHEDULERS. loaded: a ready (model, tokenizer).
        max_batch: the engine's batch slots. max_queue: its queue bound (>= the most requests in flight).
        limits: more engine limits (`serving.limits.Limits`), e.g. {"runner": "onnxruntime"} for 'paged'.
        label: the rows' server name (default: the scheduler's).
        **measure: `measure_server` arguments (clients, rates, max_tokens, chat, ...).
    Returns:
        `measure_server`'s rows, with scheduler, mean_decode_batch (sequences per decode step) and device.
    Raises:
        ValueError: an unknown scheduler (naming the valid ones).
    """
    _check((scheduler,))
    server, repo = _serve(model, scheduler, max_batch, max_queue, loaded, **(limits or {}))
    try:
        engine = repo.route(model).engine
        rows = measure_server(server.url, model, label or scheduler, after_level=lambda: _decode_batches(engine),
                              **measure)  # fmt: skip
    finally:
        server.stop()
    return [{**r, "scheduler": scheduler} for r in rows]


def _check(schedulers: tuple[str, ...]) -> None:
    unknown = [s for s in schedulers if s not in SCHEDULERS]
    if unknown:
        raise ValueError(f"unknown scheduler(s) {unknown}; choose from {list(SCHEDULERS)}")


def by_scheduler(df: pd.DataFrame, x: str, y: str, title: str, ylabel: str, xlabel: str | None = None) -> go.Figure:
    """One line per scheduler: column `y` against column `x` (log x axis).

    Args:
        df: a table with a 'scheduler' column. x, y: the columns to plot. title: the figure's title.
        ylabel: the y axis title. xlabel: the x axis title (default: `x`).
    Returns:
        a plotly Figure in the lab's style.
    """
    fig = go.Figure()
    for name, part in df.groupby("scheduler", sort=False):
        fig.add_trace(go.Scatter(x=part[x], y=part[y], mode="lines+markers", name=str(name)))
    fig.update_xaxes(title=xlabel or x, type="log")
    fig.update_yaxes(title=ylabel)
    return style(fig, title, df.attrs.get("hardware"))


def timeline(result: LoadResult, title: str = "Where each request's time went") -> go.Figure:
    """One bar per request: waiting for its first token (queue + prefill), then decoding.

    Args:
        result: a `run_load` result. title: the figure's title.
    Returns:
        a plotly Figure, time (s since the load started) on the x axis.
    """
    ok = result.records.dropna(subset=["ttft_s"]).sort_values("sent_s")
    fig = go.Figure([
        go.Bar(y=ok["index"].astype(str), x=ok.ttft_s, base=ok.sent_s, orientation="h", name="waiting → first token"),
        go.Bar(y=ok["index"].astype(str), x=ok.e2e_s - ok.ttft_s, base=ok.sent_s + ok.ttft_s, orientation="h",
               name="decoding"),
    ])  # fmt: skip
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title="seconds since the load started")
    fig.update_yaxes(title="request", autorange="reversed")
    return style(fig, title)
