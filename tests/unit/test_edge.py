"""The edge table against hand-counted bytes, a second perplexity computation and the thread setting it must restore;
OpenVINO's device list against OpenVINO itself; bad input refused before any work."""

import importlib.util
import math

import pytest
import torch

from labkit import data, models, precision
from labkit.experiments import edge
from tests.hand_counts import bloom_params

SOURCE = "tiny-bloom"  # random init: sizes, threads and the metric's formula do not need a trained model


@pytest.fixture(scope="module")
def result():
    return edge.edge_table(SOURCE, threads=1, memory_cap_mib=10, budget=256, prompt_tokens=8, repeat=1)


def test_sizes_against_the_hand_count_and_the_cap(result):
    t = result.table.set_index("quantizer")
    params = bloom_params(models.get_config(SOURCE).to_dict())
    assert t.loc["fp32", "estimate_MiB"] == pytest.approx(params * 4 / 2**20)
    assert t.loc["int8-dynamic", "estimate_MiB"] == pytest.approx(params * precision.bytes_per_value("int8") / 2**20)
    assert t.loc["fp32", "resident_MiB"] == pytest.approx(params * 4 / 2**20, rel=1e-3)  # tied LM head counted once
    # int8 Linear weights, float embedding: between the estimate (everything int8) and fp32
    assert t.loc["int8-dynamic", "estimate_MiB"] < t.loc["int8-dynamic", "resident_MiB"] < t.loc["fp32", "resident_MiB"]
    for row in t.itertuples():  # the cap is 10 MiB: fp32 (16 MiB) does not fit, the int8 estimate (4 MiB) does
        assert row.fits_estimate == (row.estimate_MiB <= 10) and row.fits_resident == (row.resident_MiB <= 10)
    assert not t.loc["fp32", "fits_estimate"] and t.loc["int8-dynamic", "fits_estimate"]
    assert t.step_ms.gt(0).all() and t.prefill_ms.gt(0).all() and (t.threads == 1).all()


def test_perplexity_is_a_second_computation(result):
    model, tok = models.load_model(SOURCE, device="cpu")
    windows = data.eval_tokens(tok, 256)
    with torch.no_grad():  # transformers' own shifted cross-entropy, mean over the window's 255 targets
        nll = sum(model(input_ids=w[None], labels=w[None]).loss.item() for w in windows) / len(windows)
    assert result.table.set_index("quantizer").loc["fp32", "perplexity"] == pytest.approx(math.exp(nll), rel=1e-4)


def test_threads_are_restored():
    before = torch.get_num_threads()
    edge.edge_table(SOURCE, quantizers=("fp32",), threads=1, budget=256, prompt_tokens=4, repeat=1)
    assert torch.get_num_threads() == before


def test_openvino_device_list(result):
    if importlib.util.find_spec("openvino") is None:
        assert result.openvino_devices == () and "not installed" in result.openvino_note
        return
    import openvino as ov

    assert result.openvino_devices == tuple(ov.Core().available_devices)
    assert "CPU" in result.openvino_devices and result.openvino_note.startswith(result.openvino_devices[0])


@pytest.mark.parametrize("kwargs, match", [
    (dict(quantizers=("int8-dynamic",)), "must start with 'fp32'"),
    (dict(quantizers=("fp32", "ort-int8")), r"come from \['fp32'"),
    (dict(threads=0), "threads, repeat and prompt_tokens must be >= 1"),
    (dict(memory_cap_mib=0), "memory_cap_mib > 0"),
])  # fmt: skip
def test_refuses_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        edge.edge_table("no-such-model", **kwargs)  # refused before the model name is resolved
