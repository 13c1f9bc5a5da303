"""ZeRO measured: train on real ranks with DeepSpeed stages 0–3, ZeroRedundancyOptimizer and FSDP2, and read the
bytes each rank holds for parameters, gradients and optimizer states from the tensors themselves (not RSS), the
parameters a stage-3 rank gathers whole while it runs a layer, and the bytes it sends (gloo).

    runs = run_distributed(zero_training.train_ranks, world_size=2)   # per rank: a RankTraining, one run per method

The byte convention is zero.py's (ZeRO, Rajbhandari et al. 2019); METHODS says which one each method follows.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from labkit.memory import tensor_bytes
from labkit.parallel import wire
from labkit.parallel.comm import CommCounter, CommLog
from labkit.parallel.deepspeed_env import join_deepspeed
from labkit.parallel.launch import rank_device

# method -> (the ZeRO stage it corresponds to, its bytes convention (P, G, K) in fp32). FSDP2's fully_shard with its
# default reshard_after_forward=True frees each layer after its forward and gathers it again in the backward: stage 3.
METHODS = {"deepspeed-0": (0, (4, 4, 8)), "deepspeed-1": (1, (4, 4, 12)), "deepspeed-2": (2, (4, 4, 12)),
           "deepspeed-3": (3, (4, 4, 12)), "torch-zero-redundancy": (1, (4, 4, 8)), "torch-fsdp2": (3, (4, 4, 8))}


def mlp(hidden: int = 1024, layers: int = 8, seed: int = 0) -> nn.Sequential:
    """A plain MLP stack: (hidden² + hidden) × layers parameters, the same weights for a seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        blocks = [m for _ in range(layers) for m in (nn.Linear(hidden, hidden), nn.GELU())]
        return nn.Sequential(*blocks[:-1])


