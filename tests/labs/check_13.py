"""Lab 13 (capstone: serving BLOOM-176B): what its smoke run must have recorded, against the published facts."""

import statistics

import pytest

from labkit.models import specs
from tests.labs.ranks import check_ranks_device

PUB, STARTUP, A100 = specs.PUBLISHED_MS_PER_TOKEN, specs.STARTUP_S, specs.A100_80GB


def check(r: dict) -> None:
    check_ranks_device(r, key="small_ranks_device")  # the measured part names the device its ranks ran on
    assert r["published_source"] == specs.BLOOM_SOURCE  # published numbers keep their source
    assert r["weights_GB"] == pytest.approx(specs.BLOOM_176B_BF16_GB, rel=5e-3)  # "BLOOM-176B needs 352 GB in bf16"
    # The plan on every published cell: errors from the published times in specs; in-sample = the rows' fit cells.
    rows, predicted = specs.BLOOM_ROWS, r["published_predicted_ms"]
    timed = {f"{k}/{b}": ms for k, row in rows.items() for b, ms in row.ms_per_token.items() if ms is not None}
    assert set(predicted) == set(timed)
    in_sample = {f"{k}/{b}" for k, row in rows.items() for b in row.fit}
    assert set(r["in_sample_cells"]) == in_sample
    errors = {cell: abs(100 * (predicted[cell] / ms - 1)) for cell, ms in timed.items()}
    held = [e for cell, e in errors.items() if cell not in in_sample]
    assert max(e for cell, e in errors.items() if cell in in_sample) < 5  # a fit's residual
    assert statistics.median(held) <= 25  # the held-out target
    assert r["published_summary"]["held-out"]["median_abs_error_pct"] == pytest.approx(statistics.median(held))
    published_oom = {f"{k}/{b}" for k, row in rows.items() for b, ms in row.ms_per_token.items() if ms is None}
    assert set(r["predicted_oom"]) == published_oom  # every memory verdict, in-sample and held-out
    # 8×A100-80GB at batch 16: everything fits; TP is the fastest, offloaded ZeRO the slowest.
    assert all(r["fits"].values())
    ms = r["ms_per_token"]
    assert ms["ds-inference"] < ms["accelerate"] < ms["zero-offload"] and ms["zero-inference"] < ms["zero-offload"]
    # Without offload the weights must fit in the GPUs' memory; with it, one GPU is enough.
    weights_fit = min(g for g in r["gpu_counts"] if specs.BLOOM_176B_BF16_GB / g < A100.memory_GB)
    assert r["min_gpus_batch1"] == {"accelerate": 1, "ds-inference": weights_fit, "zero-inference": weights_fit,
                                    "zero-offload": 1}  # fmt: skip
    tput = list(r["zero_offload_tokens_per_s"].values())
    assert tput == sorted(tput) and tput[-1] > 10 * tput[0]  # one stream per GPU: throughput grows with batch
    # The open question: mismatched accounting puts Accelerate ahead, as the published rows say; equal batch does not.
    traps, big, new = r["traps_looks_faster"], r["traps_batch"], r["new_tokens"]
    faster = lambda acc, ds: "accelerate" if acc < ds else "ds-inference"  # noqa: E731
    expected = {
        f"ms/token: accelerate at batch {big} vs ds-inference at batch 1": faster(PUB["accelerate"][big],
                                                                                  PUB["ds-inference"][1]),
        f"ms/token, both at batch {big}": faster(PUB["accelerate"][big], PUB["ds-inference"][big]),
        f"request latency of those runs ({new} tokens)": faster(PUB["accelerate"][big] * big, PUB["ds-inference"][1]),
    }  # fmt: skip
    assert list(expected.values()) == ["accelerate", "ds-inference", "ds-inference"]
    for source in ("published", "model"):  # the model agrees with the published rows
        for comparison, winner in expected.items():
            assert traps[f"{source}: {comparison}"] == winner
    # Start-up: at the recorded crossover both deployments have spent the same time (published start-up and speed).
    n = r["startup_crossover_tokens"]
    spent = {e: STARTUP[s] + n * PUB[e][1] / 1e3 for e, s in (("accelerate", "accelerate"),
                                                               ("ds-inference", "ds-inference (unsharded)"))}
    assert spent["accelerate"] == pytest.approx(spent["ds-inference"]) and n > 0
    links = r["crossover_link_GBps"]
    assert 0 < links["1"] < links[str(big)] < A100.link_GBps  # bigger batches carry bigger all-reduces
    # The fifth trap: ds-zero's ms/token counts the tokens of all its streams (one per GPU); the model reproduces the
    # published batch-1 cell within the held-out target, 25 % (nothing was fitted on it; misreading the accounting is a
    # factor of GPUs, 8×).
    z, zero = r["zero_trap"], rows["ds-zero bf16"]
    assert z["published_ms"] == zero.ms_per_token[1] and z["gpus"] == zero.gpus
    assert z["per_stream_published_ms"] == pytest.approx(zero.gpus * zero.ms_per_token[1])
    assert abs(z["reproduced_ms"] / zero.ms_per_token[1] - 1) < 0.25
    assert z["reproduced_ms"] == pytest.approx(predicted["ds-zero bf16/1"])  # the plan prices it as the table does
    assert z["per_stream_model_ms"] == pytest.approx(zero.gpus * z["reproduced_ms"])
    zp = r["zero_trap_published_ms"]
    assert zp["accelerate at the same batch"] == PUB["accelerate"][1] < zero.ms_per_token[1]  # the puzzle
    assert zp["accelerate with the same sequences in flight"] == PUB["accelerate"][zero.gpus] < zero.ms_per_token[1]
    assert zp["ds-inference with the same sequences in flight"] == PUB["ds-inference"][zero.gpus]
    # Measured on 2 CPU ranks: TP and the pipeline compute the same logits; batching lowers ms/token.
    assert r["small_tp_vs_pipeline_max_diff"] < 1e-4
    naive = r["small_ms_per_token"]["naive pipeline"]
    batches = sorted(naive, key=int)
    assert naive[batches[-1]] < naive[batches[0]]
    assert all(v > 0 for v in r["small_all_reduce_ms"])
    assert r["small_mismatched_pipeline_looks_ahead"]  # pipeline at the largest batch vs TP at batch 1, per token
