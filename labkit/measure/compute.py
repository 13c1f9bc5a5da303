"""The two numbers that bound every kernel on a device: its memory read bandwidth (GB/s) and its dense matmul
throughput (FLOP/s) — measured, each tagged with the device it was measured on; their ratio is the roofline's ridge.

Both are ceilings (Williams, Waterman & Patterson, "Roofline", CACM 2009), so the fastest repeat counts: other
work on the machine can only slow a run down. Both are timed by `measure.benchmark`, which synchronises CUDA.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from labkit import devices, onnx_format
from labkit.measure.stats import benchmark
from labkit.precision import FLOAT_PRECISIONS, canonical, torch_dtype


class DeviceRate(float):
    """A measured rate (a float: arithmetic, comparisons and formats work as on the number) that keeps the device it
    was measured on: `device` ("cpu", "cuda:0") and `device_name` (CPU model or GPU name). A bound derived from it
    holds for that device only, so tables and figures say `label` ("measured on <device_name>")."""

    def __new__(cls, value: float, device: str, device_name: str) -> DeviceRate:
        rate = super().__new__(cls, value)
        rate.device, rate.device_name = device, device_name
        return rate

    def __reduce__(self):  # pickle (and copy) keep the device
        return type(self), (float(self), self.device, self.device_name)

    @property
    def label(self) -> str:
        """ "measured on <device_name>", for tables and figure titles."""
        return f"measured on {self.device_name}"


class Bandwidth(DeviceRate):
    """A read bandwidth in GB/s (1e9 bytes per second), with the device it was measured on and every repeat's rate
    (`samples`, GB/s): the value is the fastest (a ceiling); `median` and `spread` say how steady the runs were."""

    def __new__(cls, value: float, device: str, device_name: str, samples: tuple = ()) -> Bandwidth:
        rate = super().__new__(cls, value, device, device_name)
        rate.samples = tuple(float(x) for x in samples) or (float(value),)
        return rate

    def __reduce__(self):
        return Bandwidth, (float(self), self.device, self.device_name, self.samples)

    @property
    def median(self) -> float:
        """The median repeat's rate, GB/s."""
        ordered = sorted(self.samples)
        mid = len(ordered) // 2
        return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2

    @property
    def spread(self) -> float:
        """(fastest − slowest) / median over the repeats: 0 for perfectly steady runs."""
        return (max(self.samples) - min(self.samples)) / self.median


class FlopRate(DeviceRate):
    """A matmul throughput in FLOP/s, with the device it was measured on and the precision multiplied (`.precision`)."""

    def __new__(cls, value: float, device: str, device_name: str, precision: str = "fp32") -> FlopRate:
        rate = super().__new__(cls, value, device, device_name)
        rate.precision = precision
        return rate

    def __reduce__(self):
        return FlopRate, (float(self), self.device, self.device_name, self.precision)


def _device(device: str | torch.device) -> tuple[torch.device, str]:
    """(the device with its index, e.g. cuda:0; its name: the CPU model or the GPU's)."""
    dev = devices.resolve(device)
    return dev, devices.device_name(dev)


DEFAULT_BANDWIDTH_MIB = {"cpu": 256, "cuda": 1024}  # well above a CPU's last-level cache and a GPU's L2