def _batch(step: int, hidden: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Every rank draws its own slice of one global batch: the same data whatever the stage.
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(batch * dist.get_world_size(), hidden, generator=g)
    y = torch.randn(batch * dist.get_world_size(), hidden, generator=g)
    r = dist.get_rank()
    return x[r * batch:(r + 1) * batch], y[r * batch:(r + 1) * batch]


# Why not labkit.memory.model_state_bytes: it adds up numel × element size of `p.grad` and `optimizer.state`, which
# is right for one process and wrong under ZeRO: stage 3 leaves `p.data` empty (the shard is `p.ds_tensor`), the
# fp32 master partitions and flat gradient buffers live in DeepSpeed's own attributes, not in `optimizer.state`, and
# parameters / gradients are views into one flat buffer, which must count once. So bytes are read per storage,
# deduplicated by its address; memory.tensor_bytes gives each storage's size.
def _storage_bytes(tensors: Iterator[torch.Tensor], seen: set[int]) -> int:
    """Bytes of storages not counted yet (views into one flat buffer count once)."""
    total = 0
    for t in tensors:
        if not isinstance(t, torch.Tensor) or t.numel() == 0 or t.device.type == "meta":
            continue
        try:
            s = t.untyped_storage()
            key = s.data_ptr()
        except RuntimeError:  # a wrapper without storage of its own (e.g. a DTensor): its local tensor counts
            continue
        if key in seen or s.nbytes() == 0:
            continue
        seen.add(key)
        total += tensor_bytes(t)
    return total


def _tensors_in(obj, depth: int = 3) -> Iterator[torch.Tensor]:
    """Every tensor reachable from an object's attributes, lists and dicts (buffers DeepSpeed keeps)."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif depth > 0 and isinstance(obj, (list, tuple, set)):
        for v in obj:
            yield from _tensors_in(v, depth - 1)
    elif depth > 0 and isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors_in(v, depth - 1)
    elif depth > 0 and hasattr(obj, "__dict__") and not isinstance(obj, (nn.Module, type)):
        for v in vars(obj).values():
            yield from _tensors_in(v, depth - 1)


def _param_tensors(model: nn.Module) -> Iterator[torch.Tensor]:
    for p in model.parameters():
        ds = getattr(p, "ds_tensor", None)  # ZeRO-3: this rank's shard; p.data is empty between uses
        local = getattr(p, "_local_tensor", None)  # FSDP2 DTensor: this rank's shard
        yield ds if ds is not None else local if local is not None else p.data


def _grad_tensors(model: nn.Module, opt) -> Iterator[torch.Tensor]:
    for p in model.parameters():
        if p.grad is not None:
            yield getattr(p.grad, "_local_tensor", p.grad)
    for name in ("grads_in_partition", "grad_partitions_flat_buffer", "averaged_gradients"):
        yield from _tensors_in(getattr(opt, name, None))


def _optimizer_tensors(opt) -> Iterator[torch.Tensor]:
    for name in ("single_partition_of_fp32_groups", "fp32_partitioned_groups_flat"):  # ZeRO's fp32 master
        yield from _tensors_in(getattr(opt, name, None))
    inner = getattr(opt, "optim", None) or getattr(opt, "optimizer", opt)  # the wrapped local optimizer
    for state in inner.state.values():
        yield from (getattr(t, "_local_tensor", t) for t in state.values() if isinstance(t, torch.Tensor)
                    and t.dim() > 0)  # Adam's scalar `step` is not model state


def _gathered_tensors(model: nn.Module) -> Iterator[torch.Tensor]:
    """Parameters held whole right now that the method otherwise keeps as shards (ZeRO-3, FSDP2)."""
    for m in model.modules():
        for p in m.parameters(recurse=False):
            if hasattr(p, "ds_tensor"):
                if p.data.numel() > 0:  # ZeRO-3: gathered (p.data is empty between uses)
                    yield p.data
            elif isinstance(m, FSDPModule) and not isinstance(p, DTensor):  # FSDP2: unsharded for compute
                yield p


def held_bytes(model: nn.Module, opt) -> dict[str, int]:
    """Bytes this rank holds for its model states, read from the tensors (ZeRO shards, flat buffers deduplicated).

    Args:
        model: the trained module (its parameters may be ZeRO-3 or FSDP2 shards). opt: its (wrapped) optimizer.
    Returns:
        {"params", "grads", "optimizer": model-state bytes, "buffers": everything else the optimizer holds}.
    """
    seen: set[int] = set()
    out = {"params": _storage_bytes(_param_tensors(model), seen),
           "grads": _storage_bytes(_grad_tensors(model, opt), seen),
           "optimizer": _storage_bytes(_optimizer_tensors(opt), seen)}
    gathered = (p.data for p in model.parameters() if hasattr(p, "ds_tensor"))  # ZeRO-3 params still gathered
    out["buffers"] = _storage_bytes(_tensors_in(opt), seen) + _storage_bytes(gathered, seen)  # e.g. buckets
    return out


# --- one training run per method, on every rank -------------------------------------------------
def _ds_config(stage: int, batch: int, bucket: int) -> dict:
    return {
        "train_micro_batch_size_per_gpu": batch, "gradient_accumulation_steps": 1, "steps_per_print": 10**9,
        # A client torch.optim.AdamW: DeepSpeed's own CPU Adam would be compiled on first use (~60 s).
        "zero_allow_untested_optimizer": True,
        "zero_optimization": {"stage": stage, "reduce_bucket_size": bucket, "allgather_bucket_size": bucket,
                              "stage3_param_persistence_threshold": 0, "stage3_prefetch_bucket_size": 0,
                              # Release every gathered parameter right after use, as the paper counts (3Ψ);
                              # DeepSpeed's default keeps what is reused soon and skips the backward all-gather.
                              "stage3_max_reuse_distance": 0,
                              "overlap_comm": False, "contiguous_gradients": True},
    }  # fmt: skip


@dataclass(frozen=True)
class TrainingRun:
    """One method's training on one rank. Bytes held after the last backward (all model states live):
    params, grads, optimizer (model states), buffers (anything else, e.g. communication buckets);
    grads_end_of_backward: the largest gradient bytes seen as the first layer's gradients arrived;
    gathered: the most bytes of whole parameters held at once, beyond the shards, as each layer finished its last
    forward (ZeRO-3 and FSDP2 gather a layer to run it; 0 for methods that keep every parameter whole);
    largest_layer: parameters of the largest module (one Linear here). comm: the last step's collectives.
    sent: bytes this rank wrote during the last step, i.e. sent through gloo's sockets (`wire.BytesWritten`;
    None on other backends or without Linux's /proc). losses: the mean loss over ranks after each step.
    seconds: wall time."""

    method: str
    rank: int
    world_size: int
    numel: int
    params: int
    grads: int
    optimizer: int
    buffers: int
    grads_end_of_backward: int
    gathered: int
    largest_layer: int
    comm: CommLog
    sent: int | None
    losses: tuple[float, ...]
    seconds: float

    @property
    def stage(self) -> int:
        """The ZeRO stage this method corresponds to."""
        return METHODS[self.method][0]

    def row(self) -> dict:
        """A flat table row: every field, with the step's collectives as bytes in the ZeRO paper's convention
        (all-reduce 2×: comm_paper_bytes, per collective: comm_ops) and with ring algorithms (comm_ring_bytes)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("comm", "losses")}
        return {**out, "comm_paper_bytes": self.comm.traffic_bytes(), "comm_ops": self.comm.traffic_by_op(),
                "comm_ring_bytes": self.comm.ring_bytes(self.world_size), "final_loss": self.losses[-1]}


