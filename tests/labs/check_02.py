"""Lab 02 (inference system architecture): what its smoke run must have recorded."""

import hashlib
from pathlib import Path

import pytest


def _leading_matches(x: list, y: list) -> int:
    """Tokens equal from the start until the first difference (greedy prefix agreement, counted by hand)."""
    n = 0
    while n < len(x) and x[n] == y[n]:
        n += 1
    return n


def _sha256(path: Path) -> str:
    """A file's SHA-256 read in one go with hashlib (the registry hashes in chunks)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _folder_sha256(folder: Path) -> str:
    """A folder's hash as the registry defines it: SHA-256 of the `sha256sum` lines of its files, sorted by name."""
    files = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.relative_to(folder).as_posix())
    return hashlib.sha256("".join(f"{_sha256(f)}  {f.relative_to(folder).as_posix()}\n" for f in files).encode()
                          ).hexdigest()


def check_registry(r: dict) -> None:
    """Section 7: hashes recomputed from the files, lineage by hash, sizes from the parameter count, the tamper, and
    every gate decision recomputed from the recorded measurements and the rule."""
    from labkit.data import shakespeare

    reg, tamper, rule = r["registry"], r["registry_tamper"], r["registry_rule"]
    assert r["registry_order"] == ["v1", "v2", "v3", "v4"]
    assert r["registry_data_sha256"] == hashlib.sha256(shakespeare("train").encode()).hexdigest()
    # content hashes, recomputed here: v1 a folder, v2 and v3 single files; v4's file no longer has its hash
    assert reg["v1"]["format"] == "safetensors" and _folder_sha256(Path(reg["v1"]["path"])) == reg["v1"]["sha256"]
    for v in ("v2", "v3"):
        assert reg[v]["format"] == "onnx" and _sha256(Path(reg[v]["path"])) == reg[v]["sha256"]
        assert Path(reg[v]["path"]).stat().st_size == reg[v]["size_bytes"]
    # lineage: each version's parent is the previous one's content hash; the copy registered with v3's bytes
    assert reg["v1"]["parent"] is None
    assert [reg[v]["parent"] for v in ("v2", "v3", "v4")] == [reg[v]["sha256"] for v in ("v1", "v2", "v3")]
    assert reg["v4"]["sha256"] == reg["v3"]["sha256"] == tamper["sha256_before"]
    # tamper: one byte XOR 0xFF; the file now hashes to the recorded "after"; about half of the 256 bits changed
    after = _sha256(Path(reg["v4"]["path"]))
    assert after == tamper["sha256_after"] != tamper["sha256_before"]
    assert tamper["new_byte"] == tamper["old_byte"] ^ 0xFF
    assert tamper["bits_changed"] == bin(int(tamper["sha256_before"], 16) ^ int(after, 16)).count("1")
    assert 128 - 6 * 8 <= tamper["bits_changed"] <= 128 + 6 * 8  # binomial(256, 1/2): 128 ± 8, six sd either side
    # sizes: fp32 ONNX ~ 4 bytes per parameter (plus a little graph); int8 ~ 1 byte per weight: about a quarter
    assert 4 * r["registry_params"] <= reg["v2"]["size_bytes"] <= 1.05 * 4 * r["registry_params"]
    assert 0.2 < reg["v3"]["size_bytes"] / reg["v2"]["size_bytes"] < 0.35
    # quality: the ONNX export is the same model in another runtime; int8 stays close to it
    assert reg["v2"]["perplexity"] == pytest.approx(reg["v1"]["perplexity"], rel=1e-3)
    assert reg["v1"]["top1_agreement"] == 1 and reg["v2"]["top1_agreement"] > 0.99 and reg["v3"]["top1_agreement"] > 0.9
    assert all(0 < reg[v]["p50_ms"] <= reg[v]["p99_ms"] for v in ("v1", "v2", "v3"))
    # the gate, replayed by hand in registration order against the production version of the moment
    production = None
    for v in r["registry_order"]:
        m, intact = reg[v], v != "v4"  # only v4's bytes changed since registration (checked above)
        if production is None:
            promote = intact and "perplexity" in m and "p99_ms" in m
        else:
            p = reg[production]
            promote = (intact and m["perplexity"] <= p["perplexity"] * (1 + rule["max_quality_increase"])
                       and m["p99_ms"] <= p["p99_ms"] * (1 + rule["max_p99_increase"]))
        gate = r["registry_gates"][v]
        assert gate["compared_with"] == production and gate["action"] == ("promote" if promote else "refuse"), (v, gate)
        assert (not gate["reasons"]) == promote and (intact or any("integrity" in x for x in gate["reasons"]))
        production = v if promote else production
    assert r["registry_gates"]["v1"]["action"] == "promote" and r["registry_gates"]["v4"]["action"] == "refuse"
    stages = {v: e["stage"] for v, e in reg.items()}
    assert [v for v, s in stages.items() if s == "production"] == [production]
    for v, g in r["registry_gates"].items():  # promoted then replaced: archived; refused: still a candidate
        want = "production" if v == production else "archived" if g["action"] == "promote" else "candidate"
        assert stages[v] == want, (v, stages[v], want)


