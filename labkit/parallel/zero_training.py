"""ZeRO measured: train on real ranks with DeepSpeed stages 0–3, ZeroRedundancyOptimizer and FSDP2, and read the
bytes each rank holds for parameters, gradients and optimizer states from the tensors themselves (not RSS).

    zero_ranks.measure()          # every method on 2 gloo ranks; measured vs formula MB per rank
    run_distributed(zero_ranks.train_ranks, world_size=2)   # the raw per-rank rows

The byte convention is zero.py's; METHODS says which one each method follows.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

import pandas as pd
import plotly.graph_objects as go
import torch
import torch.distributed as dist
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from labkit import plots
from labkit.cache import cache_dir
from labkit.measure import results_frame
from labkit.parallel.zero import comm_volume, stacked_bars, zero_memory

# method -> (the ZeRO stage it corresponds to, its bytes convention (P, G, K) in fp32)
METHODS = {"deepspeed-0": (0, (4, 4, 8)), "deepspeed-1": (1, (4, 4, 12)), "deepspeed-2": (2, (4, 4, 12)),
           "deepspeed-3": (3, (4, 4, 12)), "torch-zero-redundancy": (1, (4, 4, 8)), "torch-fsdp2": (3, (4, 4, 8))}

# --- measuring real ranks ----------------------------------------------------------------------
def use_extension_cache() -> str:
    """Point TORCH_EXTENSIONS_DIR into labkit's cache: DeepSpeed compiles its C++/CUDA ops there once."""
    path = os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(cache_dir("torch_extensions")))
    return path


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
        total += s.nbytes()
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


def held_bytes(model: nn.Module, opt) -> dict[str, int]:
    """Bytes this rank holds for params, grads and optimizer states, read from the tensors; other buffers apart."""
    seen: set[int] = set()
    out = {"params": _storage_bytes(_param_tensors(model), seen),
           "grads": _storage_bytes(_grad_tensors(model, opt), seen),
           "optimizer": _storage_bytes(_optimizer_tensors(opt), seen)}
    gathered = (p.data for p in model.parameters() if hasattr(p, "ds_tensor"))  # ZeRO-3 params still gathered
    out["buffers"] = _storage_bytes(_tensors_in(opt), seen) + _storage_bytes(gathered, seen)  # e.g. buckets
    return out


# c10d op -> (index of the argument whose bytes count, factor): what one rank moves per call with ring
# algorithms (all-reduce = reduce-scatter + all-gather = 2x its tensor; the (N-1)/N factor is left out).
COLLECTIVES = {"allreduce_": (0, 2), "allgather_": (0, 1), "_allgather_base_": (0, 1), "reduce_scatter_": (1, 1),
               "_reduce_scatter_base_": (1, 1), "broadcast_": (0, 1), "reduce_": (0, 1), "alltoall_base_": (1, 1),
               "all_reduce": (0, 2), "all_gather_into_tensor": (0, 1), "reduce_scatter_tensor": (0, 1)}


def _nbytes(x) -> int:
    if isinstance(x, torch.Tensor):
        return x.numel() * x.element_size()
    return sum(_nbytes(v) for v in x) if isinstance(x, (list, tuple)) else 0


class CommCounter(TorchDispatchMode):
    """Bytes this rank passes through collectives, per op: sees every c10d op, whoever calls it
    (DeepSpeed, DDP, ZeroRedundancyOptimizer, FSDP2, DTensor)."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        ns, name = func.namespace, func._opname
        if ns in ("c10d", "_c10d_functional") and name in COLLECTIVES:
            index, factor = COLLECTIVES[name]
            size = _nbytes(args[index])
            if ns == "_c10d_functional" and name == "all_gather_into_tensor":
                size *= args[1]  # (input, group_size, group_name): the output is group_size inputs
            self.bytes[name] = self.bytes.get(name, 0) + factor * size
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.bytes.values())


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


def _train(method: str, hidden: int, layers: int, batch: int, steps: int, lr: float) -> dict:
    """`steps` AdamW steps of one method; bytes held read after the last backward (all three parts live)."""
    model = mlp(hidden, layers)
    numel = sum(p.numel() for p in model.parameters())
    # The first layer's gradients arrive last: when they do, every gradient of the step has been computed.
    # Registered before any wrapper's own hooks, so this reads the grads before a reduction frees them.
    peak = {"grads": 0}
    def _on_grad(_p):
        peak["grads"] = max(peak["grads"], _storage_bytes(_grad_tensors(model, opt), set()))
    for p in model[0].parameters():
        p.register_post_accumulate_grad_hook(_on_grad)
    if method.startswith("deepspeed"):
        import deepspeed

        stage = int(method[-1])
        engine, opt, _, _ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=lr),
                                                 config=_ds_config(stage, batch, bucket=max(hidden * hidden // 4, 1)))
        forward, backward, step = engine, engine.backward, engine.step
    elif method == "torch-zero-redundancy":  # DDP + ZeroRedundancyOptimizer ~ stage 1
        from torch.distributed.optim import ZeroRedundancyOptimizer
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(model, gradient_as_bucket_view=True)  # grads live in DDP's buckets
        opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=torch.optim.AdamW, lr=lr)
        backward, step = (lambda loss: loss.backward()), opt.step
    elif method == "torch-fsdp2":  # fully_shard ~ stage 3
        from torch.distributed.fsdp import fully_shard

        for block in model:
            if isinstance(block, nn.Linear):
                fully_shard(block)
        forward = fully_shard(model)
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        backward, step = (lambda loss: loss.backward()), opt.step
    else:
        raise ValueError(f"unknown method {method!r}; choose from {list(METHODS)}")
    losses, comm, held = [], CommCounter(), {}
    for i in range(steps):
        x, y = _batch(i, hidden, batch)
        last = i == steps - 1
        with comm if last else contextlib.nullcontext():
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
    return {"method": method, "numel": numel, **held, "grads_end_of_backward": peak["grads"],
            "comm_bytes": comm.total, "comm_ops": dict(comm.bytes), "losses": losses}


def train_ranks(methods: tuple[str, ...] = tuple(METHODS), hidden: int = 1024, layers: int = 8, batch: int = 4,
                steps: int = 3, lr: float = 1e-3) -> list[dict]:
    """Rank function (run it with `run_distributed`): every method in turn on a fresh copy of one MLP."""
    from labkit.parallel.deepspeed_inference import disable_shm_allreduce, quiet_deepspeed

    quiet_deepspeed()
    use_extension_cache()
    disable_shm_allreduce()  # an inference-only op: training need not compile it
    rows = []
    for method in methods:
        start = time.perf_counter()
        row = _train(method, hidden, layers, batch, steps, lr)
        rows.append({**row, "rank": dist.get_rank(), "world_size": dist.get_world_size(),
                     "seconds": time.perf_counter() - start})
    return rows


# --- in the notebook: run the ranks, compare with the formula ------------------------------------
def measure(hidden: int = 2048, layers: int = 6, batch: int = 4, steps: int = 3,
            methods: tuple[str, ...] = tuple(METHODS), world_size: int = 2) -> plots.Measured:
    """Train with every method on `world_size` real ranks; measured vs formula bytes per rank (MB)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
    from labkit.parallel.launch import run_distributed

    ranks = run_distributed(train_ranks, tuple(methods), hidden=hidden, layers=layers, batch=batch, steps=steps,
                            world_size=world_size, timeout=900)
    return compare(ranks)


