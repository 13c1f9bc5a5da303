"""The engine's parts on their own: policies (who joins, who leaves), limits, the sampling rule, the interface."""

import inspect

import pytest
import torch

pytest.importorskip("fastapi", reason="the serving extra is not installed (pip install labkit[serve])")

from labkit.decoding.sampling import sample_next
from labkit.models import load_model
from labkit.serving.batch_engine import BatchEngine, sample_tokens
from labkit.serving.engine import Engine
from labkit.serving.hf_engine import HFEngine
from labkit.serving.limits import Limits
from labkit.serving.policies import POLICIES, View, continuous, dynamic, get_policy, sync
from labkit.serving.repository import ModelRepository, make_engine
from labkit.serving.request import Request, SamplingParams


@pytest.fixture(scope="module")
def bard():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see test_serving.py
    yield load_model("tiny-bloom-shakespeare", device="cpu")
    torch.set_num_threads(threads)


def test_policies_differ_only_in_who_joins():
    assert sync(View(waiting=3, running=0, max_batch=1)).join == 1
    assert sync(View(waiting=3, running=1, max_batch=1)).join == 0  # FIFO: the next waits for the whole answer
    early = View(waiting=2, running=0, max_batch=4, oldest_wait_s=0.005, max_wait_s=0.020)
    assert dynamic(early).join == 0 and dynamic(early).wake_in_s == pytest.approx(0.015, abs=1e-3)
    assert dynamic(View(2, 0, 4, oldest_wait_s=0.025, max_wait_s=0.020)).join == 4  # the oldest waited long enough
    assert dynamic(View(4, 0, 4, max_wait_s=1.0)).join == 4  # the batch is full
    assert dynamic(View(1, 0, 4, max_wait_s=1.0, closing=True)).join == 4  # draining: nobody waits for company
    assert dynamic(View(9, 1, 4)).join == 0  # a running batch takes nobody in
    assert continuous(View(waiting=9, running=3, max_batch=4)).join == 1  # every free slot, at every step
    assert [p.leave_together for p in POLICIES.values()] == [True, True, False]
    assert POLICIES["sync"].max_batch(Limits(max_batch=8)) == 1 and POLICIES["dynamic"].max_batch(Limits()) == 8
    with pytest.raises(ValueError, match="continuous"):
        get_policy("fifo")


@pytest.mark.parametrize(("name", "sizes"), [("dynamic", {3: 5}), ("continuous", {3: 1, 2: 4})])
def test_finished_sequences_leave_at_once_or_with_the_batch(bard, name, sizes):
    """Three requests join together; the 2-token one leaves after one decode step (continuous) or idles in its slot
    until the 6-token ones are done (dynamic): 5 decode steps either way, different batch sizes."""
    model, tok = bard
    engine = BatchEngine(model, tok, POLICIES[name], Limits(max_batch=3))
    reqs = [Request([5, 6], SamplingParams(n)) for n in (2, 6, 6)]
    for r in reqs:
        engine.submit(r)  # all queued before the worker starts: they join in one step
    engine.start().stop(drain=True)
    assert [len(r.tokens) for r in reqs] == [2, 6, 6] and dict(engine.batch_sizes) == sizes


def test_limits_are_validated_and_misspellings_raise(bard):
    assert Limits.of(max_batch=4, max_queue=2) == Limits(max_batch=4, max_queue=2)
    assert Limits.of(Limits(max_batch=4), max_queue=1) == Limits(max_batch=4, max_queue=1)
    with pytest.raises(ValueError, match="max_wait_ms"):  # the valid names are listed
        Limits.of(max_wiat_ms=5)
    with pytest.raises(ValueError, match="max_batch >= 1"):
        Limits(max_batch=0)
    with pytest.raises(ValueError, match="valid limits"):
        ModelRepository("continuous", max_batch=4, max_wiat_ms=5)
    with pytest.raises(ValueError, match="valid limits"):
        make_engine("dynamic", *bard, max_wiat_ms=5)
    repo = ModelRepository("continuous")
    with pytest.raises(ValueError, match="valid limits"):  # refused before the model is loaded
        repo.load("m", "v1", source="no-such-model", max_queu=3)
    with pytest.raises(ValueError, match="fp32"):
        repo.load("m", "v1", source="no-such-model", dtype="float8")
    assert not repo.deployments


