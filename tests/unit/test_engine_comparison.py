import math

import pytest

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
    with pytest.raises(ValueError, match="unknown engines"):
        engine_comparison.compare_variants("tiny-bloom", {"x": ("tvm", {})})


def test_matmul_ceiling_times_the_models_matmuls_alone():
    if "onnxruntime" not in available_engines():
        pytest.skip("onnxruntime is not installed here (install labkit[engines])")
    # re-warm each round (the default warmup_s): cold, the MatMul-only session ran slower than the model
    c = engine_comparison.matmul_ceiling("tiny-bloom", seq_len=16, repeat=40, rounds=2)
    assert c["matmuls"] == 4 * 4 + 1  # per layer: qkv, dense, h->4h, 4h->h; plus the LM head
    assert 0 < c["matmuls_only_ms"] < c["ort_ms"] and 0 < c["matmul_share"] < 1
    assert c["ceiling_speedup"] > c["ort_speedup"] > 1