def model_state_grads(row: dict) -> int:
    """The gradient bytes ZeRO's formula counts. DeepSpeed's stage 1 (and 0) hold a full gradient at the end of
    backward, then all-reduce it and keep only their partition; stages 2–3 reduce bucket by bucket as backward
    runs, so what they keep after backward is the partition."""
    return row["grads_end_of_backward"] if row["method"] in ("deepspeed-0", "deepspeed-1") else row["grads"]


def compare(ranks: list[list[dict]]) -> plots.Measured:
    """Rank results -> one row per method: measured MB (the larger over ranks) next to the formula's."""
    rows = []
    for method_rows in zip(*ranks, strict=True):
        r0 = method_rows[0]
        stage, (p, g, k) = METHODS[r0["method"]]
        f = zero_memory(r0["numel"], stage, r0["world_size"], k, p, g)
        grads = max(model_state_grads(r) for r in method_rows)
        measured = {part: max(r[part] for r in method_rows) for part in ("params", "optimizer", "buffers")}
        total = measured["params"] + grads + measured["optimizer"]
        rows.append({
            "method": r0["method"], "stage": stage, "bytes P/G/K": f"{p}/{g}/{k}", "params_M": r0["numel"] / 1e6,
            "params_MB": measured["params"] / 1e6, "grads_MB": grads / 1e6, "optimizer_MB": measured["optimizer"] / 1e6,
            "total_MB": total / 1e6, "formula_MB": f.total / 1e6, "measured/formula": total / f.total,
            "formula_params_MB": f.params / 1e6, "formula_grads_MB": f.grads / 1e6,
            "formula_optimizer_MB": f.optimizer / 1e6, "other_buffers_MB": measured["buffers"] / 1e6,
            "grads_kept_after_backward_MB": max(r["grads"] for r in method_rows) / 1e6,
            "comm_MB_per_step": r0["comm_bytes"] / 1e6,
            "comm_formula_MB": comm_volume(r0["numel"], stage, 4) / 1e6, "comm_ops": r0["comm_ops"],
            "final_loss": r0["losses"][-1], "seconds": r0["seconds"],
        })  # fmt: skip
    df = results_frame(rows, world_size=ranks[0][0]["world_size"])
    fig = stacked_bars(df, "method", ["params_MB", "grads_MB", "optimizer_MB"],
                       f"Model-state bytes per rank, {df.params_M.iloc[0]:.1f} M params on {len(ranks)} ranks (fp32)",
                       "MB per rank")
    fig.add_trace(go.Scatter(x=df.method, y=df.formula_MB, mode="markers", name="formula",
                             marker=dict(symbol="line-ew-open", size=40, line=dict(width=3, color="black"))))
    return plots.Measured(df, fig)


def comm_figure(df: pd.DataFrame) -> go.Figure:
    """Bytes per rank per training step through collectives: measured vs the ZeRO paper's 2Ψ / 3Ψ."""
    long = pd.concat([df[["method"]].assign(kind="measured", MB=df.comm_MB_per_step),
                      df[["method"]].assign(kind="formula (2Ψ, stage 3: 3Ψ)", MB=df.comm_formula_MB)])
    long.attrs = df.attrs
    return plots.bars(long, "method", "MB", "Communication per training step, per rank", color="kind",
                      ylabel="MB per rank per step", text_format=".0f")
