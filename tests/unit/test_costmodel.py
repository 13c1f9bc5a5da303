"""The TP / naive-PP cost model: calibration against the published BLOOM-176B rows, OOM cells, physics."""

import math
from dataclasses import replace

import pytest

from labkit.models import specs
from labkit.parallel import costmodel as cm


@pytest.fixture(scope="module")
def fit():
    return cm.fit_table()


def test_bloom_shape_from_config():
    m, cfg = cm.shape("bloom-176b"), specs.MODEL_CONFIGS["bloom-176b"]
    assert (m.layers, m.hidden, m.vocab) == (cfg["n_layer"], cfg["hidden_size"], cfg["vocab_size"])
    assert m.weight_bytes / 1e9 == pytest.approx(specs.BLOOM_176B_BF16_GB, rel=5e-3)  # "needs 352 GB"
    assert m.kv_bytes_per_token == 2 * 70 * 14336 * 2  # K and V × layers × hidden × 2 bytes: no grouped-query heads


def test_kv_bytes_come_from_the_grouped_query_formula():
    """Llama-3-70B: 80 layers, 8 KV heads of 128 dims (64 query heads); KV = 2 × layers × kv_heads × head_dim × 2 B."""
    assert cm.shape("llama-3-70b").kv_bytes_per_token == 2 * 80 * 8 * 128 * 2 == 327_680
    assert cm.shape("llama-3-70b", "int8", "int8").kv_bytes_per_token == 327_680 // 2
    assert cm.shape("llama-3-70b", "int8").weight_bytes == cm.shape("llama-3-70b").weight_bytes / 2
    with pytest.raises(ValueError, match="choose from .*bloom-176b"):
        cm.shape("gpt-5")


def test_within_25_percent_of_every_published_point(fit):
    timed = fit[~fit.published_oom]
    published = [(e, b) for e, row in specs.PUBLISHED_MS_PER_TOKEN.items() for b, ms in row.items() if ms is not None]
    assert sorted(zip(timed.engine, timed.batch, strict=True)) == sorted(published)
    assert not timed.predicted_oom.any()
    assert timed.error_pct.abs().max() < 25, timed[["engine", "batch", "error_pct"]]
    for row in timed.itertuples():  # the error is the predicted time against the published one
        assert row.published_ms == specs.PUBLISHED_MS_PER_TOKEN[row.engine][row.batch]
        assert row.error_pct == pytest.approx(100 * (row.predicted_ms / row.published_ms - 1))
    assert cm.fit_residual_pct() == pytest.approx(max(abs(r.error_pct) for r in timed.itertuples()))


def test_predicts_oom_exactly_where_published(fit):
    oom = fit[fit.predicted_oom]
    published_oom = [(e, b) for e, row in specs.PUBLISHED_MS_PER_TOKEN.items() for b, ms in row.items() if ms is None]
    assert sorted(zip(oom.engine, oom.batch, strict=True)) == sorted(published_oom)
    assert (fit.predicted_oom == fit.published_oom).all()


def test_fitted_constants_are_physical():
    for engine in cm.calibrate().values():
        assert 0.05 < engine.flop_efficiency <= 1.0
        assert 0.0 <= engine.layer_overhead_ms < 2.0
    lo, hi = cm.workspace_interval("accelerate")
    assert 0 < lo < cm.calibrate()["accelerate"].workspace < hi


def test_tp_beats_naive_pp_and_scales_with_gpus():
    m, gpu = cm.shape("bloom-176b"), specs.A100_80GB
    engines = cm.calibrate()
    tp8 = cm.ms_per_token(engines["ds-inference"], m, gpu, 8, 1)
    pp8 = cm.ms_per_token(engines["accelerate"], m, gpu, 8, 1)
    assert pp8["weights (HBM)"] == pytest.approx(8 * tp8["weights (HBM)"])  # one GPU streams at a time
    cheap = replace(engines["ds-inference"], layer_overhead_ms=0.0)
    assert cm.ms_per_token(cheap, m, gpu, 16, 1)["ms_per_token"] < cm.ms_per_token(cheap, m, gpu, 8, 1)["ms_per_token"]
    slow_link = replace(gpu, link_GBps=16)
    assert (cm.ms_per_token(engines["ds-inference"], m, slow_link, 8, 64)["communication"]
            > 10 * cm.ms_per_token(engines["ds-inference"], m, gpu, 8, 64)["communication"])


def test_offload_when_weights_do_not_fit():
    """2×A100 cannot hold BLOOM-176B: naive PP streams the rest from the CPU (published: ~15 s/token)."""
    r = cm.predict(gpus=2, batch=1).table.set_index("engine")
    assert not r.loc["ds-inference", "fits"]
    on_gpus = 2 * cm.OFFLOAD_ABOVE * specs.A100_80GB.memory_GB - 2 * cm.RESERVED_GB  # GB of weights the GPUs keep
    assert r.loc["accelerate", "offloaded_GB"] == pytest.approx(cm.shape().weight_bytes / 1e9 - on_gpus, rel=0.15)
    published_ms = specs.ACCELERATE_2XA100_OFFLOAD_S_PER_TOKEN * 1e3
    assert published_ms / 2 < r.loc["accelerate", "ms_per_token"] < 2 * published_ms  # within 2× of "about 15 s"


def test_predict_table_figure_and_errors():
    r = cm.predict(batch=16)  # the defaults: the published 8×A100-80GB
    t = r.table.set_index("engine")
    assert t.loc["ds-inference", "ms_per_token"] == pytest.approx(specs.PUBLISHED_MS_PER_TOKEN["ds-inference"][16],
                                                                  rel=0.25)
    assert t.fits.all() and len(r.figure.data) >= 5
    oom_batch = min(b for b, ms in specs.PUBLISHED_MS_PER_TOKEN["accelerate"].items() if ms is None)
    assert math.isnan(cm.predict(batch=oom_batch).table.set_index("engine").loc["accelerate", "ms_per_token"])
    with pytest.raises(ValueError, match="choose from"):
        cm.predict(model="gpt-5")
    with pytest.raises(ValueError, match=">= 1"):
        cm.predict(gpus=0)
    fig = cm.published_vs_predicted().figure
    assert len(fig.data) == 4
