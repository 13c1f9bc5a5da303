"""Sentences of labs 03 and 11 that were wrong, held to their sources: ONNX Runtime's own enum of optimisation levels,
PyTorch's deprecation of TorchScript, and who wrote DeepSpeed-Inference's kernels."""

import re
from pathlib import Path

import pytest

from labkit.engines import torchscript

ROOT = Path(__file__).resolve().parents[2]


def _markdown(lab: str) -> str:
    text = next((ROOT / "labs").glob(f"{lab}_*.py")).read_text()
    cells = re.split(r"^# %%.*$", text, flags=re.M)
    heads = re.findall(r"^# %%.*$", text, flags=re.M)
    return "\n".join(c for h, c in zip(heads, cells[1:], strict=True) if "[markdown]" in h)


def test_lab_03_names_every_ort_optimisation_level():
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed here")
    prose = _markdown("03")
    assert all(level in prose for level in ort.GraphOptimizationLevel.__members__)  # the installed enum, each named
    assert "four levels" not in prose


def test_torchscript_is_taught_as_deprecated():
    assert "deprecated" in _markdown("03").split("**TorchScript**")[1].split("\n# *")[0]
    assert "torch.export" in torchscript.__doc__ and "deprecated" in torchscript.__doc__


def test_no_text_calls_deepspeed_kernels_successors_of_fastertransformer():
    files = [*(ROOT / "labs").glob("[0-9][0-9]_*.py"), *(ROOT / "labkit").rglob("*.py")]
    for path in files:
        text = " ".join(path.read_text().split())  # sentences broken over lines joined
        for sentence in re.split(r"(?<=[.!?])\s", text):
            if "FasterTransformer" in sentence and "successor" in sentence.lower():
                assert "TensorRT-LLM" in sentence, f"{path.name}: {sentence}"
    lab_11 = " ".join(_markdown("11").split())
    assert "DeepSpeed's own fused CUDA kernels" in lab_11 and "Aminabadi et al." in lab_11
