"""Lab 08 (big models with Accelerate): recorded results, against specs and physical properties."""

import pytest

from labkit import models, precision
from labkit.models import specs


def _named_devices(scenario: str) -> set[str]:
    """ "cuda:0 52 % + cpu 48 %" -> {"cuda:0", "cpu"}."""
    return {part.strip().split(" ")[0] for part in scenario.split("+")}


def check(r: dict) -> None:
    compute = r["compute_device"]
    assert r["device"].startswith(compute) and compute.split(":")[0] == r["device_type"]  # numbers name their device
    on_gpu = r["device_type"] == "cuda"
    # the reference runs on the same device in the same precision, and the tolerance is that precision's
    assert r["dtype"] == (r["half_precision"] if on_gpu else "fp32")
    rows = r["scenarios"]
    assert len(rows) >= 3 and len({row["scenario"] for row in rows}) == len(rows)
    moved_tiers = {"cpu", "disk"} if on_gpu else {"disk"}  # Accelerate's dispatch: CPU RAM is the CPU's own memory
    # the blocks' bytes, independently: parameter count × bytes per value, a tied embedding once more (its two
    # blocks, the input embedding and the LM head, each hold it)
    config = models.resolve(r["model"]).config
    tied = config.vocab_size * config.hidden_size if getattr(config, "tie_word_embeddings", False) else 0
    all_blocks = (models.resolve(r["model"]).params + tied) * precision.bytes_per_value(r["dtype"])
    for row in rows:
        name, placement, sizes = row["scenario"], r["device_maps"][row["scenario"]], r["module_bytes"][row["scenario"]]
        assert row["tolerance"] == precision.tolerance(r["dtype"]) and row["max_rel_diff"] <= row["tolerance"]
        assert sum(sizes.values()) == pytest.approx(all_blocks)
        assert row["matches_reference"]
        # the name is where the bytes landed: every device holding weights is named, and nothing else
        holding = {d for m, d in placement.items() if sizes[m] > 0}
        assert _named_devices(name) == holding, (name, holding)
        # bytes moved per token = the parameter bytes of every block on a moved tier (from the map, by hand) ...
        by_hand = sum(sizes[m] for m, d in placement.items() if d in moved_tiers)
        assert row["MB_moved_per_token"] * 1e6 == pytest.approx(by_hand)
        # ... and what the hooks were seen to bring in during one forward (a measurement)
        assert row["MB_loaded_by_hooks"] * 1e6 == pytest.approx(by_hand)
        if not on_gpu:
            assert row["host_MB"] == 0  # no CPU RAM tier besides the compute device's memory
    resident = rows[0]  # the first budget leaves room for everything on the compute device
    assert set(r["device_maps"][resident["scenario"]].values()) == {compute} and resident["MB_moved_per_token"] == 0
    on_disk = [row["disk_MB"] for row in rows]
    assert min(on_disk) == 0 < max(on_disk)
    assert r["disk_slowdown"] > 1.0  # reading weights back every token costs time
    assert r["offloaded_hook_events"] > 0 and r["hook_events"] > r["offloaded_hook_events"]
    if on_gpu:  # the host link, measured: both copies cross it; pinned memory is read directly by the copy engine
        assert 0 < r["h2d_GBps"]["pageable"] < r["h2d_GBps"]["pinned"]
    else:
        assert r["h2d_GBps"] is None  # the GPU section was skipped
    assert r["host_memory_GBps_cpu"] > 0

    # Bytes / bandwidth is a floor: the published runs (which also compute, and pass activations between GPUs)
    # cannot beat it, and at batch 1 it explains most of their time.
    ms = r["bloom_predicted_ms"]
    published = specs.PUBLISHED_MS_PER_TOKEN["accelerate"]
    naive = next(v for k, v in ms.items() if k.startswith("8×A100, batch 1 "))
    batch32 = next(v for k, v in ms.items() if k.startswith("8×A100, batch 32"))
    assert 0.5 * published[1] < naive < published[1]
    assert batch32 < published[32] and batch32 == pytest.approx(naive / 32)
    # 2×A100 with offload, predicted from the assumed host links (not fitted): bytes / bandwidth for each link.
    bloom, hbm = specs.BLOOM_176B_BF16_GB, specs.A100_80GB.hbm_TBps * 1e3
    assert 0 < r["resident_GB"] < 2 * specs.A100_80GB.memory_GB < bloom  # the rest must cross a host link
    links = specs.HOST_LINK_GBPS
    assert set(r["offload_predicted_s"]) == set(links)
    for link, s in r["offload_predicted_s"].items():
        assert s == pytest.approx(r["resident_GB"] / hbm + (bloom - r["resident_GB"]) / links[link])
    published_s = specs.ACCELERATE_2XA100_OFFLOAD_S_PER_TOKEN
    pred = r["offload_predicted_s"]
    assert pred["pinned (PCIe 4.0 x16)"] < published_s < pred["pageable (PCIe 4.0 x16)"] < pred["NVMe"]
    assert r["offload_inside_cpu_range"]
    assert r["like_for_like_ratio"] == pytest.approx(published_s * 1e3 / published[1])  # batch 1 against batch 1
