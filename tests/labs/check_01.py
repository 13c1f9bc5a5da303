"""Lab 01: checks on the results its smoke run recorded."""

import pytest  # noqa: F401


def check(r: dict) -> None:
    assert r["val_loss_drop"] >= 0.30, r["val_loss_drop"]  # validation loss falls by at least 30 %
    assert r["final_val_loss"] < r["first_val_loss"]
    assert r["inference_step_ms"] < r["train_step_ms"]  # inference is faster ...
    assert r["inference_peak_MiB"] < r["train_peak_MiB"]  # ... and smaller
    assert r["inference_persistent_MiB"] < r["train_persistent_MiB"]
    assert r["checkpoint_roundtrip_identical"] is True
    thr = r["sweep_sequences_per_s"]
    assert max(thr) > 1.5 * thr[0]  # batching raises throughput
    assert r["sweep_latency_ms"][-1] > r["sweep_latency_ms"][0]  # ... at the cost of latency
