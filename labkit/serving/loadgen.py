"""An async load generator for the OpenAI-style API, loopback only.

Closed loop: `clients` concurrent users, each sends its next request when the previous one returns
(a benchmark's "concurrency"). Open loop: requests arrive as a Poisson process at `rate` per second
whether or not the server keeps up (real traffic). Both stop after `requests` sends or `duration_s`.
Every request sent is accounted for: succeeded + rejected (an HTTP error status) + failed (no answer).

Tokens are counted the standard way, so any OpenAI-compatible server can be measured: every request streams with
`"stream_options": {"include_usage": true}` and its completion tokens are the `usage.completion_tokens` of the last
chunk (`choices: []`). A server that sends no usage is measured by counting the chunks that carry text instead (one
chunk may hold several tokens: a lower bound); each record says which (`tokens_from`: "usage" or "chunks").
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import random
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from labkit.plots import Measured, line

DEFAULT_PROMPTS = ("ROMEO:\n", "JULIET:\nO Romeo,", "KING HENRY:\nOnce more unto the", "HAMLET:\nTo be, or not")


def check_loopback(url: str) -> None:
    """Refuse anything but this machine: a load generator must not be pointed at someone else's server.

    Args:
        url: the server's base URL.
    Raises:
        ValueError: for any host but localhost or a loopback address.
    """
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ValueError(f"the load generator only targets loopback addresses (127.0.0.1, ::1, localhost); got {host!r}")


@dataclass
class LoadResult:
    """What a load run measured: one record per request sent, and the summary (`summarize`)."""

    records: pd.DataFrame  # one row per request sent
    summary: dict  # throughput, latency percentiles, accounting


async def _one(client, url: str, body: dict, index: int, t0: float) -> dict:
    rec = {"index": index, "sent_s": time.perf_counter() - t0, "status": None, "ttft_s": np.nan, "e2e_s": np.nan,
           "tokens": 0, "tpot_s": np.nan, "version": None, "error": None, "tokens_from": None}
    start = time.perf_counter()
    first = last = None
    pieces, usage = 0, None
    try:
        async with client.stream("POST", url, json=body) as resp:
            rec["status"], rec["version"] = resp.status_code, resp.headers.get("x-model-version")
            if resp.status_code != 200:
                rec["error"] = (await resp.aread()).decode(errors="replace")[:200]
                return rec
            async for line in resp.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    rec["status"], rec["error"] = 599, chunk["error"]["message"]
                    return rec
                usage = chunk.get("usage") or usage  # null on every chunk but the last, with include_usage
                for piece in chunk.get("choices") or []:
                    if piece.get("text") or (piece.get("delta") or {}).get("content"):
                        first, last, pieces = first or time.perf_counter(), time.perf_counter(), pieces + 1
    except Exception as err:  # noqa: BLE001 - a failed request is a result, not a crash
        rec["status"], rec["error"] = None, f"{type(err).__name__}: {err}"
        return rec
    rec["e2e_s"] = time.perf_counter() - start
    rec["tokens"], rec["tokens_from"] = (usage["completion_tokens"], "usage") if usage else (pieces, "chunks")
    if first is not None:
        rec["ttft_s"] = first - start
        if rec["tokens"] > 1:
            rec["tpot_s"] = (last - first) / (rec["tokens"] - 1)
    return rec


def request_body(model: str, prompt: str, max_tokens: int, temperature: float, seed: int, chat: bool) -> dict:
    """One streamed request that asks for the usage chunk (chat: the prompt as one user message)."""
    body = {"model": model, "max_tokens": max_tokens, "temperature": temperature, "stream": True,
            "stream_options": {"include_usage": True}, "seed": seed}
    return {**body, "messages": [{"role": "user", "content": prompt}]} if chat else {**body, "prompt": prompt}


async def _drive(base_url: str, model: str, prompts, mode: str, clients: int, rate: float, requests: int,
                 duration_s: float, max_tokens: int, temperature: float, timeout_s: float, seed: int,
                 chat: bool) -> list[dict]:
    import httpx

    url = base_url.rstrip("/") + ("/v1/chat/completions" if chat else "/v1/completions")
    rng = random.Random(seed)
    t0 = time.perf_counter()
    counter = iter(range(requests))

    def body(i: int) -> dict:
        return request_body(model, prompts[i % len(prompts)], max_tokens, temperature, seed + i, chat)

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:
        if mode == "closed":
            async def user() -> list[dict]:
                out = []
                for i in counter:  # shared iterator: `requests` in total across all users
                    if time.perf_counter() - t0 > duration_s:
                        break
                    out.append(await _one(client, url, body(i), i, t0))
                return out

            return [r for rs in await asyncio.gather(*(user() for _ in range(clients))) for r in rs]
        tasks, next_at = [], 0.0
        for i in counter:
            next_at += rng.expovariate(rate)  # Poisson arrivals: exponential gaps
            if next_at > duration_s:
                break
            await asyncio.sleep(max(0.0, t0 + next_at - time.perf_counter()))
            tasks.append(asyncio.ensure_future(_one(client, url, body(i), i, t0)))
        return list(await asyncio.gather(*tasks))


def _run(coro):
    """asyncio.run, also from inside Jupyter (whose thread already runs a loop)."""
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(result=asyncio.run(coro)), daemon=True)
    thread.start()
    thread.join()
    if "result" not in box:
        raise RuntimeError("the load generator failed (see the thread's traceback above)")
    return box["result"]


def run_load(url: str, model: str, prompts: list[str] | tuple[str, ...] = DEFAULT_PROMPTS, mode: str = "closed",
             clients: int = 4, rate: float = 4.0, requests: int = 32, duration_s: float = 60.0, max_tokens: int = 32,
             temperature: float = 0.0, timeout_s: float = 120.0, seed: int = 0, chat: bool = False) -> LoadResult:
    """Drive the server at `url` (loopback only) and measure what every request experienced.

    Args:
        url: the server's base URL (127.0.0.1, ::1 or localhost). model: the model name to request.
        prompts: cycled through by the requests. mode: 'closed' (`clients` users, each waits for its answer)
            or 'open' (Poisson arrivals at `rate` per second).
        clients: concurrent users (closed loop). rate: arrivals per second (open loop).
        requests: requests to send in all. duration_s: stop sending after this many seconds.
        max_tokens: new tokens per request. temperature: 0 = greedy. timeout_s: per request (s).
        seed: seeds the arrivals and each request's sampling seed.
        chat: send chat requests (/v1/chat/completions, the prompt as a user message) instead of completions.
    Returns:
        LoadResult: records (index, sent_s, status, ttft_s, e2e_s, tokens, tpot_s, version, error, tokens_from;
        times in s) and the summary (see `summarize`).
    Raises:
        ValueError: a non-loopback URL, an unknown mode (naming the valid ones) or a non-positive count.
    """
    check_loopback(url)
    if mode not in ("closed", "open"):
        raise ValueError(f"unknown mode {mode!r}; choose from ['closed', 'open']")
    if clients < 1 or requests < 1 or rate <= 0 or duration_s <= 0:
        raise ValueError("need clients >= 1, requests >= 1, rate > 0 and duration_s > 0")
    start = time.perf_counter()
    recs = _run(_drive(url, model, list(prompts), mode, clients, rate, requests, duration_s, max_tokens,
                       temperature, timeout_s, seed, chat))
    wall = time.perf_counter() - start
    df = pd.DataFrame(recs).sort_values("index").reset_index(drop=True)
    return LoadResult(df, summarize(df, wall, mode=mode, clients=clients if mode == "closed" else None,
                                    rate=rate if mode == "open" else None))


def summarize(df: pd.DataFrame, wall_s: float, **meta) -> dict:
    """Throughput, latency percentiles and accounting of a load run.

    Args:
        df: one row per request (`LoadResult.records`). wall_s: the run's wall time (s).
        **meta: extra keys copied into the summary (mode, clients, rate).
    Returns:
        sent, succeeded (HTTP 200), rejected (another status, by status), failed (no answer); requests_per_s and
        tokens_per_s over the wall time; TTFT, TPOT and end-to-end percentiles of the successful requests (s);
        tokens_from: how the successful requests' tokens were counted ({"usage": n, "chunks": m}).
    """
    ok = df[df.status == 200]
    rejected = df[df.status.notna() & (df.status != 200)]

    def pct(col: str, q: float) -> float:
        return float(np.nanpercentile(ok[col], q)) if ok[col].notna().any() else float("nan")

    return {
        **meta, "sent": len(df), "succeeded": len(ok), "rejected": len(rejected), "failed": int(df.status.isna().sum()),
        "rejected_by_status": {str(int(k)): int(v) for k, v in rejected.status.value_counts().items()},
        "wall_s": wall_s, "requests_per_s": len(ok) / wall_s, "tokens_per_s": float(ok.tokens.sum()) / wall_s,
        "ttft_p50_s": pct("ttft_s", 50), "ttft_p90_s": pct("ttft_s", 90), "ttft_p99_s": pct("ttft_s", 99),
        "tpot_p50_s": pct("tpot_s", 50), "e2e_p50_s": pct("e2e_s", 50), "e2e_p90_s": pct("e2e_s", 90),
        "e2e_p99_s": pct("e2e_s", 99),
        "tokens_from": ok.tokens_from.value_counts().to_dict() if "tokens_from" in ok else {},
    }  # fmt: skip


def sweep(url: str, model: str, clients: list[int] = (1, 4, 16), requests_per_client: int = 4, **kw) -> Measured:
    """Closed-loop runs at rising concurrency: the latency-throughput curve of one server.

    Args:
        url: the server's base URL (loopback). model: the model name. clients: concurrency levels.
        requests_per_client: requests each client sends per level. **kw: more `run_load` arguments.
    Returns:
        Measured: one summary row per concurrency level, and the latency-throughput figure.
    """
    rows = []
    for n in clients:
        res = run_load(url, model, mode="closed", clients=n, requests=n * requests_per_client, **kw)
        rows.append(res.summary)
    return Measured(pd.DataFrame(rows), latency_throughput_figure(pd.DataFrame(rows)))


def latency_throughput_figure(df: pd.DataFrame, by: str | None = None, title: str | None = None):
    """Median / p99 latency against tokens/s, one line per `by` value (e.g. scheduler).

    Args:
        df: summary rows (`summarize`). by: a column to draw one line per value of (median latency only).
        title: the figure's title.
    Returns:
        a plotly Figure.
    """
    import plotly.graph_objects as go

    if by is None:
        return line(df, "tokens_per_s", ["e2e_p50_s", "e2e_p99_s"], title or "Latency vs throughput",
                    xlabel="throughput (tokens/s)", ylabel="end-to-end latency (s)")
    fig = go.Figure()
    for name, part in df.groupby(by, sort=False):
        label = part.clients.astype(str) + " clients" if "clients" in part else None
        fig.add_trace(go.Scatter(x=part.tokens_per_s, y=part.e2e_p50_s, mode="lines+markers+text", name=str(name),
                                 text=label, textposition="top center"))
    fig.update_xaxes(title="throughput (tokens/s)")
    fig.update_yaxes(title="median end-to-end latency (s)")
    fig.update_layout(title=title or "Latency vs throughput", template="plotly_white", height=420)
    return fig
