"""Lab 02 (inference system architecture): what its smoke run must have recorded."""


def check(r: dict) -> None:
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
    assert r["versions_after_rollback"] == ["v1"]
    assert 2.0 < r["little_law_clients"] <= 4.5  # Little's law: about 4 clients in the system
    assert r["ttft_mean_ms"] > 0
