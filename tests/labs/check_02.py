"""Lab 02 (inference system architecture): what its smoke run must have recorded."""

import pytest


def _leading_matches(x: list, y: list) -> int:
    """Tokens equal from the start until the first difference (greedy prefix agreement, counted by hand)."""
    n = 0
    while n < len(x) and x[n] == y[n]:
        n += 1
    return n


def check(r: dict) -> None:
    # every version computed on the device the lab recorded (read from each engine's model), v2 in its 16-bit float
    assert set(r["served_on"]) == {"v1", "v2"} and set(r["served_on"].values()) == {r["device"]}
    assert r["canary_dtype"] == r["half_precision"]
    assert r["first_reply_status"] == 200 and r["stream_pieces"] >= 1
    assert r["refusal_statuses"] == {"malformed JSON": 400, "unknown model": 404, "max_tokens over the limit": 400,
                                     "temperature out of range": 400}
    b = r["burst"]
    assert b["sent"] == r["burst_clients"] and b["failed"] == 0  # every client got an answer: none lost
    # the server's own counters (/metrics) agree with what the clients saw
    assert r["burst_server_statuses"] == {"200": b["succeeded"], "429": b["rejected"]}
    assert b["rejected"] > 0 and set(b["rejected_by_status"]) == {"429"}  # the small queue said no
    assert abs(r["canary_measured"] - r["canary_target"]) < 0.2
    assert r["server_counts_by_version"] == r["client_counts_by_version"]  # metrics agree with clients
    # Little's law under open-loop load: the server's gauge (time-average of queue + batch, sampled from /metrics)
    # against λ·W from the clients' own clocks. The gauge leaves out the HTTP layer, so it can only be a bit lower.
    little = r["little"]
    assert little["answered"] + little["refused"] == little["sent"] and little["readings"] >= 20
    assert little["lambda_W"] == pytest.approx(little["arrival_rate"] * little["mean_latency_s"])
    assert 0.6 < little["gauge_mean"] / little["lambda_W"] <= 1.1
    # The canary's decision follows from the recorded numbers and the rule fixed up front, recomputed here by hand.
    v1, v2 = r["canary_tokens"]["v1"], r["canary_tokens"]["v2"]
    assert len(v1) == len(v2) == r["agreement_prompts"]
    assert all(len(x) == len(y) for x, y in zip(v1, v2, strict=True))
    assert r["canary_agreement"] == pytest.approx(sum(map(_leading_matches, v2, v1)) / sum(map(len, v1)))
    ttft = r["canary_ttft_p50_s"]
    assert r["canary_ttft_ratio"] == pytest.approx(ttft["v2"] / ttft["v1"])
    rule = r["canary_rule"]
    canary_requests = r["client_counts_by_version"]["v2"]  # what the clients saw v2 answer
    promote = (canary_requests >= rule["min_requests"] and r["canary_agreement"] >= rule["min_agreement"]
               and r["canary_ttft_ratio"] <= rule["max_ttft_ratio"])
    assert r["canary_action"] == ("promote" if promote else "roll back")
    assert r["versions_after_decision"] == (["v2"] if promote else ["v1"])  # the decision was carried out
    assert r["ttft_mean_ms"] > 0
