"""Lab 09 (tensor vs pipeline parallelism): what its smoke run recorded, against the model's config, Megatron's and
GPipe's formulas and the published rows in labkit.models.specs."""

import statistics

import pytest

from labkit.models import get_config, specs
from labkit.parallel import pp
from tests.labs.ranks import check_ranks_device


def check(r: dict) -> None:
    check_ranks_device(r)  # the ranks' numbers name the device they ran on (this CPU, with fewer GPUs than ranks)
    assert r["costmodel_source"] == specs.BLOOM_SOURCE
    if r["multinode_nodes"]:  # a full run: two torchrun agents (nodes 0 and 1, c10d), the same TP layers, exact
        assert r["multinode_nodes"] == [0, 1] and r["multinode_layer_parity_max"] < 1e-5
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
    # torch.profiler, on each rank, sees the same Megatron all-reduces, and time spent inside them
    assert r["tp_profile_allreduce_calls"] == [2 * layers + 1] * 2
    assert all(0 < share < 1 for share in r["tp_profile_comm_share"]), r["tp_profile_comm_share"]
    assert max(r["pp_max_diff"].values()) < 1e-5
    assert r["naive_idle"] >= 0.45  # one rank busy at a time: on 2 ranks each idles at least half the time
    assert set(r["latency_ms"]) == {"one device", "tensor parallel", "naive pipeline", "GPipe"}
    for m, measured in r["bubble_measured"].items():  # GPipe (Huang et al. 2019) on 2 stages
        assert r["bubble_formula"][m] == pytest.approx(pp.bubble_formula(2, int(m)))
        # the fill and drain the schedule gives with the measured compute times (hand-offs cheap)
        assert abs(measured - r["bubble_replayed"][m]) < 0.05, (m, measured, r["bubble_replayed"][m])
    assert r["bubble_measured"]["1"] > r["bubble_measured"]["8"]  # more micro-batches, smaller bubble
    # The cost model: in-sample = the fit cells of specs.BLOOM_ROWS, held-out = the rest; errors from the published
    # times in specs and the recorded predictions.
    rows, predicted = specs.BLOOM_ROWS, r["costmodel_predicted_ms"]
    timed = {f"{k}/{b}": ms for k, row in rows.items() for b, ms in row.ms_per_token.items() if ms is not None}
    assert set(predicted) == set(timed)  # every published cell that ran is predicted (none said OOM)
    in_sample = {f"{k}/{b}" for k, row in rows.items() for b in row.fit}
    assert set(r["costmodel_in_sample"]) == in_sample
    errors = {cell: abs(100 * (predicted[cell] / ms - 1)) for cell, ms in timed.items()}
    fitted = [e for cell, e in errors.items() if cell in in_sample]
    held = sorted(e for cell, e in errors.items() if cell not in in_sample)
    assert max(fitted) < 5  # a fit's residual on its own cells
    assert held[len(held) // 2] <= 25 and len(held) >= 20  # the held-out target (median, upper middle)
    s = r["costmodel_summary"]
    assert s["held-out"]["median_abs_error_pct"] == pytest.approx(statistics.median(held))
    assert s["in-sample"]["median_abs_error_pct"] == pytest.approx(statistics.median(fitted))
    # Out of memory exactly where published, in-sample and held-out.
    published_oom = {f"{k}/{b}" for k, row in rows.items() for b, ms in row.ms_per_token.items() if ms is None}
    assert set(r["costmodel_oom"]) == published_oom
