"""The cost model: fitted on the fit cells of specs.BLOOM_ROWS only, tested on the held-out cells, and its physics."""

import math
import statistics
from dataclasses import replace

import pytest

from labkit.models import specs
from labkit.parallel import costmodel as cm

ROWS, A100 = specs.BLOOM_ROWS, specs.A100_80GB
TARGET_MEDIAN_PCT = 25.0  # the target for the held-out cells (benchmarks/costmodel.py prints the same)


def _cells(set_name: str) -> list[tuple[str, int, float | None, float]]:
    """(row, batch, published, predicted) recomputed from specs and the model, not from evaluation() or the script."""
    engines, out = cm.calibrate(), []
    for key, row in ROWS.items():
        predicted = cm.predict_row(row, engines)
        batches = row.fit if set_name == "in-sample" else row.held_out
        out += [(key, b, row.ms_per_token[b], predicted[b]) for b in batches]
    return out


def _abs_errors(cells) -> list[float]:
    return [abs(100 * (pred / pub - 1)) for _, _, pub, pred in cells if pub is not None and not math.isnan(pred)]


def test_fit_and_held_out_partition_every_published_cell():
    for row in ROWS.values():
        assert set(row.fit) | set(row.held_out) == set(row.ms_per_token) and not set(row.fit) & set(row.held_out)
    fitted = {k for k, r in ROWS.items() if r.fit}
    assert fitted == {"accelerate bf16", "accelerate int8", "ds-inference fp16"}  # 16-bit rows + one int8 cell
    assert ROWS["accelerate int8"].fit == (1,)
    assert all(r.gpus == specs.BLOOM_BENCHMARK_GPUS for r in ROWS.values() if r.fit)  # fitted on 8×A100 only


def test_held_out_median_error_meets_the_target():
    errors = _abs_errors(_cells("held-out"))
    assert len(errors) == sum(ms is not None for r in ROWS.values() for b, ms in r.ms_per_token.items()
                              if b in r.held_out)  # every timed held-out cell is predicted (none said OOM)
    assert statistics.median(errors) <= TARGET_MEDIAN_PCT, sorted(errors)


def _wrong_held_out_oom() -> set:
    return {(k, b) for k, b, pub, pred in _cells("held-out") if (pub is None) != math.isnan(pred)}


def test_every_held_out_oom_cell_is_right():
    assert not _wrong_held_out_oom()


def test_zero3_holds_two_copies_of_its_largest_gathered_group():
    """DeepSpeed's coalesced all-gather keeps the flat buffer and the per-weight copies alive together; BLOOM's
    largest weight is its tied embedding, vocab × hidden from the published config."""
    e, m = cm.calibrate()["ds-zero"], cm.shape()
    cfg = specs.MODEL_CONFIGS["bloom-176b"]
    assert m.largest_param == cfg["vocab_size"] * cfg["hidden_size"]
    group = m.largest_param + cm.PREFETCH_BUCKET_HIDDEN2 * m.hidden**2
    assert cm.memory_gb(e, m, A100, 8, 1, 110)["gathered"] == pytest.approx(cm.GATHER_COPIES * group * 2 / 1e9)


def test_in_sample_cells_are_fitted_closely_and_every_oom_cell_is_right():
    cells = _cells("in-sample")
    assert max(_abs_errors(cells)) < 5
    assert all((pub is None) == math.isnan(pred) for _, _, pub, pred in cells)


def test_the_fit_never_reads_a_held_out_cell():
    """Perturb every held-out cell (times ×3, OOM ↔ timed): the fitted constants do not move. Perturb a fit cell:
    they do (so this test can fail)."""
    original = cm.fit(ROWS)
    perturbed = {k: replace(r, ms_per_token={b: (None if ms is not None else 1.0) if b in r.held_out else ms
                                            for b, ms in r.ms_per_token.items()}) for k, r in ROWS.items()}  # fmt: skip
    assert cm.fit(perturbed) == original
    assert cm.fit(ROWS) == cm.calibrate()
    moved = dict(ROWS, **{"ds-inference fp16": replace(ROWS["ds-inference fp16"], ms_per_token={
        b: None if ms is None else 1.5 * ms for b, ms in ROWS["ds-inference fp16"].ms_per_token.items()})})
    assert cm.fit(moved)["ds-inference"] != original["ds-inference"]
    assert cm.fit_cells(ROWS) == {k: {b: r.ms_per_token[b] for b in r.fit} for k, r in ROWS.items() if r.fit}


