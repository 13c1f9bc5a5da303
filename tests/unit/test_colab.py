"""The Colab set-up: which commands a GPU runtime gets, checked against what each distribution provides."""

import sys

import torch

from labkit import colab


def test_cpu_runtime_installs_nothing():
    assert colab.colab_commands(cuda=False) == []
    assert colab.colab_commands(cuda=False, tensorrt=True) == []


def _none_installed(distribution: str) -> bool:
    return False


def test_gpu_runtime_swaps_onnxruntime_for_its_cuda_build():
    assert colab.colab_commands(cuda=True, installed=_none_installed) == []  # nothing asked for, nothing done
    commands = colab.colab_commands(cuda=True, onnxruntime_gpu=True, installed=_none_installed)
    # onnxruntime and onnxruntime-gpu install the same module: the CPU build must go first
    assert commands[0][-1] == "onnxruntime" and "uninstall" in commands[0]
    assert commands[1][-1] == "onnxruntime-gpu" and "install" in commands[1]
    assert all(cmd[:3] == [sys.executable, "-m", "pip"] for cmd in commands)
    assert not any("tensorrt" in cmd for cmd in commands)
    assert colab.colab_commands(cuda=True, tensorrt=True, installed=_none_installed)[-1][-1] == "tensorrt"
    # a second run of the cell finds them installed and does nothing
    assert colab.colab_commands(cuda=True, onnxruntime_gpu=True, tensorrt=True, installed=lambda d: True) == []


def test_setup_outside_colab_runs_what_the_runtime_needs():
    ran = []
    done = colab.setup_colab(onnxruntime_gpu=True, run=ran.append)
    assert done[0] == "not on Colab: no widget manager to enable"
    assert ran == colab.colab_commands(torch.cuda.is_available(), onnxruntime_gpu=True)
    assert ("CPU runtime" in done[-1]) == (not torch.cuda.is_available())
