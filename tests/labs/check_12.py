"""Lab 12 (LLM serving): what its smoke run must have recorded."""

import pytest


def check(r: dict) -> None:
    # every engine of the sweeps computed on the recorded device (read from each engine's model), and the step cost
    # was timed on the same hardware
    assert r["served_on"] == [r["device"]]
    assert r["step_measured_on"] in r["device"]
    assert set(r["schedulers"]) >= {"sync", "dynamic", "continuous"}
    assert all(r["greedy_parity"].values()), r["greedy_parity"]  # batching never changes greedy's text
    assert r["all_succeeded"]
    # open loop: the queue holds every request of a run, so each one sent must come back answered
    assert r["open_loop_succeeded"] and all(n == r["open_loop_requests"] for n in r["open_loop_succeeded"])
    top = max(r["clients"])
    batch = r["mean_decode_batch"]
    assert batch[f"sync@{top}"] == 1 and batch[f"continuous@{top}"] > 2  # continuous really batches
    assert r["continuous_over_sync"] > 1.5  # loose: the CPU is shared during tests
    # the step cost that bounds batching: measured at batch 1 and at the top concurrency, with its ridge point
    assert r["step_batches"] == [1, top]
    # more sequences never make a step cheaper (on a GPU the smoke model's step is launch-bound: no order to see)
    assert r["step_ratio_top_vs_1"] > 1 or r["device_type"] == "cuda"
    # the ridge as a batch: FLOP/s ÷ bandwidth (FLOP/byte) × 4 B per fp32 weight ÷ 2 FLOPs per weight and sequence
    assert r["step_ridge_batch"] == pytest.approx(r["step_gflops"] / r["step_bandwidth_GBps"] * 4 / 2)
    ttft = r["ttft_p50_s"]
    assert ttft[f"continuous@{top}"] < ttft[f"sync@{top}"]  # nobody waits for a whole generation
    assert r["timeline_ttft_p50_s"]["continuous"] < r["timeline_ttft_p50_s"]["sync"]
