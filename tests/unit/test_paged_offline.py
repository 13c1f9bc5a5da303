"""The paged engine without a server (`generate_offline`): greedy tokens equal to transformers' `generate()`, with
either runner; EOS ends the reply; `time_decode` can clock it; bad input is refused before anything runs."""

import importlib.util

import pytest
import torch

from labkit.decoding.timing import time_decode
from labkit.models import load_model
from labkit.serving.paged.offline import generate_offline
from labkit.serving.paged.runner import ModelRunner

RUNNERS = [ModelRunner]
if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):  # the engines extra
    from labkit.serving.paged.ort_runner import OrtRunner

    RUNNERS.append(OrtRunner)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


@pytest.fixture(scope="module")
def llama():
    return load_model("tiny-llama", device="cpu")[0].eval()


@pytest.mark.parametrize("runner_cls", RUNNERS, ids=lambda c: c.__name__)
def test_offline_greedy_equals_generate_and_stops_at_eos(llama, runner_cls):
    prompt = list(range(7, 30))
    ref = llama.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, pad_token_id=0)[0, 23:].tolist()
    runner = runner_cls(llama, 16, 8)
    assert generate_offline(runner, prompt, 12) == ref
    stop = ref[4]
    assert generate_offline(runner, prompt, 12, eos=[stop]) == ref[:ref.index(stop) + 1]  # the EOS token is kept
    run = time_decode(lambda mark: [generate_offline(runner, prompt, 12, mark=mark)], batch=1, new_tokens=12,
                      warmup=0, repeat=1)  # fmt: skip
    assert run.tokens == [ref] and len(run.step_s) == 11
    if runner_cls is not ModelRunner:  # one gather for the prompt, one for the first decode step, then none: the
        before = runner.gathers  # kernel appends each new token to the decode buffer it keeps
        generate_offline(runner, prompt, 12)
        assert runner.gathers - before == 2


def test_offline_refuses_what_does_not_fit(llama):
    runner = ModelRunner(llama, 2, 8)  # 16 slots
    with pytest.raises(ValueError, match="16 slots"):
        generate_offline(runner, list(range(10)), 8)
    with pytest.raises(ValueError, match="max_tokens >= 1"):
        generate_offline(runner, [], 4)
