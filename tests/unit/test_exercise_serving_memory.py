"""The serving-memory exercise: its grader passes the reference answer, fails the usual mistakes with the failing case
named, and never raises; its reference agrees with the KV bytes the capstone's cost model reads for every published
architecture, and with the capstone's planner on the BLOOM-176B cases that stay clear of the planner's extra terms."""

import pytest

from labkit.exercises import serving_memory
from labkit.exercises.solutions import serving_memory as solutions
from labkit.models import specs


def test_the_solution_passes_and_agrees_with_the_reference_beyond_the_graded_cases():
    assert serving_memory.grade(solutions.fits).ok
    for model in specs.MODEL_CONFIGS:
        for n_gpus in (1, 2, 4, 8):
            for batch in (1, 16, 256):
                args = serving_memory._args(model, 2, specs.A100_80GB.name, n_gpus, batch, 2048)
                assert solutions.fits(*args) == serving_memory.reference(*args), (model, n_gpus, batch)


@pytest.mark.parametrize("model", list(specs.MODEL_CONFIGS))
def test_the_reference_kv_cache_is_the_capstones(model):
    """The KV bytes per GPU are the cost model's (`costmodel.shape`: anatomy.kv_cache_bytes on the real config)."""
    from labkit.parallel.costmodel import model as costmodel

    params, _, n_gpus, _, batch, seq, layers, kv_heads, head_dim, kv_bytes = serving_memory._args(
        model, 2, specs.A100_80GB.name, 4, 3, 100)
    weights, kv = serving_memory.per_gpu_gb(params, 2, n_gpus, batch, seq, layers, kv_heads, head_dim, kv_bytes)
    shape = costmodel.shape(model)
    assert kv == pytest.approx(shape.kv_bytes_per_token * batch * seq / n_gpus / 1e9, rel=1e-12)
    assert weights == pytest.approx(shape.weight_bytes / n_gpus / 1e9, rel=1e-12)


def test_the_bloom_verdicts_agree_with_the_capstones_planner():
    """Where the planner's extra terms (a second KV copy, workspace, 2 GB reserved, binary GB) cannot tip the
    verdict, `serving_plan.plan`'s tensor-parallel row (ds-inference) says the same."""
    from labkit.experiments import serving_plan

    for i in (0, 1, 2, 3):  # 8 GPUs bf16, 4 GPUs bf16, 4 GPUs int8, batch 128 × 2048
        args = serving_memory.cases()[i].args
        params, bpp, n_gpus, _, batch, seq, *_ = args
        plan = serving_plan.plan(specs.A100_80GB.name, n_gpus, precision="int8" if bpp == 1 else "bf16", batch=batch,
                                 prompt=10, new_tokens=seq - 10).table.set_index("backend")
        assert bool(plan.fits["ds-inference"]) == serving_memory.reference(*args), i


def _weights_only(params, bpp, n_gpus, gpu_gb, *rest):
    return params * bpp / n_gpus <= gpu_gb * 1e9


def _kv(layers, kv_heads, head_dim, kv_bytes, seq_len, batch, k_and_v=2):
    return k_and_v * layers * kv_heads * head_dim * kv_bytes * seq_len * batch


def test_wrong_answers_are_graded_wrong_with_what_differs():
    stub = serving_memory.grade(lambda *args: True)
    assert not stub.ok and stub.message.startswith("case 2 (") and "returned True" in stub.message
    assert "weights 88.1 GB" in stub.message and "does not fit" in stub.message
    weights = serving_memory.grade(_weights_only)
    assert not weights.ok and weights.message.startswith("case 4 (")
    only_k = serving_memory.grade(lambda p, b, n, g, bs, s, L, h, d, kvb: (p * b + _kv(L, h, d, kvb, s, bs, 1)) / n
                                  <= g * 1e9)  # fmt: skip
    assert not only_k.ok and only_k.message.startswith("case 5 (")
    whole_kv = serving_memory.grade(lambda p, b, n, g, bs, s, L, h, d, kvb: p * b / n + _kv(L, h, d, kvb, s, bs)
                                    <= g * 1e9)  # fmt: skip  # the KV cache not split over the GPUs
    assert not whole_kv.ok and whole_kv.message.startswith("case 6 (")
    bf16_kv = serving_memory.grade(lambda p, b, n, g, bs, s, L, h, d, kvb: (p * b + _kv(L, h, d, 2, s, bs)) / n
                                   <= g * 1e9)  # fmt: skip  # kv_bytes ignored
    assert not bf16_kv.ok and bf16_kv.message.startswith("case 8 (")
    bf16_weights = serving_memory.grade(lambda p, b, n, g, bs, s, L, h, d, kvb: (p * 2 + _kv(L, h, d, kvb, s, bs)) / n
                                        <= g * 1e9)  # fmt: skip  # bytes_per_param ignored
    assert not bf16_weights.ok and bf16_weights.message.startswith("case 3 (")
    number = serving_memory.grade(lambda *args: 1.0)
    assert not number.ok and "returned float 1.0, expected True or False" in number.message


def test_an_exception_in_the_learners_code_is_reported_not_raised():
    grade = serving_memory.grade(lambda *args: 1 / 0)
    assert not grade.ok and "ZeroDivisionError" in grade.message and str(grade).startswith("✗ ")
