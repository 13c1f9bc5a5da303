"""optimum-quanto's CPU kernel is built ahead of the labs (by `labkit prepare`) and unpacks int4 weights as quanto packs
them: two 4-bit codes per byte, the low nibbles first along the first axis, then the high ones."""

import pytest
import torch

pytest.importorskip("optimum.quanto")

from labkit import quanto_kernels  # noqa: E402


def test_built_kernel_unpacks_like_quantos_reference():
    said = quanto_kernels.build_cpu_kernels()
    assert "built" in said, said  # "built in N s" on a fresh install, "already built" after `labkit prepare`
    from optimum.quanto.library.extensions import get_extension

    packed = torch.randint(0, 256, (64, 32), dtype=torch.uint8)  # two int4 codes per byte
    compiled = get_extension("quanto_cpp").lib.unpack(packed, 4)  # (128, 32)
    expected = torch.cat([packed & 0x0F, packed >> 4])  # the nibbles, by bit arithmetic
    torch.testing.assert_close(compiled, expected, rtol=0, atol=0)


def test_int4_on_a_gpu_without_a_cuda_toolkit_is_refused_by_name(monkeypatch):
    import torch.utils.cpp_extension as ext

    monkeypatch.setattr(ext, "CUDA_HOME", None)
    with pytest.raises(quanto_kernels.CapabilityMissing, match="nvcc"):
        quanto_kernels.require_cuda_kernels()


def test_int4_on_a_gpu_before_its_kernels_are_built_names_the_command(monkeypatch):
    import torch.utils.cpp_extension as ext

    monkeypatch.setattr(ext, "CUDA_HOME", "/usr/local/cuda")  # a toolkit, but quanto_cuda never built
    monkeypatch.setattr(quanto_kernels, "_built", lambda name: (None, False))
    with pytest.raises(quanto_kernels.CapabilityMissing, match="labkit prepare --quanto-cuda"):
        quanto_kernels.require_cuda_kernels()
