"""Lab 00: checks on the results its smoke run recorded."""

import pytest
import torch

from labkit import devices, models
from labkit.models import specs


def datasheet(device_label: str) -> specs.GPU | None:
    """The datasheet of the GPU named in a device label ("cuda:0 (NVIDIA H200)" → H200), None for a CPU or an
    unlisted GPU; of several variants (A100 40 / 80 GB) the fastest, so the check is an upper bound."""
    found = [g for key, g in specs.GPUS.items() if key.split("-")[0] in device_label]
    return max(found, key=lambda g: (g.hbm_TBps, g.tflops)) if found else None


def check(r: dict) -> None:
    assert r["logical_cores"] >= 1
    assert 0.5 < r["bandwidth_GBps"] < 20_000
    fp32_weights, half_weights = (models.estimate_memory("smollm2-135m", p).bytes / 1e9
                                  for p in ("fp32", r["half_precision"]))
    assert fp32_weights == pytest.approx(0.538060032)  # SmolLM2-135M: 134,515,008 parameters × 4 B
    assert r["smollm2_fp32_bound_tok_s"] == pytest.approx(r["bandwidth_GBps"] / fp32_weights, rel=1e-6)
    assert r["smollm2_half_bound_tok_s"] == pytest.approx(2 * r["smollm2_fp32_bound_tok_s"], rel=1e-6)
    # every number is labelled with the device it was measured on: the lab's device, named by the driver / probe
    where = "cuda:0" if r["device_type"] == "cuda" else "cpu"
    assert r["bandwidth_measured_on"] == devices.device_name(where)
    assert r["bandwidth_devices"] == [where] and r["flops_measured_on"] == where
    # the ridge point is FLOP/s ÷ bytes/s of the recorded numbers
    assert r["ridge_flop_per_byte"] == pytest.approx(r["flops_fp32"] / (r["bandwidth_GBps"] * 1e9))
    assert r["ridge_half_flop_per_byte"] == pytest.approx(r["flops_half"] / (r["bandwidth_GBps"] * 1e9))
    assert r["flops_half_precision"] == r["half_precision"] and r["flops_fp32"] > 1e8
    if r["device_type"] == "cuda":  # tensor cores: the 16-bit matmul beats fp32; nothing beats the datasheet
        assert r["flops_half"] > r["flops_fp32"]
        sheet = datasheet(r["device"])
        if sheet is not None:
            assert r["bandwidth_GBps"] <= 1.1 * sheet.hbm_TBps * 1e3
            assert r["flops_half"] <= 1.1 * sheet.tflops * 1e12
    assert r["cuda"] == torch.cuda.is_available()
    assert {"00_start_here.ipynb", "01_lifecycle_training_vs_inference.ipynb"} <= set(r["labs_available"])
    assert 0 < r["tiny_bloom_forward_median_ms"] <= r["tiny_bloom_forward_p99_ms"]