def test_evaluation_matches_the_recomputed_cells_and_the_summary_counts():
    table = cm.evaluation()
    assert len(table) == sum(len(r.ms_per_token) for r in ROWS.values())
    recomputed = {(k, b): pred for s in cm.SETS for k, b, _, pred in _cells(s)}
    for r in table.itertuples():
        assert r.predicted_ms == pytest.approx(recomputed[(r.row, r.batch)], nan_ok=True)
    s = cm.summary(table)["held-out"]
    assert s["median_abs_error_pct"] == pytest.approx(statistics.median(_abs_errors(_cells("held-out"))))
    held_oom = [(k, b) for k, r in ROWS.items() for b in r.held_out if r.ms_per_token[b] is None]
    assert (s["oom_cells"], s["oom_right"]) == (len(held_oom), len(held_oom))


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


def test_deepspeed_int8_moves_five_bytes_per_weight():
    """Dequantize (read 1 B, write 2 B) then a 16-bit GEMM (read 2 B): int8 costs 1.5 fp16 weight reads more."""
    e, m8, m16 = cm.calibrate()["ds-inference"], cm.shape("bloom-176b", "int8"), cm.shape("bloom-176b", "fp16")
    s8, s16 = cm.step_ms(e, m8, A100, 8, 1, 10), cm.step_ms(e, m16, A100, 8, 1, 10)
    assert s8["weights (HBM)"] + s8["int8 (de)quantization"] == pytest.approx(5 / 2 * s16["weights (HBM)"])
    assert sum(s8.values()) > sum(s16.values())  # 2022's int8 halved the memory and slowed the step


def test_zero_inference_counts_every_streams_tokens():
    """ds-zero: each GPU runs its own stream and gathers the other 7/8 of the weights every step; the script
    multiplies the tokens by world_size, so the published ms/token is one stream's divided by the GPUs."""
    e, m, new = cm.calibrate()["ds-zero"], cm.shape(), specs.BLOOM_BENCHMARK_NEW_TOKENS
    step = cm.step_ms(e, m, A100, 8, 1, 10)
    assert step["communication"] == pytest.approx(7 / 8 * m.weight_bytes / (A100.link_GBps * 1e9 * cm.LINK_EFFICIENCY)
                                                  * 1e3)  # fmt: skip
    # read by the matmuls, and read + written once more by the gather's copy out of its flat buffer
    hbm = A100.hbm_TBps * 1e12 * cm.HBM_EFFICIENCY
    assert step["weights (HBM)"] == pytest.approx((1 + cm.ZERO_GATHER_COPY_TRAFFIC) * m.weight_bytes / hbm * 1e3)
    wall = sum(cm.generation_ms(e, m, A100, 8, 1, cm.PROMPT, new).values())
    assert cm.ms_per_token(e, m, A100, 8, 1)["ms_per_token"] == pytest.approx(wall / (1 * new * 8))
    off = replace(e, strategy="zero-offload")
    assert cm.step_ms(off, m, A100, 8, 1, 10)["CPU offload"] == pytest.approx(
        m.weight_bytes / 8 / (cm.ZERO_HOST_GBPS * 1e9) * 1e3)  # its own partition over pinned PCIe
    assert cm.memory_gb(off, m, A100, 8, 1, 110)["weights"] == 0.0
    assert cm.memory_gb(e, m, A100, 8, 1, 110)["gathered"] > m.vocab * m.hidden * 2 / 1e9  # the embedding


def test_accelerate_places_weights_as_the_benchmark_script_did():
    m = cm.shape()
    placed, cpu = cm.accelerate_placement(m, A100, 8)
    assert placed[0] == 0 and cpu == 0 and sum(placed) == pytest.approx(m.weight_bytes)  # GPU 0 keeps no weights
    assert max(placed) == specs.ACCELERATE_BLOOM_8X80_MAX_MEMORY_GIB["bf16"] * 2**30
    four, _ = cm.accelerate_placement(cm.shape("bloom-176b", "int8"), A100, 4)
    assert four[0] == pytest.approx(m.weight_bytes / 2 / 4 * specs.ACCELERATE_MAX_MEMORY_HEADROOM)
    assert cm.capacity_gb(A100) == pytest.approx(80 * 2**30 / 1e9)  # "80GB" is 80 GiB


