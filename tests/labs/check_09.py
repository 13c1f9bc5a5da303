"""Lab 09 (tensor vs pipeline parallelism): what its smoke run recorded, against the model's config, Megatron's and
GPipe's formulas and the published rows in labkit.models.specs."""

from labkit.models import get_config, specs
from labkit.parallel import pp


def check(r: dict) -> None:
    config = get_config(r["model"])
    layers = config.num_hidden_layers
    assert r["layers"] == layers
    assert r["layer_parity_max"] < 1e-5  # every from-scratch TP layer equals its unsharded original
    assert r["tp_max_diff"]["single"] == 0 and max(r["tp_max_diff"].values()) < 1e-4  # scratch and DTensor
    # Megatron (Shoeybi et al. 2019): 2 all-reduces per layer + 1 for the vocabulary-split embedding, each carrying
    # batch × seq × hidden fp32 activations; DTensor's plan issues the same.
    assert r["all_reduces"] == {"scratch": 2 * layers + 1, "dtensor": 2 * layers + 1, "single": 0}
    assert r["all_reduces_by_tag"] == {"embedding": 1, "attention": layers, "mlp": layers}
    assert r["all_reduce_bytes"] == (2 * layers + 1) * r["batch"] * r["seq"] * config.hidden_size * 4
    assert max(r["pp_max_diff"].values()) < 1e-5
    assert r["naive_idle"] >= 0.45  # one rank busy at a time: on 2 ranks each idles at least half the time
    assert set(r["latency_ms"]) == {"one device", "tensor parallel", "naive pipeline", "GPipe"}
    for m, measured in r["bubble_measured"].items():  # GPipe (Huang et al. 2019) on 2 stages
        assert abs(measured - pp.bubble_formula(2, int(m))) < 0.1, (m, measured)
    assert r["bubble_measured"]["1"] > r["bubble_measured"]["8"]  # more micro-batches, smaller bubble
    published = specs.PUBLISHED_MS_PER_TOKEN
    ran = {f"{e}/{b}" for e, rows in published.items() for b, ms in rows.items() if ms is not None}
    assert set(r["costmodel_error_pct"]) == ran  # every published point that ran is predicted ...
    assert max(abs(e) for e in r["costmodel_error_pct"].values()) < 25  # ... within 25 %
    first_oom = [f"{e}/{min(b for b, ms in rows.items() if ms is None)}" for e, rows in published.items()]
    assert r["costmodel_oom"] == sorted(first_oom)  # the model runs out of memory where the benchmark did
