"""Lab 01 (training vs inference): checks on the results its smoke run recorded, against independent formulas."""

import math

import pytest

from labkit import models


def check(r: dict) -> None:
    # Before training, a freshly initialised model predicts every token about equally: loss ≈ ln(vocabulary size).
    vocab = models.get_config("tiny-bloom").vocab_size
    assert r["first_val_loss"] == pytest.approx(math.log(vocab), abs=0.5)
    assert r["val_loss_drop"] >= 0.30, r["val_loss_drop"]  # validation loss falls by at least 30 %
    assert r["final_val_loss"] < r["first_val_loss"]
    assert r["inference_step_ms"] < r["train_step_ms"]  # inference is faster ...
    assert r["inference_peak_MiB"] < r["train_peak_MiB"]  # ... and smaller
    # Between steps, inference keeps the fp32 weights; training adds AdamW's two fp32 moments per weight (gradients
    # are freed after each step): 4 B vs 12 B per parameter, parameters counted on the meta device.
    weights_MiB = models.estimate_memory("tiny-bloom", "fp32").bytes / 2**20
    assert r["inference_persistent_MiB"] == pytest.approx(weights_MiB, rel=1e-3)
    assert r["train_persistent_MiB"] == pytest.approx(3 * weights_MiB, rel=1e-3)
    assert r["checkpoint_roundtrip_identical"] is True
    thr = r["sweep_sequences_per_s"]
    assert max(thr) > 1.5 * thr[0]  # batching raises throughput
    assert r["sweep_latency_ms"][-1] > r["sweep_latency_ms"][0]  # ... at the cost of latency
