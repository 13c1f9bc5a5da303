"""The one collective counter, the two ways of turning its bytes into bytes sent (the ZeRO paper's 2× per all-reduce,
the ring's 2(N − 1)/N), the bytes a gloo rank really sends, and timing on all ranks: on real gloo ranks."""

import pytest
import torch

from labkit.parallel import _selftest, comm, wire
from labkit.parallel.launch import run_distributed, time_on_all_ranks


def test_counter_sees_every_collective_with_its_tag_and_bytes():
    log = run_distributed(_selftest.collectives, world_size=2, backend="gloo")[0]
    assert log.summary() == {"all_gather": 2, "all_gather_bytes": 48 + 32, "all_reduce": 2,
                             "all_reduce_bytes": 128 + 40, "reduce_scatter": 1, "reduce_scatter_bytes": 32}
    assert log.by_tag("all_reduce") == {"attention": 1} and log.by_tag("all_gather") == {"lm_head": 1}
    # The ZeRO paper's accounting: an all-reduce counts twice its tensor, every other collective once.
    assert log.traffic_by_op() == {"all_reduce": 2 * 168, "all_gather": 80, "reduce_scatter": 32}
    assert log.traffic_bytes() == 2 * 168 + 80 + 32
    # Ring algorithms on N = 2 ranks: all-reduce 2(N - 1)/N = 1×, the others (N - 1)/N = 1/2.
    assert log.ring_by_op(2) == {"all_reduce": 168, "all_gather": 40, "reduce_scatter": 16}
    assert log.ring_bytes(4) == 1.5 * 168 + 0.75 * (80 + 32)


def test_ring_factor():
    assert [comm.ring_factor("all_reduce", n) for n in (1, 2, 4, 64)] == [0, 1, 1.5, 2 * 63 / 64]
    assert [comm.ring_factor("all_gather", n) for n in (1, 2, 4)] == [0, 0.5, 0.75]
    with pytest.raises(ValueError, match="world_size must be >= 1"):
        comm.ring_factor("all_reduce", 0)


@pytest.mark.parametrize("world_size", [2, 3])
def test_a_gloo_rank_sends_what_the_ring_formula_says_not_the_papers_2x(world_size):
    ranks = run_distributed(wire.probe_collectives, 1 << 18, world_size=world_size, backend="gloo")
    n = world_size
    for probes in ranks:
        sent = {p.op: p.sent_bytes / p.tensor_bytes for p in probes}  # measured: /proc/self/io wchar
        assert sent["all_reduce"] == pytest.approx(2 * (n - 1) / n, rel=0.01)  # 1× at N = 2, 4/3 at N = 3
        assert sent["all_gather"] == pytest.approx((n - 1) / n, rel=0.01)
        # gloo sends a reduce-scatter's whole input as an all-reduce would (the ring needs only (N - 1)/N)
        assert sent["reduce_scatter"] == pytest.approx(sent["all_reduce"], rel=0.01)
        p = probes[0]
        assert p.op == "all_reduce" and p.paper_bytes == 2 * p.tensor_bytes and p.ring_bytes < p.paper_bytes


def test_bytes_written_and_probe_inputs():
    with wire.BytesWritten() as sent:
        pass
    assert 0 <= sent.nbytes < 1024
    with pytest.raises(ValueError, match=r"choose from \['all_reduce', 'all_gather', 'reduce_scatter'\]"):
        wire.probe_collectives(ops=("all_to_all",))  # before any collective: no process group needed


def test_outside_a_process_group_nothing_is_sent_or_counted():
    with comm.CommCounter() as counter:
        t = comm.all_reduce(torch.ones(3), "mlp")
        g = comm.all_gather(torch.ones(2), 0, "lm_head")
    assert counter.log.summary() == {} and t.tolist() == [1, 1, 1] and g.tolist() == [1, 1]


def test_time_on_all_ranks_in_one_process():
    calls = []
    stats = time_on_all_ranks(lambda: calls.append(1), warmup=2, repeat=3)
    assert len(calls) == 5 and stats.n == 3 and stats.median >= 0
    with pytest.raises(ValueError, match="repeat >= 1"):
        time_on_all_ranks(lambda: None, repeat=0)
