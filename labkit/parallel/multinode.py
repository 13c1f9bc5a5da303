"""The same rank functions across machines: one `torchrun` agent per node, meeting at a c10d rendezvous.

On a cluster every node runs the same command, with its own `--node-rank`; the agents find each other through the
rendezvous endpoint (a host:port of node 0) and start their workers, which join one process group:

    torchrun --nnodes 2 --nproc-per-node 1 --node-rank 0 --rdzv-backend c10d --rdzv-endpoint node0:29500 \\
        -m labkit.parallel.launch labkit.parallel.multinode:tp_on_node        # on node 0; node 1 with --node-rank 1

`run_local_nodes` starts those agents as separate processes on this machine, with the endpoint on 127.0.0.1:
nothing in the rank function knows whether its peer is on the same machine (see PyTorch's "torchrun (Elastic
Launch)" documentation for the arguments). Rank functions are `launch.main`'s targets: the ones of
`run_distributed`, unchanged, wrapped here only to report which node ran them.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch.distributed as dist

from labkit.parallel.launch import RankFailed, free_port


def torchrun_command(target: str, node_rank: int, nnodes: int = 2, nproc_per_node: int = 1,
                     endpoint: str = "127.0.0.1:29500", run_id: str = "labkit", backend: str = "gloo",
                     out: str | None = None) -> list[str]:  # fmt: skip
    """The command line of one node's torchrun agent (c10d rendezvous; node 0 hosts its store).

    Args:
        target: "module:function", a rank function `launch.main` runs (e.g. "labkit.parallel.multinode:tp_on_node").
        node_rank: this node (0 … nnodes − 1). nnodes: machines. nproc_per_node: ranks per machine.
        endpoint: host:port of node 0's rendezvous store. run_id: the job's name (the same on every node).
        backend: process-group backend ("gloo", "nccl" or "auto"). out: folder for each rank's pickled result.
    Returns:
        argv for subprocess (`python -m torch.distributed.run …`, which is what the `torchrun` script runs).
    Raises:
        ValueError: for node_rank outside 0 … nnodes − 1, or nnodes / nproc_per_node < 1.
    """
    if nnodes < 1 or nproc_per_node < 1 or not 0 <= node_rank < nnodes:
        raise ValueError(f"need nnodes >= 1, nproc_per_node >= 1 and 0 <= node_rank < nnodes; "
                         f"got {nnodes}, {nproc_per_node}, {node_rank}")  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nnodes), "--nproc-per-node",
           str(nproc_per_node), "--node-rank", str(node_rank), "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint,
           "--rdzv-id", run_id, "--rdzv-conf", f"is_host={int(node_rank == 0)}", "--max-restarts", "0",
           "-m", "labkit.parallel.launch", target, "--backend", backend]  # fmt: skip
    return cmd + (["--out", out] if out else [])


def run_local_nodes(target: str, nnodes: int = 2, backend: str = "gloo", timeout: float = 120.0) -> list:
    """Run `target` as `nnodes` torchrun agents started separately on this machine (one rank each).

    Args:
        target: "module:function" (see `torchrun_command`). nnodes: agents, one per simulated node.
        backend: process-group backend. timeout: seconds for the whole job.
    Returns:
        each rank's return value, in global rank order.
    Raises:
        RankFailed: an agent exited with an error (its output's tail is in the message).
        TimeoutError: the job did not finish in time; no agent is left running.
    """
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # every node's worker gets one core's worth of threads
    with tempfile.TemporaryDirectory() as out:
        agents = [subprocess.Popen(torchrun_command(target, n, nnodes, 1, f"127.0.0.1:{port}", f"labkit-{port}",
                                                    backend, out),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
                  for n in range(nnodes)]  # fmt: skip
        deadline = time.monotonic() + timeout
        try:
            for n, agent in enumerate(agents):
                output, _ = agent.communicate(timeout=max(0.1, deadline - time.monotonic()))
                if agent.returncode != 0:
                    raise RankFailed(f"node {n}'s torchrun agent exited with {agent.returncode}:\n{output[-3000:]}")
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{nnodes} torchrun agents did not finish within {timeout:.0f} s") from None
        finally:
            for agent in agents:
                if agent.poll() is None:
                    agent.kill()
                    agent.wait()
        return [pickle.loads((Path(out) / f"rank{r}.pkl").read_bytes()) for r in range(nnodes)]


@dataclass(frozen=True)
class NodeRank:
    """One rank of a multi-node job: its node (torchrun's GROUP_RANK), its global rank, and what it computed."""

    node: int
    rank: int
    world_size: int
    backend: str
    result: dict[str, float]

    def table(self) -> pd.DataFrame:
        """One row: node, rank, world_size, backend and each entry of `result`."""
        return pd.DataFrame([{"node": self.node, "rank": self.rank, "world_size": self.world_size,
                              "backend": self.backend, **self.result}])  # fmt: skip


def _on_node(result: dict[str, float]) -> NodeRank:
    return NodeRank(int(os.environ.get("GROUP_RANK", 0)), dist.get_rank(), dist.get_world_size(), dist.get_backend(),
                    result)  # fmt: skip


def tp_on_node() -> NodeRank:
    """Rank function: `tp.layer_parity` (each from-scratch TP layer vs the unsplit layer), with this rank's node."""
    # Deliberately local (here and below): only the ranks run these, and the parallel layers (DTensor, torch's
    # pipelining) cost the process that only starts the agents, a notebook kernel, seconds it never uses.
    from labkit.parallel import tp

    return _on_node(tp.layer_parity())


def pp_on_node(model_name: str = "tiny-llama") -> NodeRank:
    """Rank function: `pp.pipeline_rank` (naive pipeline and GPipe, batch 2 × 8 tokens); the last rank's result
    holds max |logits − unsplit model| per schedule, the others' none."""
    from labkit.parallel import pp

    run = pp.pipeline_rank(model_name, batch=2, seq=8, steps=1, microbatches=2)
    return _on_node(run.max_diff() if run.reference_logits is not None else {})
