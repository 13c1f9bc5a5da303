"""The serving planner: memory per backend, what fits, ZeRO-Inference's model, the published rows."""

import math

import pytest

from labkit.experiments import serving_plan
from labkit.models import specs
from labkit.parallel import costmodel as cm


@pytest.fixture(scope="module")
def default():
    return serving_plan.plan().table.set_index("backend")


def test_plan_reproduces_the_published_rows_as_the_cost_model_does():
    table = serving_plan.published_check().table
    cells = [(e, b) for e, row in specs.PUBLISHED_MS_PER_TOKEN.items() for b in row]
    assert sorted(zip(table.engine, table.batch, strict=True)) == sorted(cells)
    timed = table.dropna(subset=["error_pct"])
    for row in timed.itertuples():  # against the published time, not a copy of it
        assert row.published_ms == specs.PUBLISHED_MS_PER_TOKEN[row.engine][row.batch]
        assert row.error_pct == pytest.approx(100 * (row.predicted_ms / row.published_ms - 1))
    # plan() prices accelerate / ds-inference through its own generation loop: it must agree with the calibration
    fit = cm.fit_table().dropna(subset=["error_pct"]).set_index(["engine", "batch"]).predicted_ms
    assert timed.set_index(["engine", "batch"]).predicted_ms.sort_index().to_numpy() == pytest.approx(
        fit.sort_index().to_numpy(), rel=1e-9)
    assert timed.error_pct.abs().max() == pytest.approx(cm.fit_residual_pct())
    assert table.oom_agrees.all()  # the published OOM cells will not fit, and only those
    assert sorted(table[table.published_ms.isna()].engine) == sorted(specs.PUBLISHED_MS_PER_TOKEN)


def test_zero_inference_streams_the_whole_model_every_step(default):
    m, gpu = cm.shape("bloom-176b"), specs.A100_80GB
    step = serving_plan.zero_step_ms(m, gpu, 8, seqs=2, context=10, new=1, offload=True)
    link = gpu.link_GBps * 1e9 * cm.LINK_EFFICIENCY
    assert step["communication"] == pytest.approx(7 / 8 * m.weight_bytes / link * 1e3)  # all-gather 7/8 of it
    assert step["CPU offload"] == pytest.approx(m.weight_bytes / 8 / (cm.HOST_GBPS * 1e9) * 1e3)  # own 1/8 over PCIe
    assert serving_plan.zero_step_ms(m, gpu, 1, 2, 10, 1, offload=False)["communication"] == 0.0
    mem = serving_plan.zero_memory_gb(m, gpu, 8, seqs=2, tokens=110, offload=False)
    assert mem["weights"] == pytest.approx(m.weight_bytes / 8 / 1e9)
    assert serving_plan.zero_memory_gb(m, gpu, 8, 2, 110, offload=True)["weights"] == 0.0
    assert mem["gathered"] > m.vocab * m.hidden * 2 / 1e9  # the embedding is the largest gathered tensor
    assert default.loc["zero-offload", "offloaded_GB"] == pytest.approx(m.weight_bytes / 1e9)


def test_what_fits_on_two_gpus_and_on_a_small_host():
    two = serving_plan.plan(gpus=2, batch=1).table.set_index("backend")
    assert not two.loc["ds-inference", "fits"] and two.loc["ds-inference", "why"].startswith("will not fit: needs")
    assert math.isnan(two.loc["ds-inference", "ms_per_token"])
    assert two.loc["accelerate", "fits"] and two.loc["accelerate", "offloaded_GB"] > 150  # streams from the CPU
    small_host = serving_plan.plan(gpus=1, batch=1, host_memory_gb=100).table.set_index("backend")
    assert not small_host.fits.any()
    assert "offloaded to a 100 GB host" in small_host.loc["zero-offload", "why"]


def test_int8_halves_the_weights_but_not_the_kv_cache(default):
    int8 = serving_plan.plan(precision="int8").table.set_index("backend")
    assert int8.loc["ds-inference", "weights_GB"] == pytest.approx(default.loc["ds-inference", "weights_GB"] / 2)
    assert int8.loc["ds-inference", "KV cache_GB"] == pytest.approx(default.loc["ds-inference", "KV cache_GB"])
    assert int8.loc["ds-inference", "workspace_GB"] == pytest.approx(default.loc["ds-inference", "workspace_GB"])
    assert int8.loc["ds-inference", "ms_per_token"] < default.loc["ds-inference", "ms_per_token"]


def test_kv_cache_is_grouped_query_aware():
    """Llama-3-70B keeps 8 of its 64 heads' K and V: 2 × 80 layers × 8 × 128 × 2 bytes per token, int8 weights too."""
    gqa = serving_plan.plan(model="llama-3-70b", precision="int8", batch=4, prompt=10, new_tokens=100)
    kv_gb = gqa.table.set_index("backend").loc["ds-inference", "KV cache_GB"]
    assert kv_gb == pytest.approx(4 * 110 * 2 * 80 * 8 * 128 * 2 / specs.BLOOM_BENCHMARK_GPUS / 1e9)


def test_precision_spellings_are_accepted_and_shown_canonically(default):
    old = serving_plan.plan(precision="bfloat16")
    assert old.table.attrs["precision"] == "bf16" and "bf16" in old.figure.layout.title.text
    assert old.table.set_index("backend").ms_per_token.to_numpy() == pytest.approx(default.ms_per_token.to_numpy())


def test_ms_per_token_latency_and_throughput_are_one_accounting(default):
    new_tokens = specs.BLOOM_BENCHMARK_NEW_TOKENS
    for row in default.itertuples():
        assert row.request_latency_s == pytest.approx(row.ms_per_token * 16 * new_tokens / 1e3)
        assert row.tokens_per_s == pytest.approx(1e3 / row.ms_per_token)
    parts = [c for c in default.columns if c.endswith("_ms")]
    assert default[parts].sum(axis=1).to_numpy() == pytest.approx(default.ms_per_token.to_numpy())


def test_bad_inputs_name_the_choices():
    with pytest.raises(ValueError, match="choose from .*A100-80GB SXM"):
        serving_plan.plan(gpu_type="TPU")
    with pytest.raises(ValueError, match="choose from .*int8"):
        serving_plan.plan(precision="fp32")
    with pytest.raises(ValueError, match="choose from"):
        serving_plan.plan(precision="float64")
    with pytest.raises(ValueError, match=">= 1"):
        serving_plan.plan(gpus=0)
    with pytest.raises(ValueError, match="type's own"):
        serving_plan.plan(link_GBps=-1)
    with pytest.raises(ValueError, match="choose from"):
        serving_plan.plan(model="gpt-5")
