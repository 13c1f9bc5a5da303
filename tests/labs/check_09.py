"""Lab 09 (tensor vs pipeline parallelism): what its smoke run must have recorded."""


def check(r: dict) -> None:
    layers = r["layers"]
    assert r["layer_parity_max"] < 1e-5  # every from-scratch TP layer equals its unsharded original
    assert r["tp_max_diff"]["single"] == 0 and max(r["tp_max_diff"].values()) < 1e-4  # scratch and DTensor
    assert r["all_reduces"] == {"scratch": 2 * layers + 1, "dtensor": 2 * layers + 1, "single": 0}
    assert r["all_reduces_by_tag"] == {"embedding": 1, "attention": layers, "mlp": layers}  # Megatron: 2 per layer
    assert r["all_reduce_bytes"] == (2 * layers + 1) * r["batch"] * r["seq"] * 256 * 4
    assert max(r["pp_max_diff"].values()) < 1e-5
    assert r["naive_idle"] >= 0.45  # one rank busy at a time: on 2 ranks each idles at least half the time
    assert set(r["latency_ms"]) == {"one device", "tensor parallel", "naive pipeline", "GPipe"}
    for m, formula in r["bubble_formula"].items():
        assert abs(r["bubble_measured"][m] - formula) < 0.1, (m, r["bubble_measured"][m], formula)
    assert r["bubble_measured"]["1"] > r["bubble_measured"]["8"]  # more micro-batches, smaller bubble
    assert len(r["costmodel_error_pct"]) == 10
    assert max(abs(e) for e in r["costmodel_error_pct"].values()) < 25  # every non-OOM published point
    assert r["costmodel_oom"] == ["accelerate/64", "ds-inference/256"]
