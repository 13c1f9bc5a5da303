"""The KV cache as the concurrency limit: the formula's count against real caches allocated until the budget."""

import json
import os
import subprocess
import sys

import pytest

from labkit import anatomy
from labkit.experiments import kv_capacity


@pytest.mark.parametrize("precision, seq, budget_mib", [("bf16", 2048, 18), ("fp32", 100, 1)])
def test_formula_count_equals_the_caches_really_allocated(precision, seq, budget_mib):
    r = kv_capacity.kv_capacity("tiny-llama", seq, precision, device="cpu", budget_bytes=budget_mib * 2**20)
    by_hand = 2 * 4 * 4 * 32 * {"bf16": 2, "fp32": 4}[precision] * seq  # K and V × layers × KV heads × head_dim × B
    assert r.per_sequence_formula_bytes == by_hand == r.per_sequence_allocated_bytes  # transformers' real cache
    assert r.formula_sequences == budget_mib * 2**20 // by_hand
    assert abs(r.allocated_sequences - r.formula_sequences) <= 1 and r.stopped_by == "budget"
    assert r.allocated_bytes <= r.budget_bytes  # never more than the budget
    assert r.memory_growth_bytes <= 1.1 * r.allocated_bytes + 2**21  # less where freed pages are reused
    whole = (r.device_free_bytes - r.weights_bytes - r.reserve_bytes) // by_hand
    assert r.device_formula_sequences == whole and r.precision == precision and r.device == "cpu"
    assert r.weights_bytes == anatomy.model_memory("tiny-llama", precision).weights_bytes


def test_bad_input_is_refused_before_loading():
    with pytest.raises(ValueError, match="budget_bytes"):
        kv_capacity.kv_capacity("tiny-llama", device="cpu")  # all of the CPU's RAM: refused
    with pytest.raises(ValueError, match="seq >= 1"):
        kv_capacity.kv_capacity("tiny-llama", 0, device="cpu", budget_bytes=2**20)
    with pytest.raises(ValueError, match="not int8"):
        kv_capacity.kv_capacity("tiny-llama", precision="int8", device="cpu", budget_bytes=2**20)
    with pytest.raises(ValueError, match="choose from"):
        kv_capacity.kv_capacity("tiny-llama", device="tpu", budget_bytes=2**20)


def test_a_fresh_process_grows_by_the_caches_bytes():
    # a second measurement of what the caches took: resident memory, in a process that has freed nothing before
    code = ("import dataclasses, json; from labkit.experiments import kv_capacity; "
            "r = kv_capacity.kv_capacity('tiny-llama', 2048, 'bf16', device='cpu', budget_bytes=18 * 2**20); "
            "print(json.dumps(dataclasses.asdict(r)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["allocated_sequences"] == 4  # 18 MiB ÷ 4 MiB
    assert r["memory_growth_bytes"] == pytest.approx(r["allocated_bytes"], rel=0.1, abs=2**21)


@pytest.mark.gpu
def test_gpu_caches_fill_a_budget_and_the_gpu_loses_that_memory():
    r = kv_capacity.kv_capacity("tiny-llama", 2048, device="cuda", budget_bytes=2**30)
    assert r.per_sequence_formula_bytes == r.per_sequence_allocated_bytes and r.precision in ("bf16", "fp16")
    assert r.allocated_sequences == r.formula_sequences == 2**30 // r.per_sequence_formula_bytes
    assert r.memory_growth_bytes == pytest.approx(r.allocated_bytes, rel=0.1, abs=2**21)  # mem_get_info: really taken
    assert r.device_formula_sequences > r.formula_sequences  # the whole card holds more than 1 GiB of caches
