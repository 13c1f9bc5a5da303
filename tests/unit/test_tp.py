"""Tensor parallelism on 2 real gloo ranks: every layer and the whole model equal the unsharded one
(from scratch and through DTensor), and a forward makes Megatron's 2 all-reduces per layer."""

import pickle

import pytest
import torch

from labkit.experiments import parallelism
from labkit.models import get_config
from labkit.parallel import tp
from labkit.parallel.launch import run_distributed

BATCH, SEQ = 2, 16
TOL = 1e-4  # fp32 logits; sharded matmuls sum in another order (seen: ~1e-6)


@pytest.fixture(scope="module")
def ranks():
    """One launch for every check (each launch costs seconds of imports)."""
    return run_distributed(parallelism.compare_rank, "tiny-llama", batch=BATCH, seq=SEQ, sweep_batches=(1, 4),
                           repeat=2, world_size=2, backend="gloo", timeout=240)  # fmt: skip


def test_each_layer_matches_its_unsharded_original(ranks):
    for r in ranks:
        assert set(r.layer_parity) == {"column", "row", "embedding", "mlp", "attention"}
        assert max(r.layer_parity.values()) < 1e-5, r.layer_parity


@pytest.mark.parametrize("mode", ["scratch", "dtensor"])
def test_full_model_matches_single_process(ranks, mode):
    for r in ranks:
        runs = r.runs
        assert runs[mode].logits.shape == (BATCH, SEQ, 4096)
        assert torch.allclose(runs[mode].logits, runs["single"].logits, atol=TOL, rtol=0)
    assert torch.equal(ranks[0].runs[mode].logits, ranks[1].runs[mode].logits)  # every rank sees all logits


def test_two_all_reduces_per_layer_as_megatron_says(ranks):
    run = ranks[0].runs["scratch"]
    layers, hidden = run.layers, get_config("tiny-llama").hidden_size
    assert run.comm.by_tag("all_reduce") == {"embedding": 1, "attention": layers, "mlp": layers}
    assert run.comm.count("all_reduce") == 2 * layers + 1
    assert run.comm.nbytes("all_reduce") == (2 * layers + 1) * BATCH * SEQ * hidden * 4  # fp32 activations
    assert run.comm.count("all_gather") == 1  # the vocabulary-split logits
    assert run.comm.nbytes("all_gather") == BATCH * SEQ * 4096 * 4  # the gathered (full) logits
    assert ranks[0].runs["single"].comm.summary() == {}


def test_dtensor_communicates_the_same(ranks):
    runs = ranks[1].runs
    assert runs["dtensor"].comm.summary() == runs["scratch"].comm.summary()
    assert runs["dtensor"].comm.by_tag("all_reduce") == {}  # DTensor's collectives carry no labkit tag


def test_megatron_table_measured_equals_formula(ranks):
    table = parallelism.megatron_table(ranks[0].runs["scratch"])
    assert (table.measured == table.formula).all(), table


def test_results_are_typed_and_cross_processes(ranks):
    r = ranks[0]
    assert pickle.loads(pickle.dumps(r)).runs["scratch"].comm == r.runs["scratch"].comm
    assert list(r.table()["mode"]) == list(tp.MODES)
    assert list(parallelism.layer_parity_table(ranks).index) == ["rank 0", "rank 1"]
    with pytest.raises(AttributeError):
        r.rank = 3  # frozen


def test_latency_sweep_and_errors(ranks):
    assert [s.batch for s in ranks[0].sweep] == [1, 4]
    assert all(s.ms > 0 and s.single_ms > 0 for s in ranks[0].sweep)
    with pytest.raises(ValueError, match="choose from"):
        tp.tp_forward(mode="pipeline")
    with pytest.raises(ValueError, match="Llama-architecture"):
        tp.load_llama("tiny-bloom")


@pytest.mark.gpu
def test_tensor_parallel_on_nccl():
    """The same rank functions on one GPU per rank (NCCL)."""
    if torch.cuda.device_count() < 2:
        pytest.skip(f"NCCL tensor parallelism needs 2 GPUs; this machine has {torch.cuda.device_count()}")
    ranks = run_distributed(parallelism.compare_rank, "tiny-llama", batch=BATCH, seq=SEQ, world_size=2,
                            backend="nccl")  # fmt: skip
    for r in ranks:
        assert max(r.layer_parity.values()) < 1e-4
        for mode in ("scratch", "dtensor"):
            assert torch.allclose(r.runs[mode].logits, r.runs["single"].logits, atol=1e-3, rtol=0)
        assert r.runs["scratch"].comm.count("all_reduce") == 2 * r.runs["scratch"].layers + 1


def test_the_profiler_sees_the_same_all_reduces_on_every_rank(ranks):
    from labkit.experiments import where_time_goes

    r = where_time_goes.per_rank([x.profile for x in ranks], "TP forward")
    assert [x.engine for x in r.results] == ["rank 0", "rank 1"]
    counted = ranks[0].runs["scratch"].comm.count("all_reduce")  # labkit's own counter (a dispatch mode)
    for x in r.results:  # torch.profiler, independently, sees the same all-reduces, and time spent in them
        calls = x.ops.set_index("op").calls
        assert calls[calls.index.str.startswith("c10d::allreduce")].sum() == counted
        assert x.ms("communication") > 0 and x.ms("matrix multiply") > 0
