"""Roofline points per precision and the static vs dynamic KV cache comparison, timed through decoding.timing."""

import ast
import inspect

import pytest

from labkit import hardware, measure, models
from labkit.experiments import roofline


def test_static_cache_gives_greedy_the_same_tokens():
    result = roofline.static_vs_dynamic("tiny-llama", new_tokens=8, compile=False, repeat=1)
    assert list(result.table.variant) == ["dynamic cache", "static cache"]
    assert result.table.same_tokens_as_dynamic.all()
    assert result.table.attrs["device"] == "cpu"  # "auto" on a machine without a GPU
    t = result.table
    assert t.speedup_vs_dynamic.tolist() == pytest.approx((t.decode_tok_s / t.decode_tok_s.iloc[0]).tolist())
    assert t.decode_tok_s.tolist() == pytest.approx((1e3 / t.tpot_ms).tolist())  # batch 1
    assert (result.table.decode_tok_s > 0).all() and (result.table.first_call_s > 0).all()


def test_precision_points_follow_the_bandwidth_formula():
    limits = {"bandwidth_GBps": 20.0, "flops": 2e11}  # given, so the test does not measure the machine
    points = roofline.precision_points("tiny-llama", precisions=("fp32", "bf16"), batch_sizes=(1, 2), new_tokens=4,
                                       limits=limits, repeat=1)  # fmt: skip
    params = models.estimate_memory("tiny-llama").params
    fp32 = points[(points.precision == "fp32") & (points.batch == 1)].iloc[0]
    embed = models.get_config("tiny-llama").vocab_size * 256 * 4  # untied input embedding: one row read per token
    assert fp32.read_per_step_MB * 1e6 == pytest.approx(params * 4 - embed, abs=1024)  # + RoPE buffer
    assert fp32.bandwidth_bound_tok_s == pytest.approx(20e9 / (params * 4 - embed), rel=1e-4)
    bf16 = points[(points.precision == "bf16") & (points.batch == 1)].iloc[0]
    assert bf16.read_per_step_MB == pytest.approx(fp32.read_per_step_MB / 2)  # half the bytes ...
    assert bf16.bandwidth_bound_tok_s == pytest.approx(2 * fp32.bandwidth_bound_tok_s)  # ... twice the limit
    b2 = points[(points.precision == "fp32") & (points.batch == 2)].iloc[0]
    assert b2.intensity_flop_per_byte == pytest.approx(2 * fp32.intensity_flop_per_byte)
    assert (points.decode_tok_s > 0).all()
    assert points.achieved_gflops.tolist() == pytest.approx((2 * params * points.decode_tok_s / 1e9).tolist())
    fig = roofline.roofline_figure(points)
    assert len(fig.data) == 3  # the roof + one series per engine/precision
    assert fig.data[0].name == "roofline"  # given limits: no device to name


def test_measured_limits_and_bounds_name_the_device_they_were_measured_on():
    cpu = hardware.detect().cpu_model  # the hardware probe, not the measurement
    limits = roofline.machine_limits(flops=1e11)
    assert limits["measured_on"] == cpu and limits["bandwidth_GBps"].device == "cpu"
    bounds = roofline.batch1_bounds("smollm2-135m", precisions=("fp32", "bf16"), devices=["cpu"], size_mib=16,
                                    repeat=2)  # fmt: skip
    assert bounds.measured_on.tolist() == [cpu, cpu] and bounds.device.tolist() == ["cpu", "cpu"]
    fp32, bf16 = bounds.set_index("precision").bound_tok_s[["fp32", "bf16"]]
    assert fp32 == pytest.approx(bounds.read_GBps.iloc[0] * 1e9 / (4 * 134_515_008))  # SmolLM2-135M, tied: by hand
    assert bf16 == pytest.approx(2 * fp32)
    points = roofline.precision_points("tiny-llama", precisions=("fp32",), batch_sizes=(1,), new_tokens=2,
                                       limits=limits, repeat=1)  # fmt: skip
    assert roofline.roofline_figure(points).data[0].name == f"roofline ({cpu})"
    with pytest.raises(ValueError, match="choose from"):
        roofline.batch1_bounds(devices=["tpu"])


def test_roofline_times_through_decoding_timing_not_another_experiment():
    tree = ast.parse(inspect.getsource(roofline))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "labkit.decoding" in imported and not any(m and m.startswith("labkit.experiments") for m in imported)


def test_machine_limits_measure_the_half_precision_matmul_and_both_ridges():
    bw = measure.Bandwidth(20.0, "cpu", hardware.detect().cpu_model)  # given: only the matmuls are measured
    limits = roofline.machine_limits(bandwidth_gbps=bw, device="cpu", half="bfloat16", repeat=2)
    assert limits["half"] == "bf16" and limits["flops_half"].precision == "bf16"
    assert limits["flops"].device == limits["flops_half"].device == limits["device"] == "cpu"
    assert limits["ridge_flop_per_byte"] == pytest.approx(limits["flops"] / 20e9)  # FLOP/s ÷ bytes/s
    assert limits["ridge_half_flop_per_byte"] == pytest.approx(limits["flops_half"] / 20e9)
    with pytest.raises(ValueError, match="bf16 or fp16"):
        roofline.machine_limits(device="cpu", half="int8")
    with pytest.raises(ValueError, match="unknown quantizers"):
        roofline.precision_points("tiny-llama", precisions=("fp32", "int3"), limits=limits)
