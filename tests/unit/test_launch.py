"""The launcher: real gloo ranks, results back in rank order, a failing rank fails the run fast."""

import time

import pytest

from labkit.parallel import _selftest
from labkit.parallel.launch import RankFailed, pick_backend, run_distributed


def test_two_ranks_all_reduce():
    results = run_distributed(_selftest.rank_and_sum, world_size=2, backend="gloo")
    assert [r["rank"] for r in results] == [0, 1]
    assert all(r["sum"] == 3.0 and r["world_size"] == 2 and r["backend"] == "gloo" for r in results)


def test_failing_rank_raises_with_its_traceback_quickly():
    start = time.monotonic()
    with pytest.raises(RankFailed, match="rank 1 of 2 failed") as err:
        run_distributed(_selftest.fail_on_rank, 1, world_size=2, backend="gloo", timeout=60)
    assert "deliberate failure on rank 1" in str(err.value) and "Traceback" in str(err.value)
    assert time.monotonic() - start < 30


def test_bad_arguments():
    with pytest.raises(ValueError, match="choose from"):
        pick_backend("mpi", 2)
    with pytest.raises(ValueError, match="importable module"):
        run_distributed(lambda: None)
    with pytest.raises(ValueError, match="world_size"):
        run_distributed(_selftest.rank_and_sum, world_size=0)
