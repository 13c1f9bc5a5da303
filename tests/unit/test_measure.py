import importlib.util
import pickle
import time

import numpy as np
import pytest
import torch

from labkit import hardware, measure, precision


def test_stats_match_numpy():
    samples = [0.005, 0.001, 0.003, 0.002, 0.004, 0.010, 0.006, 0.007, 0.008, 0.009]
    s = measure.Stats.of(samples)
    assert s.n == 10
    assert s.median == pytest.approx(0.0055)
    assert s.p10 == pytest.approx(np.percentile(samples, 10))
    assert s.p90 == pytest.approx(np.percentile(samples, 90))
    assert s.p99 == pytest.approx(np.percentile(samples, 99))
    assert s.mean == pytest.approx(0.0055)
    assert s.ms()["median"] == pytest.approx(5.5)
    assert s.ms()["n"] == 10 and "samples" not in s.ms()
    with pytest.raises(ValueError):
        measure.Stats.of([])


def test_benchmark_times_a_function_of_known_duration():
    calls = []

    def sleep_20ms():
        calls.append(1)
        time.sleep(0.02)

    s = measure.benchmark(sleep_20ms, warmup=2, repeat=7)
    assert len(calls) == 9  # warm-up calls happen but are not timed
    assert s.n == 7 and len(s.samples) == 7
    assert 0.019 <= s.median <= 0.035
    assert s.p10 <= s.median <= s.p90 <= s.p99


@pytest.mark.parametrize("warmup, repeat", [(-1, 5), (0, 0)])
def test_benchmark_rejects_bad_counts(warmup, repeat):
    with pytest.raises(ValueError, match="repeat"):
        measure.benchmark(lambda: None, warmup=warmup, repeat=repeat)


def test_benchmark_rounds_interleaves_whole_blocks_and_keeps_ratios():
    calls = []

    def sleeper(name, seconds):
        def fn():
            calls.append(name)
            time.sleep(seconds)

        return fn

    stats = measure.benchmark_rounds({"fast": sleeper("fast", 0.002), "slow": sleeper("slow", 0.008)},
                                     warmup=1, repeat=5, rounds=2)
    # round 1: fast (1 warm-up + 3 timed), slow (1 + 3); round 2: fast (1 + 2), slow (1 + 2)
    assert calls == ["fast"] * 4 + ["slow"] * 4 + ["fast"] * 3 + ["slow"] * 3
    assert stats["fast"].n == stats["slow"].n == 5
    assert 2.5 < stats["slow"].median / stats["fast"].median < 5


def test_benchmark_rounds_warms_each_block_for_warmup_s():
    calls = []
    stats = measure.benchmark_rounds({"f": lambda: (calls.append(1), time.sleep(0.005))}, warmup=1, repeat=2,
                                     rounds=2, warmup_s=0.03)
    assert stats["f"].n == 2
    assert len(calls) >= 2 * (6 + 1)  # each of 2 rounds: ~30 ms of 5 ms warm-up calls, then 1 timed


@pytest.mark.parametrize("fns, kwargs, match",
                         [({}, {}, "no functions"), ({"f": lambda: None}, {"rounds": 0}, "rounds")])
def test_benchmark_rounds_rejects_bad_input(fns, kwargs, match):
    with pytest.raises(ValueError, match=match):
        measure.benchmark_rounds(fns, **kwargs)


def test_peak_memory_counts_new_tensors_at_their_peak():
    def two_buffers():
        a = torch.ones(2 * 2**20)  # 8 MiB
        b = torch.ones(2 * 2**20)  # 8 MiB, both alive: peak 16 MiB
        del a, b
        c = torch.ones(2**20)  # 4 MiB, after both were freed
        return c.sum()

    peak = measure.peak_memory(two_buffers)
    assert 16 * 2**20 <= peak.tensor_bytes < 17 * 2**20
    # CPU tensors only: no CUDA memory allocated (None where CUDA is not in use; the GPU case is in test_gpu.py)
    cuda_in_use = torch.cuda.is_available() and torch.cuda.is_initialized()
    assert peak.cuda_bytes == (0 if cuda_in_use else None)


def test_peak_memory_ignores_tensors_that_existed_before():
    weights = torch.zeros(4 * 2**20)
    peak = measure.peak_memory(lambda: weights.add_(1.0))  # in place: no new storage
    assert peak.tensor_bytes == 0


def test_memory_bandwidth_is_plausible():
    gbps = measure.memory_bandwidth(size_mib=64, repeat=3)
    assert 0.5 < gbps < 20_000


