"""Accelerate big-model inference: placement follows max_memory, the name is resolved and built on meta once, and the
bytes each forward moves follow the compute device."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from labkit import models, offload
from labkit.hardware import CapabilityMissing
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
    fp16 = offload.max_memory_for(spec, 0.5, device="cpu", dtype="fp16")  # the budget is of the bytes in that dtype
    assert fp16["cpu"] == spec.weight_bytes("fp16") // 2 == weights // 4


def test_budget_has_a_cpu_ram_tier_only_when_a_gpu_computes():
    """On a GPU, Accelerate fills the GPU, then CPU RAM, then disk; on the CPU, CPU RAM is the compute memory."""
    total = 1000 << 20
    assert offload.budget(total, 0.5, 0.25, 0) == {0: total // 2, "cpu": total // 4, "disk": 10 * total}
    assert offload.budget(total, 0.5, 0.0, "cpu") == {"cpu": total // 2, "disk": 10 * total}
    with pytest.raises(ValueError, match="needs a GPU"):
        offload.budget(total, 0.5, 0.5, "cpu")
    with pytest.raises(ValueError, match="between 0 and 1"):
        offload.budget(total, 0.5, -0.1, 0)


def test_gpu_device_map_puts_the_rest_in_cpu_ram_then_on_disk():
    """The map a GPU machine gets, computed without one (Accelerate only warns that device 0 is absent here)."""
    spec = models.resolve("smollm2-135m")
    total = spec.weight_bytes("fp32")
    placed = offload.device_map(spec, offload.budget(total, 0.5, 0.25, 0))
    assert [d for d in dict.fromkeys(placed.values())] == [0, "cpu", "disk"]  # filled in that order
    assert offload.compute_device(placed) == torch.device("cuda:0")
    assert offload.offloaded_tiers(placed) == {"cpu", "disk"}  # a GPU copies both in at every forward
    assert offload.tier(0) == "cuda:0" and offload.tier("disk") == "disk"
    on_cpu = offload.device_map(spec, offload.budget(total, 0.5, 0.0, "cpu"))
    assert offload.compute_device(on_cpu) == torch.device("cpu") and offload.offloaded_tiers(on_cpu) == {"disk"}


@pytest.mark.filterwarnings("ignore:Current model requires:UserWarning")  # Accelerate: 0 bytes on a GPU not here
def test_a_gpu_budget_of_zero_still_computes_on_the_gpu():
    """Seen on an H200: with 0 % on the GPU, Accelerate's map held "cpu" and "disk" only, so it computed on the CPU
    and moved the CPU blocks nothing. The smallest block stays on the GPU, which computes; both other tiers move."""
    spec = models.resolve("tiny-llama")
    placed = offload.device_map(spec, offload.budget(spec.weight_bytes("fp32"), 0.0, 0.5, 0))
    assert 0 in placed.values() and {"cpu", "disk"} <= set(placed.values())
    assert offload.compute_device(placed) == torch.device("cuda:0")
    assert offload.offloaded_tiers(placed) == {"cpu", "disk"}


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-bloom"])  # untied and tied LM head
@pytest.mark.parametrize("in_memory", [1.0, 0.5, 0.0])
def test_bytes_moved_per_forward_are_the_disk_blocks_parameters_on_the_cpu(name, in_memory, tmp_path):
    """On the CPU only "disk" blocks are read back; counted independently from the parameter shapes of the meta
    model (numel × 4 bytes in fp32) and the device map, each block that holds a tied weight counting it."""
    spec = models.resolve(name)
    model = offload.load_offloaded(spec, offload.max_memory_for(spec, in_memory, device="cpu"), tmp_path)
    named = dict(offload.empty_model(spec).named_modules())
    expected = sum(4 * sum(p.numel() for p in named[m].parameters())
                   for m, d in model.hf_device_map.items() if d == "disk")
    assert offload.bytes_moved_per_forward(model) == expected
    assert (expected == 0) == (in_memory == 1.0)
    name_ = offload.placement_name(offload.placement_table(model))
    assert name_ == "cpu 100 %" if in_memory == 1.0 else "disk" in name_


def test_host_to_device_bandwidth_on_the_cpu_is_a_host_copy_and_pinning_needs_cuda():
    gbps = offload.host_to_device_gbps("cpu", size_mib=8, repeat=2)
    assert gbps > 0 and gbps.device == "cpu" and gbps.device_name == "host memory"
    with pytest.raises(CapabilityMissing, match="CUDA"):
        offload.host_to_device_gbps("cpu", pinned=True, size_mib=8)
    with pytest.raises(ValueError, match="choose from"):
        offload.host_to_device_gbps("tpu")


@pytest.mark.gpu
def test_pinned_host_to_device_copies_are_faster_than_pageable():
    pinned, pageable = (offload.host_to_device_gbps("cuda", pinned=p, size_mib=256) for p in (True, False))
    assert pinned.device.startswith("cuda") and 1 < pageable < pinned < 1000  # PCIe / NVLink-C2C, GB/s


@pytest.mark.gpu
def test_on_a_gpu_cpu_ram_blocks_are_moved_too(tmp_path):
    spec = models.resolve("tiny-llama")
    model = offload.load_offloaded(spec, offload.max_memory_for(spec, 0.5, host=0.25, device="cuda",
                                                                dtype="fp16"), tmp_path, dtype="fp16")
    table = offload.placement_table(model)
    moved = table[table.device.isin(["cpu", "disk"])].MB.sum() * 1e6
    assert offload.bytes_moved_per_forward(model) == pytest.approx(moved)


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
    assert offload.execution_device("cpu") == torch.device("cpu") and offload.fast_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="choose from"):
        offload.execution_device("gpu")


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


def test_everything_fits_in_the_precision_it_loads_in():
    """Seen on an H200: a bf16 budget with room for every weight still sent the LM head to disk, because the blocks
    were sized in the meta model's fp32. Sized in bf16, every block stays on the GPU (computed without one)."""
    spec = models.resolve("tiny-llama")
    placed = offload.device_map(spec, offload.budget(spec.weight_bytes("bf16"), 1.0, 0.0, 0), dtype="bf16")
    assert set(placed.values()) == {0}
