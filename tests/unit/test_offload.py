"""Accelerate big-model inference: placement follows max_memory, offloaded outputs are identical."""

import pytest
import torch

from labkit import offload


def test_device_map_follows_max_memory():
    everything = offload.device_map("tiny-llama", offload.max_memory_for("tiny-llama", 1.0))
    assert set(everything.values()) == {"cpu"}
    half = offload.device_map("tiny-llama", offload.max_memory_for("tiny-llama", 0.5))
    assert "disk" in half.values() and "cpu" in half.values()
    assert half["model.embed_tokens"] == "cpu"  # filled in order: the first blocks stay in memory
    assert half["lm_head"] == "disk"
    nothing = offload.device_map("tiny-llama", offload.max_memory_for("tiny-llama", 0.0))
    in_memory = [m for m, d in nothing.items() if d != "disk"]
    assert in_memory == ["model.norm"]  # only the smallest block, which Accelerate needs off disk


def test_offloaded_outputs_identical_and_bytes_accounted():
    result = offload.offload_latency("tiny-llama", new_tokens=3)
    table = result.table.set_index("scenario")
    assert table.identical_to_in_memory.all()  # same weights, same math: bit-identical logits and tokens
    assert table.loc["all in memory", "disk_MB"] == 0
    assert 0 < table.loc["half on disk", "disk_MB"] < table.loc["all on disk", "disk_MB"]
    total = table.memory_MB + table.disk_MB
    assert total.max() - total.min() < 1e-6  # every byte is somewhere
    assert (table.MB_moved_per_token == table.disk_MB).all()
    assert (table.ms_per_token > 0).all()


def test_hooks_bring_offloaded_weights_in_before_each_forward():
    model = offload.load_offloaded("tiny-llama", offload.max_memory_for("tiny-llama", 0.5))
    events = offload.trace_hooks(model, torch.tensor([[5, 6, 7]]))
    offloaded = events[events.offloaded]
    assert len(offloaded) > 0 and set(events.event) == {"weights in", "done"}
    assert (events.t_ms.diff().dropna() >= 0).all()  # in the order they ran
    first = events[events.module.str.startswith("model.layers.3")].index.min()
    assert events.index[events.module.str.startswith("model.layers.0")].min() < first  # layers run in order
    assert "pre_forward" not in vars(model.lm_head._hf_hook)  # the hooks are Accelerate's own again


def test_offload_arithmetic_bloom_on_two_gpus():
    # BLOOM-176B bf16 (352 GB) on 2×A100-80GB: 160 GB resident, 192 GB streamed per step
    est = offload.offload_seconds_per_token(352, 160, link_gbps=16, fast_gbps=2000)
    assert est["streamed_GB"] == 192 and est["s_per_token"] == pytest.approx(192 / 16 + 160 / 2000)
    batched = offload.offload_seconds_per_token(352, 160, 16, 2000, batch=8)
    assert batched["s_per_token"] == pytest.approx(est["s_per_token"] / 8)
    with pytest.raises(ValueError):
        offload.offload_seconds_per_token(352, 160, 0, 2000)
    with pytest.raises(ValueError, match="between 0 and 1"):
        offload.max_memory_for("tiny-llama", 1.5)


def test_tied_embedding_offloaded_to_disk():
    # BLOOM ties its LM head to the input embedding: Accelerate stores it once, the head must still find it
    result = offload.offload_latency("tiny-bloom", {"all in memory": 1.0, "all on disk": 0.0}, new_tokens=2)
    table = result.table.set_index("scenario")
    assert table.identical_to_in_memory.all()
    total_mb = offload.models.estimate_memory("tiny-bloom").bytes / 1e6
    assert table.loc["all on disk", "disk_MB"] + table.loc["all on disk", "memory_MB"] == pytest.approx(total_mb)