@dataclass(frozen=True)
class RankTraining:
    """What `train_ranks` returns on one rank: one TrainingRun per method, in order."""

    rank: int
    runs: tuple[TrainingRun, ...]

    def table(self) -> pd.DataFrame:
        """One row per method (see `TrainingRun.row`); bytes are this rank's."""
        return pd.DataFrame([r.row() for r in self.runs])


def _setup(method: str, model: nn.Module, batch: int, hidden: int, lr: float):
    """(forward, backward, step, optimizer) of one method around `model`."""
    if method.startswith("deepspeed"):
        import deepspeed  # optional extra (labkit[parallel]), slow to import

        stage = int(method[-1])
        engine, opt, _, _ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=lr),
                                                 config=_ds_config(stage, batch, bucket=max(hidden * hidden // 4, 1)))
        return engine, engine.backward, engine.step, opt
    if method == "torch-zero-redundancy":  # DDP + ZeroRedundancyOptimizer ~ stage 1
        forward = DistributedDataParallel(model, gradient_as_bucket_view=True)  # grads live in DDP's buckets
        opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=torch.optim.AdamW, lr=lr)
    else:  # torch-fsdp2: fully_shard ~ stage 3
        # the mesh on the device the ranks hold their weights on: left to itself, fully_shard picks CUDA whenever a
        # GPU exists and sets rank r's device to cuda:r ("invalid device ordinal" for gloo ranks on a 1-GPU machine)
        mesh = init_device_mesh(rank_device().type, (dist.get_world_size(),))
        for block in model:
            if isinstance(block, nn.Linear):
                fully_shard(block, mesh=mesh)
        forward = fully_shard(model, mesh=mesh)
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
    return forward, (lambda loss: loss.backward()), opt.step, opt


def _train(method: str, hidden: int, layers: int, batch: int, steps: int, lr: float) -> TrainingRun:
    """`steps` AdamW steps of one method; bytes held read after the last backward (all three parts live)."""
    start = time.perf_counter()
    model = mlp(hidden, layers)
    numel = sum(p.numel() for p in model.parameters())
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    # The first layer's gradients arrive last: when they do, every gradient of the step has been computed.
    # Registered before any wrapper's own hooks, so this reads the grads before a reduction frees them.
    peak = {"grads": 0, "gathered": 0, "last": False}
    def _on_grad(_p):
        peak["grads"] = max(peak["grads"], _storage_bytes(_grad_tensors(model, opt), set()))
    for p in model[0].parameters():
        p.register_post_accumulate_grad_hook(_on_grad)
    # Also before the wrappers' hooks: this forward hook runs before ZeRO-3 / FSDP2 release the layer it ran.
    def _on_forward(*_):
        if peak["last"]:
            peak["gathered"] = max(peak["gathered"], _storage_bytes(_gathered_tensors(model), set()))
    for block in model:
        block.register_forward_hook(_on_forward)
    forward, backward, step, opt = _setup(method, model, batch, hidden, lr)
    losses, counter, held = [], CommCounter(), {}
    sent = wire.BytesWritten() if dist.get_backend() == "gloo" and wire.available() else None
    for i in range(steps):
        x, y = _batch(i, hidden, batch)
        last = peak["last"] = i == steps - 1
        with counter if last else contextlib.nullcontext(), sent if last and sent else contextlib.nullcontext():
            loss = nn.functional.mse_loss(forward(x), y)
            backward(loss)
            if last:
                held = held_bytes(model, opt)
            step()
            if not method.startswith("deepspeed"):  # DeepSpeed's step() zeroes the gradients itself
                opt.zero_grad()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        losses.append(mean.item() / dist.get_world_size())
    return TrainingRun(method, dist.get_rank(), dist.get_world_size(), numel, **held,
                       grads_end_of_backward=peak["grads"], gathered=peak["gathered"], largest_layer=largest,
                       comm=counter.log, sent=sent.nbytes if sent else None,
                       losses=tuple(losses), seconds=time.perf_counter() - start)  # fmt: skip


def train_ranks(methods: tuple[str, ...] = tuple(METHODS), hidden: int = 1024, layers: int = 8, batch: int = 4,
                steps: int = 3, lr: float = 1e-3) -> RankTraining:
    """Rank function (run it with `run_distributed`): every method in turn on a fresh copy of one MLP.

    Args:
        methods: names from METHODS. hidden, layers: the MLP, (hidden² + hidden) × layers parameters.
        batch: rows per rank per step. steps: AdamW steps. lr: learning rate.
    Returns:
        RankTraining with one TrainingRun per method.
    Raises:
        ValueError: for a method not in METHODS (before anything is built).
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
    join_deepspeed()  # DeepSpeed's extension cache, logging and shm op (an inference-only op training need not build)
    return RankTraining(dist.get_rank(), tuple(_train(m, hidden, layers, batch, steps, lr) for m in methods))
