"""The load generator: loopback only, open and closed loop, every request accounted for."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("httpx", reason="the serving extra is not installed (pip install labkit[serve])")

from labkit.serving.loadgen import check_loopback, run_load, summarize, sweep


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://localhost:1", "http://[::1]:8000", "http://127.8.9.1"])
def test_loopback_targets_are_allowed(url):
    check_loopback(url)


@pytest.mark.parametrize("url", ["http://10.0.0.1:8000", "https://api.openai.com", "http://192.168.1.2", "http://0.0.0.0"])
def test_other_targets_are_refused(url):
    with pytest.raises(ValueError, match="loopback"):
        run_load(url, "m", requests=1)


def test_bad_mode_is_refused():
    with pytest.raises(ValueError, match="closed"):
        run_load("http://127.0.0.1:1", "m", mode="burst")


def test_summary_percentiles_and_accounting():
    nan = np.nan
    df = pd.DataFrame({"index": range(5), "status": [200, 200, 200, 429, None],
                       "ttft_s": [0.1, 0.2, 0.3, nan, nan], "e2e_s": [1.0, 2.0, 3.0, nan, nan],
                       "tpot_s": [0.01, 0.02, 0.03, nan, nan], "tokens": [10, 10, 10, 0, 0]})
    s = summarize(df, wall_s=2.0)
    assert (s["sent"], s["succeeded"], s["rejected"], s["failed"]) == (5, 3, 1, 1)
    assert s["rejected_by_status"] == {"429": 1}
    assert s["tokens_per_s"] == 15 and s["requests_per_s"] == 1.5
    assert s["e2e_p50_s"] == 2.0 and s["ttft_p50_s"] == pytest.approx(0.2)


def test_open_and_closed_loop_against_a_server(tiny_bloom):
    from labkit.serving.app import Server, create_app
    from labkit.serving.repository import ModelRepository

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    repo = ModelRepository("continuous", max_batch=8)
    repo.load("m", "v1", loaded=tiny_bloom)
    try:
        with Server(create_app(repo)) as srv:
            opened = run_load(srv.url, "m", mode="open", rate=40, requests=12, max_tokens=4)
            curve = sweep(srv.url, "m", clients=[1, 4], requests_per_client=2, max_tokens=4)
            unbounded = run_load(srv.url, "m", mode="open", rate=5, requests=1000, duration_s=0.5, max_tokens=2)
    finally:
        torch.set_num_threads(threads)
    s = opened.summary
    assert s["sent"] == s["succeeded"] == 12 and s["mode"] == "open" and s["rate"] == 40
    assert (opened.records.tokens == 4).all() and (opened.records.ttft_s <= opened.records.e2e_s).all()
    assert np.diff(opened.records.sent_s).min() >= 0  # arrivals are spread out, in order
    assert list(curve.table.clients) == [1, 4] and list(curve.table.sent) == [2, 8]
    assert len(curve.figure.data) == 2
    assert 0 < unbounded.summary["sent"] < 20  # bounded by time, not by the count


def fake_openai_server(honours_include_usage: bool, seen: list):
    """A minimal standard-behaving OpenAI server (not labkit's): three chunks of two tokens each, and the usage
    chunk only when the request asks for it with stream_options.include_usage (an older server never sends it)."""
    import asyncio
    import types

    from fastapi import FastAPI, Request
    from fastapi.responses import StreamingResponse

    from labkit.serving.app import Server

    app = FastAPI()
    app.state.repo = types.SimpleNamespace(close=lambda drain: None)  # Server.stop() closes the repository

    async def answer(request: Request, chat: bool):
        body = await request.json()
        seen.append(body)

        def chunk(choices, **extra):
            obj = {"id": "x", "object": "chat.completion.chunk" if chat else "text_completion", "created": 0,
                   "model": body["model"], "choices": choices, **extra}
            return f"data: {json.dumps(obj)}\n\n"

        async def events():
            for i, text in enumerate(["ab", "cd", "ef"]):
                await asyncio.sleep(0.01)
                piece = {"delta": {"content": text}} if chat else {"text": text}
                yield chunk([{"index": 0, **piece, "finish_reason": "length" if i == 2 else None}])
            if honours_include_usage and (body.get("stream_options") or {}).get("include_usage"):
                yield chunk([], usage={"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9})
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await answer(request, False)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await answer(request, True)

    return Server(app)


@pytest.mark.parametrize("chat", [False, True])
def test_tokens_come_from_the_standard_usage_chunk_of_any_server(chat):
    seen: list = []
    with fake_openai_server(True, seen) as srv:
        res = run_load(srv.url, "m", clients=2, requests=4, max_tokens=6, chat=chat)
    assert all(b["stream_options"] == {"include_usage": True} and ("messages" in b) == chat for b in seen)
    rec = res.records
    assert (rec.tokens == 6).all() and (rec.tokens_from == "usage").all()  # 6 from usage, not the 3 chunks
    assert res.summary["tokens_per_s"] > 0 and np.isfinite(res.summary["tpot_p50_s"])
    assert res.summary["tokens_from"] == {"usage": 4}


def test_a_server_without_usage_is_measured_by_counting_text_chunks_and_says_so():
    with fake_openai_server(False, []) as srv:
        res = run_load(srv.url, "m", clients=1, requests=2, max_tokens=6)
    assert (res.records.tokens == 3).all() and (res.records.tokens_from == "chunks").all()
    assert res.summary["tokens_from"] == {"chunks": 2} and res.summary["tokens_per_s"] > 0


def test_labkit_server_chat_and_completions_report_usage_tokens(tiny_bloom):
    from labkit.serving.app import Server, create_app
    from labkit.serving.repository import ModelRepository

    repo = ModelRepository("continuous", max_batch=4)
    repo.load("m", "v1", loaded=tiny_bloom)
    with Server(create_app(repo)) as srv:
        done = run_load(srv.url, "m", clients=2, requests=4, max_tokens=5)
        chat = run_load(srv.url, "m", clients=2, requests=4, max_tokens=5, chat=True)
    for res in (done, chat):
        assert res.summary["succeeded"] == 4 and res.summary["tokens_from"] == {"usage": 4}
        assert (res.records.tokens == 5).all() and np.isfinite(res.summary["tpot_p50_s"])
