"""The load generator: loopback only, open and closed loop, every request accounted for."""

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
