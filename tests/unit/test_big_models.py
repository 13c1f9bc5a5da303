"""Offload measured: outputs match the same model loaded whole on the same device within the precision's tolerance,
bytes moved are accounted (and measured at the hooks), hooks run in order, latency comes from DecodeRun."""

import pytest
import torch

from labkit import models, offload, precision
from labkit.experiments import big_models


def test_offloaded_outputs_match_and_bytes_accounted():
    result = big_models.offload_latency("tiny-llama", new_tokens=3, device="cpu")
    table = result.table.set_index("scenario")
    assert result.table.attrs["device"] == "cpu" and result.table.attrs["dtype"] == "fp32"
    assert len(table) == len(big_models.scenarios_for("cpu")) == 3  # no CPU RAM tier besides the compute device
    assert table.index[0] == "cpu 100 %" and "disk" in table.index[1] and "disk" in table.index[2]
    assert table.matches_reference.all() and table.same_tokens.all()
    assert (table.tolerance == precision.tolerance("fp32")).all() and (table.max_rel_diff <= table.tolerance).all()
    assert table.loc["cpu 100 %", "disk_MB"] == 0 == table.loc["cpu 100 %", "MB_moved_per_token"]
    total = table.memory_MB + table.disk_MB
    assert total.max() - total.min() < 1e-6  # every byte is somewhere
    assert (table.host_MB == 0).all()  # on the CPU, CPU RAM is the compute device's memory
    # On the CPU only disk-resident weights move (tiny-llama ties nothing), and the hooks measured exactly that.
    assert table.MB_moved_per_token.to_numpy() == pytest.approx(table.disk_MB.to_numpy())
    assert table.MB_loaded_by_hooks.to_numpy() == pytest.approx(table.MB_moved_per_token.to_numpy())
    assert (table.ms_per_token > 0).all()
    assert table.loc["cpu 100 %", "slowdown"] == 1.0
    maps = result.table.attrs["device_maps"]
    assert set(maps) == set(table.index) and set(maps["cpu 100 %"].values()) == {"cpu"}


def test_offload_latency_rejects_bad_input_before_loading():
    with pytest.raises(ValueError, match="new_tokens must be >= 2"):
        big_models.offload_latency("tiny-llama", new_tokens=1, device="cpu")
    with pytest.raises(ValueError, match="between 0 and 1"):
        big_models.offload_latency("tiny-llama", ((2.0, 0.0),), device="cpu")
    with pytest.raises(ValueError, match="needs a GPU"):  # a CPU RAM tier besides the compute device: GPUs only
        big_models.offload_latency("tiny-llama", ((0.5, 0.5),), device="cpu")
    with pytest.raises(ValueError, match="no parity tolerance"):
        big_models.offload_latency("tiny-llama", device="cpu", dtype="int8")
    with pytest.raises(ValueError, match="choose from"):
        big_models.offload_latency("tiny-llama", device="gpu")


def test_scenarios_follow_the_compute_device():
    assert big_models.scenarios_for("cpu") == tuple(s for s in big_models.SCENARIOS if s[1] == 0)
    assert any(host > 0 for _, host in big_models.SCENARIOS)  # a GPU also gets a CPU RAM scenario


def test_hooks_bring_offloaded_weights_in_before_each_forward():
    model = offload.load_offloaded("tiny-llama", offload.max_memory_for("tiny-llama", 0.5, device="cpu"))
    events = big_models.trace_hooks(model, torch.tensor([[5, 6, 7]]))
    offloaded = events[events.offloaded]
    assert len(offloaded) > 0 and set(events.event) == {"weights in", "done"}
    assert (events.t_ms.diff().dropna() >= 0).all()  # in the order they ran
    first = events[events.module.str.startswith("model.layers.3")].index.min()
    assert events.index[events.module.str.startswith("model.layers.0")].min() < first  # layers run in order
    assert "pre_forward" not in vars(model.lm_head._hf_hook)  # the hooks are Accelerate's own again
    assert events.bytes_in.sum() == offload.bytes_moved_per_forward(model)  # measured at the hooks = the map's sum
    assert (events[~events.offloaded].bytes_in == 0).all()  # resident blocks bring nothing in
    fig = big_models.hook_timeline_figure(events, "tiny-llama")
    shown = [y for bar in fig.data for y in bar.y]
    assert "model.layers.0" in shown and not any(name.count(".") > 2 for name in shown)
    assert {bar.name for bar in fig.data if len(bar.y)} == {"resident in memory",
                                                            "offloaded: weights loaded by the hook"}


def test_tied_embedding_offloaded_to_disk_is_read_by_both_of_its_blocks():
    # BLOOM ties its LM head to the input embedding: Accelerate stores it once, but the embedding's hook and the
    # head's hook each load it, so it is read twice per forward.
    result = big_models.offload_latency("tiny-bloom", ((1.0, 0.0), (0.0, 0.0)), new_tokens=2, device="cpu")
    table = result.table.set_index("scenario")
    assert table.matches_reference.all()
    total_mb = models.estimate_memory("tiny-bloom").bytes / 1e6
    on_disk = table.loc[table.disk_MB.idxmax()]
    assert on_disk.disk_MB + on_disk.memory_MB == pytest.approx(total_mb)
    config = models.resolve("tiny-bloom").config
    embedding_mb = config.vocab_size * config.hidden_size * 4 / 1e6  # fp32
    assert on_disk.MB_moved_per_token == pytest.approx(on_disk.disk_MB + embedding_mb)
    assert on_disk.MB_loaded_by_hooks == pytest.approx(on_disk.MB_moved_per_token)


@pytest.mark.gpu
def test_gpu_offload_moves_cpu_and_disk_weights_and_matches_fp16_on_the_gpu():
    result = big_models.offload_latency("tiny-llama", new_tokens=3, device="cuda", dtype="fp16")
    table = result.table
    assert table.attrs["device"].startswith("cuda") and len(table) >= 3
    assert (table.tolerance == precision.tolerance("fp16")).all() and table.matches_reference.all()
    assert (table.host_MB > 0).any()  # the CPU RAM tier exists on a GPU
    moved = table.host_MB + table.disk_MB
    assert table.MB_moved_per_token.to_numpy() == pytest.approx(moved.to_numpy())  # tiny-llama ties nothing
    assert table.MB_loaded_by_hooks.to_numpy() == pytest.approx(table.MB_moved_per_token.to_numpy())
