"""labkit.precision: subnormal floats flushed to zero inside a block, on the CPU."""

import torch

from labkit import precision


def test_flush_denormals_zeroes_subnormals_on_the_cpu_only_inside_the_block():
    tiny = torch.finfo(torch.float32).tiny  # the smallest normal fp32; tiny / 4 is subnormal
    x = torch.tensor([tiny / 4])
    assert (x * 1.0).item() > 0  # PyTorch's default: subnormals kept
    with precision.flush_denormals("cpu") as on:
        assert on  # an x86 CPU with SSE3
        assert (x * 1.0).item() == 0.0 and (torch.tensor([tiny]) * 1.0).item() == tiny  # normals untouched
    assert (x * 1.0).item() > 0  # restored afterwards
    with precision.flush_denormals("meta") as on:
        assert not on