def check(r: dict) -> None:
    # every version computed on the device the lab recorded (read from each engine's model), v2 in its 16-bit float
    assert set(r["served_on"]) == {"v1", "v2"} and set(r["served_on"].values()) == {r["device"]}
    assert r["canary_dtype"] == r["half_precision"]
    assert r["first_reply_status"] == 200 and r["stream_pieces"] >= 1
    assert r["refusal_statuses"] == {"malformed JSON": 400, "unknown model": 404, "max_tokens over the limit": 400,
                                     "temperature out of range": 400}
    b = r["burst"]
    assert b["sent"] == r["burst_clients"] and b["failed"] == 0  # every client got an answer: none lost
    # the server's own counters (/metrics) agree with what the clients saw
    assert r["burst_server_statuses"] == {"200": b["succeeded"], "429": b["rejected"]}
    assert b["rejected"] > 0 and set(b["rejected_by_status"]) == {"429"}  # the small queue said no
    assert abs(r["canary_measured"] - r["canary_target"]) < 0.2
    assert r["server_counts_by_version"] == r["client_counts_by_version"]  # metrics agree with clients
    # Little's law under open-loop load: the server's gauge (time-average of queue + batch, sampled from /metrics)
    # against λ·W from the clients' own clocks. The gauge leaves out the HTTP layer, so it can only be a bit lower.
    little = r["little"]
    assert little["answered"] + little["refused"] == little["sent"] and little["readings"] >= 20
    assert little["lambda_W"] == pytest.approx(little["arrival_rate"] * little["mean_latency_s"])
    assert 0.6 < little["gauge_mean"] / little["lambda_W"] <= 1.1
    # The canary's decision follows from the recorded numbers and the rule fixed up front, recomputed here by hand.
    v1, v2 = r["canary_tokens"]["v1"], r["canary_tokens"]["v2"]
    assert len(v1) == len(v2) == r["agreement_prompts"]
    assert all(len(x) == len(y) for x, y in zip(v1, v2, strict=True))
    assert r["canary_agreement"] == pytest.approx(sum(map(_leading_matches, v2, v1)) / sum(map(len, v1)))
    ttft = r["canary_ttft_p50_s"]
    assert r["canary_ttft_ratio"] == pytest.approx(ttft["v2"] / ttft["v1"])
    rule = r["canary_rule"]
    canary_requests = r["client_counts_by_version"]["v2"]  # what the clients saw v2 answer
    promote = (canary_requests >= rule["min_requests"] and r["canary_agreement"] >= rule["min_agreement"]
               and r["canary_ttft_ratio"] <= rule["max_ttft_ratio"])
    assert r["canary_action"] == ("promote" if promote else "roll back")
    assert r["versions_after_decision"] == (["v2"] if promote else ["v1"])  # the decision was carried out
    assert r["ttft_mean_ms"] > 0
    check_registry(r)
