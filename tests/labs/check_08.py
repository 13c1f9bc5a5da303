"""Lab 08 (big models with Accelerate): recorded results."""

import pytest


def check(r: dict) -> None:
    p = r["placements"]
    assert p["all in memory"] == ["cpu"] and "disk" in p["half on disk"] and "disk" in p["all on disk"]
    assert all(r["identical"].values())  # offload never changes the outputs
    assert r["disk_MB"]["all in memory"] == 0 < r["disk_MB"]["half on disk"] < r["disk_MB"]["all on disk"]
    assert r["disk_slowdown"] > 1.0  # reading weights back every token costs time
    assert r["offloaded_hook_events"] > 0 and r["hook_events"] > r["offloaded_hook_events"]
    ms = r["bloom_predicted_ms"]
    naive = next(v for k, v in ms.items() if k.startswith("8×A100, all in HBM"))
    assert naive == pytest.approx(176, rel=0.01)  # 352 GB / 2 TB/s
    assert 10 < r["implied_link_GBps"] < 15  # 192 GB in ~15 s
