"""Offload measured: outputs stay bit-identical, bytes are accounted, hooks run in order, latency from DecodeRun."""

import pytest
import torch

from labkit import models, offload
from labkit.experiments import big_models


def test_offloaded_outputs_identical_and_bytes_accounted():
    result = big_models.offload_latency("tiny-llama", new_tokens=3)
    table = result.table.set_index("scenario")
    assert list(table.index) == list(big_models.SCENARIOS)
    assert table.identical_to_in_memory.all()  # same weights, same math: bit-identical logits and tokens
    assert table.loc["all in memory", "disk_MB"] == 0
    assert 0 < table.loc["half on disk", "disk_MB"] < table.loc["all on disk", "disk_MB"]
    total = table.memory_MB + table.disk_MB
    assert total.max() - total.min() < 1e-6  # every byte is somewhere
    assert (table.MB_moved_per_token == table.disk_MB).all()
    assert (table.ms_per_token > 0).all()
    assert table.loc["all in memory", "slowdown"] == 1.0


def test_offload_latency_rejects_bad_input_before_loading():
    with pytest.raises(ValueError, match="new_tokens must be >= 2"):
        big_models.offload_latency("tiny-llama", new_tokens=1)
    with pytest.raises(ValueError, match="between 0 and 1"):
        big_models.offload_latency("tiny-llama", {"too much": 2.0})


def test_hooks_bring_offloaded_weights_in_before_each_forward():
    model = offload.load_offloaded("tiny-llama", offload.max_memory_for("tiny-llama", 0.5))
    events = big_models.trace_hooks(model, torch.tensor([[5, 6, 7]]))
    offloaded = events[events.offloaded]
    assert len(offloaded) > 0 and set(events.event) == {"weights in", "done"}
    assert (events.t_ms.diff().dropna() >= 0).all()  # in the order they ran
    first = events[events.module.str.startswith("model.layers.3")].index.min()
    assert events.index[events.module.str.startswith("model.layers.0")].min() < first  # layers run in order
    assert "pre_forward" not in vars(model.lm_head._hf_hook)  # the hooks are Accelerate's own again
    fig = big_models.hook_timeline_figure(events, "tiny-llama")
    shown = [y for bar in fig.data for y in bar.y]
    assert "model.layers.0" in shown and not any(name.count(".") > 2 for name in shown)
    assert {bar.name for bar in fig.data if len(bar.y)} == {"resident in memory",
                                                            "offloaded: weights loaded by the hook"}


def test_tied_embedding_offloaded_to_disk():
    # BLOOM ties its LM head to the input embedding: Accelerate stores it once, the head must still find it
    result = big_models.offload_latency("tiny-bloom", {"all in memory": 1.0, "all on disk": 0.0}, new_tokens=2)
    table = result.table.set_index("scenario")
    assert table.identical_to_in_memory.all()
    total_mb = models.estimate_memory("tiny-bloom").bytes / 1e6
    assert table.loc["all on disk", "disk_MB"] + table.loc["all on disk", "memory_MB"] == pytest.approx(total_mb)
