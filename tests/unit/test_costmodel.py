"""The TP / naive-PP cost model: calibration against the published BLOOM-176B rows, OOM cells, physics."""

import math
from dataclasses import replace

import pytest

from labkit.parallel import costmodel as cm


@pytest.fixture(scope="module")
def fit():
    return cm.fit_table()


def test_bloom_shape_from_config():
    m = cm.shape("bloom-176b")
    assert (m.layers, m.hidden, m.vocab) == (70, 14336, 250880)
    assert 176e9 < m.params < 176.5e9 and m.weight_bytes == pytest.approx(352.5e9, rel=1e-3)  # "needs 352 GB"


def test_within_25_percent_of_every_published_point(fit):
    timed = fit[~fit.published_oom]
    assert len(timed) == 10
    assert not timed.predicted_oom.any()
    assert timed.error_pct.abs().max() < 25, timed[["engine", "batch", "error_pct"]]


def test_predicts_oom_exactly_where_published(fit):
    oom = fit[fit.predicted_oom]
    assert sorted(zip(oom.engine, oom.batch, strict=True)) == [("accelerate", 64), ("ds-inference", 256)]
    assert (fit.predicted_oom == fit.published_oom).all()


def test_fitted_constants_are_physical():
    for engine in cm.calibrate().values():
        assert 0.05 < engine.flop_efficiency <= 1.0
        assert 0.0 <= engine.layer_overhead_ms < 2.0
    lo, hi = cm.workspace_interval("accelerate")
    assert 0 < lo < cm.calibrate()["accelerate"].workspace < hi


def test_tp_beats_naive_pp_and_scales_with_gpus():
    m, gpu = cm.shape("bloom-176b"), cm.A100_80GB
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
    assert r.loc["accelerate", "offloaded_GB"] > 150
    assert 5_000 < r.loc["accelerate", "ms_per_token"] < 40_000


def test_predict_table_figure_and_errors():
    r = cm.predict(gpus=8, gpu_memory_gb=80, link_GBps=300, batch=16)
    t = r.table.set_index("engine")
    assert t.loc["ds-inference", "ms_per_token"] == pytest.approx(3.01, rel=0.25)
    assert t.fits.all() and len(r.figure.data) >= 5
    assert math.isnan(cm.predict(batch=64).table.set_index("engine").loc["accelerate", "ms_per_token"])
    with pytest.raises(ValueError, match="choose from"):
        cm.predict(model="gpt-5")
    with pytest.raises(ValueError, match=">= 1"):
        cm.predict(gpus=0)
    fig = cm.published_vs_predicted().figure
    assert len(fig.data) == 4
