"""The one collective counter, and timing on all ranks: on real gloo ranks, without a model."""

import pytest
import torch

from labkit.parallel import _selftest, comm
from labkit.parallel.launch import run_distributed, time_on_all_ranks


def test_counter_sees_every_collective_with_its_tag_and_bytes():
    log = run_distributed(_selftest.collectives, world_size=2, backend="gloo")[0]
    assert log.summary() == {"all_gather": 2, "all_gather_bytes": 48 + 32, "all_reduce": 2,
                             "all_reduce_bytes": 128 + 40, "reduce_scatter": 1, "reduce_scatter_bytes": 32}
    assert log.by_tag("all_reduce") == {"attention": 1} and log.by_tag("all_gather") == {"lm_head": 1}
    # Ring accounting (ZeRO's): an all-reduce sends twice its tensor, every other collective once.
    assert log.traffic_by_op() == {"all_reduce": 2 * 168, "all_gather": 80, "reduce_scatter": 32}
    assert log.traffic_bytes() == 2 * 168 + 80 + 32


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
