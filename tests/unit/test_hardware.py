import dataclasses

import pytest
import torch

from labkit import hardware


def test_detect_reports_this_machine():
    hw = hardware.detect()
    assert hw.logical_cores >= 1 and hw.physical_cores >= 1
    assert hw.ram_gib > 0.5
    assert hw.torch_version == torch.__version__
    assert hw.cuda_available == torch.cuda.is_available()
    assert len(hw.gpus) == torch.cuda.device_count()
    assert hw.gloo_available  # every supported PyTorch build has gloo
    assert set(hw.cpu_flags) == {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx"}
    assert hw.cpu_model and hw.cpu_model in hw.summary


def test_rows_form_a_table():
    rows = dict(hardware.detect().rows())
    assert {"CPU", "RAM", "CUDA", "ONNX Runtime providers", "DeepSpeed"} <= set(rows)
    assert all(isinstance(v, str) and v for v in rows.values())


def _fake(**changes):
    real = hardware.detect()
    return lambda: dataclasses.replace(real, **changes)


def test_require_explains_what_is_missing_and_what_happens_instead(monkeypatch):
    monkeypatch.setattr(hardware, "detect", _fake(cuda_available=False, gpus=()))
    with pytest.raises(hardware.CapabilityMissing, match=r"no cuda .*runs this step on the CPU"):
        hardware.require("cuda")
    assert not hardware.has("cuda")
    assert hardware.has("gloo")


def test_require_passes_when_present(monkeypatch):
    gpu = hardware.GPU(0, "Fake GPU", 80.0, "9.0")
    monkeypatch.setattr(hardware, "detect", _fake(cuda_available=True, gpus=(gpu,)))
    hardware.require("cuda")
    with pytest.raises(hardware.CapabilityMissing, match="multi-gpu"):
        hardware.require("multi-gpu")


def test_unknown_capability_lists_choices():
    with pytest.raises(ValueError, match=r"choose from .*'cuda'"):
        hardware.require("quantum")