def memory_bandwidth(size_mib: int | None = None, repeat: int = 5, device: str | torch.device = "cpu") -> Bandwidth:
    """Measured read bandwidth in GB/s: a matrix-vector product over a matrix too big for the caches (PyTorch's, and
    on a CPU also ONNX Runtime's when it is installed: the faster kernel sets the ceiling).

    That is the operation a batch-1 decode step is made of (every weight read once per token), so this is the
    number that bounds it. It is a ceiling, so the fastest repeat counts: other work can only slow a run down.

    Args:
        size_mib: size of the fp32 matrix read, MiB, well above the last-level cache (None: `DEFAULT_BANDWIDTH_MIB`
            of the device type; a GPU's read must also last long against the clock's own overhead).
        repeat: timed repeats after 2 warm-ups.
        device: "cpu", "cuda", "cuda:N" or "auto" (the device whose memory is measured; `hardware.resolve_device`).
    Returns:
        Bandwidth: bytes read / fastest repeat, in GB/s (1e9 bytes per second), carrying the device it was
        measured on (`.device`, `.device_name`, `.label`) and every repeat's rate (`.samples`: PyTorch's repeats,
        then ONNX Runtime's on a CPU; `.median`, `.spread`).
    Raises:
        ValueError: size_mib or repeat < 1, or an unknown device (naming the valid ones), before allocating.
        CapabilityMissing: a CUDA device on a machine without one.
    """
    if (size_mib is not None and size_mib < 1) or repeat < 1:
        raise ValueError(f"size_mib and repeat must be >= 1, got {size_mib} and {repeat}")
    (dev, name), cols = _device(device), 4096
    size_mib = size_mib or DEFAULT_BANDWIDTH_MIB[dev.type]
    weights = torch.ones(max(1, size_mib * 2**20 // 4 // cols), cols, dtype=torch.float32, device=dev)
    vector = torch.ones(cols, dtype=torch.float32, device=dev)
    stats = benchmark(lambda: weights @ vector, warmup=2, repeat=repeat)
    rates = [weights.numel() * weights.element_size() / t / 1e9 for t in stats.samples]
    if dev.type == "cpu":  # ONNX Runtime's matrix-vector kernel reads faster than PyTorch's on some CPUs
        k, n = weights.shape
        with tempfile.TemporaryDirectory() as tmp:
            weights.numpy().tofile(f"{tmp}/gemv.data")
            del weights, stats  # one copy of the matrix at a time (a 2 GB Binder runs this)
            rates += _onnxruntime_gemv_rates(f"{tmp}/gemv.data", k, n, repeat)
    return Bandwidth(max(rates), str(dev), name, rates)


def _onnxruntime_gemv_rates(path: str, k: int, n: int, repeat: int) -> list[float]:
    """GB/s of ONNX Runtime's MatMul reading the fp32 (K, N) matrix stored raw at `path`, one vector at a time; []
    without onnxruntime.

    The matrix is an initializer loaded from a file, as a decode engine's weights are, so ONNX Runtime pre-packs it
    for its kernel (measured on a 2-core Xeon: 28.7 GB/s, against 22.8 when the same matrix is fed as a graph
    input). A decode engine built on that kernel reads that fast, so the ceiling is the faster of this and
    PyTorch's probe."""
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return []
    weights = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[k, n], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", Path(path).name), ("offset", "0"), ("length", str(k * n * 4))):
        weights.external_data.add(key=key, value=value)  # the raw file as it is: no copy through protobuf
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "gemv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], [weights])  # fmt: skip
    model = Path(path).with_suffix(".onnx")
    onnx.save(onnx_format.make_model(graph), str(model))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    feed = {"x": np.ones((1, k), np.float32)}
    stats = benchmark(lambda: session.run(None, feed), warmup=2, repeat=repeat)
    return [k * n * 4 / t / 1e9 for t in stats.samples]


DEFAULT_MATMUL_SIZE = {"cpu": 1024, "cuda": 8192}  # n of the n × n product: seconds on a CPU, fills a GPU's SMs


def matmul_flops(size: int | None = None, precision: str = "fp32", repeat: int = 5,
                 device: str | torch.device = "cpu") -> FlopRate:
    """Measured dense matmul throughput: 2·n³ FLOPs per (n × n) @ (n × n) product over its fastest repeat.

    On a GPU a 16-bit product runs on the tensor cores, so fp16 / bf16 give the tensor-core rate; fp32 stays
    IEEE fp32 unless `torch.backends.cuda.matmul.allow_tf32` was switched on (PyTorch's default: off).

    Args:
        size: n (None: `DEFAULT_MATMUL_SIZE` of the device type). precision: fp32 | bf16 | fp16 (or an alias).
        repeat: timed products (after 2 warm-ups).
        device: "cpu", "cuda", "cuda:N" or "auto" (`hardware.resolve_device`).
    Returns:
        FlopRate: FLOP/s, carrying the device (`.device`, `.device_name`) and the canonical `.precision`.
    Raises:
        ValueError: an unknown precision, int8 / int4 (no dense float matmul), size or repeat < 1, or an unknown
            device — before allocating. CapabilityMissing: a CUDA device on a machine without one.
    """
    name = canonical(precision)
    if name not in FLOAT_PRECISIONS:
        raise ValueError(f"matmul_flops times a float matmul, not {name}; choose from {list(FLOAT_PRECISIONS)}")
    dev, device_name = _device(device)
    n = size or DEFAULT_MATMUL_SIZE[dev.type]
    if n < 1 or repeat < 1:
        raise ValueError(f"size and repeat must be >= 1, got {n} and {repeat}")
    a = torch.randn(n, n, device=dev, dtype=torch_dtype(name))
    stats = benchmark(lambda: a @ a, warmup=2, repeat=repeat)
    return FlopRate(2 * n**3 / min(stats.samples), str(dev), device_name, name)


def ridge_point(flops: float, bandwidth_gbps: float) -> float:
    """The roofline's ridge: the arithmetic intensity (FLOP per byte) above which a kernel is compute-bound.

    Args:
        flops: matmul FLOP/s. bandwidth_gbps: read bandwidth, GB/s (1e9 bytes/s). Both of the same device.
    Returns:
        FLOP/s ÷ bytes/s, FLOP/byte.
    Raises:
        ValueError: a non-positive bandwidth or FLOP/s, or numbers measured on two different devices.
    """
    if flops <= 0 or bandwidth_gbps <= 0:
        raise ValueError(f"flops and bandwidth must be positive, got {flops} and {bandwidth_gbps}")
    where = {getattr(x, "device", None) for x in (flops, bandwidth_gbps)} - {None}
    if len(where) > 1:
        raise ValueError(f"a ridge point needs FLOP/s and bandwidth of the same device, got {sorted(where)}")
    return float(flops) / (float(bandwidth_gbps) * 1e9)
