"""The published facts table: structural checks that catch a mistyped number."""

import pytest

from labkit import anatomy, models
from labkit.models import specs

ROWS = specs.BLOOM_ROWS


@pytest.mark.parametrize("key", sorted(ROWS))
def test_published_rows_ascend_in_batch_and_speed_up_until_out_of_memory(key):
    row = ROWS[key].ms_per_token
    batches = list(row)
    assert batches == sorted(batches) and len(set(batches)) == len(batches)
    times = [row[b] for b in batches]
    assert None in times and times.index(None) == len(times) - 1, "one OOM cell, the last (larger batches OOM too)"
    timed = times[:-1]
    assert all(a > b > 0 for a, b in zip(timed, timed[1:], strict=False)), "ms/token falls as the batch grows"


def test_each_row_is_named_after_its_engine_precision_and_node():
    for key, row in ROWS.items():
        node = "" if row.gpus == specs.BLOOM_BENCHMARK_GPUS else f" {row.gpus}×A100"
        assert key == f"{row.engine} {row.precision}{node}"
        assert set(row.fit) <= set(row.ms_per_token)
        assert row.held_out == tuple(b for b in row.ms_per_token if b not in row.fit)
    assert specs.PUBLISHED_MS_PER_TOKEN == {"accelerate": ROWS["accelerate bf16"].ms_per_token,
                                            "ds-inference": ROWS["ds-inference fp16"].ms_per_token}


def test_tensor_parallel_beats_the_pipeline_and_int8_is_slower_at_every_published_batch():
    acc, ds = specs.PUBLISHED_MS_PER_TOKEN["accelerate"], specs.PUBLISHED_MS_PER_TOKEN["ds-inference"]
    for b in acc:
        if acc[b] is not None:
            assert ds[b] < acc[b]
            assert ROWS["accelerate int8"].ms_per_token[b] > acc[b]
    for b, ms in ds.items():
        if ms is not None:
            assert ROWS["ds-inference int8"].ms_per_token[b] > ms
    assert set(specs.PUBLISHED_MS_PER_TOKEN) <= {k.split(" ")[0] for k in specs.STARTUP_S}


def test_half_the_node_halves_tensor_parallel_speed_but_not_the_pipelines():
    """4×A100 int8 (same page): TP reads twice the bytes per GPU, the naive pipeline reads the same bytes in turn."""
    ds8, ds4 = ROWS["ds-inference int8"].ms_per_token, ROWS["ds-inference int8 4×A100"].ms_per_token
    acc8, acc4 = ROWS["accelerate int8"].ms_per_token, ROWS["accelerate int8 4×A100"].ms_per_token
    assert 1.5 < ds4[1] / ds8[1] < 2.0
    assert acc4[1] == pytest.approx(acc8[1], rel=0.02)


def test_ds_zero_counts_every_gpus_stream():
    """One ds-zero stream takes GPUs × the published ms/token per token: slower than Accelerate at batch 1."""
    zero = ROWS["ds-zero bf16"]
    assert zero.gpus * zero.ms_per_token[1] > 5 * specs.PUBLISHED_MS_PER_TOKEN["accelerate"][1]
    assert specs.STARTUP_S["ds-zero"] > specs.STARTUP_S["accelerate"]


def test_host_links_are_below_pcie_4_x16():
    links = specs.HOST_LINK_GBPS
    assert specs.PCIE4_X16_GBPS == pytest.approx(31.5, abs=0.1)  # 16 GT/s × 16 lanes × 128/130 / 8 bits
    assert links["NVMe"] < links["pageable (PCIe 4.0 x16)"] < links["pinned (PCIe 4.0 x16)"] < specs.PCIE4_X16_GBPS


def test_bloom_176b_has_176_billion_parameters_and_needs_352_gb_in_bf16():
    config = anatomy.config_of(specs.MODEL_CONFIGS["bloom-176b"])
    params = models.estimate_memory(config).params  # counted on the meta device
    assert params == pytest.approx(176e9, rel=5e-3)
    assert params * 2 / 1e9 == pytest.approx(specs.BLOOM_176B_BF16_GB, rel=5e-3)


@pytest.mark.parametrize("name", sorted(specs.MODEL_CONFIGS))
def test_model_configs_build_and_their_heads_divide_the_width(name):
    d = anatomy.dims(specs.MODEL_CONFIGS[name])
    assert d.hidden % d.heads == 0 and d.heads % d.kv_heads == 0 and d.head_dim == d.hidden // d.heads
    # the one KV formula agrees with 2 × layers × kv_heads × head_dim × 2 bytes per token in bf16
    expected = 2 * d.layers * d.kv_heads * d.head_dim * 2
    assert anatomy.kv_cache_bytes(specs.MODEL_CONFIGS[name], batch=1, seq=1, precision="bf16") == expected


def test_llama_3_70b_uses_grouped_query_attention():
    cfg = specs.MODEL_CONFIGS["llama-3-70b"]
    assert (cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"]) == (80, 64, 8)
    assert cfg["hidden_size"] // cfg["num_attention_heads"] == 128


def test_gpu_datasheets_are_consistent():
    for key, gpu in specs.GPUS.items():
        assert key == gpu.name and f"{gpu.memory_GB:g}GB" in gpu.name
        assert gpu.tflops > 0 and gpu.hbm_TBps > 0 and gpu.link_GBps > 0
        assert ("PCIe" in gpu.name) == (gpu.link_GBps <= 32), "only NVLink parts have a link faster than PCIe 4.0"
    assert specs.A100_80GB is specs.GPUS["A100-80GB SXM"]
    cards = {g.memory_GB for g in specs.GPUS.values()}
    assert all(gb in cards for name, gb in specs.GPU_MEMORY_GB.items() if "×" not in name)  # budgets are real cards
    node = specs.BLOOM_BENCHMARK_GPUS * specs.A100_80GB.memory_GB
    assert specs.GPU_MEMORY_GB["8×A100 80GB"] == node > specs.BLOOM_176B_BF16_GB  # the benchmark's node holds BLOOM
    assert specs.ETHERNET_GBPS["10 GbE"] == pytest.approx(10 * specs.ETHERNET_GBPS["1 GbE"])


def test_offloading_to_two_gpus_is_far_slower_than_the_eight_gpu_node():
    batch_1_ms = specs.PUBLISHED_MS_PER_TOKEN["accelerate"][1]
    assert specs.ACCELERATE_2XA100_OFFLOAD_S_PER_TOKEN * 1e3 > 10 * batch_1_ms
    assert 2 * specs.A100_80GB.memory_GB < specs.BLOOM_176B_BF16_GB  # why it must offload
