"""The launcher: real gloo ranks, results back in rank order, a failing rank fails the run fast."""

import importlib.util
import time

import pytest
import torch

from labkit.devices import device_label
from labkit.parallel import _selftest
from labkit.parallel.launch import RankFailed, backend_environment, pick_backend, place_ranks, run_distributed


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


def test_gloo_ranks_use_deepspeeds_cpu_accelerator():
    """A gloo rank has no GPU of its own: DeepSpeed must not pick CUDA there, even on a machine with a GPU."""
    assert backend_environment("gloo") == {"DS_ACCELERATOR": "cpu"}
    assert backend_environment("nccl") == {"DS_ACCELERATOR": "cuda"}
    ranks = run_distributed(_selftest.deepspeed_accelerator, world_size=2, backend="gloo")
    assert all(r["env"] == "cpu" and r["backend"] == "gloo" for r in ranks)
    if importlib.util.find_spec("deepspeed") is not None:  # DeepSpeed's own answer, from inside the rank
        assert [r["accelerator"] for r in ranks] == ["cpu", "cpu"]


def test_place_ranks_names_the_device_the_ranks_use():
    cpu = place_ranks("cpu", 2)
    assert (cpu.backend, cpu.ranks_device) == ("gloo", device_label("cpu")) and "CPU" in cpu.sentence()
    if torch.cuda.device_count() < 2:  # one GPU or none: the ranks run on the CPU, and say so
        auto = place_ranks("auto", 2)
        assert (auto.backend, auto.ranks_device) == ("gloo", device_label("cpu"))
    assert place_ranks("auto", 1, nccl_ok=False).backend == "gloo"
    with pytest.raises(ValueError, match="world_size"):
        place_ranks("cpu", 0)


@pytest.mark.gpu
def test_place_ranks_on_a_gpu_per_rank_uses_nccl_and_names_the_gpu():
    one = place_ranks("cuda", 1)
    assert one.backend == "nccl" and one.ranks_device == f"cuda:0 ({torch.cuda.get_device_name(0)})"
    deepspeed_cpu = place_ranks("cuda", 1, nccl_ok=False)
    assert deepspeed_cpu.backend == "gloo" and deepspeed_cpu.ranks_device == device_label("cpu")
