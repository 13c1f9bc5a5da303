"""The serving planner: memory per backend, what fits, ZeRO-Inference's model, the published rows."""

import math

import pytest

from labkit.experiments import serving_plan
from labkit.models import specs
from labkit.parallel import costmodel as cm


@pytest.fixture(scope="module")
def default():
    return serving_plan.plan().table.set_index("backend")


def test_plan_prices_every_published_cell_as_the_cost_model_does():
    table = serving_plan.published_check().table
    cells = [(k, b) for k, row in specs.BLOOM_ROWS.items() for b in row.ms_per_token]
    assert list(zip(table.row, table.batch, strict=True)) == cells
    for row in table.itertuples():  # against the published time, not a copy of it
        published = specs.BLOOM_ROWS[row.row].ms_per_token[row.batch]
        assert row.published_ms == pytest.approx(math.nan if published is None else published, nan_ok=True)
        assert row.set == ("in-sample" if row.batch in specs.BLOOM_ROWS[row.row].fit else "held-out")
        if published is not None and not math.isnan(row.predicted_ms):
            assert row.error_pct == pytest.approx(100 * (row.predicted_ms / published - 1))
    # plan() runs its own backends (ds-zero as zero-inference with batch × GPUs sequences): same numbers as the model
    model = cm.evaluation()
    assert table.predicted_ms.to_numpy() == pytest.approx(model.predicted_ms.to_numpy(), rel=1e-9, nan_ok=True)
    zero = table[table.row == "ds-zero bf16"]
    assert (zero.sequences == zero.batch * specs.BLOOM_ROWS["ds-zero bf16"].gpus).all()
    assert table.oom_agrees.to_numpy().tolist() == model.oom_right.to_numpy().tolist()


def test_zero_inference_is_the_cost_models_zero_strategy(default):
    m, gpu = cm.shape("bloom-176b"), specs.A100_80GB
    for backend, strategy in (("zero-inference", "zero"), ("zero-offload", "zero-offload")):
        e = serving_plan.engine(backend)
        assert e.strategy == strategy and e.flop_efficiency == cm.calibrate()["accelerate"].flop_efficiency
        seqs = 2  # batch 16 split over 8 GPUs
        wall = cm.generation_ms(e, m, gpu, 8, seqs, 10, specs.BLOOM_BENCHMARK_NEW_TOKENS)
        assert default.loc[backend, "ms_per_token"] == pytest.approx(
            sum(wall.values()) / (16 * specs.BLOOM_BENCHMARK_NEW_TOKENS))
    assert default.loc["zero-offload", "offloaded_GB"] == pytest.approx(m.weight_bytes / 1e9)
    assert default.loc["zero-inference", "communication_ms"] > default.loc["ds-inference", "communication_ms"]
    with pytest.raises(ValueError, match="choose from"):
        serving_plan.engine("vllm")


def test_what_fits_on_two_gpus_and_on_a_small_host():
    two = serving_plan.plan(gpus=2, batch=1).table.set_index("backend")
    assert not two.loc["ds-inference", "fits"] and two.loc["ds-inference", "why"].startswith("will not fit: needs")
    assert math.isnan(two.loc["ds-inference", "ms_per_token"])
    assert two.loc["accelerate", "fits"] and two.loc["accelerate", "offloaded_GB"] > 150  # streams from the CPU
    small_host = serving_plan.plan(gpus=1, batch=1, host_memory_gb=100).table.set_index("backend")
    assert not small_host.fits.any()
    assert "offloaded to a 100 GB host" in small_host.loc["zero-offload", "why"]


def test_int8_halves_the_weights_but_not_the_kv_cache_and_is_slower(default):
    """2022's int8 kernels: half the weight bytes, yet slower steps (published: both engines' int8 rows)."""
    int8 = serving_plan.plan(precision="int8").table.set_index("backend")
    assert int8.loc["ds-inference", "weights_GB"] == pytest.approx(default.loc["ds-inference", "weights_GB"] / 2)
    assert int8.loc["ds-inference", "KV cache_GB"] == pytest.approx(default.loc["ds-inference", "KV cache_GB"])
    assert int8.loc["ds-inference", "workspace_GB"] == pytest.approx(default.loc["ds-inference", "workspace_GB"])
    for backend in ("accelerate", "ds-inference"):
        assert int8.loc[backend, "ms_per_token"] > default.loc[backend, "ms_per_token"]
        assert int8.loc[backend, "int8 (de)quantization_ms"] > 0 == default.loc[backend, "int8 (de)quantization_ms"]


def test_kv_cache_is_grouped_query_aware():
    """Llama-3-70B keeps 8 of its 64 heads' K and V: 2 × 80 layers × 8 × 128 × 2 bytes per token, int8 weights too;
    at the end of a step the previous step's cache is still alive (KV_COPIES)."""
    gqa = serving_plan.plan(model="llama-3-70b", precision="int8", batch=4, prompt=10, new_tokens=100)
    kv_gb = gqa.table.set_index("backend").loc["ds-inference", "KV cache_GB"]
    assert kv_gb == pytest.approx(cm.KV_COPIES * 4 * 110 * 2 * 80 * 8 * 128 * 2 / specs.BLOOM_BENCHMARK_GPUS / 1e9)


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
