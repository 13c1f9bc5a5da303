"""pytest plugin for `make test-gpu` (`-p scripts.gpu_labs_plugin`): labs that build the same cache files run on the
same pytest-xdist worker (`--dist loadgroup`), one after the other.

Labs 03, 04, 05 and 07 export ONNX files and build ONNX Runtime GenAI folders into the labkit cache; two of them
building one file at once would write the same temporary path. The models every lab shares are built before the labs
start (scripts/test_gpu.sh), so the other labs may run side by side.
"""

import pytest

SHARED_CACHE_GROUP = "onnx-and-genai-exports"
GROUPED_LABS = ("03", "04", "05", "07")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(items):
    for item in items:
        callspec = getattr(item, "callspec", None)
        lab = callspec.params.get("lab") if callspec is not None else None
        if lab is not None and getattr(lab, "name", "")[:2] in GROUPED_LABS:
            item.add_marker(pytest.mark.xdist_group(SHARED_CACHE_GROUP))
