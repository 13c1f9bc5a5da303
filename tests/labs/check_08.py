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
    naive = next(v for k, v in ms.items() if k.startswith("8×A100, all in HBM"))
    batch32 = next(v for k, v in ms.items() if k.startswith("8×A100, batch 32"))
    assert 0.5 * published[1] < naive < published[1]
    assert batch32 < published[32] and batch32 == pytest.approx(naive / 32)
    # The link that would give the published offload time: slower than a PCIe 4.0 x16 link (the L4's datasheet
    # host link), and at least as fast as streaming the non-resident bytes in the published time allows.
    streamed_gb = specs.BLOOM_176B_BF16_GB - 2 * specs.A100_80GB.memory_GB
    assert streamed_gb / specs.ACCELERATE_2XA100_OFFLOAD_S_PER_TOKEN < r["implied_link_GBps"]
    assert r["implied_link_GBps"] < specs.GPUS["L4-24GB PCIe"].link_GBps
