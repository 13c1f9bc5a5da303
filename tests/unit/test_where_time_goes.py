"""Where the time goes: the profiled matrix multiplies are the model's own linear layers (counted from the module
tree), both engines are profiled on the same input, and bad input is refused before anything loads."""

import pytest
import torch

from labkit.experiments import where_time_goes


def _linears(module) -> int:
    return sum(isinstance(m, torch.nn.Linear) for m in module.modules())


def test_eager_and_onnxruntime_profile_the_same_forward():
    pytest.importorskip("onnxruntime")
    from labkit.engines import graph_for

    r = where_time_goes.eager_vs_onnxruntime("tiny-bloom", batch_size=1, seq_len=8, repeat=2, top=50)
    assert [x.engine for x in r.results] == ["PyTorch eager", "ONNX Runtime"]
    eager = r.ops[r.ops.engine == "PyTorch eager"].set_index("op").calls
    assert eager.get("aten::addmm", 0) + eager.get("aten::mm", 0) == _linears(graph_for("tiny-bloom", 1, 8).module)
    assert r.ms("ONNX Runtime", "matrix multiply") > 0 and set(r.table.engine) == {"PyTorch eager", "ONNX Runtime"}
    assert r.figure.data and len(r.figure.data) == 5  # one bar trace per category


def test_a_decode_step_runs_every_linear_layer_once():
    from labkit.models import load_model

    r = where_time_goes.decode_step("tiny-bloom", prompt_len=4, repeat=2, top=50)
    calls = r.ops.set_index("op").calls
    assert calls.get("aten::addmm", 0) + calls.get("aten::mm", 0) == _linears(load_model("tiny-bloom", device="cpu")[0])
    assert 0 < r.results[0].ms("matrix multiply") < r.results[0].wall_ms


def test_bad_input_is_refused_before_loading():
    with pytest.raises(ValueError, match="prompt_len"):
        where_time_goes.decode_step("tiny-bloom", prompt_len=0)
    with pytest.raises(ValueError, match="unknown workload"):
        where_time_goes.eager_vs_onnxruntime("no-such-model")



def test_per_rank_needs_profiles():
    with pytest.raises(ValueError, match="no profiles"):
        where_time_goes.per_rank([], "x")
