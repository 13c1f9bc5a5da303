"""Measuring: latency statistics, peak memory, tokens/s, memory bandwidth, matmul FLOP/s and output agreement.

Every benchmark warms up first, then reports the median (and spread) of repeats; CUDA work is synchronised before
the clock stops, or a GPU timing would only measure the kernel launch (`stats`). Peak memory of a call is in `peak`;
a device's read bandwidth and matmul throughput — the roofline's two limits — are in `compute`.
"""

from labkit.measure.compute import (
    DEFAULT_BANDWIDTH_MIB,
    DEFAULT_MATMUL_SIZE,
    Bandwidth,
    DeviceRate,
    FlopRate,
    matmul_flops,
    memory_bandwidth,
    ridge_point,
)
from labkit.measure.peak import MemoryPeak, peak_memory, process_rss
from labkit.measure.stats import (
    Stats,
    benchmark,
    benchmark_rounds,
    prefix_agreement,
    ratio,
    results_frame,
    sync_device,
    tokens_per_second,
)

__all__ = ["Stats", "benchmark", "benchmark_rounds", "sync_device", "tokens_per_second", "MemoryPeak", "peak_memory",
           "process_rss", "DEFAULT_BANDWIDTH_MIB", "DEFAULT_MATMUL_SIZE", "Bandwidth", "DeviceRate", "FlopRate",
           "memory_bandwidth", "matmul_flops", "ridge_point", "prefix_agreement", "results_frame", "ratio"]