def test_sampling_params_refuse_bad_values():
    for bad in ({"max_tokens": 0}, {"temperature": -1.0}, {"top_p": 0.0}, {"top_k": -1}):
        with pytest.raises(ValueError, match="top_p"):
            SamplingParams(**bad)


def test_sampled_rows_follow_the_one_sampling_rule():
    logits = torch.randn(3, 40)
    params = [SamplingParams(temperature=0.0), SamplingParams(temperature=0.9, top_p=0.8, seed=1),
              SamplingParams(temperature=1.3, top_k=5, seed=2)]
    got = sample_tokens(logits, [Request([1], p) for p in params])
    want = [sample_next(logits[i], p.temperature, p.top_k, p.top_p,
                        generator=torch.Generator().manual_seed(p.seed) if p.seed is not None else None)
            for i, p in enumerate(params)]
    assert got == want and got[0] == int(logits[0].argmax())


def test_every_engine_implements_the_whole_interface():
    for cls in (BatchEngine, HFEngine):
        assert not inspect.isabstract(cls)
        assert "NotImplementedError" not in inspect.getsource(cls)
    assert set(Engine.__abstractmethods__) == {"step"}


def test_engines_and_repository_serve_on_the_asked_device(bard):
    """The device threads through make_engine and ModelRepository: a bad one is refused naming the choices before
    anything loads, a model elsewhere is refused, and each deployment names where it computes."""
    from labkit import devices
    from labkit.hardware import CapabilityMissing

    with pytest.raises(ValueError, match="choose from"):
        ModelRepository("continuous", device="gpu")
    with pytest.raises(ValueError, match="choose from"):
        make_engine("sync", *bard, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(CapabilityMissing, match="no CUDA GPU"):
            ModelRepository("continuous", device="cuda")

    class ElsewhereModel:  # only its device matters: the check happens before any engine is built
        device = torch.device("cuda", 0)

    with pytest.raises(ValueError, match="not on cpu"):
        make_engine("sync", ElsewhereModel(), bard[1], device="cpu")
    engine = make_engine("sync", *bard, device="cpu")
    engine.stop()
    assert engine.device == next(bard[0].parameters()).device == torch.device("cpu")
    repo = ModelRepository("continuous", device="cpu")
    try:
        dep = repo.load("bard", "v1", loaded=bard)
        tiny = repo.load("tiny", "v1", source="tiny-llama", dtype="bf16")  # loaded by the repository, on its device
        assert next(tiny.engine.model.parameters()).device == torch.device("cpu")
        assert next(tiny.engine.model.parameters()).dtype == torch.bfloat16
        label = devices.device_label("cpu")  # "cpu (<the CPU model>)"
        assert dep.device == tiny.device == label and set(repo.table().device) == {label}
    finally:
        repo.close()


@pytest.mark.gpu
def test_engine_on_the_gpu_equals_generate_there_and_samples_with_a_cpu_seed():
    model, tok = load_model("tiny-llama", device="cuda")
    ids = [tok("Once upon a time")["input_ids"], tok("The sea")["input_ids"]]
    reference = [model.generate(torch.tensor([i], device="cuda"), max_new_tokens=6, do_sample=False,
                                pad_token_id=tok.eos_token_id)[0, len(i):].tolist() for i in ids]
    engine = make_engine("continuous", model, tok, max_batch=2, device="cuda")
    try:
        assert engine.device.type == "cuda"
        assert engine.generate(ids, SamplingParams(max_tokens=6)) == reference
        sampled = [engine.generate(ids[:1], SamplingParams(max_tokens=6, temperature=0.8, seed=3)) for _ in range(2)]
        assert sampled[0] == sampled[1]  # the seeded CPU generator drives draws from CUDA logits
    finally:
        engine.stop()
