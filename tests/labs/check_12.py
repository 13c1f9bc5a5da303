"""Lab 12 (LLM serving): what its smoke run must have recorded."""


def check(r: dict) -> None:
    assert set(r["schedulers"]) >= {"sync", "dynamic", "continuous"}
    assert all(r["greedy_parity"].values()), r["greedy_parity"]  # batching never changes greedy's text
    assert r["all_succeeded"]
    # open loop: the queue holds every request of a run, so each one sent must come back answered
    assert r["open_loop_succeeded"] and all(n == r["open_loop_requests"] for n in r["open_loop_succeeded"])
    top = max(r["clients"])
    batch = r["mean_decode_batch"]
    assert batch[f"sync@{top}"] == 1 and batch[f"continuous@{top}"] > 2  # continuous really batches
    assert r["continuous_over_sync"] > 1.5  # loose: the CPU is shared during tests
    ttft = r["ttft_p50_s"]
    assert ttft[f"continuous@{top}"] < ttft[f"sync@{top}"]  # nobody waits for a whole generation
    assert r["timeline_ttft_p50_s"]["continuous"] < r["timeline_ttft_p50_s"]["sync"]
