import math

import pandas as pd
import pytest
import torch

from labkit.engines import available_engines
from labkit.experiments import engine_comparison


def test_compare_engines_reports_every_engine_and_speedups():
    result = engine_comparison.compare_engines("digits-cnn", batch_sizes=(1, 8), repeat=5, rounds=2, warmup_s=0.0,
                                      progress=False)
    t = result.table
    assert set(t.engine) == set(engine_comparison.ENGINES)
    ran = t[t.available]
    assert set(ran.engine) == set(available_engines())
    eager = ran[ran.engine == "torch-eager"]
    assert eager.speedup_vs_eager.tolist() == [1.0, 1.0]
    assert (ran.median_ms > 0).all() and (ran.cold_start_s > 0).all()
    missing = t[~t.available]
    assert all(isinstance(r, str) and r for r in missing.reason)  # e.g. tensorrt: needs an NVIDIA GPU
    assert all(math.isnan(x) for x in missing.speedup_vs_eager)
    assert result.figure.data and engine_comparison.cold_start_figure(t).layout.yaxis.type == "log"
    assert (t.device == "cpu").all() and t.attrs["device"] == "cpu"  # every row, eager's included, names the device
    assert (ran.provider.str.len() > 0).all()


def test_onnxruntime_beats_eager_on_tiny_bloom():
    if "onnxruntime" not in available_engines():
        pytest.skip("onnxruntime is not installed here (install labkit[engines])")
    t = engine_comparison.compare_engines("tiny-bloom", engines=["onnxruntime"], repeat=20, progress=False).table
    assert t.set_index("engine").loc["onnxruntime", "speedup_vs_eager"] > 1.2


def test_compare_variants_times_options_of_one_engine_next_to_eager():
    if "onnxruntime" not in available_engines():
        pytest.skip("onnxruntime is not installed here (install labkit[engines])")
    variants = {"plain export": ("onnxruntime", {"fused_attention": False}), "fused": ("onnxruntime", {})}
    result = engine_comparison.compare_variants("tiny-bloom", variants, seq_len=16, repeat=10, rounds=2)
    t = result.table.set_index("variant")
    assert list(t.index) == ["torch-eager", "plain export", "fused"]
    assert t.loc["torch-eager", "speedup_vs_eager"] == 1.0 and (t.median_ms > 0).all()
    assert (t.relative_diff <= 1e-4).all() and result.figure.data
    assert (t.device == "cpu").all() and t.provider.loc["fused"].startswith("CPUExecutionProvider")
    with pytest.raises(ValueError, match="unknown engines"):
        engine_comparison.compare_variants("tiny-bloom", {"x": ("tvm", {})})
    with pytest.raises(ValueError, match="variants run on the comparison's `device`"):
        engine_comparison.compare_variants("tiny-bloom", {"x": ("torch-eager", {"device": "cuda"})})


def test_matmul_ceiling_times_the_models_matmuls_alone():
    if "onnxruntime" not in available_engines():
        pytest.skip("onnxruntime is not installed here (install labkit[engines])")
    # re-warm each round (the default warmup_s): cold, the MatMul-only session ran slower than the model
    c = engine_comparison.matmul_ceiling("tiny-bloom", seq_len=16, repeat=40, rounds=2)
    assert c["matmuls"] == 4 * 4 + 1  # per layer: qkv, dense, h->4h, 4h->h; plus the LM head
    assert 0 < c["matmuls_only_ms"] < c["ort_ms"] and 0 < c["matmul_share"] < 1
    assert c["ceiling_speedup"] > c["ort_speedup"] > 1
    assert c["device"] == "cpu"


def test_payback_is_cold_start_over_what_each_request_saves():
    rows = [{"engine": "torch-eager", "available": True, "median_ms": 10.0, "cold_start_s": 0.01},
            {"engine": "fast", "available": True, "median_ms": 8.0, "cold_start_s": 1.0},  # saves 2 ms a request
            {"engine": "slow", "available": True, "median_ms": 12.0, "cold_start_s": 0.5},  # saves nothing
            {"engine": "missing", "available": False, "median_ms": math.nan, "cold_start_s": math.nan}]
    table = pd.DataFrame([{**r, "device": "cpu", "batch_size": 1, "seq_len": 32, "threads": 2} for r in rows])
    pay = engine_comparison.payback(table).set_index("engine")
    assert list(pay.index) == ["fast", "slow"]  # engines that ran, eager being the baseline
    assert pay.loc["fast", "saved_ms"] == pytest.approx(2.0)
    assert pay.loc["fast", "break_even_requests"] == pytest.approx(1.0 / 2e-3)  # 1 s / 2 ms = 500 requests
    assert pay.loc["slow", "break_even_requests"] == math.inf


def test_device_for_keeps_a_comparison_on_one_device(monkeypatch):
    assert engine_comparison.device_for("openvino", "cpu") == (torch.device("cpu"), "")
    with pytest.raises(ValueError, match="unknown engine 'tvm'"):
        engine_comparison.device_for("tvm", "cpu")
    # as on a GPU machine: the lab's device is cuda:0, where OpenVINO does not run
    monkeypatch.setattr(engine_comparison, "engine_device", lambda device: torch.device("cuda", 0))
    where, note = engine_comparison.device_for("openvino", "cuda")
    assert where == torch.device("cpu") and "openvino cannot run on cuda:0" in note and "eager included" in note
    assert engine_comparison.device_for("torch-eager", "cuda") == (torch.device("cuda", 0), "")


@pytest.mark.gpu
def test_a_gpu_comparison_times_every_engine_against_gpu_eager():
    t = engine_comparison.compare_engines("digits-cnn", engines=["torchscript", "onnxruntime", "openvino", "tensorrt"],
                                          repeat=5, rounds=1, warmup_s=0.0, progress=False, device="cuda").table
    here = f"cuda:{torch.cuda.current_device()}"
    assert set(t.device) == {here} and t.attrs["device"] == here
    rows = t.set_index("engine")
    assert rows.loc["torch-eager", "available"] and rows.loc["torch-eager", "speedup_vs_eager"] == 1.0
    assert not rows.loc["openvino", "available"] and "runs on cpu only" in rows.loc["openvino", "reason"]
