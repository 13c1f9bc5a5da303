"""experiments.inference_system: Little's law from the server's gauge under open-loop load, and the canary rule."""

import pytest
import torch

pytest.importorskip("httpx", reason="the serving extra is not installed (pip install labkit[serve])")
pytest.importorskip("fastapi", reason="the serving extra is not installed (pip install labkit[serve])")

from labkit.experiments import inference_system
from labkit.models import load_model
from labkit.serving.app import Server, create_app
from labkit.serving.repository import ModelRepository


@pytest.fixture(scope="module")
def served():
    """tiny-bloom-shakespeare as "bard" v1 (fp32) and v2 (the same weights again), continuous batching."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # no OpenMP spin-waits on a shared CPU (see test_serving.py)
    bard = load_model("tiny-bloom-shakespeare", device="cpu")
    repo = ModelRepository(max_batch=4, max_queue=8)
    repo.load("bard", "v1", loaded=bard)
    repo.load("bard", "v2", loaded=bard)
    with Server(create_app(repo, max_tokens_limit=64, request_timeout_s=30)) as srv:
        yield repo, srv
    torch.set_num_threads(before)


def test_gauge_integral_holds_each_reading_until_the_next():
    sampler = inference_system.InFlightSampler("http://127.0.0.1:1", "bard")
    sampler.rows = [{"t_s": t, "queue": q, "running": r, "in_flight": q + r}
                    for t, q, r in [(0.0, 0, 0), (0.1, 1, 2), (0.4, 0, 1), (0.5, 0, 0)]]  # fmt: skip
    assert sampler.request_seconds() == pytest.approx(3 * 0.3 + 1 * 0.1)  # by hand: 3 inside for 0.3 s, 1 for 0.1 s
    with pytest.raises(ValueError, match="loopback"):
        inference_system.InFlightSampler("http://example.com", "bard")


def test_littles_law_holds_under_open_loop_load(served):
    _, srv = served
    check = inference_system.littles_law(srv.url, "bard", ["ROMEO:\n"], rate=8.0, requests=20, max_tokens=8)
    row = check.table.iloc[0]
    assert row.answered + row.refused == row.sent == 20 and row.readings >= 20
    ok = check.load.records[check.load.records.status == 200]
    assert row.mean_latency_s == pytest.approx(ok.e2e_s.mean())  # W: the clients' own clocks
    assert row.arrival_rate == pytest.approx(row.answered / row.window_s)
    # L from the server's gauge, W and λ from the clients: two independent sides of Little's law. The gauge leaves
    # out the HTTP layer around the engine, so it is at most λ·W (plus sampling noise).
    assert 0.6 < row.gauge_over_lambda_W <= 1.1
    assert check.samples.in_flight.max() <= 4 + 8  # never more than the batch slots and the queue
    assert check.samples.in_flight.iloc[-1] == 0  # every request was back before the sampler stopped


def test_greedy_tokens_of_identical_versions_agree(served):
    repo, _ = served
    prompts = ["ROMEO:\n", "JULIET:\nO Romeo,"]
    v1, v2 = (inference_system.greedy_tokens(repo, "bard", v, prompts, max_tokens=6) for v in ("v1", "v2"))
    assert v1 == v2 and [len(t) for t in v1] == [6, 6]  # exactly max_tokens each: no stop at end-of-text
    decision = inference_system.canary_decision(v1, v2, 0.10, 0.11, canary_requests=9, min_agreement=0.9,
                                                max_ttft_ratio=1.25)
    assert decision.agreement == 1.0 and decision.promote
    with pytest.raises(ValueError, match="loaded versions"):
        inference_system.greedy_tokens(repo, "bard", "v3", prompts)
    with pytest.raises(ValueError, match="queue holds 8"):
        inference_system.greedy_tokens(repo, "bard", "v1", prompts * 5)


@pytest.mark.parametrize("canary, ttft, served, action", [
    ([[1, 2, 3, 4]], 0.12, 5, "promote"),  # same tokens, 1.2x the TTFT, 5 requests: inside every threshold
    ([[1, 2, 9, 9]], 0.10, 5, "roll back"),  # agreement 0.5 < 0.9
    ([[1, 2, 3, 4]], 0.20, 5, "roll back"),  # 2x the TTFT > 1.25
    ([[1, 2, 3, 4]], 0.10, 4, "roll back"),  # too few canary requests to judge its TTFT
])  # fmt: skip
def test_canary_rule_follows_the_thresholds(canary, ttft, served, action):
    decision = inference_system.canary_decision([[1, 2, 3, 4]], canary, 0.10, ttft, served, 0.9, 1.25, min_requests=5)
    assert decision.action == action
    assert decision.table().passed.tolist() == [served >= 5, decision.agreement >= 0.9, decision.ttft_ratio <= 1.25]


def test_canary_rule_refuses_bad_input():
    with pytest.raises(ValueError, match="min_agreement"):
        inference_system.canary_decision([[1]], [[1]], 0.1, 0.1, 5, min_agreement=1.5)
    with pytest.raises(ValueError, match="TTFTs must be positive"):
        inference_system.canary_decision([[1]], [[1]], 0.1, 0.0, 5)
    assert inference_system.canary_decision([[1]], [[1]], 0.1, float("nan"), 0).action == "roll back"  # no traffic
    with pytest.raises(ValueError, match="different lengths"):
        inference_system.canary_decision([[1, 2]], [[1]], 0.1, 0.1, 5)
