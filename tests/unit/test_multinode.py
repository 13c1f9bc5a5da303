"""Two torchrun agents, started separately as two nodes would be, run the same rank functions over c10d."""

import pytest

from labkit.parallel import multinode


def test_two_torchrun_nodes_run_a_tp_layer_like_the_plain_layer():
    ranks = multinode.run_local_nodes("labkit.parallel.multinode:tp_on_node", nnodes=2, timeout=120)
    assert [(r.node, r.rank, r.world_size, r.backend) for r in ranks] == [(0, 0, 2, "gloo"), (1, 1, 2, "gloo")]
    for r in ranks:  # every from-scratch TP layer equals the unsplit layer (fp32 rounding)
        assert set(r.result) == {"column", "row", "embedding", "mlp", "attention"}
        assert max(r.result.values()) < 1e-5


def test_torchrun_command_is_one_agent_per_node():
    cmd = multinode.torchrun_command("labkit.parallel.multinode:tp_on_node", 1, endpoint="10.0.0.1:29500")
    flags = dict(zip(cmd[3::2], cmd[4::2], strict=False))
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    assert (flags["--nnodes"], flags["--nproc-per-node"], flags["--node-rank"]) == ("2", "1", "1")
    assert (flags["--rdzv-backend"], flags["--rdzv-endpoint"], flags["--rdzv-conf"]) == ("c10d", "10.0.0.1:29500",
                                                                                       "is_host=0")
    with pytest.raises(ValueError, match="node_rank"):
        multinode.torchrun_command("m:f", 2, nnodes=2)
