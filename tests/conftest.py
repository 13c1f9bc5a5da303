"""Shared test set-up: offline Hub, GPU tests skipped with a reason, notebook durations reported."""

import os

# Before anything imports huggingface_hub: tests must never reach the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

NOTEBOOK_DURATIONS: dict[str, float] = {}
NOTEBOOK_MEMORY_MB: dict[str, float] = {}  # peak resident memory of each lab's kernel (and its processes)
NOTEBOOK_CPU_SECONDS: dict[str, float] = {}  # CPU time of each lab's kernel (and its processes)


def pytest_addoption(parser):
    parser.addoption("--lab-device", default=os.environ.get("LABKIT_LAB_DEVICE", "auto"),
                     help="the DEVICE parameter every lab notebook runs with (auto | cpu | cuda); "
                          "`make test-gpu` passes cuda")


@pytest.fixture(scope="session")
def lab_device(request) -> str:
    return request.config.getoption("--lab-device")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; this machine has none (run `make test-gpu` on one)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # the marker, not a name that contains "gpu"
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    if NOTEBOOK_DURATIONS:
        terminalreporter.section("notebook durations, CPU time and peak memory (smoke parameters)")
        terminalreporter.write_line("  wall     CPU    memory  lab")
        for name, seconds in sorted(NOTEBOOK_DURATIONS.items()):
            terminalreporter.write_line(f"{seconds:6.1f} s {NOTEBOOK_CPU_SECONDS.get(name, 0):6.1f} s "
                                        f"{NOTEBOOK_MEMORY_MB.get(name, 0):6.0f} MB  {name}")
        from labkit import hardware
        from labkit.notebook import durations

        durations.record(NOTEBOOK_DURATIONS, "smoke", hardware.detect().summary)  # reports/, not git
        terminalreporter.write_line(f"recorded in {durations.MEASURED} (`python -m labkit.notebook.durations "
                                    "--record` copies them into labs/durations.json)")


@pytest.fixture(scope="session")
def tiny_bloom():
    from labkit.models import load_model

    return load_model("tiny-bloom", device="cpu")
