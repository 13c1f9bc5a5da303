"""`labkit doctor`'s per-lab needs: the extras' packages come from labkit's own metadata, a missing one is named with
its install command, and the GPU sections are the ones each lab's source declares."""

import re

from labkit.notebook import needs
from labkit.notebook.run import LABS_DIR


def test_extras_come_from_the_package_metadata():
    assert "deepspeed" in needs.extra_packages("parallel")
    assert {"onnxruntime", "onnxruntime-genai"} <= set(needs.extra_packages("engines"))
    assert needs.extra_packages("no-such-extra") == []


def test_every_lab_listed_with_its_gpu_sections_from_its_source(monkeypatch):
    monkeypatch.setattr(needs, "installed", lambda dist: dist != "deepspeed")  # a machine without DeepSpeed
    got = {n.lab[:2]: n for n in needs.lab_needs()}
    assert sorted(got) == sorted(p.name[:2] for p in LABS_DIR.glob("[0-9][0-9]_*.py"))
    assert got["10"].missing == ["deepspeed (pip install 'labkit[parallel]')"] and got["00"].missing == []
    for number, n in got.items():  # the sections are the strings the lab passes to dev.gpu_section(...)
        source = next(LABS_DIR.glob(f"{number}_*.py")).read_text()
        assert n.gpu_sections == re.findall(r'gpu_section\(\s*"([^"]+)"', source)
    assert got["04"].gpu_sections  # TensorRT and the CUDA provider only run on a GPU
