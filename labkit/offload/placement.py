"""Where Accelerate puts each block (GPU, CPU RAM, disk), loading with offload, and the bytes each forward moves."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import torch
from accelerate import infer_auto_device_map, init_empty_weights, load_checkpoint_and_dispatch
from transformers import AutoModelForCausalLM

from labkit import devices, models, plots, precision

Model = str | models.ModelSpec  # a name is resolved once, at the entry of each function


def _spec(model: Model) -> models.ModelSpec:
    return model if isinstance(model, models.ModelSpec) else models.resolve(model)


def empty_model(model: Model) -> torch.nn.Module:
    """The architecture on the meta device: shapes and names, no memory; weights tied, as Accelerate needs.

    Args:
        model: a model name or a resolved `models.ModelSpec`.
    Returns:
        the transformers model with every parameter on the meta device.
    Raises:
        ValueError: an unknown name.
    """
    with init_empty_weights():
        empty = AutoModelForCausalLM.from_config(copy.deepcopy(_spec(model).config))  # the spec's stays as it is
    empty.tie_weights()  # else the map gives lm_head its own device and the forward fails on lm_head.weight
    return empty


def execution_device(device: str | torch.device = "auto") -> torch.device:
    """Where an offloaded model computes and where its inputs go (its own `.device` can be "meta").

    Args:
        device: "auto", "cpu", "cuda" or "cuda:N" (`hardware.resolve_device`).
    Returns:
        the device, with the GPU index made explicit (cuda:N).
    Raises:
        ValueError: an unknown device, naming the valid ones. CapabilityMissing: CUDA asked for without a GPU.
    """
    return devices.resolve(device)


def fast_device(device: str | torch.device = "auto") -> str | int:
    """The execution device as Accelerate names it in `max_memory` and device maps: the GPU index, or "cpu"."""
    dev = execution_device(device)
    return dev.index if dev.type == "cuda" else "cpu"


def tier(placed: str | int) -> str:
    """A device-map entry as a device name.

    Args:
        placed: a value of an Accelerate device map (a GPU index, "cpu" or "disk").
    Returns:
        "cuda:N" for GPU index N; "cpu" and "disk" unchanged.
    """
    return f"cuda:{placed}" if isinstance(placed, int) else str(placed)


def budget(total: int, in_memory: float, host: float, fast: str | int) -> dict:
    """Accelerate's `max_memory` for `total` weight bytes: `in_memory` of them on `fast`, `host` of them in CPU RAM
    (only when `fast` is a GPU: on a CPU-only machine CPU RAM *is* the fast memory), the rest on disk.

    Args:
        total: weight bytes. in_memory, host: shares of them, 0..1 (in_memory 1.0: room for everything).
        fast: the compute device as Accelerate names it (a GPU index or "cpu").
    Returns:
        {fast: bytes, ["cpu": bytes,] "disk": bytes}.
    Raises:
        ValueError: a share outside 0..1, or host > 0 with the CPU as the compute device.
    """
    if not (0.0 <= in_memory <= 1.0 and 0.0 <= host <= 1.0):
        raise ValueError(f"in_memory and host are shares of the weights between 0 and 1, got {in_memory} and {host}")
    if fast == "cpu" and host > 0:
        raise ValueError("host > 0 needs a GPU compute device: on the CPU, CPU RAM is the compute device's memory")
    # 1.0: room for everything. At least 1 MiB: Accelerate cannot load a checkpoint with every module on disk.
    memory = {fast: 2 * total if in_memory >= 1.0 else max(int(total * in_memory), 1 << 20)}
    if fast != "cpu":
        memory["cpu"] = int(total * host)
    memory["disk"] = 10 * total
    return memory


def max_memory_for(model: Model, in_memory: float, host: float = 0.0, device: str | torch.device = "auto",
                   dtype: str = "fp32") -> dict:
    """A `max_memory` budget that keeps `in_memory` of the weight bytes on the compute device (`budget`).

    Args:
        model: a model name or a resolved `models.ModelSpec`.
        in_memory: share of the weight bytes allowed on the compute device, 0..1 (1.0: everything fits).
        host: share allowed in CPU RAM when the compute device is a GPU (0: the rest goes to disk).
        device: the compute device ("auto", "cpu", "cuda", "cuda:N"). dtype: the precision the weights load in.
    Returns:
        {fast_device(device): bytes, ["cpu": bytes,] "disk": bytes}, Accelerate's `max_memory` format.
    Raises:
        ValueError: a share outside 0..1 (checked before the name is resolved), or host > 0 on the CPU.
    """
    fast = fast_device(device)
    budget(1, in_memory, host, fast)  # validate before resolving the name
    return budget(_spec(model).weight_bytes(dtype), in_memory, host, fast)


def _placement(empty: torch.nn.Module, max_memory: dict, dtype: str) -> dict[str, str | int]:
    # sizes in the precision the weights will load in (the meta model is fp32: bf16 blocks would count double)
    placement = dict(infer_auto_device_map(empty, max_memory=max_memory, clean_result=False,
                                           no_split_module_classes=empty._no_split_modules,
                                           dtype=precision.torch_dtype(dtype)))  # fmt: skip
    fast = next(iter(max_memory))  # the compute device: `budget` names it first
    if all(tier(device) != tier(fast) for device in placement.values()):
        # Nothing on the compute device: Accelerate would compute where the first block is (the CPU, for a map of
        # "cpu" and "disk" alone), and it loads a checkpoint only if some block stays off disk. Keep the smallest
        # block there, so the chosen device computes and every other tier is copied to it.
        named = dict(empty.named_modules())
        with_params = [m for m in placement if any(True for _ in named[m].parameters())]
        smallest = min(with_params, key=lambda m: sum(p.numel() for p in named[m].parameters()))
        placement[smallest] = fast
    return placement


def device_map(model: Model, max_memory: dict, dtype: str = "fp32") -> dict[str, str | int]:
    """Accelerate's placement of each top-level block under `max_memory` (no weights loaded).

    Args:
        model: a model name or a resolved `models.ModelSpec`.
        max_memory: device -> bytes, e.g. from `max_memory_for()`.
        dtype: fp32 | bf16 | fp16, the precision the weights would load in (sets each block's bytes).
    Returns:
        module name -> device (GPU index, "cpu" or "disk"), in forward order. When no block would land on the first
        device of `max_memory` (the compute device), the smallest one is kept there: Accelerate computes on the
        first GPU of the map, else the CPU, and needs one block off disk to load.
    """
    return _placement(empty_model(model), max_memory, dtype)


def load_offloaded(model: Model, max_memory: dict, offload_dir: str | Path | None = None,
                   dtype: str = "fp32") -> torch.nn.Module:
    """Load a model with what does not fit in `max_memory` offloaded; the meta model is built once.

    Args:
        model: a model name or a resolved `models.ModelSpec` (its checkpoint is written on first use).
        max_memory: device -> bytes, e.g. from `max_memory_for()`; its GPU (if any) is the compute device.
        offload_dir: folder for the offloaded weights (a new temporary folder when None).
        dtype: fp32 | bf16 | fp16: the precision the weights are loaded, offloaded and computed in.
    Returns:
        the dispatched model in eval mode; `hf_device_map` says where each block lives. Inputs go to the compute
        device (`execution_device`).
    Raises:
        ValueError: an unknown name or dtype. ModelNotAvailable: a model with no weights here.
    """
    torch_dtype = precision.torch_dtype(dtype)
    spec = _spec(model)
    spec.require_weights()
    empty = empty_model(spec)
    placement = _placement(empty, max_memory, dtype)
    folder = Path(offload_dir or tempfile.mkdtemp(prefix="labkit-offload-"))
    loaded = load_checkpoint_and_dispatch(empty, str(spec.checkpoint_dir), device_map=placement,
                                          offload_folder=str(folder), dtype=torch_dtype)  # fmt: skip
    _share_tied_offloaded_weight(loaded, folder)
    return loaded.eval()


def _share_tied_offloaded_weight(model: torch.nn.Module, folder: Path) -> None:
    """Accelerate writes a tied weight to disk once, under the input embedding's name, but the LM head's
    hook looks it up under the head's own name. Point that name at the same file (a hard link, no copy)."""
    head = model.get_output_embeddings()
    hook = getattr(head, "_hf_hook", None)
    if not getattr(model.config, "tie_word_embeddings", False) or not getattr(hook, "offload", False):
        return
    names = {id(m): n for n, m in model.named_modules()}
    embed_key, head_key = f"{names[id(model.get_input_embeddings())]}.weight", f"{names[id(head)]}.weight"
    loader = hook.weights_map.dataset  # PrefixedDataset -> OffloadedWeightsLoader
    if head_key not in loader.index and embed_key in loader.index and (folder / f"{embed_key}.dat").exists():
        loader.index[head_key] = loader.index[embed_key]
        (folder / f"{head_key}.dat").hardlink_to(folder / f"{embed_key}.dat")


def compute_device(placement: dict) -> torch.device:
    """The device a dispatched model computes on (Accelerate's main device): its first GPU, else the CPU.

    Args:
        placement: a device map (`model.hf_device_map`, `device_map()`).
    Returns:
        cuda:N for the first GPU index in the map, else cpu.
    """
    gpus = [tier(d) for d in placement.values() if tier(d).startswith("cuda")]
    return torch.device(gpus[0] if gpus else "cpu")


def offloaded_tiers(placement: dict) -> set[str]:
    """The tiers whose blocks Accelerate's hooks copy to the compute device at every forward (`dispatch_model`).

    Args:
        placement: a device map (`model.hf_device_map`, `device_map()`).
    Returns:
        {"cpu", "disk"} when a GPU computes, {"disk"} when the CPU does (its blocks on "cpu" are already there).
    """
    return {"cpu", "disk"} if compute_device(placement).type == "cuda" else {"disk"}


def module_bytes(model: torch.nn.Module) -> dict[str, int]:
    """Weight bytes of each block of a device map: numel × element size of the block's parameters (a weight two
    blocks share, such as a tied embedding and LM head, counts in each: each block's hook loads it).

    Args:
        model: a dispatched model (`load_offloaded`; offloaded weights sit on "meta" but keep shape and dtype).
    Returns:
        module name -> bytes, in `hf_device_map` order.
    """
    named = dict(model.named_modules())
    return {m: sum(p.numel() * p.element_size() for p in (named[m] if m else model).parameters())
            for m in model.hf_device_map}


def bytes_moved_per_forward(model: torch.nn.Module) -> int:
    """Weight bytes the hooks bring to the compute device in one forward (one decode step: per token at batch 1):
    the bytes of every block on an offloaded tier (`offloaded_tiers`).

    Args:
        model: a dispatched model (`load_offloaded`).
    Returns:
        bytes; 0 when every block lives on the compute device (or, on the CPU, in CPU RAM).
    """
    moved = offloaded_tiers(model.hf_device_map)
    sizes = module_bytes(model)
    return sum(sizes[m] for m, d in model.hf_device_map.items() if tier(d) in moved)


def placement_table(model: torch.nn.Module) -> pd.DataFrame:
    """Where each block of a dispatched model lives and how many weight bytes it holds.

    Args:
        model: a model from `load_offloaded()` (it has `hf_device_map`).
    Returns:
        DataFrame with columns module, device ("cuda:0", "cpu" or "disk"), MB (1e6 bytes); a tied weight
        (embedding = LM head) counted once.
    """
    named = dict(model.named_modules())
    rows, seen = [], set()  # each tensor once, wherever it lives
    if getattr(model.config, "tie_word_embeddings", False):
        head, embedding = model.get_output_embeddings().weight, model.get_input_embeddings().weight
        if head is not embedding:  # offloaded, the head holds its own handle on the one stored tensor
            seen.add(id(head))
    for module, device in model.hf_device_map.items():
        params = [p for p in (named[module] if module else model).parameters() if id(p) not in seen]
        seen.update(id(p) for p in params)
        nbytes = sum(p.numel() * p.element_size() for p in params)
        rows.append({"module": module or "(whole model)", "device": tier(device), "MB": nbytes / 1e6})
    return pd.DataFrame(rows)


def placement_name(table: pd.DataFrame) -> str:
    """A scenario's name from where its bytes actually landed: "cuda:0 52 % + cpu 48 %", "cpu 100 %".

    Args:
        table: from `placement_table()`.
    Returns:
        each device holding weights with its share of the bytes (rounded to 1 %): the GPU, then CPU RAM, then disk.
    """
    by_device = table.groupby("device").MB.sum()
    by_device = by_device[by_device > 0].sort_index(key=lambda d: d.map({"cpu": 1, "disk": 2}).fillna(0))
    shares = 100 * by_device / by_device.sum()
    return " + ".join(f"{d} {s:.0f} %" if s >= 0.5 else f"{d} <1 %" for d, s in shares.items())


def placement_figure(table: pd.DataFrame, title: str = "Where each block lives") -> go.Figure:
    """Bar chart of `placement_table()`: MB of weights per block, coloured by device.

    Args:
        table: from `placement_table()`. title: the figure title.
    Returns:
        a plotly Figure.
    """
    return plots.bars(table, x="module", y="MB", color="device", ylabel="weights (MB)", title=title)