def test_offload_when_weights_do_not_fit():
    """2×A100 cannot hold BLOOM-176B: naive PP streams the rest from pageable CPU memory every step."""
    r = cm.predict(gpus=2, batch=1).table.set_index("engine")
    assert not r.loc["ds-inference", "fits"]
    placed, cpu = cm.accelerate_placement(cm.shape(), A100, 2)
    assert r.loc["accelerate", "offloaded_GB"] == pytest.approx(cpu / 1e9)
    assert r.loc["accelerate", "CPU offload_ms"] == pytest.approx(cpu / (cm.HOST_GBPS * 1e9) * 1e3)
    pinned = cpu / (specs.HOST_LINK_GBPS["pinned (PCIe 4.0 x16)"] * 1e9) * 1e3
    assert pinned < specs.ACCELERATE_2XA100_OFFLOAD_S_PER_TOKEN * 1e3 < r.loc["accelerate", "ms_per_token"]


def test_tp_beats_naive_pp_and_a_slow_link_only_hurts_tp_when_the_cache_stays():
    m, engines = cm.shape("bloom-176b"), cm.calibrate()
    tp8 = cm.ms_per_token(engines["ds-inference"], m, A100, 8, 1)
    pp8 = cm.ms_per_token(engines["accelerate"], m, A100, 8, 1)
    assert pp8["weights (HBM)"] == pytest.approx(8 * tp8["weights (HBM)"])  # one GPU streams at a time
    cheap = replace(engines["ds-inference"], layer_overhead_ms=0.0)
    per_gpus = {g: cm.ms_per_token(cheap, m, A100, g, 1)["ms_per_token"] for g in (8, 16)}
    assert per_gpus[16] < per_gpus[8]
    slow = replace(A100, link_GBps=16)
    assert (cm.ms_per_token(engines["ds-inference"], m, slow, 8, 64)["communication"]
            > 10 * cm.ms_per_token(engines["ds-inference"], m, A100, 8, 64)["communication"])
    moving, kept = engines["accelerate"], replace(engines["accelerate"], cache_to_input_gpu=False)
    step = {e.cache_to_input_gpu: cm.step_ms(e, m, A100, 8, 4, 50)["communication"] for e in (moving, kept)}
    link = A100.link_GBps * 1e9 * cm.LINK_EFFICIENCY
    assert (step[True] - step[False]) / 1e3 == pytest.approx(2 * 4 * 50 * m.kv_bytes_per_token / link)


def test_predict_table_figure_and_errors():
    r = cm.predict(batch=16)  # the defaults: the published 8×A100-80GB
    t = r.table.set_index("engine")
    assert t.loc["ds-inference", "ms_per_token"] == pytest.approx(specs.PUBLISHED_MS_PER_TOKEN["ds-inference"][16],
                                                                  rel=0.05)  # an in-sample cell
    assert t.fits.all() and len(r.figure.data) >= 5
    oom_batch = min(b for b, ms in specs.PUBLISHED_MS_PER_TOKEN["accelerate"].items() if ms is None)
    assert math.isnan(cm.predict(batch=oom_batch).table.set_index("engine").loc["accelerate", "ms_per_token"])
    with pytest.raises(ValueError, match="choose from"):
        cm.predict(model="gpt-5")
    with pytest.raises(ValueError, match=">= 1"):
        cm.predict(gpus=0)
    with pytest.raises(ValueError, match="choose from"):
        cm.step_ms(replace(cm.calibrate()["accelerate"], strategy="magic"), cm.shape(), A100, 8, 1, 1)
    fig = cm.published_vs_predicted().figure
    assert len(fig.data) == 2 * len(ROWS)
    wide = cm.side_by_side(cm.evaluation())
    assert wide["in-sample error %"].notna().sum() + wide["held-out error %"].notna().sum() == len(
        _abs_errors(_cells("in-sample"))) + len(_abs_errors(_cells("held-out")))