def test_memory_bandwidth_keeps_every_repeat():
    bw = measure.memory_bandwidth(size_mib=16, repeat=4)
    # PyTorch's repeats, then ONNX Runtime's (on a CPU, when installed): the ceiling is the fastest of all
    probes = 2 if importlib.util.find_spec("onnxruntime") else 1
    assert len(bw.samples) == 4 * probes and float(bw) == max(bw.samples)
    assert min(bw.samples) <= bw.median <= max(bw.samples)
    assert bw.spread == pytest.approx((max(bw.samples) - min(bw.samples)) / bw.median)
    made = measure.Bandwidth(10.0, "cpu", "x", (8.0, 10.0, 9.0))
    assert (made.median, made.spread) == (9.0, pytest.approx(2 / 9))
    assert pickle.loads(pickle.dumps(made)).samples == (8.0, 10.0, 9.0)


def test_memory_bandwidth_names_the_device_it_was_measured_on():
    bw = measure.memory_bandwidth(size_mib=16, repeat=2, device="cpu")
    # the name comes from the hardware probe (/proc/cpuinfo), not from the measurement
    assert (bw.device, bw.device_name) == ("cpu", hardware.detect().cpu_model)
    assert bw.label == f"measured on {hardware.detect().cpu_model}"
    assert isinstance(bw, float) and f"{bw:.1f}" == f"{float(bw):.1f}" and bw * 2 == 2 * float(bw)
    again = pickle.loads(pickle.dumps(bw))
    assert again == bw and again.device_name == bw.device_name
    with pytest.raises(ValueError, match="choose from"):
        measure.memory_bandwidth(size_mib=16, device="tpu")
    with pytest.raises(ValueError, match="size_mib and repeat"):
        measure.memory_bandwidth(size_mib=0)


def test_results_frame_carries_hardware():
    from labkit.hardware import detect

    df = measure.results_frame([{"engine": "eager", "ms": 1.0}], model="tiny-bloom")
    assert df.attrs["hardware"] == detect().summary
    assert df.attrs["model"] == "tiny-bloom"
    assert list(df.columns) == ["engine", "ms"]


def test_rates_and_ratios():
    assert measure.tokens_per_second(100, 2.0) == 50.0
    assert measure.ratio(3.0, 1.5) == 2.0
    with pytest.raises(ValueError):
        measure.tokens_per_second(1, 0)
    with pytest.raises(ZeroDivisionError):
        measure.ratio(1.0, 0.0)


def test_matmul_flops_names_its_device_and_precision():
    fp32 = measure.matmul_flops(size=256, repeat=2, device="cpu")
    bf16 = measure.matmul_flops(size=256, precision="bfloat16", repeat=2, device="cpu")
    assert fp32 > 1e8 and bf16 > 1e8
    assert (fp32.device, fp32.device_name, fp32.precision) == ("cpu", hardware.detect().cpu_model, "fp32")
    assert bf16.precision == "bf16"  # the canonical name, whatever alias was asked for
    again = pickle.loads(pickle.dumps(bf16))
    assert again == bf16 and (again.device, again.precision) == ("cpu", "bf16")


def test_matmul_flops_rejects_bad_input_before_allocating():
    with pytest.raises(ValueError, match="float matmul"):
        measure.matmul_flops(64, "int8")
    with pytest.raises(ValueError, match="choose from"):
        measure.matmul_flops(64, device="tpu")
    with pytest.raises(ValueError, match="size and repeat"):
        measure.matmul_flops(64, repeat=0)


def test_ridge_point_is_flops_over_bytes_per_second_of_one_device():
    assert measure.ridge_point(2e11, 20.0) == pytest.approx(10.0)  # 2e11 FLOP/s ÷ 2e10 B/s
    cpu_bw = measure.Bandwidth(20.0, "cpu", "x")
    assert measure.ridge_point(measure.FlopRate(4e11, "cpu", "x"), cpu_bw) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="same device"):
        measure.ridge_point(measure.FlopRate(4e11, "cuda:0", "gpu"), cpu_bw)
    with pytest.raises(ValueError, match="positive"):
        measure.ridge_point(1e9, 0.0)


@pytest.mark.gpu
def test_gpu_half_precision_matmul_runs_on_the_tensor_cores():
    fp32 = measure.matmul_flops(size=4096, repeat=3, device="cuda")
    half = measure.matmul_flops(size=4096, precision=precision.native_half("cuda"), repeat=3, device="cuda")
    assert half > 2 * fp32  # tensor cores: far more than fp32 (TF32 off by default)
    bw = measure.memory_bandwidth(repeat=3, device="cuda")
    assert measure.ridge_point(half, bw) > 20  # FLOP/byte: a GPU's ridge is far right of a CPU's
    assert half.device == bw.device == "cuda:0" and half.device_name == torch.cuda.get_device_name(0)
