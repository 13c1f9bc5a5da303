"""Lab 00: checks on the results its smoke run recorded."""

import pytest
import torch

from labkit import hardware


def check(r: dict) -> None:
    assert r["logical_cores"] >= 1
    assert 0.5 < r["bandwidth_GBps"] < 20_000
    assert r["smollm2_fp32_bound_tok_s"] == pytest.approx(r["bandwidth_GBps"] / 0.538060032, rel=1e-6)
    # the bound is labelled with the device it was measured on: this CPU, as the hardware probe names it
    assert r["bandwidth_measured_on"] == hardware.detect().cpu_model
    assert r["bandwidth_devices"] == (["cpu", "cuda:0"] if torch.cuda.is_available() else ["cpu"])
    assert {"00_start_here.ipynb", "01_lifecycle_training_vs_inference.ipynb"} <= set(r["labs_available"])
    assert 0 < r["tiny_bloom_forward_median_ms"] <= r["tiny_bloom_forward_p99_ms"]
