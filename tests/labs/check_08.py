"""Lab 08 (big models with Accelerate): recorded results, against specs and physical properties."""

import pytest

from labkit.models import specs


def check(r: dict) -> None:
    p = r["placements"]
    assert p["all in memory"] == [r["fast_device"]]  # room for everything: one device
    assert "disk" in p["half on disk"] and "disk" in p["all on disk"]
    assert all(r["identical"].values())  # offload never changes the outputs
    assert r["disk_MB"]["all in memory"] == 0 < r["disk_MB"]["half on disk"] < r["disk_MB"]["all on disk"]
    assert r["disk_slowdown"] > 1.0  # reading weights back every token costs time
    assert r["offloaded_hook_events"] > 0 and r["hook_events"] > r["offloaded_hook_events"]

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
