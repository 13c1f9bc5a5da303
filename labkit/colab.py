"""Google Colab set-up: what a GPU runtime needs beyond `pip install -e .[extras]`, and ipywidgets 8's widget manager.

Colab's image ships CUDA PyTorch, so `pip install -e .` keeps it. Two things still differ from a local machine:
ONNX Runtime's CUDA provider lives in a different distribution (`onnxruntime-gpu`, which replaces the CPU
`onnxruntime`: both install the same `onnxruntime` module), and Colab renders ipywidgets 8 only after its custom
widget manager is enabled (google.colab.output.enable_custom_widget_manager). TensorRT is opt-in: its wheels are
about 2 GB, so `setup_colab(tensorrt=True)` installs it only when a learner asks for it. Each step is skipped when
already done, so re-running a notebook's first cell costs nothing.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from collections.abc import Callable, Sequence


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def colab_commands(cuda: bool, onnxruntime_gpu: bool = False, tensorrt: bool = False,
                   installed: Callable[[str], bool] = _installed) -> list[list[str]]:
    """The pip commands a Colab runtime needs for the GPU sections (none on a CPU runtime or when already done).

    Args:
        cuda: whether the runtime has a CUDA GPU (`torch.cuda.is_available()`).
        onnxruntime_gpu: swap the CPU `onnxruntime` for `onnxruntime-gpu` (ONNX Runtime's CUDA provider).
        tensorrt: also install TensorRT (`tensorrt`, about 2 GB) for the TensorRT engine.
        installed: whether a distribution is installed (default: importlib.metadata); tests pass their own.
    Returns:
        argument lists for subprocess, in order: the CPU `onnxruntime` out, `onnxruntime-gpu` in, then TensorRT.
    """
    if not cuda:
        return []
    pip = [sys.executable, "-m", "pip"]
    commands = []
    if onnxruntime_gpu and not installed("onnxruntime-gpu"):
        commands += [pip + ["uninstall", "-q", "-y", "onnxruntime"],  # the same module name: one build at a time
                     pip + ["install", "-q", "onnxruntime-gpu"]]
    if tensorrt and not installed("tensorrt"):
        commands.append(pip + ["install", "-q", "tensorrt"])
    return commands


def setup_colab(onnxruntime_gpu: bool = False, tensorrt: bool = False,
                run: Callable[[Sequence[str]], object] | None = None) -> list[str]:
    """Prepare a Colab runtime for the labs: widget manager on; on a GPU runtime, the CUDA builds installed.

    Args:
        onnxruntime_gpu: on a GPU runtime, install ONNX Runtime's CUDA build (for the runtimes comparison).
        tensorrt: also install TensorRT (opt-in: about 2 GB).
        run: runs one command (default: subprocess.run with check=True); tests pass a recorder.
    Returns:
        what was done, one line each (the lab prints them).
    Raises:
        subprocess.CalledProcessError: a pip command failed (its output says why).
    """
    import torch  # Colab's CUDA build

    done = []
    try:
        from google.colab import output  # only importable on Colab

        output.enable_custom_widget_manager()  # ipywidgets 8 renders on Colab only with it
        done.append("enabled Colab's custom widget manager (ipywidgets 8)")
    except ImportError:
        done.append("not on Colab: no widget manager to enable")
    runner = run or (lambda cmd: subprocess.run(list(cmd), check=True))
    cuda = torch.cuda.is_available()
    for cmd in colab_commands(cuda, onnxruntime_gpu, tensorrt):
        runner(cmd)
        done.append(" ".join(cmd[1:]))
    if not cuda:
        done.append("CPU runtime: the labs measure the CPU (Runtime → Change runtime type → T4 GPU to measure a GPU)")
    elif onnxruntime_gpu and not tensorrt:
        done.append("TensorRT not installed (about 2 GB): setup_colab(onnxruntime_gpu=True, tensorrt=True) adds it")
    return done
