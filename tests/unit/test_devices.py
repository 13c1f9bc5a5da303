"""`devices.choose`: the DEVICE parameter resolved with its reasons, checked against torch and /proc/cpuinfo."""

import pytest
import torch

from labkit import devices, hardware
from tests.labs.ranks import cpu_name


def test_cpu_choice_names_the_cpu_and_bf16():
    choice = devices.choose("cpu")
    assert choice.device == torch.device("cpu") and choice.type == "cpu" and not choice.is_cuda
    assert choice.label == f"cpu ({cpu_name()})"
    assert choice.half == "bf16" and choice.why == "asked for"
    assert choice.to_dict() == {"device": choice.label, "device_type": "cpu", "half_precision": "bf16"}
    assert "DEVICE='cpu'" in choice.summary() and "bf16" in choice.summary()


def test_auto_follows_cuda_availability():
    choice = devices.choose("auto")
    assert choice.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert ("no CUDA GPU" in choice.why) == (not torch.cuda.is_available())


@pytest.mark.parametrize("bad", ["tpu", "gpu", "mps"])
def test_bad_device_names_the_choices(bad):
    with pytest.raises(ValueError, match=r"choose from \['auto', 'cpu', 'cuda', 'cuda:N'\]"):
        devices.choose(bad)


def test_gpu_section_skips_with_the_reason_on_cpu(capsys):
    assert devices.choose("cpu").gpu_section("CUDA graphs vs eager") is False
    out = capsys.readouterr().out
    assert "GPU section skipped — CUDA graphs vs eager:" in out
    reason = "no CUDA GPU" if not torch.cuda.is_available() else "chose the CPU"
    assert reason in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_is_capability_missing():
    with pytest.raises(hardware.CapabilityMissing, match="no CUDA GPU"):
        devices.choose("cuda")


@pytest.mark.gpu
def test_cuda_choice_names_the_gpu_and_its_half():
    choice = devices.choose("cuda")
    assert choice.label == f"cuda:0 ({torch.cuda.get_device_name(0)})"
    major, _ = torch.cuda.get_device_capability(0)
    assert choice.half == ("bf16" if major >= 8 else "fp16")
    assert choice.gpu_section("anything") is True


def test_resolve_spells_out_the_gpu_index():
    assert devices.resolve("cpu") == torch.device("cpu")
    assert devices.resolve("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        assert devices.resolve("cuda") == torch.device("cuda", torch.cuda.current_device())
    with pytest.raises(ValueError, match="choose from"):
        devices.resolve("npu")
