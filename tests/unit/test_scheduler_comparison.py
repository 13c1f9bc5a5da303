"""The scheduler sweeps serve on the device they are given and say so in every row."""

import pytest
import torch

pytest.importorskip("fastapi", reason="the serving extra is not installed (pip install labkit[serve])")

from labkit import devices
from labkit.experiments import scheduler_comparison
from labkit.models import load_model


@pytest.fixture(scope="module")
def tiny():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model on a shared machine: see test_serving.py
    yield load_model("tiny-llama", device="cpu")
    torch.set_num_threads(threads)


def test_bad_device_or_a_model_elsewhere_is_refused_before_serving(tiny):
    with pytest.raises(ValueError, match="choose from"):
        scheduler_comparison.compare_schedulers("tiny-llama", ("sync",), device="gpu")
    with pytest.raises(ValueError, match="unknown scheduler"):
        scheduler_comparison.open_loop("tiny-llama", ("fastest",), device="cpu")
    if torch.cuda.is_available():  # a CPU model asked to serve on the GPU
        with pytest.raises(ValueError, match="not on cuda"):
            scheduler_comparison.compare_schedulers("tiny-llama", ("sync",), device="cuda", loaded=tiny)


def test_every_row_names_the_device_its_engine_computed_on(tiny):
    sweep = scheduler_comparison.compare_schedulers("tiny-llama", ("sync", "continuous"), clients=(1, 2),
                                                    requests_per_client=1, max_tokens=3, device="cpu", loaded=tiny)
    opened = scheduler_comparison.open_loop("tiny-llama", ("continuous",), rates=(20.0,), requests=3, max_tokens=3,
                                            device="cpu", loaded=tiny)
    label = devices.device_label("cpu")
    assert set(sweep.table.device) == set(opened.table.device) == {label}
    assert (sweep.table.succeeded == sweep.table.sent).all() and (opened.table.succeeded == 3).all()
