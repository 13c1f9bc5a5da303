"""Accelerate big-model inference: placement follows max_memory, the name is resolved and built on meta once."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from labkit import models, offload
from labkit.models import specs


def test_device_map_follows_max_memory():
    spec = models.resolve("tiny-llama")
    everything = offload.device_map(spec, offload.max_memory_for(spec, 1.0))
    assert set(everything.values()) == {"cpu"}
    half = offload.device_map("tiny-llama", offload.max_memory_for("tiny-llama", 0.5))  # a name works too
    assert "disk" in half.values() and "cpu" in half.values()
    assert half["model.embed_tokens"] == "cpu"  # filled in order: the first blocks stay in memory
    assert half["lm_head"] == "disk"
    nothing = offload.device_map(spec, offload.max_memory_for(spec, 0.0))
    in_memory = [m for m, d in nothing.items() if d != "disk"]
    assert in_memory == ["model.norm"]  # only the smallest block, which Accelerate needs off disk


def test_max_memory_budget_is_the_share_of_the_weight_bytes():
    spec = models.resolve("tiny-llama")
    weights = models.estimate_memory("tiny-llama").bytes
    half = offload.max_memory_for(spec, 0.5)
    assert half[offload.fast_device()] == weights // 2 and half["disk"] == 10 * weights
    assert offload.max_memory_for(spec, 1.0)[offload.fast_device()] == 2 * weights  # room for everything
    with pytest.raises(ValueError, match="between 0 and 1"):
        offload.max_memory_for("no-such-model", 1.5)  # checked before the name is resolved


def test_load_offloaded_builds_the_meta_model_once(monkeypatch):
    spec = models.resolve("tiny-llama")
    spec.params, spec.checkpoint_dir  # noqa: B018 - resolved before counting: the spec keeps both
    builds = []
    original = AutoModelForCausalLM.from_config
    monkeypatch.setattr(AutoModelForCausalLM, "from_config",
                        lambda *a, **k: builds.append(1) or original(*a, **k))
    model = offload.load_offloaded(spec, offload.max_memory_for(spec, 0.5))
    assert len(builds) == 1
    table = offload.placement_table(model)
    assert set(table.device) == {"cpu", "disk"}
    assert table.MB.sum() == pytest.approx(spec.weight_bytes("fp32") / 1e6)  # every byte placed once


@pytest.mark.parametrize("name", ["tiny-bloom", "smollm2-135m"])  # both tie the LM head to the embedding
@pytest.mark.parametrize("in_memory", [1.0, 0.5, 0.0])
def test_placement_counts_a_tied_weight_once_wherever_it_lives(name, in_memory, tmp_path):
    """Reported as 12.64 MB for tiny-bloom half on disk (the tied embedding counted zero times in memory)."""
    spec = models.resolve(name)
    table = offload.placement_table(offload.load_offloaded(spec, offload.max_memory_for(spec, in_memory), tmp_path))
    reference, _ = models.load_cached(name)  # the same weights in memory: parameters() yields a tied one once
    assert table.MB.sum() == pytest.approx(sum(p.numel() * p.element_size() for p in reference.parameters()) / 1e6)


def test_execution_device_is_the_one_device_rule():
    from labkit.hardware import resolve_device

    assert offload.execution_device().type == resolve_device("auto").type
    assert offload.fast_device() == ("cpu" if not torch.cuda.is_available() else offload.execution_device().index)


def test_offload_arithmetic_bloom_on_two_gpus():
    weights, gpu = specs.BLOOM_176B_BF16_GB, specs.A100_80GB
    fast_gbps = gpu.hbm_TBps * 1e3
    est = offload.offload_seconds_per_token(weights, 2 * gpu.memory_GB, link_gbps=16, fast_gbps=fast_gbps)
    assert est["resident_GB"] + est["streamed_GB"] == weights  # every byte is read once per step
    assert est["streamed_GB"] == weights - 2 * gpu.memory_GB
    assert est["s_per_token"] == pytest.approx(est["streamed_GB"] / 16 + est["resident_GB"] / fast_gbps)
    batched = offload.offload_seconds_per_token(weights, 2 * gpu.memory_GB, 16, fast_gbps, batch=8)
    assert batched["s_per_token"] == pytest.approx(est["s_per_token"] / 8)
    fits = offload.offload_seconds_per_token(weights, 8 * gpu.memory_GB, 16, fast_gbps)
    assert fits["streamed_GB"] == 0 and fits["s_per_token"] < est["s_per_token"]
    with pytest.raises(ValueError):
        offload.offload_seconds_per_token(weights, 160, 0, fast_gbps)
